#!/usr/bin/env bash
# The main command: installs what is missing, builds a release build, and runs a default crash +
# stress campaign on an embedded store in a temporary directory: about a minute of dbdb-crash
# (every crash state of generated workloads, checked against the oracle), about a minute of
# dbdb-stress --workload mixed (writers and readers SIGKILLed at random, I/O faults injected with
# fiu-run), and about a minute of the same on a dbdb-powerfs mount with the power cut under every
# process several times a second (docs/POWERFS.md; needs FUSE: /dev/fuse and root). Prints a short summary and where the reports are; exits non-zero on any violation.
#
#   ci/campaign.sh [--engine dbdb|sqlite|leveldb|rocksdb|all]
#                  [--crash-seconds N] [--crash-workloads M] [--stress-seconds N] [--power-cut-seconds N]
#                  [--seed S | --campaign-seed S] [--shard I/N] [--faults SPEC]
#                  [--kill-interval-ms MS] [--dir DIR] [--html FILE]
#   ci/campaign.sh merge [--html FILE] [--out FILE] [--partial] DIR_OR_CASES_FILE...
#
#   --engine E           the engine under test (docs/ENGINES.md; default dbdb). For sqlite, leveldb
#                        and rocksdb the crash exploration runs each of the engine's configurations
#                        (--crash-seconds each) against what its documentation promises; the stress
#                        and power-cut runs drive dbdb's processes and are left out. `all`: every
#                        configuration of every engine, and the results table DIR/engines.md (with
#                        DIR/engines.json) that README.md quotes.
#   --shard I/N          this machine's share of an N-shard campaign (docs/CAMPAIGNS.md): crash
#                        workloads k with k % N == I (seed S + k), one stress run with seed S + I.
#                        --shard N takes I from JOB_COMPLETION_INDEX or GTEST_SHARD_INDEX.
#   --crash-workloads M  the campaign's workloads (default 1000000, bounded by --crash-seconds);
#                        with --crash-seconds 0 the campaign is exactly M workloads, so its shards
#                        merge to the figures of the unsharded run
#   --stress-seconds 0   no stress run
#   --power-cut-seconds 0  no power-cut run (a machine without FUSE)
#   --html FILE          a self-contained HTML report of this run (its shard alone)
#   merge                checks every shard 0..N-1 is there once, removes repeated violations,
#                        sums the figures; exits 1 on a violation, 3 on a missing or repeated shard
#   Exit status: 0 no violation, 1 violations, 2 the campaign could not run (usage, build, setup).
#   Every run writes DIR/cases.jsonl (one line per case, each with its replay command).
#   Environment: CAMPAIGN_CRASH_SECONDS, CAMPAIGN_CRASH_WORKLOADS, CAMPAIGN_STRESS_SECONDS,
#   CAMPAIGN_POWER_CUT_SECONDS, CAMPAIGN_ENGINE, CAMPAIGN_SEED, CAMPAIGN_SHARD, CAMPAIGN_FAULTS, CAMPAIGN_KILL_INTERVAL_MS, CAMPAIGN_DIR;
#   BUILD_DIR (default build-release).
#   A longer campaign: ci/campaign.sh --crash-seconds 600 --stress-seconds 600
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "$0")/.."
# Paths on the command line are the caller's, not the repository's.
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$caller_dir/$1" ;; esac; }

build() {
  build_dir=${BUILD_DIR:-build-release}
  mkdir -p "$build_dir"
  # Shards started side by side on one machine share the build tree: one builds, the others wait
  # (two cmake or ninja runs in one tree at once corrupt it).
  exec 9> "$build_dir/.campaign-build.lock"
  flock 9
  bash ci/deps.sh || { echo "campaign: installing the dependencies failed" >&2; exit 2; }
  echo "== build ($build_dir, release)"
  bash ci/build.sh "$build_dir" -DCMAKE_BUILD_TYPE=Release || { echo "campaign: the build failed" >&2; exit 2; }
  flock -u 9
}
# Exit statuses: 0 no violation, 1 violations, 2 the campaign could not run (usage, build, setup).
need_value() { if [ "$2" -lt 2 ]; then echo "campaign: $1 needs a value (try --help)" >&2; exit 2; fi; }

