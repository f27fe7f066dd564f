#!/usr/bin/env bash
# `dbdb shell` end to end: every command, in and out of a transaction, every usage error, escapes,
# comments and the exit status (the last command's), against the exact output.
#   shell_test.sh PATH_TO_DBDB
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

cd "$tmp"
cp "$here/shell_input.txt" input.txt
run bash -c "\"$dbdb\" shell --create db < input.txt"
expect_rc 0 "a whole session (its last command, a put inside a transaction, succeeded)"
expect_out "$(cat "$here/shell_expected_out.txt")" "every command's output"
if [ "$err" = "$(cat "$here/shell_expected_err.txt")" ]; then
  pass "every usage error, and the open transaction aborted at the end"
else
  fail "stderr differs (diff expected actual):"
  diff "$here/shell_expected_err.txt" <(printf '%s\n' "$err") | head -20 | sed 's/^/  /'
fi

run bash -c "printf 'get zz\n' | \"$dbdb\" shell db"
expect_rc 1 "a session ending in a missing key exits 1"
expect_out "(not found)" "and says so"
run bash -c "printf 'put k v\nbogus\n' | \"$dbdb\" shell db"
expect_rc 2 "a session ending in an unknown command exits 2"
run bash -c "printf 'begin\nput a 2\n' | \"$dbdb\" shell db"
expect_rc 0 "a transaction left open at the end of input"
run bash -c "printf 'get a\n' | \"$dbdb\" shell db"
expect_out "(not found)" "was aborted, not committed"
finish
