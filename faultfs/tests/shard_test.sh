#!/usr/bin/env bash
# A campaign run as N shards in parallel processes merges to exactly the figures of the unsharded
# run with the same campaign seed: dbdb-crash (one handle, and multi-process histories) and the
# property tests. Then the merge's refusals: a missing shard, a repeated shard, shards of another
# campaign, and the same violation found by two shards reported once.
#   shard_test.sh BIN_DIR WORK_DIR
set -euo pipefail
bin=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

# The figures that must not depend on the sharding (timing aside).
figures() { jq -S '.tools | map_values({cases, passed, figures, epochs, faults_fired, violations: (.violations | length)})' "$1"; }

same_as_unsharded() {  # NAME SHARDS -- COMMAND... (the command takes --shard and --cases-out after it)
  local name=$1 shards=$2
  shift 3
  "$@" --cases-out "$name-all.jsonl" > "$name-all.log" 2>&1 || fail "$name unsharded run failed: $(tail -5 "$name-all.log")"
  local pids=() files=()
  for ((i = 0; i < shards; i++)); do
    "$@" --shard "$i/$shards" --cases-out "$name-$i.jsonl" > "$name-$i.log" 2>&1 &
    pids+=($!)
    files+=("$name-$i.jsonl")
  done
  for pid in "${pids[@]}"; do wait "$pid" || fail "$name: a shard failed"; done
  "$bin/dbdb-campaign" merge --out "$name-merged.json" "${files[@]}" > "$name-merge.log" || fail "$name: merge: $(cat "$name-merge.log")"
  "$bin/dbdb-campaign" merge --out "$name-all.json" "$name-all.jsonl" > /dev/null || fail "$name: merge of the unsharded run"
  diff <(figures "$name-merged.json") <(figures "$name-all.json") > "$name.diff" ||
    fail "$name: $shards shards do not merge to the unsharded run: $(cat "$name.diff")"
  local cases
  cases=$(jq '[.tools[].cases] | add' "$name-all.json")
  [ "$cases" -gt "$shards" ] || fail "$name: only $cases cases"
  echo "ok: $name, $shards shards merge to the unsharded run ($cases cases, $(jq -c '[.tools[].figures]' "$name-all.json"))"
}

same_as_unsharded crash 4 -- "$bin/dbdb-crash" --campaign-seed 4242 --workloads 10 --ops 30 --threads 2
same_as_unsharded multiprocess 3 -- "$bin/dbdb-crash" --processes 3 --campaign-seed 77 --workloads 5 --ops 8 \
  --states-max 8 --threads 1
RC_PARAMS="max_success=10 max_size=30" same_as_unsharded proptests 3 -- "$bin/proptests" --campaign-seed 99 \
  '--gtest_filter=StoreVsModel.SimulatedFilesystem*:SimulatedFilesystem.*:CrashExploration.*NoSyncMode'

# A shard from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is the same shard as --shard I/N.
JOB_COMPLETION_INDEX=2 "$bin/dbdb-crash" --campaign-seed 4242 --workloads 10 --ops 30 --threads 1 --shard 4 \
  --cases-out job-2.jsonl > job.log 2>&1 || fail "the Job's shard failed"
diff <(jq -c 'select(.kind == "case") | [.case, .seed, .figures]' job-2.jsonl) \
  <(jq -c 'select(.kind == "case") | [.case, .seed, .figures]' crash-2.jsonl) || fail "JOB_COMPLETION_INDEX=2 ran other cases than --shard 2/4"

