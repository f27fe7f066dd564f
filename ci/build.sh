#!/usr/bin/env bash
# Configures and builds one build tree. Usage: ci/build.sh BUILD_DIR [extra cmake arguments]
# Used by test.sh, fuzz.sh and campaign.sh so that every build is made the same way.
#   BUILD_TARGETS="a b"   build only these targets (and what they need); default: everything
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$1
shift
# CXX, when set, names the compiler. CMake reads it only when it creates a cache (on an existing
# one it is ignored, and naming another compiler with -DCMAKE_CXX_COMPILER makes CMake delete the
# cache and drop every -D given with it: a sanitizer tree built that way was silently
# unsanitized), so a tree configured with another compiler is configured afresh, with the
# arguments given here. The paths are compared as found, not resolved: clang and clang++, or two
# ccache wrappers, resolve to one file. Without CXX a tree keeps the compiler it has.
if [ -n "${CXX:-}" ] && [ -f "$build_dir/CMakeCache.txt" ]; then
  wanted=$(command -v "$CXX") || { echo "ci/build.sh: no compiler $CXX" >&2; exit 1; }
  cached=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
  if [ "$cached" != "$wanted" ]; then
    echo "$build_dir: configured with $cached, now $wanted: configuring afresh"
    rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
  fi
fi
cmake -S . -B "$build_dir" -G Ninja "$@" >/dev/null
targets=()
for target in ${BUILD_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
