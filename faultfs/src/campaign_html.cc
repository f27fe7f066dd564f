// The self-contained HTML report of a campaign (campaign.h): no script, stylesheet or font from
// anywhere else; the charts are inline SVG drawn here.
#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "faultfs/campaign.h"

namespace faultfs::campaign {

namespace {

std::string Escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  std::ostringstream s;
  if (!(std::fabs(v) < 1e15)) {  // huge (a saturated sum), infinite or not a number
    s << std::setprecision(4) << v;
    return s.str();
  }
  if (std::fabs(v - std::round(v)) < 1e-9) {
    // Thousands separators for whole numbers.
    std::string digits = std::to_string(static_cast<long long>(std::llround(v)));
    std::string out;
    int n = 0;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
      if (n > 0 && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
      out.insert(out.begin(), *it);
      n++;
    }
    return out;
  }
  if (std::fabs(v) >= 100) return Number(std::round(v));
  s << std::fixed << std::setprecision(std::fabs(v) < 10 ? 3 : 1) << v;
  return s.str();
}

std::string Fmt(double v) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << v;
  return s.str();
}

constexpr int kWidth = 560, kHeight = 220, kLeft = 70, kBottom = 36, kTop = 14, kRight = 14;

std::string Axes(double x_max, double y_max, const std::string& x_label, const std::string& y_label) {
  std::ostringstream s;
  int plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  s << "<line x1='" << kLeft << "' y1='" << kTop + plot_h << "' x2='" << kLeft + plot_w << "' y2='" << kTop + plot_h
    << "' stroke='#555'/><line x1='" << kLeft << "' y1='" << kTop << "' x2='" << kLeft << "' y2='" << kTop + plot_h
    << "' stroke='#555'/>";
  for (int i = 0; i <= 4; i++) {
    double y = kTop + plot_h - plot_h * i / 4.0;
    s << "<line x1='" << kLeft - 4 << "' y1='" << Fmt(y) << "' x2='" << kLeft + plot_w << "' y2='" << Fmt(y)
      << "' stroke='#ddd'/><text x='" << kLeft - 6 << "' y='" << Fmt(y + 4) << "' text-anchor='end' font-size='11'>"
      << Escape(Number(y_max * i / 4.0)) << "</text>";
  }
  if (x_max > 0) {
    for (int i = 0; i <= 4; i++) {
      double x = kLeft + plot_w * i / 4.0;
      s << "<text x='" << Fmt(x) << "' y='" << kTop + plot_h + 14 << "' text-anchor='middle' font-size='11'>"
        << Escape(Number(x_max * i / 4.0)) << "</text>";
    }
  }
  s << "<text x='" << kLeft + plot_w / 2 << "' y='" << kHeight - 4 << "' text-anchor='middle' font-size='12'>"
    << Escape(x_label) << "</text><text x='14' y='" << kTop + plot_h / 2 << "' font-size='12' transform='rotate(-90 14 "
    << kTop + plot_h / 2 << ")' text-anchor='middle'>" << Escape(y_label) << "</text>";
  return s.str();
}

// A line chart of (x, y) points.
std::string LineChart(const std::string& id, const std::vector<std::pair<double, double>>& points,
                      const std::string& x_label, const std::string& y_label) {
  double x_max = 0, y_max = 0;
  for (const auto& [x, y] : points) {
    x_max = std::max(x_max, x);
    y_max = std::max(y_max, y);
  }
  if (x_max <= 0) x_max = 1;
  if (y_max <= 0) y_max = 1;
  int plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  std::ostringstream s;
  s << "<svg id='" << Escape(id) << "' class='chart' data-points='" << points.size() << "' width='" << kWidth << "' height='"
    << kHeight << "' viewBox='0 0 " << kWidth << " " << kHeight << "' xmlns='http://www.w3.org/2000/svg'>"
    << Axes(x_max, y_max, x_label, y_label) << "<polyline fill='none' stroke='#1f6feb' stroke-width='2' points='";
  for (const auto& [x, y] : points) {
    s << Fmt(kLeft + plot_w * x / x_max) << "," << Fmt(kTop + plot_h - plot_h * y / y_max) << " ";
  }
  s << "'/>";
  for (const auto& [x, y] : points) {
    s << "<circle cx='" << Fmt(kLeft + plot_w * x / x_max) << "' cy='" << Fmt(kTop + plot_h - plot_h * y / y_max)
      << "' r='2.5' fill='#1f6feb'><title>" << Escape(Number(x) + " s: " + Number(y)) << "</title></circle>";
  }
  s << "</svg>";
  return s.str();
}

