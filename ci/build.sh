#!/usr/bin/env bash
# Configures and builds one build tree. Usage: ci/build.sh BUILD_DIR [extra cmake arguments]
# Used by test.sh, campaign.sh and mutants.sh so that every build is made the same way.
#   BUILD_TARGETS="a b"   build only these targets (and what they need); default: everything
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$1
shift
# The compiler is CXX (default c++). A tree configured before with another one is configured
# afresh: CMake reads CXX only when it creates a cache, and naming another compiler to an existing
# cache makes CMake delete it and drop every -D given with it (a sanitizer tree would silently
# build unsanitized).
if [ -f "$build_dir/CMakeCache.txt" ]; then
  cached=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
  wanted=$(command -v "${CXX:-c++}" || true)
  if [ -z "$wanted" ] || [ "$(readlink -f "$cached")" != "$(readlink -f "$wanted")" ]; then
    echo "$build_dir: configured with $cached, now ${CXX:-c++}: configuring afresh"
    rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
  fi
fi
cmake -S . -B "$build_dir" -G Ninja "$@" >/dev/null
targets=()
for target in ${BUILD_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
