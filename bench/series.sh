#!/usr/bin/env bash
# The size series of docs/bench-series.svg: dbdb filled with N random keys (16-byte keys, 100-byte
# values, 1,000 puts per durable commit) for N in SIZES, one dbdb-bench run each; prints a table
# of the reopen time (open a filled database: the backward scan plus the replay of the unfolded
# log), the file's size at its peak during the fill and after it, the fill's rate and how much of
# it the writer spent waiting for the background compaction (Stats::writer_stall_micros), and
# writes the chart.
#   bench/series.sh BUILD_DIR OUT.svg [SIZES]     (default SIZES: 10000 100000 1000000 10000000)
set -euo pipefail
build=$1
svg=$2
sizes=${3:-"10000 100000 1000000 10000000"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-10s %12s %12s %12s %12s %12s %12s\n' keys "reopen ms" "peak MB" "final MB" "raw MB" "fill puts/s" "stalled s"
rows=()
for n in $sizes; do
  "$build/bin/dbdb-bench" --stores dbdb --keys "$n" --runs 1 --fillsync 100 --seed 42 --dir "$work/d" \
    --report "$work/$n.json" >/dev/null 2>&1
  read -r reopen peak size raw fill stalled < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
d = r["results"]["dbdb"]
c = r.get("counters", {}).get("dbdb", {})
print(1000 / d["reopen"]["median"], d["peak"]["median"], d["size"]["median"], r["raw_data_mb"],
      d["fillbatch"]["median"], c.get("writer_stall_s", {}).get("median", 0))' "$work/$n.json")
  printf '%-10s %12.2f %12.1f %12.1f %12.1f %12.0f %12.2f\n' "$n" "$reopen" "$peak" "$size" "$raw" "$fill" "$stalled"
  rows+=("$n $reopen $peak $size $raw $fill $stalled")
done
# Three panels on a log-x axis: reopen milliseconds, peak size over raw data, and the share of the
# fill's time its writer waited for the background compaction.
printf '%s\n' "${rows[@]}" | python3 -c '
import math, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
W, H, L, P = 640, 260, 60, 30
xs = [math.log10(r[0]) for r in rows]
x0, x1 = min(xs) - 0.2, max(xs) + 0.2
def X(v): return L + (math.log10(v) - x0) / (x1 - x0) * (W - L - 20)
out = ["<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">" % (W, 3 * H)]
for panel, (title, value, unit) in enumerate([
    ("reopen time (ms): scan + replay of the unfolded log", lambda r: r[1], "ms"),
    ("peak file size during the fill / raw data", lambda r: r[2] / r[4], "x"),
    ("share of the fill spent waiting for the background compaction", lambda r: r[6] * r[5] / r[0], "")]):
  top = panel * H + P
  vals = [value(r) for r in rows]
  vmax = max(vals) * 1.25 or 1
  def Y(v): return top + (H - P - 40) * (1 - v / vmax)
  out.append("<text x=\"%d\" y=\"%d\" font-weight=\"bold\">%s</text>" % (L, top - 10, title))
  out.append("<line x1=\"%d\" y1=\"%f\" x2=\"%d\" y2=\"%f\" stroke=\"black\"/>" % (L, Y(0), W - 20, Y(0)))
  for r, v in zip(rows, vals):
    out.append("<text x=\"%f\" y=\"%f\" text-anchor=\"middle\">%s</text>" % (X(r[0]), Y(0) + 16, "{:,}".format(int(r[0]))))
  pts = " ".join("%f,%f" % (X(r[0]), Y(v)) for r, v in zip(rows, vals))
  out.append("<polyline points=\"%s\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>" % pts)
  for r, v in zip(rows, vals):
    out.append("<circle cx=\"%f\" cy=\"%f\" r=\"4\" fill=\"#1f77b4\"/><text x=\"%f\" y=\"%f\" text-anchor=\"middle\">%.2f %s</text>" % (X(r[0]), Y(v), X(r[0]), Y(v) - 8, v, unit))
out.append("<text x=\"%d\" y=\"%d\">keys (log scale); dbdb-bench, seed 42, one run per size</text>" % (L, 3 * H - 8))
out.append("</svg>")
open(sys.argv[1], "w").write("\n".join(out) + "\n")' "$svg"
echo "wrote $svg"