if [ "${1:-}" = "merge" ]; then
  shift
  args=()
  inputs=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --html|--out) need_value "$1" $#; args+=("$1" "$(abs "$2")"); shift 2 ;;
      --partial) args+=("$1"); shift ;;
      -h|--help) sed -n '2,/^set -euo pipefail/{/^#/p}' "$0"; exit 0 ;;
      -*) echo "campaign merge: unknown argument $1 (try --help)" >&2; exit 2 ;;
      *) inputs+=("$(abs "$1")"); shift ;;
    esac
  done
  if [ ${#inputs[@]} -eq 0 ]; then echo "campaign merge: no shard given" >&2; exit 2; fi
  build >&2
  exec "$build_dir/bin/dbdb-campaign" merge --bench-svg docs/bench-1m.svg "${args[@]}" "${inputs[@]}"
fi

crash_seconds=${CAMPAIGN_CRASH_SECONDS:-60}
crash_workloads=${CAMPAIGN_CRASH_WORKLOADS:-1000000}
stress_seconds=${CAMPAIGN_STRESS_SECONDS:-60}
power_cut_seconds=${CAMPAIGN_POWER_CUT_SECONDS:-60}
seed=${CAMPAIGN_SEED:-}
shard=${CAMPAIGN_SHARD:-}
faults=${CAMPAIGN_FAULTS:-default}
kill_interval_ms=${CAMPAIGN_KILL_INTERVAL_MS:-200}
work=${CAMPAIGN_DIR:+$(abs "$CAMPAIGN_DIR")}
engine=${CAMPAIGN_ENGINE:-dbdb}
html=
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) need_value "$1" $#; engine=$2; shift 2 ;;
    --crash-seconds) need_value "$1" $#; crash_seconds=$2; shift 2 ;;
    --crash-workloads) need_value "$1" $#; crash_workloads=$2; shift 2 ;;
    --stress-seconds) need_value "$1" $#; stress_seconds=$2; shift 2 ;;
    --power-cut-seconds) need_value "$1" $#; power_cut_seconds=$2; shift 2 ;;
    --seed|--campaign-seed) need_value "$1" $#; seed=$2; shift 2 ;;
    --shard) need_value "$1" $#; shard=$2; shift 2 ;;
    --faults) need_value "$1" $#; faults=$2; shift 2 ;;
    --kill-interval-ms) need_value "$1" $#; kill_interval_ms=$2; shift 2 ;;
    --dir) need_value "$1" $#; work=$(abs "$2"); shift 2 ;;
    --html) need_value "$1" $#; html=$(abs "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^#/p}' "$0"; exit 0 ;;
    *) echo "campaign: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$engine" in
  dbdb|sqlite|leveldb|rocksdb|all) ;;
  *) echo "campaign: unknown engine $engine (dbdb, sqlite, leveldb, rocksdb or all)" >&2; exit 2 ;;
esac
if [ "$engine" != "dbdb" ]; then
  # dbdb-stress drives dbdb's processes: another engine's campaign is its crash exploration.
  stress_seconds=0
  power_cut_seconds=0
fi
if [ -z "$seed" ]; then seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); fi
echo "campaign seed: $seed${shard:+, shard $shard}, engine $engine"

build
if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/dbdb-campaign-XXXXXX"); fi
mkdir -p "$work"
shard_args=()
if [ -n "$shard" ]; then shard_args=(--shard "$shard"); fi

status=0
# One dbdb-crash run: NAME (a file stem), then its extra arguments.
crash_run() {
  local name=$1
  shift
  local rc=0
  "$build_dir/bin/dbdb-crash" --campaign-seed "$seed" "${shard_args[@]}" --workloads "$crash_workloads" \
    --duration "$crash_seconds" --ops "${crash_ops:-100}" --threads "$(nproc)" --max-violations "$max_violations" --report "$work/$name.json" \
    --cases-out "$work/$name.jsonl" "$@" > "$work/$name.log" || rc=$?
  case $rc in
    0) ;;
    1) status=1 ;;
    *) cat "$work/$name.log" >&2; echo "campaign: dbdb-crash $* could not run (exit $rc)" >&2; exit 2 ;;
  esac
}
crash_names=()
single_names=()  # the single-handle runs of --engine (the first results table)
multi_names=()   # the multi-process runs (the second)
max_violations=10
if [ "$engine" = "dbdb" ]; then
  echo "== crash exploration: ${crash_seconds} s (0: no limit), up to ${crash_workloads} workloads"
  crash_run crash
  crash_names=(crash)
  tools='"dbdb-crash"'
