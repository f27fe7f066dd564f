#!/usr/bin/env bash
# The campaign's HTML report in a real browser: runs a small sharded campaign (dbdb-crash one
# handle and multi-process, two shards each, one violation planted into a case line), merges it
# with --html, loads the page in headless Chromium, and checks from the rendered DOM that the
# figures equal the merge's, the charts drew their points and bars, the violation shows its
# counterexample and replay line, and dbdb-bench's chart is there; then takes a screenshot and
# checks it is a picture of something. Without Chromium the test fails and says so.
#   html_report_test.sh BIN_DIR WORK_DIR SOURCE_DIR [SCREENSHOT_COPY]
set -euo pipefail
bin=$1
work=$2
source_dir=$3
copy=${4:-}
fail() { echo "FAIL: $*" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || fail "no chromium: ci/deps.sh installs it (apt-get install chromium)"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

for i in 0 1; do
  "$bin/dbdb-crash" --campaign-seed 2026 --workloads 16 --ops 40 --threads 1 --shard "$i/2" \
    --cases-out "crash-$i.jsonl" > "crash-$i.log" 2>&1 &
  "$bin/dbdb-crash" --processes 3 --campaign-seed 2026 --workloads 6 --ops 10 --states-max 8 --threads 1 \
    --shard "$i/2" --cases-out "mp-$i.jsonl" > "mp-$i.log" 2>&1 &
done
wait
jq -c 'if .kind == "case" and .case == 3 then .verdict = "violation" |
         .violation = {message: "recovered <txn 4>, a commit that never began (I3 prefix)",
                       counterexample: "0: put \"k1\" = \"v1\"\n1: crash", crash_state: "drop: [write 7]"}
       else . end' crash-1.jsonl > crash-1-planted.jsonl
rc=0
"$bin/dbdb-campaign" merge --out merged.json --html report.html --bench-svg "$source_dir/docs/bench-1m.svg" \
  --title "dbdb campaign (browser test)" crash-0.jsonl crash-1-planted.jsonl mp-0.jsonl mp-1.jsonl > merge.log || rc=$?
[ "$rc" -eq 1 ] || fail "merge exited $rc, not 1 (one planted violation): $(cat merge.log)"

flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --user-data-dir="$work/profile")
timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$work/report.html" > dom.html 2> browser.log ||
  fail "chromium could not load the report: $(tail -5 browser.log)"
grep -q 'id="verdict" class="verdict failed"' dom.html || fail "no failed verdict in the rendered page"
for tool in dbdb-crash dbdb-crash-multiprocess; do
  for figure in states_checked crash_points distinct_states; do
    want=$(jq -r --arg t "$tool" --arg f "$figure" '.tools[$t].figures[$f]' merged.json | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
    section=$(sed -n "/data-tool=\"$tool\"/,/<\/section>/p" dom.html)
    grep -q "data-figure=\"$figure\">$want<" <<< "$section" || fail "$tool: $figure is not $want on the page"
  done
done
charts=$(grep -o '<svg id="[^"]*" class="chart"' dom.html | wc -l)
[ "$charts" -ge 4 ] || fail "only $charts charts on the page"
grep -Eq 'id="dbdb-crash-rate" class="chart" data-points="[1-9]' dom.html || fail "the rate chart has no points"
grep -Eq 'id="dbdb-crash-epochs" class="chart" data-bars="[1-9]' dom.html || fail "the epoch chart has no bars"
grep -Eq 'id="dbdb-crash-multiprocess-faults" class="chart" data-bars="[1-9]' dom.html || fail "no faults chart"
grep -q 'recovered &lt;txn 4&gt;, a commit that never began' dom.html || fail "the violation's message is missing"
grep -q 'put "k1" = "v1"' dom.html || fail "the counterexample is missing"
grep -q 'class="replay">dbdb-crash --seed 2029 ' dom.html || fail "the replay line is missing"
grep -q '<section class="bench"><h2>dbdb-bench</h2><svg' dom.html || fail "dbdb-bench's chart is missing"
echo "ok: the rendered page shows the merged figures, $charts charts, the violation and the bench chart"

timeout 120 "$browser" "${flags[@]}" --hide-scrollbars --window-size=1280,2200 --screenshot="$work/report.png" \
  "file://$work/report.html" >> browser.log 2>&1 || fail "no screenshot: $(tail -5 browser.log)"
[ "$(head -c 8 report.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "the screenshot is not a PNG"
size=$(stat -c %s report.png)
[ "$size" -gt 40000 ] || fail "the screenshot is $size bytes: an empty page is about 3 KB"
echo "ok: screenshot report.png, $size bytes"
if [ -n "$copy" ]; then cp report.html "$copy.html" && cp report.png "$copy.png"; fi
