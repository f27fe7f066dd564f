#!/usr/bin/env bash
# Runs dbdb-crash and checks how it ended: the exit status EXPECTED (0: the engine kept its promise,
# 1: violations) and, for 1, that the report names INVARIANT (e.g. I2) among its violations. Used
# to show that the explorer sees what it should: a non-durable configuration held to the durable
# promise must lose acknowledged commits (I2), and a known finding must stay found.
#
#   engine_expect.sh DBDB_CRASH REPORT EXPECTED INVARIANT -- dbdb-crash arguments...
set -uo pipefail
crash=$1 report=$2 expected=$3 invariant=$4
shift 4
[ "$1" = "--" ] && shift
"$crash" --report "$report" "$@"
rc=$?
if [ "$rc" -ne "$expected" ]; then
  echo "engine_expect: dbdb-crash exited $rc, expected $expected" >&2
  exit 1
fi
if [ "$expected" -eq 1 ] && ! jq -e --arg i "$invariant" '.violations_by_invariant[$i] > 0' "$report" > /dev/null; then
  echo "engine_expect: no violation of $invariant in $report" >&2
  exit 1
fi
echo "engine_expect: as expected (exit $rc${invariant:+, $invariant})"