else
  tools=
  configs=$("$build_dir/bin/dbdb-crash" --list-engines) || { echo "campaign: dbdb-crash --list-engines failed" >&2; exit 2; }
  for config in $configs; do
    case "$engine" in all) ;; *) case "$config" in "$engine"/*) ;; *) continue ;; esac ;; esac
    # Every crash state the model allows (plan all: the reordering POSIX allows), then only those
    # that keep every operation in order (plan ordered): a violation found only by the first needs
    # reordering that journaling filesystems do not do (docs/ENGINES.md).
    for plan in all ordered; do
      name="crash-${config//\//-}"
      [ "$plan" = ordered ] && name="$name-ordered"
      echo "== crash exploration of $config, plan $plan: ${crash_seconds} s (0: no limit), up to ${crash_workloads} workloads"
      # A finding shows in many workloads: shrink the first, count the others within the time.
      max_violations=1000000
      crash_run "$name" --engine "$config" --plan "$plan" --shrink-max 1
      crash_names+=("$name")
      single_names+=("$name")
      tool="dbdb-crash:$config"
      [ "$plan" = ordered ] && tool="$tool:ordered"
      tools="$tools${tools:+,}\"$tool\""
    done
  done
  if [ ${#crash_names[@]} -eq 0 ]; then echo "campaign: this build has no configuration of $engine" >&2; exit 2; fi
  # The engines that several processes share (dbdb, SQLite): the multi-process simulation, three
  # processes of about 12 steps, every fault point the engine reaches armed at random, plan all.
  multi_configs=$("$build_dir/bin/dbdb-crash" --list-engines --processes 2) ||
    { echo "campaign: dbdb-crash --list-engines --processes 2 failed" >&2; exit 2; }
  for config in $multi_configs; do
    case "$engine" in all) ;; *) case "$config" in "$engine"/*) ;; *) continue ;; esac ;; esac
    name="crash-${config//\//-}-processes"
    echo "== crash exploration of $config with 3 processes, kills and faults: ${crash_seconds} s (0: no limit), up to ${crash_workloads} histories"
    crash_ops=12 crash_run "$name" --engine "$config" --processes 3 --plan all --states-max 16 --shrink-max 1
    crash_names+=("$name")
    multi_names+=("$name")
    tools="$tools${tools:+,}\"dbdb-crash-multiprocess:$config\""
  done
fi
# This shard's manifest: the tools it runs, so that merge misses a tool that never finished anywhere.
if [ "$stress_seconds" != "0" ]; then tools="$tools,\"dbdb-stress\""; fi
if [ "$power_cut_seconds" != "0" ]; then tools="$tools,\"dbdb-stress-power-cut\""; fi
jq -c --argjson tools "[$tools]" 'select(.kind == "shard") |
  {kind: "manifest", campaign_seed, shard_index, shard_count, tools: $tools}' "$work/${crash_names[0]}.jsonl" > "$work/manifest.jsonl"
cases=("$work/manifest.jsonl")
for name in "${crash_names[@]}"; do cases+=("$work/$name.jsonl"); done
if [ "$stress_seconds" != "0" ]; then
  echo "== multiprocess stress: ${stress_seconds} s, kills every ~${kill_interval_ms} ms, faults: $faults"
  rc=0
  "$build_dir/bin/dbdb-stress" --workload mixed --writers 4 --readers 2 --duration "$stress_seconds" \
    --kill-interval-ms "$kill_interval_ms" --faults "$faults" --campaign-seed "$seed" "${shard_args[@]}" \
    --dir "$work/stress" --report "$work/stress.json" --cases-out "$work/stress.jsonl" \
    > "$work/stress.log" 2> "$work/stress.progress" || rc=$?
  case $rc in
    0) ;;
    1) status=1 ;;
    *) cat "$work/stress.log" "$work/stress.progress" >&2; echo "campaign: dbdb-stress could not run (exit $rc)" >&2; exit 2 ;;
  esac
  cases+=("$work/stress.jsonl")
fi
if [ "$power_cut_seconds" != "0" ]; then
  echo "== power cuts: ${power_cut_seconds} s on a dbdb-powerfs mount, a cut every ~300 ms, kills every ~${kill_interval_ms} ms"
  rc=0
  "$build_dir/bin/dbdb-stress" --workload mixed --writers 4 --readers 2 --duration "$power_cut_seconds" \
    --kill-interval-ms "$kill_interval_ms" --power-cut --cut-interval-ms 300 --campaign-seed "$seed" "${shard_args[@]}" \
    --dir "$work/power-cut" --report "$work/power-cut.json" --cases-out "$work/power-cut.jsonl" \
    > "$work/power-cut.log" 2> "$work/power-cut.progress" || rc=$?
  case $rc in
    0) ;;
    1) status=1 ;;
    *) cat "$work/power-cut.log" "$work/power-cut.progress" >&2
       echo "campaign: dbdb-stress --power-cut could not run (exit $rc; FUSE missing? --power-cut-seconds 0 skips it)" >&2
       exit 2 ;;
  esac
  cases+=("$work/power-cut.jsonl")
fi
cat "${cases[@]}" > "$work/cases.jsonl"

echo
echo "== campaign summary (seed $seed${shard:+, shard $shard})"
for name in "${crash_names[@]}"; do
  grep -E "^(engine|workloads run|crash points|crash states checked|states per second|sync epochs|violations):" \
    "$work/$name.log" | sed 's/^/crash   /' || true
  grep -E "^VIOLATION|replay:" "$work/$name.log" | sed 's/^/crash   /' || true
done
if [ "$engine" != "dbdb" ]; then
  # The results table (README.md, docs/ENGINES.md): one row per configuration.
  engine_reports=()
  for name in "${single_names[@]}"; do engine_reports+=("$work/$name.json"); done
  jq -s '.' "${engine_reports[@]}" > "$work/engines.json"
  {
    echo "| engine | version | configuration | documentation promises | workloads (all / ordered) | crash states checked (all / ordered) | states/s (all / ordered) | states that lost acknowledged commits, as allowed (all) | violations, any reordering POSIX allows | violations, in order | matched |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    jq -r 'def viol: if (.violations_by_invariant | length) == 0 then "none" else (.violations_by_invariant | to_entries | map("\(.key): \(.value)") | join(", ")) + " workloads" end;
      group_by(.engine + "/" + .configuration) | .[] | (map(select(.plan == "all"))[0]) as $a | (map(select(.plan == "ordered"))[0]) as $o |
      "| \($a.engine) | \($a.version) | \($a.configuration) | \(if $a.durable then "every acknowledged commit" elif $a.durable_after > 0 then "all but the last \($a.durable_after) acknowledged commit(s)" else "a prefix (may lose a suffix)" end) | \($a.workloads) / \($o.workloads) | \($a.states_checked) / \($o.states_checked) | \($a.states_per_second | floor) / \($o.states_per_second | floor) | \($a.states_losing_acknowledged_commits) | \($a | viol) | \($o | viol) | \(if $a.matched_promise and $o.matched_promise then "yes" elif $o.matched_promise then "in order only" else "**no**" end) |"' "$work/engines.json"
  } > "$work/engines.md"
  if [ ${#multi_names[@]} -gt 0 ]; then
    multi_reports=()
    for name in "${multi_names[@]}"; do multi_reports+=("$work/$name.json"); done
    jq -s '.' "${multi_reports[@]}" > "$work/engines-processes.json"
    {
      echo
      echo "| engine/configuration | version | documentation promises | histories (3 processes) | processes killed | crash states checked | states/s | faults fired | violations | matched |"
      echo "|---|---|---|---|---|---|---|---|---|---|"
      jq -r 'def viol: if (.violations_by_invariant | length) == 0 then "none" else ([.violations_by_invariant | to_entries[] | "\(.key): \(.value) histories"] | join(", ")) end;
        .[] | "| \(.engine) | \(.version) | \(if .durable then "every acknowledged commit" elif .durable_after > 0 then "all but the last \(.durable_after) acknowledged commit(s)" else "a prefix (may lose a suffix)" end) | \(.histories) | \(.kills) | \(.states_checked) | \(.states_per_second | floor) | \([.faults_fired | to_entries[] | "\(.key | ltrimstr("faultfs/"))=\(.value)"] | join(" ")) | \(viol) | \(if .matched_promise then "yes" else "**no**" end) |"' "$work/engines-processes.json"
    } >> "$work/engines.md"
  fi
  echo "results table: $work/engines.md (JSON: $work/engines.json, engines-processes.json)"
  cat "$work/engines.md"
fi
if [ "$stress_seconds" != "0" ]; then
  grep -E "^(history|commits|kills|faults|compaction|violations|replay):" "$work/stress.log" | sed 's/^/stress  /' || true
  grep -E "^  " "$work/stress.log" | sed 's/^/stress  /' || true
fi
if [ "$power_cut_seconds" != "0" ]; then
  grep -E "^(history|commits|kills|power cuts|compaction|violations|replay):" "$work/power-cut.log" | sed 's/^/power   /' || true
  grep -E "^  " "$work/power-cut.log" | sed 's/^/power   /' || true
fi
if [ -n "$html" ]; then
  "$build_dir/bin/dbdb-campaign" merge --partial --bench-svg docs/bench-1m.svg --title "dbdb campaign, seed $seed${shard:+, shard $shard}" \
    --html "$html" "$work/cases.jsonl" > /dev/null || true
  echo "html report: $html"
fi
echo "cases: $work/cases.jsonl (one line per case; merge shards with: ci/campaign.sh merge DIR...)"
reports=
for name in "${crash_names[@]}"; do reports="$reports${reports:+ }$work/$name.json"; done
if [ "$stress_seconds" != "0" ]; then reports="$reports $work/stress.json"; fi
if [ "$power_cut_seconds" != "0" ]; then reports="$reports $work/power-cut.json"; fi
echo "reports: $reports (logs beside them)"
if [ $status -ne 0 ]; then
  echo "campaign: VIOLATIONS FOUND (replay commands above)"
else
  echo "campaign: no violation"
fi
exit $status
