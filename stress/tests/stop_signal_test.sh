#!/usr/bin/env bash
# dbdb-stress --power-cut stopped early, the three ways a user stops it:
#   1. its output piped into a program that exits (as `head` does: SIGPIPE at its next line);
#   2. Ctrl-C (SIGINT to its whole process group: the runner and its children; its tools run in
#      groups of their own);
#   3. `timeout` (SIGTERM to the runner).
# Each time the run must stop within seconds (the duration asked is 600 s), end by that signal
# (status 128 + it), report no violation (the children were stopped, not crashed) and leave no
# dbdb-powerfs mount behind. Before the runner caught these signals, each left its
# mount (and, for SIGPIPE and SIGTERM, its children until they noticed) behind.
#
#   stop_signal_test.sh BIN_DIR WORK_DIR
# Fails (never skips) without FUSE. The runs' seeds are fixed (1, 2, 3).
set -uo pipefail
bin=$1
work=$2
if [ ! -w /dev/fuse ]; then echo "FAIL: /dev/fuse is not usable: dbdb-powerfs needs FUSE"; exit 1; fi
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
export DBDB_PROGRESS_SECONDS=1  # a progress line a second (case 1's SIGPIPE comes at one)
pid=
mounted() { grep -q " $work/$1/powerfs " /proc/mounts; }
cleanup() {
  [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
  for run in pipe int term; do
    mounted "$run" && "$bin/dbdb-powerfs" unmount "$work/$run/powerfs" >/dev/null 2>&1
  done
}
trap cleanup EXIT
stress() {  # $1: the run's name (its directory), $2: seed; its --report is $work/$1.json
  echo "$bin/dbdb-stress --workload mixed --writers 1 --readers 1 --duration 600 --kill-interval-ms 300 --power-cut --cut-interval-ms 300 --seed $2 --dir $work/$1 --report $work/$1.json"
}
check_report() {  # $1: the run's name, $2: the signal that stopped it
  grep -q "\"stopped_by_signal\": $2," "$work/$1.json" || fail "$1: the report does not say signal $2 stopped it"
  grep -q '"violations": \[\]' "$work/$1.json" || fail "$1: the report lists violations"
}
wait_for_mount() {  # $1: the run's name
  for _ in $(seq 1 3000); do mounted "$1" && return 0; sleep 0.01; done
  fail "$1: dbdb-stress did not mount $work/$1/powerfs within 30 s"
}
check_stopped() {  # $1: the run's name, $2: its exit status, $3: the status expected, $4: its output
  [ "$2" = "$3" ] || fail "$1: exit status $2, expected $3; output: $(tail -n 20 "$4")"
  if mounted "$1"; then fail "$1: the run left its dbdb-powerfs mount behind"; fi
  if grep -q "VIOLATION" "$4"; then fail "$1: a violation: $(grep -m 3 VIOLATION "$4")"; fi
  echo "$1: exit $2, no mount left, no violation"
}

# 1. Piped into a program that exits once the run is under way (as `| head` does): stdout and
# stderr both go to the pipe, so the progress line after grep exits raises SIGPIPE, with the mount
# up. (Its message about the stop goes to the closed pipe too: the status and --report show it.)
start=$SECONDS
$(stress pipe 1) 2>&1 | grep -q -m 1 "^power cuts: on a dbdb-powerfs mount"
statuses=("${PIPESTATUS[@]}")
[ "${statuses[1]}" = 0 ] || fail "pipe: the run never said its mount was up"
check_stopped pipe "${statuses[0]}" 141 /dev/null  # 128 + SIGPIPE
check_report pipe 13
[ $((SECONDS - start)) -lt 120 ] || fail "pipe: took $((SECONDS - start)) s to stop"

# 2. Ctrl-C: SIGINT to the run's whole process group. Job control (set -m) puts the run in a group
# of its own with SIGINT at its default action, as a terminal's foreground job has it (a script's
# background job would ignore it).
set -m
$(stress int 2) >"$work/int.log" 2>&1 &
pid=$!
set +m
wait_for_mount int
sleep 1
kill -INT -- "-$pid"
start=$SECONDS
for _ in $(seq 1 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  kill -KILL -- "-$pid"
  fail "int: still running 120 s after SIGINT"
fi
wait "$pid"
rc=$?
pid=
check_stopped int "$rc" 130 "$work/int.log"  # 128 + SIGINT
check_report int 2
grep -q "stopped early by signal 2" "$work/int.log" || fail "int: no report of the stop: $(tail -n 5 "$work/int.log")"
grep -q "^violations: 0$" "$work/int.log" || fail "int: no summary with its checks: $(tail -n 5 "$work/int.log")"

# 3. timeout: SIGTERM to the runner (and then to its process group), 4 s in; the runner's own
# status passed on (--preserve-status), not timeout's 124.
start=$SECONDS
timeout --preserve-status -s TERM 4 $(stress term 3) >"$work/term.log" 2>&1
rc=$?
check_stopped term "$rc" 143 "$work/term.log"  # 128 + SIGTERM
check_report term 15
grep -q "stopped early by signal 15" "$work/term.log" || fail "term: no report of the stop: $(tail -n 5 "$work/term.log")"
grep -q "^violations: 0$" "$work/term.log" || fail "term: no summary with its checks: $(tail -n 5 "$work/term.log")"
[ $((SECONDS - start)) -lt 120 ] || fail "term: took $((SECONDS - start)) s to stop"
echo "PASS"
