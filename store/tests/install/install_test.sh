#!/usr/bin/env bash
# Installs dbdb from BUILD_DIR into a temporary prefix, then builds a consumer two ways: with
# find_package(dbdb CONFIG) + dbdb::dbdb, and with pkg-config. Both must build and run.
set -euo pipefail
build_dir=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/lib/cmake/dbdb/dbdbConfig.cmake" || { echo "no dbdbConfig.cmake installed"; exit 1; }
cmake -S "$here" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer" "$work"
rm -f "$work/consumer.dbdb"
PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --exists dbdb
# shellcheck disable=SC2046
g++ -o "$work/consumer-pc" "$here/consumer.cc" $(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs --static dbdb)
"$work/consumer-pc" "$work"
echo "install: find_package(dbdb CONFIG) and pkg-config both work"