// Vertical bars, one per label; `values` in [0, y_max].
std::string BarChart(const std::string& id, const std::vector<std::string>& labels, const std::vector<double>& values,
                     double y_max, const std::string& x_label, const std::string& y_label) {
  int plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  if (y_max <= 0) y_max = 1;
  std::ostringstream s;
  s << "<svg id='" << Escape(id) << "' class='chart' data-bars='" << values.size() << "' width='" << kWidth << "' height='"
    << kHeight << "' viewBox='0 0 " << kWidth << " " << kHeight << "' xmlns='http://www.w3.org/2000/svg'>"
    << Axes(0, y_max, x_label, y_label);
  double slot = values.empty() ? plot_w : static_cast<double>(plot_w) / values.size();
  for (size_t i = 0; i < values.size(); i++) {
    double h = plot_h * std::min(values[i], y_max) / y_max, x = kLeft + slot * i + slot * 0.1;
    s << "<rect x='" << Fmt(x) << "' y='" << Fmt(kTop + plot_h - h) << "' width='" << Fmt(std::max(slot * 0.8, 1.0))
      << "' height='" << Fmt(h) << "' fill='#2da44e'><title>" << Escape(labels[i] + ": " + Number(values[i]))
      << "</title></rect>";
    if (values.size() <= 16) {
      s << "<text x='" << Fmt(x + slot * 0.4) << "' y='" << kTop + plot_h + 14
        << "' text-anchor='middle' font-size='10'>" << Escape(labels[i]) << "</text>";
    }
  }
  s << "</svg>";
  return s.str();
}

// States checked per second over the campaign: the states of the cases that ended in each time
// bucket (shards side by side, so a bucket sums every machine's work), over the bucket's width.
std::vector<std::pair<double, double>> RateOverTime(const std::vector<nlohmann::json>& cases, const std::string& figure,
                                                    size_t shards) {
  double t_max = 0;
  for (const auto& c : cases) t_max = std::max(t_max, c.value("t", 0.0));
  // One case per shard (dbdb-stress runs one) is no curve.
  if (cases.size() < 4 || cases.size() <= shards || t_max <= 0) return {};
  int buckets = static_cast<int>(std::min<size_t>(40, std::max<size_t>(2, cases.size() / 2)));
  double width = t_max / buckets;
  std::vector<double> sums(buckets, 0);
  for (const auto& c : cases) {
    int b = std::min(buckets - 1, static_cast<int>(c.value("t", 0.0) / width));
    sums[b] += c.value("figures", nlohmann::json::object()).value(figure, 0.0);
  }
  std::vector<std::pair<double, double>> points;
  for (int b = 0; b < buckets; b++) points.push_back({width * (b + 1), sums[b] / width});
  return points;
}

// A tool's table of figures: shards, cases, each figure and each count of work, its pace, its
// configuration.
void FiguresTable(const nlohmann::json& t, std::ostringstream& s) {
  s << "<table class='figures'><tr><th>shards</th><td data-figure='shards'>" << t.value("shards_present", 0) << " of "
    << t.value("shard_count", 0) << "</td></tr><tr><th>cases</th><td data-figure='cases'>"
    << Number(t.value("cases", 0.0)) << " (" << Number(t.value("passed", 0.0)) << " passed)</td></tr>";
  const nlohmann::json figures = t.value("figures", nlohmann::json::object());
  for (const auto& [key, value] : figures.items()) {
    s << "<tr><th>" << Escape(key) << "</th><td data-figure='" << Escape(key) << "'>" << Number(value.get<double>())
      << "</td></tr>";
  }
  const nlohmann::json work = t.value("work", nlohmann::json::object());
  for (const auto& [key, value] : work.items()) {
    s << "<tr><th>" << Escape(key) << " (work: varies with threads)</th><td data-work='" << Escape(key) << "'>"
      << Number(value.get<double>()) << "</td></tr>";
  }
  if (t.contains("states_per_second")) {
    s << "<tr><th>states per second</th><td data-figure='states_per_second'>"
      << Number(std::round(t["states_per_second"].get<double>())) << " (over " << Number(t.value("seconds_total", 0.0))
      << " shard-seconds)</td></tr>";
  }
  s << "<tr><th>configuration</th><td><code>" << Escape(t.value("config", nlohmann::json::object()).dump())
    << "</code></td></tr></table>";
}

