#!/usr/bin/env bash
# A commit that recovery rejected stays rejected. The two-commit file of docs/FORMAT.md's worked
# example with the first commit's seal zeroed (24 bytes at the offset `dbdb dump` shows) and
# garbage appended: the second commit's body, which covers that seal, no longer verifies, so the
# database is at txn 1 -- apple, and no banana. That must hold for every reader, for `dbdb check`,
# and after any first writer (an empty shell session, put, del, incr, compact) has opened it:
# settling txn 1 by writing its seal again must not bring txn 2 back to life (a resurrected commit
# that readers had already been told does not exist).
#
# Two variants. "unsealed": the second commit's own seal is cut off as well, so nothing in the
# file claims the second commit was ever durable: the crash state of the defect (a crash kept
# commit 2's nodes and record, lost commit 1's unsynced seal; commit 2 was never synced, so it has
# no seal). Everything above must hold. "seal-zeroed": commit 2's durable seal remains, which
# proves commit 2 was synced, so its broken body is damage, not a torn write: every command must
# report Corruption (exit 3), the same before and after any writer tried, and never show banana.
#
#   unacknowledged_commit_test.sh PATH_TO_DBDB
source "$(dirname "$0")/lib.sh"
cd "$tmp" || exit 2

# make_damaged FILE VARIANT: non-zero if the file cannot be made.
make_damaged() {
  make_worked_example "$1" || return 1
  local seals
  seals=$("$dbdb" dump "$1" | awk '$1 == "seal" { print $3 }' | tr '\n' ' ')
  [ "$seals" = "686 854 " ] || { echo "the seals are at '$seals', not 686 and 854"; return 1; }
  dd if=/dev/zero of="$1" bs=1 seek=686 count=24 conv=notrunc status=none || return 1
  [ "$2" = unsealed ] && truncate -s 854 "$1"
  printf 'garbage after the last commit' >>"$1"
}

# expect_db FILE KEYS WHEN: banana absent, apple red, check passes with KEYS keys.
expect_db() {
  run "$dbdb" get "$1" banana
  expect_rc 1 "$3: banana is not found"
  expect_out "" "$3: get banana prints nothing"
  run "$dbdb" get "$1" apple
  expect_out red "$3: apple is red"
  run "$dbdb" check "$1"
  expect_rc 0 "$3: check passes"
  grep -q ", $2 keys," <<<"$out" && pass "$3: check counts $2 keys" || fail "$3: check does not count $2 keys"
}

echo "== seal-zeroed: every observer reports Corruption, before and after a writer tried"
rm -f f.dbdb f.dbdb.lock
make_damaged f.dbdb seal-zeroed || fail "seal-zeroed: making the damaged file"
for round in before after; do
  for command in "get f.dbdb banana" "get f.dbdb apple" "check f.dbdb" "scan f.dbdb"; do
    read -ra words <<<"$command"
    run "$dbdb" "${words[@]}"
    expect_rc 3 "seal-zeroed, $round a writer: dbdb $command is Corruption"
    [[ "$out" != *yellow* ]] || fail "seal-zeroed, $round a writer: dbdb $command shows banana"
  done
  run "$dbdb" shell f.dbdb </dev/null
  run "$dbdb" put f.dbdb cherry red
  expect_rc 3 "seal-zeroed: a writer refuses the damaged file"
done

for variant in unsealed; do
  echo "== $variant: readers see txn 1"
  rm -f f.dbdb f.dbdb.lock
  make_damaged f.dbdb "$variant" || fail "$variant: making the damaged file"
  expect_db f.dbdb 1 "$variant, before any writer"
  run "$dbdb" scan f.dbdb
  expect_out $'apple\tred' "$variant, before any writer: scan shows apple only"

  echo "== $variant: a read-write open (an empty dbdb shell session), then a put"
  run "$dbdb" shell f.dbdb </dev/null
  expect_rc 0 "$variant: an empty shell session"
  expect_db f.dbdb 1 "$variant, after the shell"
  run "$dbdb" put f.dbdb cherry red
  expect_rc 0 "$variant: put cherry"
  expect_db f.dbdb 2 "$variant, after the shell and a put"
  run "$dbdb" get f.dbdb cherry
  expect_out red "$variant, after the shell and a put: cherry is there"

  echo "== $variant: each write command as the first writer"
  # VERB ARGS... then the number of keys the database holds after it.
  for spec in "put cherry red 2" "del nothing 1" "incr n 2" "compact 1"; do
    read -ra words <<<"$spec"
    keys=${words[-1]}
    unset 'words[-1]'
    rm -f g.dbdb g.dbdb.lock
    make_damaged g.dbdb "$variant" || fail "$variant: making the damaged file"
    run "$dbdb" "${words[0]}" g.dbdb "${words[@]:1}"
    expect_rc 0 "$variant: dbdb ${words[*]} as the first writer"
    expect_db g.dbdb "$keys" "$variant, after dbdb ${words[*]}"
  done
done

finish
