#!/usr/bin/env bash
# The mutation suite: plants each bug of ci/mutants/*.patch, one at a time, into a copy of the tree
# (never the working tree), builds it, and runs the harness layers in order — unit tests, property
# tests, the crash explorer, a short stress run, one with power cuts, the engines under test —
# recording the first layer that fails and how long it took. Every mutant must be caught. Prints a
# table and writes JSON.
#
# Exit status: 0 if every mutant was caught; 1 if one survived, a patch no longer applies (a stale
# patch is a failure to fix, not to skip), or a mutant does not build.
#   MUTANTS_DIR   work directory with the tree copy and its build (a cache reused between runs;
#                 default ${TMPDIR:-/tmp}/dbdb-mutants)
#   MUTANTS_ONLY  substrings, comma-separated: run only the mutants whose file name contains one
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(realpath -m "${MUTANTS_DIR:-${TMPDIR:-/tmp}/dbdb-mutants}")
src=$work/src
build=$work/build
report=$work/mutants.json
bash ci/deps.sh
mkdir -p "$work"
# git apply inside a repository applies paths relative to its top and silently skips those outside
# the current directory: run in a tree copy inside this checkout (ci/test.sh's long tier puts it
# in build-mutants) it would plant nothing. Git must not look for a repository above the work
# directory.
export GIT_CEILING_DIRECTORIES=$work
# The tree copy: every file of the working tree that git knows (or all of it outside git), copied
# over the cache so that unchanged files keep their timestamps and the build stays incremental.
# A changed file gets the time of the copy, not its own (no cp -p): a header edited before a run
# that was killed mid-mutant was older than the objects that run built from the mutated tree, so
# the next run linked stale objects and its baseline build failed.
copy_tree() {
  mkdir -p "$src"
  if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard) | while IFS= read -r -d '' f; do
      if ! cmp -s "$repo/$f" "$src/$f" 2>/dev/null; then mkdir -p "$src/$(dirname "$f")"; cp "$repo/$f" "$src/$f"; fi
    done
  else
    tar -C "$repo" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$src" -xf -
  fi
}
copy_tree
# The patches too, as they are now: a patch regenerated in the checkout during a run would be
# planted into the tree copied before it and come out stale (stop 53 lost a run to that).
rm -rf "$work/patches" && mkdir -p "$work/patches" && cp "$repo"/ci/mutants/*.patch "$work/patches/"
echo "== baseline build ($build)"
# ci/test.sh's flags (-g1: a mutant relinks every test executable, and full debug information
# made each link slower), without the benchmarks, which no layer runs.
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DDBDB_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null

# MUTANTS_LAYERS=a,b picks the layers (in this order); powercut is dbdb-stress on a dbdb-powerfs
# mount with power cuts (FUSE: /dev/fuse and root); engines is the engines-under-test suite
# (ctest -L engines: SQLite, LevelDB, RocksDB and dbdb through the explorer, docs/ENGINES.md), for
# mutants of the adapters.
IFS=, read -ra layers <<<"${MUTANTS_LAYERS:-unit,proptest,crash,stress,powercut,engines}"
# Without FUSE the property tests of dbdb-powerfs and the powercut layer fail on every mutant, and
# a failure would count as a catch: refuse to run instead.
if [[ " ${layers[*]} " == *" proptest "* || " ${layers[*]} " == *" powercut "* ]] && [ ! -w /dev/fuse ]; then
  echo "mutants: the proptest and powercut layers need FUSE (/dev/fuse, as root); MUTANTS_LAYERS picks others" >&2
  exit 2
fi
# A layer stops at its first failing test (--stop-on-failure): one failure catches the mutant, and
# the unit layer ran every other test after it (about 30 s a mutant).
run_layer() {  # run_layer NAME LOG: exit status of the layer (the stress layers: 1 a violation, 99 could not run)
  case "$1" in
    unit) ctest --test-dir "$build" -L unit -j "$(nproc)" --timeout 120 --stop-on-failure >"$2" 2>&1 ;;
    proptest) RC_PARAMS="max_success=300" ctest --test-dir "$build" -L proptest --timeout 300 --stop-on-failure >"$2" 2>&1 ;;
    crash) { timeout 300 "$build/bin/dbdb-crash" --seed 1 --workloads 30 --ops 100 --threads "$(nproc)" &&
             timeout 300 "$build/bin/dbdb-crash" --processes 3 --seed 1 --workloads 300 --ops 10 --states-max 16 \
               --threads "$(nproc)"; } >"$2" 2>&1 ;;
    stress) stress_layer "$2" --kill-interval-ms 200 --faults default --dir "$work/stress" ;;
    powercut) stress_layer "$2" --kill-interval-ms 400 --power-cut --cut-interval-ms 400 --dir "$work/powercut" ;;
    engines) ctest --test-dir "$build" -L engines -j "$(nproc)" --timeout 300 --stop-on-failure >"$2" 2>&1 ;;
  esac
}

# dbdb-stress exits 1 on a violation and 2 when it cannot run (a setup failure is not a catch).
stress_layer() {
  local log=$1 rc=0
  shift
  timeout 300 "$build/bin/dbdb-stress" --workload mixed --writers 4 --readers 2 --duration 20 --seed 7 "$@" >"$log" 2>&1 || rc=$?
  case $rc in 0|1) return $rc ;; *) return 99 ;; esac
}

# A JSON string's contents: backslashes, quotes and control characters escaped (a description
# that quoted a message made the whole report unreadable).
json_string() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  printf '%s' "$s" | tr -d '\000-\010\013-\037'
}

rows=()
json="["
failures=0
for patch in "$work"/patches/*.patch; do
  name=$(basename "$patch" .patch)
  if [ -n "${MUTANTS_ONLY:-}" ]; then
    selected=false
    IFS=, read -ra wanted <<<"$MUTANTS_ONLY"
    for w in "${wanted[@]}"; do [[ "$name" == *"$w"* ]] && selected=true; done
    $selected || continue
  fi
  description=$(head -1 "$patch" | sed 's/^Mutant: //')
  files=$(git apply --numstat "$patch" | awk '{print $3}')
  # The files as copied at the start, to put back after (not the working tree's: it may have
  # changed since, and a file edited mid-run would leak into the next mutants' builds).
  for f in $files; do mkdir -p "$work/pristine/$(dirname "$f")"; cp -p "$src/$f" "$work/pristine/$f"; done
  caught="SURVIVED"
  seconds=0
  if ! (cd "$src" && git apply "$patch" 2>"$work/$name.apply.log"); then
    caught="STALE PATCH"
  elif ! cmake --build "$build" -j "$(nproc)" >"$work/$name.build.log" 2>&1; then
    caught="DOES NOT BUILD"
  else
    start=$(date +%s%N)
    for layer in "${layers[@]}"; do
      rc=0
      run_layer "$layer" "$work/$name.$layer.log" || rc=$?
      if [ $rc -eq 99 ]; then
        caught="$layer COULD NOT RUN"
        break
      elif [ $rc -ne 0 ]; then
        caught=$layer
        break
      fi
    done
    tenths=$(( ($(date +%s%N) - start) / 100000000 ))
    seconds="$((tenths / 10)).$((tenths % 10))"
  fi
  for f in $files; do cp -p "$work/pristine/$f" "$src/$f"; done  # back to the pristine tree
  touch -c $(for f in $files; do echo "$src/$f"; done)
  case "$caught" in unit|proptest|crash|stress|powercut|engines) ;; *) failures=$((failures + 1)) ;; esac
  seconds_text=$seconds
  rows+=("$(printf '%-30s %-10s %8s  %s' "$name" "$caught" "$seconds_text" "$description")")
  echo "${rows[-1]}"
  json+=$(printf '%s{"mutant":"%s","description":"%s","caught_by":"%s","seconds":%s}' \
          "$([ "$json" = "[" ] || echo ,)" "$(json_string "$name")" "$(json_string "$description")" "$caught" "$seconds_text")
done
json+="]"
echo "$json" > "$report"
cmake --build "$build" -j "$(nproc)" >/dev/null  # leave the cache built from the pristine tree

echo
printf '%-30s %-10s %8s  %s\n' "mutant" "caught by" "seconds" "description"
for r in "${rows[@]}"; do echo "$r"; done
echo "report: $report"
if [ $failures -ne 0 ]; then
  echo "mutants: $failures not caught (or stale, or not building)"
  exit 1
fi
echo "mutants: all ${#rows[@]} caught"
