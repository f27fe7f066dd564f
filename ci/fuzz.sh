#!/usr/bin/env bash
# The fuzz layer: builds the libFuzzer targets of proptests/fuzz with clang (ASan + UBSan +
# libFuzzer, tree build-fuzz), replays every input of proptests/fuzz/regressions and of the seed
# corpus through both targets, then fuzzes each target for a bounded time. On a finding it copies
# the input into proptests/fuzz/regressions/ (to be committed: it is replayed on every run from
# then on), prints the one command that replays it, and exits non-zero.
#
#   DBDB_TEST_TIER=quick|long   45 s per target (quick, the default) or 10 minutes (long)
#   DBDB_FUZZ_SECONDS=N         the time per target, overriding the tier
#   DBDB_FUZZ_SEED=S            libFuzzer's -seed (1..2147483647), printed first; random if unset
#   DBDB_FUZZ_TARGETS="raw structured"   the targets to run
#   FUZZ_BUILD_DIR=DIR          the build tree (default build-fuzz); its fuzz/ keeps the corpus
#                               each target grew, reused by the next run
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${DBDB_TEST_TIER:-quick}
seed=${DBDB_FUZZ_SEED:-}
if [ -z "$seed" ]; then seed=$(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % 2147483647 + 1 )); fi
echo "fuzz seed: $seed"
case "$tier" in
  long) seconds=${DBDB_FUZZ_SECONDS:-600} ;;
  *) seconds=${DBDB_FUZZ_SECONDS:-45} ;;
esac
targets=${DBDB_FUZZ_TARGETS:-raw structured}
build_dir=${FUZZ_BUILD_DIR:-build-fuzz}
fuzz_dir=proptests/fuzz
regressions=$fuzz_dir/regressions
start=$(date +%s)

echo "== fuzz build ($build_dir: clang, libFuzzer + ASan + UBSan)"
CC=clang CXX=clang++ bash ci/build.sh "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDBDB_FUZZ=ON
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$regressions"

status=0
# The seeds are what the store writes today: dbdb_fuzz_seed must make each committed seed-* again,
# byte for byte, and no other (a change to what the store writes, or a generator that no longer
# runs, shows here; regenerate with the command below and keep a format bump's old seeds as
# vN-seed-*). The generator had stopped working unnoticed: once writers allocated space ahead,
# every seed it made was over its 16 KiB limit.
echo "== fuzz seeds: the generator writes the committed seed corpus again"
fresh_seeds=$(mktemp -d)
trap 'rm -rf "$fresh_seeds"' EXIT
regenerate="$build_dir/bin/dbdb_fuzz_seed $fuzz_dir/corpus/raw $fuzz_dir/corpus/structured"
if ! "$build_dir/bin/dbdb_fuzz_seed" "$fresh_seeds" > "$build_dir/seeds.log" 2>&1; then
  cat "$build_dir/seeds.log"
  echo "FAIL: dbdb_fuzz_seed failed"
  exit 1
fi
for corpus in "$fuzz_dir"/corpus/*; do
  made=$(cd "$fresh_seeds" && ls seed-*)
  committed=$(cd "$corpus" && ls seed-*)
  if [ "$made" != "$committed" ]; then
    echo "FAIL: $corpus holds seeds [$(echo $committed)], the generator makes [$(echo $made)]; regenerate: $regenerate"
    status=1
  fi
  for fresh in "$fresh_seeds"/seed-*; do  # (not $seed: that is libFuzzer's)
    if [ -f "$corpus/${fresh##*/}" ] && ! cmp -s "$fresh" "$corpus/${fresh##*/}"; then
      echo "FAIL: $corpus/${fresh##*/} is not what the generator writes now; regenerate: $regenerate"
      status=1
    fi
  done
done
if [ $status -ne 0 ]; then exit $status; fi

echo "== fuzz replay: every regression and seed input through every target"
replayed=0
for target in $targets; do
  bin=$build_dir/bin/dbdb_fuzz_$target
  inputs=()
  for input in "$regressions"/* "$fuzz_dir"/corpus/"$target"/*; do
    if [ -f "$input" ]; then inputs+=("$input"); fi
  done
  replayed=$((replayed + ${#inputs[@]}))
  if [ ${#inputs[@]} -eq 0 ] || "$bin" "${inputs[@]}" > "$build_dir/replay.log" 2>&1; then continue; fi
  # Something failed: one input at a time, to name every failing one.
  for input in "${inputs[@]}"; do
    if ! "$bin" "$input" > "$build_dir/replay.log" 2>&1; then
      grep -E "DBDB FUZZ VIOLATION|ERROR: |SUMMARY: |runtime error" "$build_dir/replay.log" | head -5 || true
      echo "FUZZ FAILURE (replayed input $input)"
      echo "replay: $bin $input"
      status=1
    fi
  done
done
echo "replayed $replayed inputs"
if [ $status -ne 0 ]; then exit $status; fi

# The targets fuzz at the same time, one process each (the budget is wall time per target, so on 2
# cores this halves the layer's time); each writes its own log and grows its own corpus, and the
# shared seed, regression and dictionary inputs are only read.
declare -A pids
for target in $targets; do
  bin=$build_dir/bin/dbdb_fuzz_$target
  work=$build_dir/fuzz/$target
  mkdir -p "$work/corpus" "$work/artifacts"
  rm -f "$work/artifacts"/*
  # The corpus grown by earlier runs is kept, within reason: loading it is part of the budget.
  if [ "$(find "$work/corpus" -type f | wc -l)" -gt 2000 ]; then rm -f "$work/corpus"/*; fi
  echo "== fuzz $target: ${seconds} s, seed $seed"
  "$bin" -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -dict="$fuzz_dir/dbdb.dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    "$work/corpus" "$fuzz_dir/corpus/$target" "$regressions" > "$work/log" 2>&1 &
  pids[$target]=$!
done
for target in $targets; do
  bin=$build_dir/bin/dbdb_fuzz_$target
  work=$build_dir/fuzz/$target
  set +e
  wait "${pids[$target]}"
  rc=$?
  set -e
  echo "== fuzz $target: exit $rc"
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$work/log" |
    sed 's/^stat::/  /' || true
  grep -E "^#[0-9]+ +DONE" "$work/log" | tail -1 | sed 's/^/  /' || true
  if [ $rc -ne 0 ]; then
    status=1
    grep -E "DBDB FUZZ VIOLATION|ERROR: |SUMMARY: |runtime error" "$work/log" | head -8 || true
    found=0
    for artifact in "$work/artifacts"/{crash,timeout,oom,leak}-*; do
      [ -f "$artifact" ] || continue
      found=1
      kept=$regressions/$target-$(basename "$artifact")
      cp "$artifact" "$kept"
      echo "FUZZ FINDING ($target): input kept as $kept (commit it); log: $work/log"
      echo "replay: $bin $kept"
    done
    if [ $found -eq 0 ]; then echo "FUZZ FAILURE ($target) without an input: see $work/log"; fi
  fi
done
echo "== fuzz done in $(( $(date +%s) - start )) s (seed $seed)"
exit $status