// A tool's charts: its pace over time, its coverage per sync epoch, the faults fired by point.
void Charts(const std::string& tool, const nlohmann::json& t, const std::vector<nlohmann::json>& cases,
            std::ostringstream& s) {
  s << "<div class='charts'>";
  const nlohmann::json figures = t.value("figures", nlohmann::json::object());
  std::string figure = figures.contains("states_checked") ? "states_checked"
                       : figures.contains("commits")      ? "commits"
                                                          : "";
  std::vector<std::pair<double, double>> rate = figure.empty() ? std::vector<std::pair<double, double>>{}
                                                                 : RateOverTime(cases, figure, t.value("shard_count", size_t{1}));
  if (!rate.empty()) {
    s << "<figure><figcaption>" << Escape(figure == "states_checked" ? "crash states checked per second"
                                                                        : "acknowledged commits per second")
      << " over time</figcaption>"
      << LineChart(tool + "-rate", rate, "seconds into the shards", "per second") << "</figure>";
  }
  const auto& epochs = t.value("epochs", nlohmann::json::array());
  if (!epochs.empty()) {
    std::vector<std::string> labels;
    std::vector<double> values;
    for (size_t i = 0; i < epochs.size() && i < 60; i++) {
      double checked = epochs[i][0].get<double>(), exist = epochs[i][1].get<double>();
      labels.push_back("epoch " + std::to_string(i));
      values.push_back(exist <= 0 ? 100.0 : 100.0 * std::min(1.0, checked / exist));
    }
    s << "<figure><figcaption>coverage per sync epoch (states checked / states that exist, %"
      << (epochs.size() > 60 ? ", first 60 epochs" : "") << ")</figcaption>"
      << BarChart(tool + "-epochs", labels, values, 100, "sync epoch", "% covered") << "</figure>";
  }
  const auto& faults = t.value("faults_fired", nlohmann::json::object());
  if (!faults.empty()) {
    std::vector<std::string> labels;
    std::vector<double> values;
    double y_max = 0;
    for (const auto& [point, count] : faults.items()) {
      labels.push_back(point);
      values.push_back(count.get<double>());
      y_max = std::max(y_max, count.get<double>());
    }
    s << "<figure><figcaption>faults fired by point</figcaption>"
      << BarChart(tool + "-faults", labels, values, y_max, "fault point", "times fired") << "</figure>";
  }
  s << "</div>";
}

// A tool's violations, each with the cases that repeat it, its crash state, its counterexample
// and its replay line.
void Violations(const nlohmann::json& t, std::ostringstream& s) {
  const auto& violations = t.value("violations", nlohmann::json::array());
  s << "<h3>violations: <span data-figure='violations'>" << violations.size() << "</span>";
  if (t.value("duplicate_violations_removed", 0) > 0) {
    s << " (" << t.value("duplicate_violations_removed", 0) << " repeats removed)";
  }
  s << "</h3>";
  for (const auto& v : violations) {
    std::string repeats;
    if (v.value("repeats", 0) > 0) {
      repeats = ", and in " + std::to_string(v.value("repeats", 0)) + " more cases with the same steps (";
      const nlohmann::json cases_json = v.value("repeat_cases", nlohmann::json::array());
      for (size_t i = 0; i < cases_json.size(); i++) repeats += (i ? ", " : "") + cases_json[i].dump();
      repeats += cases_json.size() < v.value("repeats", size_t{0}) ? ", …)" : ")";
    }
    s << "<div class='violation'><p><b>" << Escape(v.value("invariant", "other")) << "</b> in case "
      << v.value("case", 0) << " (seed " << v.value("seed", uint64_t{0}) << Escape(repeats)
      << "): " << Escape(v.value("message", "")) << "</p>";
    if (v.contains("crash_state")) s << "<p>crash state: <code>" << Escape(v.value("crash_state", "")) << "</code></p>";
    s << "<pre class='counterexample'>" << Escape(v.value("counterexample", "")) << "</pre><p>replay: <code class='replay'>"
      << Escape(v.value("replay", "")) << "</code></p></div>";
  }
}

