// dbdb-campaign merge: merges the case lines of a sharded campaign (faultfs/campaign.h,
// docs/CAMPAIGNS.md). Checks every shard 0..N-1 is present exactly once, removes repeated
// violations, sums the figures, prints them, optionally writes the merged JSON and an HTML report.
// Exit codes: 0 clean, 1 violations, 2 usage, 3 shards missing, repeated or mismatched.
#include <faultfs/campaign.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  *ok = static_cast<bool>(in);
  return s.str();
}

void PrintSummary(const faultfs::campaign::MergeResult& merged) {
  const auto& r = merged.report;
  std::cout << "campaign seed: " << (r["campaign_seed"].is_null() ? "mixed" : r["campaign_seed"].dump())
            << ", commit " << r.value("commit", "unknown") << "\n";
  for (const auto& [tool, t] : r["tools"].items()) {
    std::cout << tool << ": " << t["shards_present"] << " of " << t["shard_count"] << " shards, " << t["cases"]
              << " cases (" << t["passed"] << " passed), " << t["violations"].size() << " distinct violations ("
              << t["duplicate_violations_removed"] << " repeats removed)\n";
    for (const auto& [key, value] : t["figures"].items()) std::cout << "  " << key << ": " << value.dump() << "\n";
    for (const auto& [key, value] : t["work"].items()) {
      std::cout << "  " << key << " (work, varies with threads): " << value.dump() << "\n";
    }
    if (!t["faults_fired"].empty()) std::cout << "  faults_fired: " << t["faults_fired"].dump() << "\n";
    for (const auto& v : t["violations"]) {
      std::cout << "  VIOLATION (" << v.value("invariant", "other") << ") case " << v.value("case", 0) << ": "
                << v.value("message", "") << "\n    replay: " << v.value("replay", "") << "\n";
    }
  }
  for (const auto& p : merged.problems) std::cout << "PROBLEM: " << p << "\n";
  for (const auto& n : merged.notes) std::cout << "note (partial merge): " << n << "\n";
  std::cout << (merged.ExitCode() == 0 ? "merge: clean" : merged.problems.empty() ? "merge: VIOLATIONS" : "merge: INCOMPLETE CAMPAIGN")
            << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dbdb-campaign: merge the shards of a campaign (case lines from dbdb-crash, dbdb-stress, proptests)"};
  app.require_subcommand(1);
  auto* merge = app.add_subcommand("merge", "merge shard files; exit 0 clean, 1 violations, 3 shards missing or repeated");
  std::vector<std::string> inputs;
  std::string out_path, html_path, bench_svg_path, title = "dbdb campaign";
  merge->add_option("files", inputs, "case-line files (JSON Lines) of every shard")->required();
  merge->add_option("--out", out_path, "write the merged JSON here");
  merge->add_option("--html", html_path, "write a self-contained HTML report here");
  merge->add_option("--bench-svg", bench_svg_path, "an SVG chart (dbdb-bench's) to show in the HTML report");
  merge->add_option("--title", title, "the HTML report's title");
  bool partial = false;
  merge->add_flag("--partial", partial, "the shards done so far: missing shards are noted, not a failure");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  faultfs::campaign::MergeResult merged = faultfs::campaign::Merge(inputs, partial);
  PrintSummary(merged);
  if (!out_path.empty()) {
    std::ofstream out(out_path);
    out << merged.report.dump(2) << "\n";
    if (!out) {
      std::cerr << "dbdb-campaign: cannot write " << out_path << "\n";
      return 2;
    }
  }
  if (!html_path.empty()) {
    std::string bench_svg;
    if (!bench_svg_path.empty()) {
      bool ok;
      bench_svg = ReadFile(bench_svg_path, &ok);
      if (!ok) {
        std::cerr << "dbdb-campaign: cannot read " << bench_svg_path << "\n";
        return 2;
      }
    }
    std::ofstream out(html_path);
    out << faultfs::campaign::HtmlReport(merged, title, bench_svg);
    if (!out) {
      std::cerr << "dbdb-campaign: cannot write " << html_path << "\n";
      return 2;
    }
    std::cout << "html report: " << html_path << "\n";
  }
  return merged.ExitCode();
}
