#!/usr/bin/env bash
# `dbdb dump`: the worked example of docs/FORMAT.md byte for byte; torn, garbage and unsealed tails;
# the record chain of a larger database; and bounded memory: a database followed by a 3 GiB sparse
# tail, or by a record header claiming a 1 GiB record, dumps under a 1 GiB address-space limit.
#
#   dump_test.sh PATH_TO_DBDB
source "$(dirname "$0")/lib.sh"
docs=$(cd "$(dirname "$0")/../../../docs" && pwd)
cd "$tmp" || exit 2

# dump under a 1 GiB address-space limit (ulimit -v; hence no sanitizer build runs this test).
dump_limited() { (ulimit -v 1048576 && exec "$dbdb" dump "$@"); }
tail_line() { echo "tail    offset $1 length $2: not covered by a valid commit (ignored by readers, truncated by the next writer)"; }

echo "== the worked example of docs/FORMAT.md"
make_worked_example ex.dbdb || fail "creating the worked example"
size=$(stat -c %s ex.dbdb)
[ "$size" = 878 ] && pass "the worked example is 878 bytes" || fail "the worked example is $size bytes, not 878"
listing=$(awk '/`dbdb dump --values ex.dbdb` shows:/ { found = 1; next }
               found && /^```/ { if (inside) exit; inside = 1; next }
               inside { print }' "$docs/FORMAT.md")
[ "$(wc -l <<<"$listing")" = 11 ] || fail "the dump listing of docs/FORMAT.md not found"
run "$dbdb" dump --values ex.dbdb
expect_rc 0 "dump --values of the worked example"
expect_out "$listing" "dump --values prints exactly the listing of docs/FORMAT.md"
base=$out  # what the tails below are compared with (whether or not the docs are up to date)
run "$dbdb" dump ex.dbdb
expect_rc 0 "dump without --values"
expect_out "$(sed 's/= red$/= 3 bytes/; s/= yellow$/= 6 bytes/' <<<"$base")" "dump without --values prints value sizes"
run "$dbdb" stat ex.dbdb
grep -q '^live_bytes      714$' <<<"$out" && grep -q '^garbage_ratio   0.187$' <<<"$out" &&
  grep -q '^unfolded_bytes  168$' <<<"$out" && grep -q '^keys            2$' <<<"$out" &&
  pass "stat: 2 keys, live_bytes 714 of 878, 168 unfolded, garbage ratio 0.187, as docs/FORMAT.md says" || fail "stat disagrees with docs/FORMAT.md"

# The hex lines of the worked example ("OFFSET: BYTES  what they are"; "..." elides zeros), each
# compared with the file's bytes; from the first record (512) on they must follow each other to
# the end of the file, so every byte of it is documented; the header bytes no line shows are zeros.
hex_lines=$(awk '/^## Worked example/ { section = 1; next }
                 section && /^## / { exit }
                 section && /^[0-9a-f][0-9a-f]*: / { off = substr($0, 1, 8); rest = substr($0, 11)
                   cut = index(rest, "  "); if (cut) rest = substr(rest, 1, cut - 1)
                   gsub(/\.\.\.| /, "", rest); print off, rest }' "$docs/FORMAT.md")
bytes_at() { od -An -tx1 -v -j "$2" -N "$3" "$1" | tr -d ' \n'; }
lines=0 header_lines=0 mismatches=0 next_offset=512
while read -r off hex; do
  [ -n "$off" ] || continue
  offset=$((16#$off)) length=$((${#hex} / 2))
  lines=$((lines + 1))
  [ "$offset" -lt 512 ] && header_lines=$((header_lines + 1))
  actual=$(bytes_at ex.dbdb "$offset" "$length")
  [ "$actual" = "$hex" ] || { fail "docs/FORMAT.md's line at $off shows $hex; the file has $actual"; mismatches=$((mismatches + 1)); }
  if [ "$offset" -ge 512 ]; then
    [ "$offset" = "$next_offset" ] || fail "docs/FORMAT.md's line at $off does not follow the line before (which ended at $next_offset)"
    next_offset=$((offset + length))
  fi
done <<<"$hex_lines"
[ "$lines" -ge 40 ] && [ "$header_lines" = 3 ] && [ "$mismatches" = 0 ] && pass "the $lines hex lines of docs/FORMAT.md's worked example match the file" ||
  fail "the hex lines of docs/FORMAT.md's worked example: $lines found ($header_lines of the header), $mismatches differ"
[ "$next_offset" = "$size" ] && pass "the hex lines cover every byte from 512 to the end ($size)" ||
  fail "the hex lines end at $next_offset, the file at $size"
zeros=$( (bytes_at ex.dbdb 24 24; bytes_at ex.dbdb 64 448) | tr -d 0)
[ -z "$zeros" ] && pass "the header bytes no hex line shows (24 to 48, 64 to 512) are zeros" || fail "header bytes the docs elide are not zeros"

echo "== tails"
cp ex.dbdb garbage.dbdb && printf 'garbage after the last commit' >>garbage.dbdb
run "$dbdb" dump --values garbage.dbdb
expect_rc 0 "dump with a garbage tail"
expect_out "$base"$'\n'"$(tail_line 878 29)" "a garbage tail is reported as the tail"

# A third transaction (its batch at 878, then its commit and seal), cut at three places.
cp ex.dbdb three.dbdb && "$dbdb" put three.dbdb cherry red || fail "third commit"
batch3=$("$dbdb" dump three.dbdb | awk '$1 == "batch" && $3 == 878 { sub(":", "", $5); print $5 }')
commit3=$((878 + batch3))
[ "$batch3" -gt 0 ] 2>/dev/null && pass "third transaction: batch at 878 (length $batch3), commit at $commit3" || fail "no batch at 878"
cp three.dbdb torn.dbdb && truncate -s $((commit3 + 50)) torn.dbdb  # a torn commit: its batch is not printed
run "$dbdb" dump --values torn.dbdb
expect_rc 0 "dump with a torn commit"
expect_out "$base"$'\n'"$(tail_line 878 $((batch3 + 50)))" "a torn transaction (verified batch, torn commit) is all tail"
cp three.dbdb unsealed.dbdb && truncate -s $((commit3 + 112)) unsealed.dbdb  # the commit, not its seal
run "$dbdb" dump unsealed.dbdb
expect_rc 0 "dump with an unsealed newest commit"
last=$(tail -n 1 <<<"$out")
[[ "$last" == "commit offset $commit3 length 112: txn 3, prev 742, body [854, $commit3)"* ]] && pass "an unsealed commit is printed, with no tail" || fail "unsealed commit: unexpected dump"

cp ex.dbdb past-end.dbdb && printf '\xff\xff\xff\xff\x01\x00\x00\x00some bytes' >>past-end.dbdb
run dump_limited --values past-end.dbdb
expect_rc 0 "dump with a record header claiming 4 GiB, past the end"
expect_out "$base"$'\n'"$(tail_line 878 18)" "a record running past the end is the tail"

cp ex.dbdb claims-1g.dbdb && printf '\x00\x00\x00\x40\x01\x00\x00\x00' >>claims-1g.dbdb && truncate -s +1100M claims-1g.dbdb
run dump_limited --values claims-1g.dbdb
expect_rc 0 "dump (ulimit -v 1 GiB) with a record header claiming 1 GiB, inside the file"
expect_out "$base"$'\n'"$(tail_line 878 $((1100 * 1024 * 1024 + 8)))" "a plausible 1 GiB record that does not verify is the tail"

cp ex.dbdb sparse.dbdb && truncate -s +3G sparse.dbdb
run dump_limited --values sparse.dbdb
expect_rc 0 "dump (ulimit -v 1 GiB) of a database followed by a 3 GiB sparse tail"
expect_out "$base"$'\n'"$(tail_line 878 3221225472)" "a 3 GiB sparse tail is reported as the tail"

echo "== not a database"
head -c 100 ex.dbdb >short.dbdb
run "$dbdb" dump short.dbdb
expect_rc 3 "dump of a 100-byte file"
[ "$err" = "dbdb: Corruption: short.dbdb: file header is 100 bytes, expected 512" ] && pass "it says why" || fail "message: $err"
printf 'hello\n' >text.dbdb && truncate -s 600 text.dbdb
run "$dbdb" dump text.dbdb
expect_rc 3 "dump of a text file"
[ "$err" = "dbdb: Corruption: text.dbdb: not a dbdb file (bad magic number)" ] && pass "it says why" || fail "message: $err"
run "$dbdb" dump missing.dbdb
expect_rc 1 "dump of a missing file"

echo "== a larger database: the record chain"
# Every record starts where the previous one ended and the last ends at the end of the file; every
# seal names the commit right before it; the commits are those stat counts.

check_chain() {
  local file=$1 dump
  dump=$("$dbdb" dump "$file") || { fail "dump $file"; return; }
  awk -v size="$(stat -c %s "$file")" '
    /^(header|leaf|internal|batch|checkpoint|commit|seal|tail) / {
      off = $3; len = $5; sub(":", "", len)
      if (off != next_off) { print "record at " off " does not follow the previous one (" next_off ")"; bad = 1 }
      next_off = off + len
      if ($1 == "seal" && $10 != last_commit) { print "seal at " off " names " $10 ", not " last_commit; bad = 1 }
      if ($1 == "commit") { last_commit = off; commits++ }
      if ($1 == "internal") internals++
    }
    END {
      if (next_off != size) { print "records end at " next_off ", the file at " size; bad = 1 }
      print commits " commits, " internals + 0 " internal nodes"
      exit bad
    }' <<<"$dump" >chain.out && pass "$file: record chain consistent ($(cat chain.out))" || fail "$file: $(cat chain.out)"
  local commits
  commits=$(awk '$1 == "commits_in_file" { print $2 }' <<<"$("$dbdb" stat "$file")")
  [ "$(grep -c '^commit ' <<<"$dump")" = "$commits" ] && pass "$file: $commits commits, as stat says" ||
    fail "$file: dump shows $(grep -c '^commit ' <<<"$dump") commits, stat $commits"
}
{ echo begin; for i in $(seq 1 3000); do echo "put key$i value-$i"; done; echo commit; } | "$dbdb" shell --create big.dbdb
for i in 1 2 3; do "$dbdb" put big.dbdb "more$i" "v$i"; done
"$dbdb" del big.dbdb key17
check_chain big.dbdb
"$dbdb" compact big.dbdb >/dev/null || fail "compact"
"$dbdb" put big.dbdb after compaction || fail "put after compaction"
check_chain big.dbdb
run "$dbdb" dump --values big.dbdb
expect_rc 0 "dump --values of the larger database"
grep -q '^    key2999 = value-2999$' <<<"$out" && grep -q '^internal offset ' <<<"$out" &&
  grep -q '^    (first) -> ' <<<"$out" && pass "values and internal nodes printed" || fail "values or internal nodes missing"

finish
