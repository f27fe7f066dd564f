# shellcheck shell=bash
# Shared by the CLI tests in this directory: sourced by each, after which "$dbdb" is the absolute
# path of the dbdb binary (the script's first argument) and "$tmp" a fresh directory removed on exit.
#
#   run CMD ARGS...      runs a command, echoing it; sets $rc, $out (stdout) and $err (stderr)
#   expect_rc N WHAT     fails unless $rc is N
#   expect_out TEXT WHAT fails unless $out is exactly TEXT (and shows the difference)
#   fail WHAT / pass WHAT / finish   (finish exits 1 if anything failed)
#
# Tests keep going after a failure, so one run reports every broken expectation.
set -uo pipefail

if [ $# -lt 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 PATH_TO_DBDB_BINARY [options]" >&2
  exit 2
fi
dbdb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
shift
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dbdb-cli-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }

run() {
  echo "+ $*"
  out=$("$@" 2>"$tmp/.stderr")
  rc=$?
  err=$(cat "$tmp/.stderr")
  [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  stdout: /' | head -40
  [ -z "$err" ] || printf '%s\n' "$err" | sed 's/^/  stderr: /' | head -20
  echo "  exit: $rc"
}

expect_rc() {
  if [ "$rc" -eq "$1" ]; then pass "$2 (exit $rc)"; else fail "$2: exit $rc, expected $1"; fi
}

expect_out() {
  if [ "$out" = "$1" ]; then
    pass "$2"
  else
    fail "$2: stdout differs from the expected (diff expected actual):"
    diff <(printf '%s\n' "$1") <(printf '%s\n' "$out") | head -20 | sed 's/^/  /'
  fi
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$(basename "$0"): $failures failure(s)"
    exit 1
  fi
  echo "$(basename "$0"): passed"
  exit 0
}

# The two-commit database of docs/FORMAT.md's worked example, at path $1.
make_worked_example() {
  rm -f "$1" "$1.lock" "$1.compacting.lock"
  "$dbdb" put --create "$1" apple red && "$dbdb" put "$1" banana yellow
}
