#!/usr/bin/env bash
# Installs every Debian package dbdb needs, idempotently: `apt-get update` once, and only when a
# package is missing; then only the missing ones. Safe to run again and again.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config                  # the build
  libxxhash-dev                                     # checksums (the store)
  libabsl-dev                                       # B-trees (the store's log overlay)
  libgtest-dev libgmock-dev librapidcheck-dev       # unit and property tests
  libfiu-dev fiu-utils                              # fault injection
  libcli11-dev nlohmann-json3-dev libfmt-dev        # command lines, reports
  libbenchmark-dev                                  # microbenchmarks
  clang libclang-rt-14-dev                          # the libFuzzer targets (ci/fuzz.sh), the sanitizer trees
  liblmdb-dev libleveldb-dev librocksdb-dev libsqlite3-dev  # the peers of dbdb-bench
  jq chromium fonts-dejavu-core                     # campaign merges and the HTML report's browser test
  fuse3 libfuse3-dev sqlite3                        # dbdb-powerfs (FUSE) and the unmodified-programs recipe
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${#missing[@]} packages"
