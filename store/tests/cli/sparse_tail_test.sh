#!/usr/bin/env bash
# A database followed by a 2 GiB sparse tail (`truncate -s +2G`: what a crash can leave after an
# extension, or a careless copy): a reader opens it and finds the newest commit without changing
# the file, and the first writer truncates the tail (I6). Each command runs under `timeout 120`
# so that a hang fails; nothing here measures time.
#
#   sparse_tail_test.sh PATH_TO_DBDB
source "$(dirname "$0")/lib.sh"
cd "$tmp" || exit 2

make_worked_example f.dbdb || fail "creating the worked example"
truncate -s +2G f.dbdb
size=$(stat -c %s f.dbdb)

run timeout 120 "$dbdb" get f.dbdb banana
[ "$rc" -eq 124 ] && fail "dbdb get hung (killed by timeout 120)"
expect_rc 0 "dbdb get banana with a 2 GiB sparse tail"
expect_out yellow "it prints the newest commit's value"
[ "$(stat -c %s f.dbdb)" = "$size" ] && pass "the reader left the file as it was ($size bytes)" ||
  fail "the reader changed the file's size to $(stat -c %s f.dbdb)"

run timeout 120 "$dbdb" put f.dbdb cherry red
[ "$rc" -eq 124 ] && fail "dbdb put hung (killed by timeout 120)"
expect_rc 0 "dbdb put with a 2 GiB sparse tail"
size=$(stat -c %s f.dbdb)
[ "$size" -lt 4096 ] && pass "the writer truncated the tail (the file is $size bytes)" ||
  fail "the writer left a $size-byte file"
run timeout 120 "$dbdb" check f.dbdb
expect_rc 0 "check after the put"
grep -q ", 3 keys, .* 0 tail bytes$" <<<"$out" && pass "3 keys, no tail" || fail "check: $out"

finish
