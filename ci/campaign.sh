#!/usr/bin/env bash
# The main command: installs what is missing, builds a release build, and runs a default crash +
# stress campaign on an embedded store in a temporary directory: about a minute of dbdb-crash
# (every crash state of generated workloads, checked against the oracle) and about a minute of
# dbdb-stress --workload mixed (writers and readers SIGKILLed at random, I/O faults injected with
# fiu-run). Prints a short summary and where the JSON reports are; exits non-zero on any violation.
#
#   ci/campaign.sh [--crash-seconds N] [--stress-seconds N] [--seed S] [--faults SPEC]
#                  [--kill-interval-ms MS] [--dir DIR]
#   Environment: the same as CAMPAIGN_CRASH_SECONDS, CAMPAIGN_STRESS_SECONDS, CAMPAIGN_SEED,
#   CAMPAIGN_FAULTS, CAMPAIGN_KILL_INTERVAL_MS, CAMPAIGN_DIR; BUILD_DIR (default build-release).
#   A longer campaign: ci/campaign.sh --crash-seconds 600 --stress-seconds 600
set -euo pipefail
cd "$(dirname "$0")/.."

crash_seconds=${CAMPAIGN_CRASH_SECONDS:-60}
stress_seconds=${CAMPAIGN_STRESS_SECONDS:-60}
seed=${CAMPAIGN_SEED:-}
faults=${CAMPAIGN_FAULTS:-default}
kill_interval_ms=${CAMPAIGN_KILL_INTERVAL_MS:-200}
work=${CAMPAIGN_DIR:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --crash-seconds) crash_seconds=$2; shift 2 ;;
    --stress-seconds) stress_seconds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --faults) faults=$2; shift 2 ;;
    --kill-interval-ms) kill_interval_ms=$2; shift 2 ;;
    --dir) work=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "campaign: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$seed" ]; then seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); fi
echo "campaign seed: $seed"

bash ci/deps.sh
build_dir=${BUILD_DIR:-build-release}
echo "== build ($build_dir, release)"
bash ci/build.sh "$build_dir" -DCMAKE_BUILD_TYPE=Release
if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/dbdb-campaign-XXXXXX"); fi
mkdir -p "$work"

status=0
echo "== crash exploration: ${crash_seconds} s"
"$build_dir/bin/dbdb-crash" --seed "$seed" --workloads 1000000 --duration "$crash_seconds" --ops 100 \
  --threads "$(nproc)" --report "$work/crash.json" > "$work/crash.log" || status=1
echo "== multiprocess stress: ${stress_seconds} s, kills every ~${kill_interval_ms} ms, faults: $faults"
"$build_dir/bin/dbdb-stress" --workload mixed --writers 4 --readers 2 --duration "$stress_seconds" \
  --kill-interval-ms "$kill_interval_ms" --faults "$faults" --seed "$seed" --dir "$work/stress" \
  --report "$work/stress.json" > "$work/stress.log" 2> "$work/stress.progress" || status=1

echo
echo "== campaign summary (seed $seed)"
grep -E "^(workloads run|crash points|crash states checked|states per second|sync epochs|violations):" "$work/crash.log" | sed 's/^/crash   /'
grep -E "^VIOLATION|replay:" "$work/crash.log" | sed 's/^/crash   /' || true
grep -E "^(history|commits|kills|faults|compaction|violations|replay):" "$work/stress.log" | sed 's/^/stress  /'
grep -E "^  " "$work/stress.log" | sed 's/^/stress  /' || true
echo "reports: $work/crash.json $work/stress.json (logs beside them)"
if [ $status -ne 0 ]; then
  echo "campaign: VIOLATIONS FOUND (replay commands above)"
else
  echo "campaign: no violation"
fi
exit $status