std::string ToolSection(const std::string& tool, const nlohmann::json& t, const std::vector<nlohmann::json>& cases) {
  std::ostringstream s;
  s << "<section class='tool' data-tool='" << Escape(tool) << "'><h2>" << Escape(tool) << "</h2>";
  FiguresTable(t, s);
  Charts(tool, t, cases, s);
  Violations(t, s);
  s << "</section>";
  return s.str();
}

}  // namespace

std::string HtmlReport(const MergeResult& merged, const std::string& title, const std::string& bench_svg) {
  const nlohmann::json& r = merged.report;
  bool clean = merged.ExitCode() == 0;
  std::ostringstream s;
  s << "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>" << Escape(title) << "</title><style>"
    << "body{font-family:sans-serif;margin:24px;color:#1f2328;max-width:1200px}"
    << ".verdict{padding:10px 14px;border-radius:6px;font-weight:bold}"
    << ".clean{background:#dafbe1}.failed{background:#ffebe9}"
    << "table.figures{border-collapse:collapse;margin:8px 0}table.figures th,table.figures td{border:1px solid #d0d7de;"
    << "padding:3px 8px;text-align:left}table.figures td{text-align:right;font-variant-numeric:tabular-nums}"
    << ".charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figcaption{font-size:13px;color:#57606a}"
    << ".violation{border-left:4px solid #cf222e;padding-left:10px;margin:10px 0}"
    << "pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:320px}.bench svg{max-width:100%;height:auto}"
    << "</style></head><body>\n<h1>" << Escape(title) << "</h1>\n<p>campaign seed <b id='campaign-seed'>"
    << (r.value("campaign_seed", nlohmann::json()).is_null() ? std::string("mixed")
                                                             : std::to_string(r["campaign_seed"].get<uint64_t>()))
    << "</b>, commit <code>" << Escape(r.value("commit", "unknown")) << "</code></p>\n<p id='verdict' class='verdict "
    << (clean ? (merged.notes.empty() ? "clean'>no violation, every shard present" : "clean'>no violation in the shards present")
           : "failed'>")
    << (clean ? "" : std::to_string(merged.violations) + " violation(s), " + std::to_string(merged.problems.size()) +
                         " problem(s) with the shards")
    << "</p>\n";
  if (!merged.problems.empty() || !merged.notes.empty()) {
    s << "<ul class='problems'>";
    for (const auto& p : merged.problems) s << "<li>" << Escape(p) << "</li>";
    for (const auto& n : merged.notes) s << "<li>partial report: " << Escape(n) << "</li>";
    s << "</ul>";
  }
  const nlohmann::json tools = r.value("tools", nlohmann::json::object());
  for (const auto& [tool, t] : tools.items()) {
    static const std::vector<nlohmann::json> kNoCases;
    auto found = merged.cases.find(tool);
    s << ToolSection(tool, t, found == merged.cases.end() ? kNoCases : found->second) << "\n";
  }
  if (!bench_svg.empty()) {
    size_t start = bench_svg.find("<svg");
    s << "<section class='bench'><h2>dbdb-bench</h2>"
      << (start == std::string::npos ? "<p>(not an SVG document)</p>" : bench_svg.substr(start)) << "</section>\n";
  }
  s << "</body></html>\n";
  return s.str();
}

}  // namespace faultfs::campaign
