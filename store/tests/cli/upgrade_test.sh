#!/usr/bin/env bash
# A version-1 file (the fuzz corpus keeps some, written by the version-1 store): every reading
# command works; every writing command is refused with exit 6 and a message that says to run
# `dbdb upgrade`, leaving the file as it was; `dbdb upgrade` converts it to format 5 with the same
# contents; after that, writes work and `dbdb check` passes; a second upgrade changes nothing. A
# damaged version-1 file is refused by `dbdb upgrade` (exit 3) and left as it was. A version-2 file
# (a tree of a deep seed), a version-3 file (before checkpoints) and a version-4 file (before close
# folds) are read and upgraded the same way.
#
#   upgrade_test.sh PATH_TO_DBDB
source "$(dirname "$0")/lib.sh"
corpus=$(cd "$(dirname "$0")/../../../proptests/fuzz/corpus/raw" && pwd)
cd "$tmp" || exit 2

# expect_header FILE FORMAT GENERATION WHAT: `dbdb dump FILE` starts with that header line.
expect_header() {
  run "$dbdb" dump "$1"
  [[ "$(head -1 <<<"$out")" == "header  offset 0 length 512: dbdb format $2, generation $3" ]] &&
    pass "$4" || fail "$4: $(head -1 <<<"$out")"
}

cp "$corpus/v1-seed-several-commits" old.dbdb
expect_header old.dbdb 1 0 "the input is a format-1 file"
before_scan=$("$dbdb" scan old.dbdb)
[ -n "$before_scan" ] && pass "scan reads the format-1 file" || fail "scan of the format-1 file is empty"
sum=$(md5sum <old.dbdb)
for cmd in "put old.dbdb k v" "del old.dbdb apple" "incr old.dbdb n" "compact old.dbdb"; do
  read -ra words <<<"$cmd"
  run "$dbdb" "${words[@]}"
  expect_rc 6 "dbdb $cmd on a format-1 file is refused"
  grep -q "dbdb upgrade" <<<"$err" && pass "dbdb $cmd says to upgrade" || fail "dbdb $cmd: message: $err"
done
[ "$(md5sum <old.dbdb)" = "$sum" ] && pass "the refused writes left the file as it was" || fail "the file changed"
run "$dbdb" upgrade old.dbdb
expect_rc 0 "dbdb upgrade"
expect_header old.dbdb 5 1 "the file is format 5 now"
run "$dbdb" scan old.dbdb
expect_out "$before_scan" "the upgraded file holds the same keys and values"
run "$dbdb" put old.dbdb k v
expect_rc 0 "put after the upgrade"
run "$dbdb" check old.dbdb
expect_rc 0 "check after the upgrade"
run "$dbdb" upgrade old.dbdb
expect_rc 0 "a second upgrade"
run "$dbdb" stat old.dbdb
grep -q '^generation      1$' <<<"$out" && pass "a second upgrade changes nothing" || fail "second upgrade: $out"

# A damaged format-1 file: a record no commit reaches is cut in the middle of the file (the
# first leaf's last byte flipped); reads do not notice, check() does, and upgrade refuses.
cp "$corpus/v1-seed-several-commits" damaged.dbdb
printf '\x55' | dd of=damaged.dbdb bs=1 seek=530 conv=notrunc status=none
run "$dbdb" check damaged.dbdb
if [ "$rc" = 3 ]; then
  sum=$(md5sum <damaged.dbdb)
  run "$dbdb" upgrade damaged.dbdb
  expect_rc 3 "upgrade of a format-1 file that does not verify is Corruption"
  [ "$(md5sum <damaged.dbdb)" = "$sum" ] && pass "and leaves it as it was" || fail "the damaged file changed"
else
  fail "the damaged copy unexpectedly verifies (exit $rc): the test needs another byte"
fi

# A version-2 file (nodes without slot arrays): read, refused for writing, upgraded the same way.
cp "$corpus/v2-seed-deep-tree" two.dbdb
expect_header two.dbdb 2 0 "the second input is a format-2 file"
before_scan=$("$dbdb" scan two.dbdb)
[ "$(wc -l <<<"$before_scan")" = 54 ] && pass "scan reads the format-2 file's 54 keys" || fail "scan of the format-2 file: $(wc -l <<<"$before_scan") lines"
run "$dbdb" put two.dbdb k v
expect_rc 6 "dbdb put on a format-2 file is refused"
run "$dbdb" upgrade two.dbdb
expect_rc 0 "dbdb upgrade of the format-2 file"
expect_header two.dbdb 5 1 "the format-2 file is format 5 now"
run "$dbdb" scan two.dbdb
expect_out "$before_scan" "the upgraded format-2 file holds the same keys and values"
run "$dbdb" check two.dbdb
expect_rc 0 "check after upgrading the format-2 file"

# A version-3 file (slotted nodes, no checkpoints), with an unfolded log: the same.
cp "$corpus/v3-seed-folds-and-batches" three.dbdb
expect_header three.dbdb 3 0 "the third input is a format-3 file"
before_scan=$("$dbdb" scan three.dbdb)
run "$dbdb" put three.dbdb k v
expect_rc 6 "dbdb put on a format-3 file is refused"
run "$dbdb" upgrade three.dbdb
expect_rc 0 "dbdb upgrade of the format-3 file"
expect_header three.dbdb 5 1 "the format-3 file is format 5 now"
run "$dbdb" scan three.dbdb
expect_out "$before_scan" "the upgraded format-3 file holds the same keys and values"
run "$dbdb" put three.dbdb k v
expect_rc 0 "dbdb put on the upgraded format-3 file"
run "$dbdb" check three.dbdb
expect_rc 0 "check after upgrading the format-3 file"

# A version-4 file (no close folds), with a checkpoint and a batch after it: the same.
cp "$corpus/v4-seed-checkpoint" four.dbdb
expect_header four.dbdb 4 0 "the fourth input is a format-4 file"
before_scan=$("$dbdb" scan four.dbdb)
[ -n "$before_scan" ] && pass "scan reads the format-4 file" || fail "scan of the format-4 file is empty"
run "$dbdb" put four.dbdb k v
expect_rc 6 "dbdb put on a format-4 file is refused"
grep -q "dbdb upgrade" <<<"$err" && pass "and says to upgrade" || fail "dbdb put on a format-4 file: message: $err"
run "$dbdb" upgrade four.dbdb
expect_rc 0 "dbdb upgrade of the format-4 file"
expect_header four.dbdb 5 1 "the format-4 file is format 5 now"
run "$dbdb" scan four.dbdb
expect_out "$before_scan" "the upgraded format-4 file holds the same keys and values"
run "$dbdb" put four.dbdb k v
expect_rc 0 "dbdb put on the upgraded format-4 file"
run "$dbdb" check four.dbdb
expect_rc 0 "check after upgrading the format-4 file"
finish
