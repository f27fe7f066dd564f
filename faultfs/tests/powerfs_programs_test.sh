#!/usr/bin/env bash
# Unmodified programs under power cuts (docs/POWERFS.md, "Recipe"): the `dbdb` command-line tool and
# `sqlite3` (WAL, synchronous=FULL), several processes of each writing to one database each on a
# dbdb-powerfs mount, cut again and again. Every write a program acknowledged (it exited 0) is
# logged OUTSIDE the mount; after each cut every logged write of every round so far must be there,
# and both databases must pass their own checks (`dbdb check`, PRAGMA integrity_check).
#
#   powerfs_programs_test.sh BIN_DIR WORK_DIR [ROUNDS]
# Fails (never skips) without FUSE. Prints its seed first; POWERFS_SEED=S replays a run's cuts.
set -euo pipefail
bin=$1
work=$2
rounds=${3:-6}
seed=${POWERFS_SEED:-$RANDOM}
echo "seed: $seed"
mnt=$work/mnt
acks=$work/acks

if [ ! -w /dev/fuse ]; then echo "FAIL: /dev/fuse is not usable: dbdb-powerfs needs FUSE"; exit 1; fi
command -v sqlite3 >/dev/null || { echo "FAIL: sqlite3 is not installed (ci/deps.sh installs it)"; exit 1; }
umount -l "$mnt" 2>/dev/null || true
rm -rf "$work"
mkdir -p "$mnt" "$acks"
"$bin/dbdb-powerfs" mount "$mnt" --seed "$seed" ${POWERFS_LOG:+--foreground} >"${POWERFS_LOG:-/dev/null}" 2>&1 &
for _ in $(seq 1 500); do grep -q " $mnt " /proc/mounts && break; sleep 0.01; done
loops=()
cleanup() {
  for pid in "${loops[@]}"; do kill -9 -- "-$pid" 2>/dev/null || true; done
  "$bin/dbdb-powerfs" unmount "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "FAIL: $*  (replay: POWERFS_SEED=$seed $0 $bin $work $rounds)"; exit 1; }
grep -q " $mnt " /proc/mounts || fail "dbdb-powerfs did not mount on $mnt (POWERFS_LOG=FILE keeps its output)"

# Set-up: one database of each, created by the programs themselves (each syncs its directory:
# dbdb when it creates the file, sqlite3 when it first syncs the journal beside the database).
"$bin/dbdb" put --create "$mnt/db.dbdb" setup 1 >/dev/null
sqlite3 "$mnt/s.db" "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT);" >/dev/null

dbdb_writer() {  # $1: writer id, $2: round
  local n=0 key
  while true; do
    key="r$2-d$1-$n"
    if "$bin/dbdb" put "$mnt/db.dbdb" "$key" "v$n" >/dev/null 2>&1; then echo "$key v$n" >> "$acks/dbdb"; fi
    n=$((n + 1))
  done
}
sqlite_writer() {
  local n=0 key
  while true; do
    key="r$2-s$1-$n"
    if sqlite3 -cmd ".timeout 10000" "$mnt/s.db" \
         "PRAGMA synchronous=FULL; INSERT INTO t VALUES('$key', 'v$n');" >/dev/null 2>&1; then
      echo "$key v$n" >> "$acks/sqlite"
    fi
    n=$((n + 1))
  done
}

plans=(drop prefix subset torn)
touch "$acks/dbdb" "$acks/sqlite"
set -m  # each writer loop is a process group of its own: the loop and the program it runs
for round in $(seq 1 "$rounds"); do
  loops=()
  for i in 1 2; do
    dbdb_writer "$i" "$round" &
    loops+=($!)
    sqlite_writer "$i" "$round" &
    loops+=($!)
  done
  sleep "0.$((5 + (seed + round) % 5))"
  plan=${plans[$(( (seed + round) % 4 ))]}
  # The writers are stopped (SIGSTOP: a call in flight finishes first) wherever they are, mid-write
  # included, so that nothing runs between the cut and the checks. The cut kills every program
  # with the mount open; the loops, and a program that had not reached the mount yet, are killed
  # after it. A loop stopped between its program's exit and its log line loses that
  # acknowledgement: fewer writes checked, never a false alarm.
  for pid in "${loops[@]}"; do kill -STOP -- "-$pid" 2>/dev/null || true; done
  reply=$("$bin/dbdb-powerfs" cut "$mnt" --plan "$plan" --seed "$((seed + round))") || fail "the cut failed: $reply"
  for pid in "${loops[@]}"; do kill -9 -- "-$pid" 2>/dev/null || true; done
  wait "${loops[@]}" 2>/dev/null || true
  while pgrep -f -- "$mnt/" >/dev/null; do sleep 0.01; done
  echo "round $round: ${reply:0:120}"

  # dbdb: check, then every acknowledged put.
  "$bin/dbdb" check "$mnt/db.dbdb" > "$work/out" 2>&1 || fail "round $round: dbdb check after the cut: $(cat "$work/out")"
  "$bin/dbdb" scan "$mnt/db.dbdb" > "$work/out" 2>&1 || fail "round $round: dbdb scan after the cut: $(head -c 300 "$work/out")"
  tr '\t' ' ' < "$work/out" | sort > "$work/dbdb.now"
  sort "$acks/dbdb" > "$work/dbdb.acked"
  missing=$(comm -23 "$work/dbdb.acked" "$work/dbdb.now" | head -3)
  [ -z "$missing" ] || fail "round $round: acknowledged dbdb puts lost by the cut: $missing"

  # sqlite3: integrity, then every acknowledged insert.
  integrity=$(sqlite3 -cmd ".timeout 10000" "$mnt/s.db" "PRAGMA integrity_check;" 2>&1) || true
  [ "$integrity" = "ok" ] || fail "round $round: sqlite integrity_check: $integrity"
  sqlite3 -cmd ".timeout 10000" -separator ' ' "$mnt/s.db" "SELECT k, v FROM t;" > "$work/out" 2>&1 ||
    fail "round $round: sqlite select after the cut: $(head -c 300 "$work/out")"
  sort "$work/out" > "$work/sqlite.now"
  sort "$acks/sqlite" > "$work/sqlite.acked"
  missing=$(comm -23 "$work/sqlite.acked" "$work/sqlite.now" | head -3)
  [ -z "$missing" ] || fail "round $round: acknowledged sqlite inserts lost by the cut: $missing"
done
echo "powerfs programs: $rounds cuts; $(wc -l < "$acks/dbdb") dbdb puts and $(wc -l < "$acks/sqlite") sqlite inserts acknowledged, all there after every cut"
