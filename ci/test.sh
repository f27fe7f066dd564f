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
#
# The default tier must finish within 20 minutes on CI's 2 cores, builds included; compiling is
# most of it. So the normal build keeps line tables only (-g1: stack traces, a third less compile
# time than -g), the sanitizer trees build with clang (gcc, the normal build's compiler, took 943
# compile-seconds for the ASan tree and 258 for the TSan tree; clang 14 takes 532 and 144), at -O1
# with line tables, and leave out the benchmarks (the test executables' own code at -O0:
# dbdb_test_code in CMakeLists.txt),
# the ASan run gives each property 100 cases (the normal build's 300 are where the cases count)
# and each crash-exploration property 30, and the TSan tree builds and runs only the tests
# labelled `threads`: the store's tests, the simulated filesystem's, and the crash explorer on two
# threads; it leaves out the SQLite, LevelDB and RocksDB adapters (DBDB_FOREIGN_ENGINES=OFF), whose
# libraries' threads are not instrumented.
set -euo pipefail
cd "$(dirname "$0")/.."
export DBDB_TEST_TIER=${DBDB_TEST_TIER:-quick}
build_dir=${BUILD_DIR:-build}
start=$(date +%s)

bash ci/deps.sh

echo "== build ($build_dir, tier $DBDB_TEST_TIER)"
bash ci/build.sh "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DDBDB_TEST_TIER="$DBDB_TEST_TIER"
echo "== tests"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 1200

# The sanitizer trees: -O1 (the sanitizers' own advice: tests run two to three times faster than at
# -O0, with the same reports) and line tables only, assertions on (no NDEBUG); clang.
sanitizer_build_type=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1")
# A tree must be the one asked for: a sanitizer tree that built without its sanitizer, or with
# another compiler, would pass. Its compile commands must hold the flag.
expect_sanitized() {
  grep -q -- "-fsanitize=$2" "$1/compile_commands.json" || { echo "FAIL: $1 compiles without -fsanitize=$2" >&2; exit 1; }
  grep -qx 'CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' "$1/CMakeCache.txt" || { echo "FAIL: $1 is not built with clang++" >&2; exit 1; }
}
if [ "${DBDB_SKIP_SANITIZERS:-0}" != "1" ]; then
  echo "== fuzz ($build_dir-fuzz: libFuzzer + ASan + UBSan)"
  FUZZ_BUILD_DIR="$build_dir-fuzz" bash ci/fuzz.sh

  echo "== build ($build_dir-asan: clang, ASan + UBSan)"
  CC=clang CXX=clang++ \
    bash ci/build.sh "$build_dir-asan" "${sanitizer_build_type[@]}" -DDBDB_SANITIZE=address -DDBDB_BUILD_BENCH=OFF
  expect_sanitized "$build_dir-asan" address
  echo "== tests under ASan + UBSan"
  # The crash-exploration properties run apart, on 30 cases each: a case checks hundreds of crash
  # states, and at 100 cases the three took 170 s of the run's 467 test-seconds.
  asan_env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
  env "${asan_env[@]}" RC_PARAMS="${RC_PARAMS:-max_success=100}" \
    ctest --test-dir "$build_dir-asan" --output-on-failure -j "$(nproc)" --timeout 1200 -LE no-sanitizer \
      -E '^CrashExploration[.]'
  env "${asan_env[@]}" RC_PARAMS="${RC_PARAMS:-max_success=30}" \
    ctest --test-dir "$build_dir-asan" --output-on-failure -j "$(nproc)" --timeout 1200 -LE no-sanitizer \
      -R '^CrashExploration[.]' --no-tests=error

  echo "== build ($build_dir-tsan: clang, TSan)"
  # TSan is here for the threads: the tests labelled `threads` and the targets they run.
  CC=clang CXX=clang++ BUILD_TARGETS=threads_tests \
    bash ci/build.sh "$build_dir-tsan" "${sanitizer_build_type[@]}" -DDBDB_SANITIZE=thread -DDBDB_BUILD_BENCH=OFF \
      -DDBDB_FOREIGN_ENGINES=OFF
  expect_sanitized "$build_dir-tsan" thread
  echo "== tests under TSan (label threads)"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir "$build_dir-tsan" --output-on-failure -j "$(nproc)" --timeout 1200 -L threads -LE no-sanitizer
fi

# The mutation suite rebuilds the store once per planted bug and runs up to four harness layers
# on each (about 10 minutes on 2 cores); with the three builds above that would take the default
# tier past its 20-minute budget, so the long tier runs it.
if [ "$DBDB_TEST_TIER" = "long" ]; then
  echo "== mutation suite"
  MUTANTS_DIR="$build_dir-mutants" bash ci/mutants.sh
fi

echo "== ci/test.sh passed in $(( $(date +%s) - start )) s"
