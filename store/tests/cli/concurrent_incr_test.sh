#!/usr/bin/env bash
# Concurrent `dbdb incr` processes with SIGKILLs and compactions (I4: serialized writers, no lost
# update; I1/I2: an acknowledged increment is durable, a killed one counts at most once).
#
# WORKERS loops each run `dbdb incr DB counter` one process after another, beside a loop of
# `dbdb compact DB`, while this script SIGKILLs a random worker's current incr process every
# 50-150 ms. A worker logs, outside the database's directory, every acknowledged increment (exit 0
# and the value printed) and every incr that died of SIGKILL (in flight when killed: it may or may
# not have committed). At the end:
#   acknowledged <= final counter <= acknowledged + killed in flight,
#   no two acknowledged increments printed the same value (a lost update would),
#   each worker's values increase, no incr or compact failed otherwise, and `dbdb check` passes.
#
#   concurrent_incr_test.sh PATH_TO_DBDB [--seed S] [--duration SECONDS] [--workers N]
# The seed (printed first) drives the kill schedule; process scheduling is not under its control,
# so a replay repeats the schedule, not the interleaving.
source "$(dirname "$0")/lib.sh"
seed=$(( ($(date +%s%N) / 1000 + $$) % 1000000000 ))
duration=10
workers=4
while [ $# -gt 0 ]; do
  case $1 in
    --seed) seed=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
echo "seed: $seed"
echo "replay: $0 $dbdb --seed $seed --duration $duration --workers $workers"
RANDOM=$seed

mkdir "$tmp/db" "$tmp/log"
db=$tmp/db/counter.dbdb
log=$tmp/log
"$dbdb" put --create "$db" counter 0 || { fail "creating the database"; finish; }

# worker ID: incr processes one after another until $log/stop exists. While its current incr runs
# (and until it is reaped, so the pid cannot be reused meanwhile) its pid is in $log/pid.ID; the
# file is empty otherwise. Builtins only, besides the incr: the less time a worker spends between
# two incr processes, the more of the killer's ticks find one running.
worker() {
  local id=$1 acked=0 killed=0 failed=0 pid rc value
  while [ ! -e "$log/stop" ]; do
    "$dbdb" incr "$db" counter >"$log/out.$id" 2>"$log/err.$id" &
    pid=$!
    echo "$pid" >"$log/pid.$id"
    wait "$pid"
    rc=$?
    : >"$log/pid.$id"
    value=
    read -r value <"$log/out.$id"
    if [ "$rc" -eq 0 ] && [[ "$value" =~ ^[0-9]+$ ]]; then
      echo "$value" >>"$log/acked.$id"
      acked=$((acked + 1))
    elif [ "$rc" -eq 137 ]; then  # 128 + SIGKILL: in flight when killed
      killed=$((killed + 1))
    else
      echo "incr exited $rc, printed '$value': $(<"$log/err.$id")" >>"$log/failures.$id"
      failed=$((failed + 1))
    fi
  done
  echo "$acked $killed $failed" >"$log/result.$id"
}

compactor() {
  local n=0 out
  while [ ! -e "$log/stop" ]; do
    if out=$("$dbdb" compact "$db" 2>&1); then
      n=$((n + 1))
    else
      echo "compact failed: $out" >>"$log/failures.compact"
    fi
    sleep 0.3
  done
  echo "$n" >"$log/result.compact"
}

pids=()
for ((i = 0; i < workers; i++)); do
  : >"$log/acked.$i"
  : >"$log/pid.$i"
  worker "$i" 2>"$log/worker.$i.stderr" &  # (bash reports each killed job on stderr)
  pids+=($!)
done
compactor &
pids+=($!)

# The killer: every 50-150 ms, SIGKILL the running incr of a random worker (or, if that one is
# between two, of the next worker that has one). Only a process that is the dbdb binary already
# (not a worker's fork still on its way to exec) is killed.
name=$(basename "$dbdb")
kills=0
end=$((SECONDS + duration))
while [ "$SECONDS" -lt "$end" ]; do
  sleep "0.$(printf '%03d' $((50 + RANDOM % 101)))"
  first=$((RANDOM % workers))
  for ((j = 0; j < workers; j++)); do
    pid='' comm=''
    read -r pid 2>/dev/null <"$log/pid.$(((first + j) % workers))"
    [ -n "$pid" ] || continue
    read -r comm 2>/dev/null <"/proc/$pid/comm"
    if [ "$comm" = "$name" ] && kill -KILL "$pid" 2>/dev/null; then
      kills=$((kills + 1))
      break
    fi
  done
done
touch "$log/stop"
wait "${pids[@]}"

acked=0 killed=0 failed=0
for ((i = 0; i < workers; i++)); do
  read -r a k f <"$log/result.$i" || fail "worker $i left no result"
  acked=$((acked + a)) killed=$((killed + k)) failed=$((failed + f))
  sort -n -c "$log/acked.$i" 2>/dev/null || fail "worker $i: its acknowledged values do not increase"
done
compactions=$(cat "$log/result.compact" 2>/dev/null || echo 0)
echo "SIGKILLs sent: $kills (to a process that may have just exited); incr acknowledged: $acked, killed in flight: $killed, failed: $failed; compactions: $compactions"
cat "$log"/failures.* 2>/dev/null | head -20
[ "$failed" -eq 0 ] && pass "no incr failed except by SIGKILL" || fail "$failed incr processes failed"
[ ! -s "$log/failures.compact" ] && pass "no compaction failed" || fail "compactions failed"
[ "$acked" -gt 0 ] && pass "$acked increments acknowledged" || fail "no increment was acknowledged"
[ "$compactions" -gt 0 ] && pass "$compactions compactions ran beside them" || fail "no compaction completed"

run "$dbdb" get "$db" counter
expect_rc 0 "the counter is there"
final=$out
if [[ "$final" =~ ^[0-9]+$ ]] && [ "$final" -ge "$acked" ] && [ "$final" -le $((acked + killed)) ]; then
  pass "final counter $final lies in [acknowledged $acked, acknowledged + killed in flight $((acked + killed))]"
else
  fail "final counter '$final' is not in [$acked, $((acked + killed))]"
fi
dups=$(cat "$log"/acked.* | sort -n | uniq -d | head -5 | tr '\n' ' ')
[ -z "$dups" ] && pass "every acknowledged value is unique" || fail "values acknowledged twice (lost updates): $dups"
max=$(cat "$log"/acked.* | sort -n | tail -1)
[ -z "$max" ] || [ "$max" -le "${final:-0}" ] 2>/dev/null && pass "no acknowledged value exceeds the final counter" ||
  fail "acknowledged $max but the counter is $final"
run "$dbdb" check "$db"
expect_rc 0 "dbdb check after the run"

finish
