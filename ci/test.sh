#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test, first in a normal
# build, then the libFuzzer targets (ci/fuzz.sh, clang), then under ASan+UBSan, then the threaded
# tests under TSan. Non-zero on any failure.
#
#   DBDB_TEST_TIER=quick|long   test budgets (default quick; long runs ten times more, a longer
#                               stress run, 10 minutes per fuzz target, and the mutation suite
#                               ci/mutants.sh)
#   BUILD_DIR=DIR               the main build tree (default build); fuzz and sanitizer trees
#                               beside it (DIR-fuzz, DIR-asan, DIR-tsan)
#   DBDB_FUZZ_SEED=S            the fuzzers' seed (ci/fuzz.sh; random and printed if unset)
#   DBDB_SKIP_SANITIZERS=1      only the normal build (for a fast local loop; CI never sets it)
set -euo pipefail
cd "$(dirname "$0")/.."
export DBDB_TEST_TIER=${DBDB_TEST_TIER:-quick}
build_dir=${BUILD_DIR:-build}
start=$(date +%s)

bash ci/deps.sh

echo "== build ($build_dir, tier $DBDB_TEST_TIER)"
bash ci/build.sh "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDBDB_TEST_TIER="$DBDB_TEST_TIER"
echo "== tests"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 1200

if [ "${DBDB_SKIP_SANITIZERS:-0}" != "1" ]; then
  echo "== fuzz ($build_dir-fuzz: libFuzzer + ASan + UBSan)"
  FUZZ_BUILD_DIR="$build_dir-fuzz" bash ci/fuzz.sh

  echo "== build ($build_dir-asan: ASan + UBSan)"
  bash ci/build.sh "$build_dir-asan" -DCMAKE_BUILD_TYPE=Debug -DDBDB_SANITIZE=address
  echo "== tests under ASan + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$build_dir-asan" --output-on-failure -j "$(nproc)" --timeout 1200 -LE no-sanitizer

  echo "== build ($build_dir-tsan: TSan)"
  bash ci/build.sh "$build_dir-tsan" -DCMAKE_BUILD_TYPE=Debug -DDBDB_SANITIZE=thread
  echo "== tests under TSan"
  # TSan is here for the threads; the properties' case counts are the normal build's job, and
  # under TSan's 5-15x slowdown the crash exploration alone would take most of the budget.
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 RC_PARAMS="${RC_PARAMS:-max_success=60}" \
    ctest --test-dir "$build_dir-tsan" --output-on-failure -j "$(nproc)" --timeout 1200 -LE no-sanitizer
fi

# The mutation suite rebuilds the store once per planted bug and runs up to four harness layers
# on each (about 10 minutes on 2 cores); with the three builds above that would take the default
# tier past its 20-minute budget, so the long tier runs it.
if [ "$DBDB_TEST_TIER" = "long" ]; then
  echo "== mutation suite"
  MUTANTS_DIR="$build_dir-mutants" bash ci/mutants.sh
fi

echo "== ci/test.sh passed in $(( $(date +%s) - start )) s"