# Refusals: exit 3 with the reason.
expect_problem() {  # WHAT EXPECTED_TEXT FILES...
  local what=$1 text=$2
  shift 2
  local rc=0
  "$bin/dbdb-campaign" merge "$@" > "refusal.log" || rc=$?
  [ "$rc" -eq 3 ] || fail "$what: merge exited $rc, not 3"
  grep -q "$text" refusal.log || fail "$what: no '$text' in: $(cat refusal.log)"
  echo "ok: $what refused ($text)"
}
expect_problem "a missing shard" "shard 1/4 is missing" crash-0.jsonl crash-2.jsonl crash-3.jsonl
expect_problem "a repeated shard" "shard 1/4 appears 2 times" crash-0.jsonl crash-1.jsonl crash-1.jsonl crash-2.jsonl crash-3.jsonl
"$bin/dbdb-crash" --campaign-seed 4243 --workloads 10 --ops 30 --threads 1 --shard 1/4 --cases-out other-1.jsonl > /dev/null 2>&1
expect_problem "a shard of another campaign" "more than one campaign seed" crash-0.jsonl other-1.jsonl crash-2.jsonl crash-3.jsonl
head -n 1 crash-1.jsonl > cut-1.jsonl  # a shard killed after its first case: no shard line
expect_problem "an unfinished shard" "shard 1/4 is missing" crash-0.jsonl cut-1.jsonl crash-2.jsonl crash-3.jsonl
rc=0
"$bin/dbdb-campaign" merge --partial crash-0.jsonl crash-2.jsonl > partial.log || rc=$?
[ "$rc" -eq 0 ] && grep -q "note (partial merge)" partial.log || fail "--partial: exit $rc: $(cat partial.log)"
echo "ok: --partial merges the shards present"

# The same violation from two shards is reported once: both shards' lines carry the counterexample
# a real violation line has (made here from a passing case; the merge does not look further).
for i in 0 1; do
  jq -c 'if .kind == "case" and (.case == 0 or .case == 1) then .verdict = "violation" |
           .violation = {message: "recovered a commit that never began (I3 prefix)", counterexample: "put k1\ncrash"}
         else . end' "crash-$i.jsonl" > "bad-$i.jsonl"
done
rc=0
"$bin/dbdb-campaign" merge --out bad.json bad-0.jsonl bad-1.jsonl crash-2.jsonl crash-3.jsonl > bad.log || rc=$?
[ "$rc" -eq 1 ] || fail "a violation: merge exited $rc, not 1"
[ "$(jq '.tools["dbdb-crash"].violations | length' bad.json)" = 1 ] || fail "the repeated violation was not merged into one"
[ "$(jq '.tools["dbdb-crash"].duplicate_violations_removed' bad.json)" = 1 ] || fail "no repeat counted"
[ "$(jq -r '.tools["dbdb-crash"].violations[0].invariant' bad.json)" = I3 ] || fail "the invariant was not named"
grep -q "replay: dbdb-crash --seed 4242 " bad.log || fail "no replay line: $(cat bad.log)"
echo "ok: one violation from two shards is reported once, with its replay line"

# A failing property becomes a violation line: RapidCheck's counterexample and a replay command
# that fails the same way (DISABLED_CampaignSelfTest fails on purpose; it runs only when asked).
rc=0
RC_PARAMS="max_success=100" "$bin/proptests" --gtest_also_run_disabled_tests --campaign-seed 5 \
  '--gtest_filter=DISABLED_CampaignSelfTest.*' --cases-out selftest.jsonl > selftest.log 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "the failing self-test property passed"
[ "$(jq -r 'select(.kind == "case") | .verdict' selftest.jsonl)" = violation ] || fail "no violation line: $(cat selftest.jsonl)"
jq -r 'select(.kind == "case") | .violation.counterexample' selftest.jsonl | grep -q "Falsifiable" ||
  fail "no counterexample in the violation line: $(cat selftest.jsonl)"
replay=$(jq -r 'select(.kind == "case") | .replay' selftest.jsonl)
[[ "$replay" == "RC_PARAMS='seed=5 max_success=100 max_size="*"' proptests --gtest_filter=DISABLED_CampaignSelfTest."* ]] ||
  fail "replay: $replay"
rc=0
(PATH="$bin:$PATH" && unset RC_PARAMS && eval "$replay") > replay.log 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "Falsifiable" replay.log || fail "the replay did not fail the same way: $(tail -5 replay.log)"
rc=0
"$bin/dbdb-campaign" merge selftest.jsonl > selftest-merge.log || rc=$?
[ "$rc" -eq 1 ] || fail "merge of a failing property exited $rc, not 1"
echo "ok: a failing property is a violation line with its counterexample, and its replay fails the same way"
