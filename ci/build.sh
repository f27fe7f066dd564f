#!/usr/bin/env bash
# Configures and builds one build tree. Usage: ci/build.sh BUILD_DIR [extra cmake arguments]
# Used by test.sh, campaign.sh and mutants.sh so that every build is made the same way.
#   BUILD_TARGETS="a b"   build only these targets (and what they need); default: everything
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$1
shift
cmake -S . -B "$build_dir" -G Ninja "$@" >/dev/null
targets=()
for target in ${BUILD_TARGETS:-}; do targets+=(--target "$target"); done
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
