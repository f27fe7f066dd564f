// Campaigns: shard resolution, case numbering, merge (missing, repeated and mismatched shards,
// repeated violations, sums), progress and the HTML report (faultfs/campaign.h).
#include "faultfs/campaign.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace faultfs::campaign {
namespace {

// Sets (or clears, with nullptr) an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = ::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    if (value != nullptr) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

struct CleanEnv {
  ScopedEnv a{"JOB_COMPLETION_INDEX", nullptr}, b{"GTEST_SHARD_INDEX", nullptr}, c{"GTEST_TOTAL_SHARDS", nullptr};
};

TEST(Campaign, ShardFlagAndEnvironment) {
  CleanEnv clean;
  Shard s;
  std::string error;
  ASSERT_TRUE(ResolveShard("", &s, &error));
  EXPECT_EQ(s.ToString(), "0/1");
  ASSERT_TRUE(ResolveShard("2/4", &s, &error)) << error;
  EXPECT_EQ(s.index, 2u);
  EXPECT_EQ(s.count, 4u);
  for (const char* bad : {"4/4", "0/0", "a/4", "1/", "/4", "-1/4", "1/4x", "4", "99999999999999999999/2"}) {
    EXPECT_FALSE(ResolveShard(bad, &s, &error)) << bad;
    EXPECT_FALSE(error.empty());
  }
  {
    ScopedEnv job("JOB_COMPLETION_INDEX", "3");
    ASSERT_TRUE(ResolveShard("8", &s, &error)) << error;
    EXPECT_EQ(s.ToString(), "3/8");
    EXPECT_TRUE(ResolveShard("3/8", &s, &error));
    EXPECT_FALSE(ResolveShard("2/8", &s, &error));  // the flag and the Job disagree
    EXPECT_FALSE(ResolveShard("", &s, &error));     // the Job gives no count
    EXPECT_NE(error.find("--shard N"), std::string::npos) << error;
    EXPECT_FALSE(ResolveShard("3", &s, &error));  // index 3 of 3 does not exist
  }
  {
    ScopedEnv index("GTEST_SHARD_INDEX", "1"), total("GTEST_TOTAL_SHARDS", "3");
    ASSERT_TRUE(ResolveShard("", &s, &error)) << error;
    EXPECT_EQ(s.ToString(), "1/3");
    EXPECT_FALSE(ResolveShard("1/4", &s, &error));  // the count disagrees
  }
  {
    ScopedEnv index("GTEST_SHARD_INDEX", "1");
    EXPECT_FALSE(ResolveShard("", &s, &error));  // half of googletest's pair
  }
  {
    ScopedEnv job("JOB_COMPLETION_INDEX", "x");
    EXPECT_FALSE(ResolveShard("4", &s, &error));
  }
}

TEST(Campaign, ShardsPartitionTheCases) {
  for (uint64_t n = 1; n <= 6; n++) {
    for (uint64_t k = 0; k < 50; k++) {
      int owners = 0;
      for (uint64_t i = 0; i < n; i++) owners += Shard{i, n}.Owns(k) ? 1 : 0;
      EXPECT_EQ(owners, 1) << k << " of " << n;
    }
  }
  EXPECT_EQ(CaseSeed(100, 0), 100u);
  EXPECT_EQ(CaseSeed(100, 7), 107u);
  EXPECT_EQ(CaseSeed(UINT64_MAX, 1), 0u);
}

TEST(Campaign, InvariantNamedInTheMessage) {
  EXPECT_EQ(InvariantOf("recovered 3 ... (I1 atomic commit)"), "I1");
  EXPECT_EQ(InvariantOf("lost (I2 durability)"), "I2");
  EXPECT_EQ(InvariantOf("x (txn 4) does not hold its chain's state (I1/I3): a=1"), "I1/I3");
  EXPECT_EQ(InvariantOf("history: not serializable"), "other");
}

std::string CaseLine(const std::string& tool, uint64_t k, uint64_t n, bool pass, uint64_t states,
                     const std::string& counterexample = "", uint64_t seed = 9) {
  nlohmann::json j = {{"kind", "case"}, {"tool", tool}, {"campaign_seed", seed}, {"shard_index", k % n},
                      {"shard_count", n}, {"case", k}, {"seed", seed + k}, {"verdict", pass ? "pass" : "violation"},
                      {"figures", {{"states_checked", states}, {"crash_points", 1}}}, {"seconds", 0.5},
                      {"t", 0.5 * (k + 1)}, {"replay", "dbdb-crash --seed " + std::to_string(seed + k)},
                      {"epochs", {{states, states * 2}}}, {"faults_fired", {{"faultfs/write", 1}}}};
  if (!pass) j["violation"] = {{"message", "lost a commit (I2 durability)"}, {"counterexample", counterexample}};
  return j.dump();
}

std::string ShardLine(const std::string& tool, uint64_t i, uint64_t n, uint64_t cases, uint64_t seed = 9,
                      nlohmann::json config = {{"ops", 10}}) {
  return nlohmann::json{{"kind", "shard"}, {"tool", tool}, {"campaign_seed", seed}, {"shard_index", i},
                        {"shard_count", n}, {"config", config}, {"commit", "abc"}, {"cases", cases},
                        {"stopped_by", "all cases"}, {"seconds", 1.0}}
      .dump();
}

std::string AllProblems(const MergeResult& r) {
  std::string all;
  for (const auto& p : r.problems) all += p + "\n";
  return all;
}

TEST(Campaign, MergeSumsEveryShard) {
  std::vector<std::string> lines = {CaseLine("t", 0, 2, true, 10), CaseLine("t", 1, 2, true, 20),
                                    CaseLine("t", 2, 2, true, 30), ShardLine("t", 0, 2, 2), ShardLine("t", 1, 2, 1)};
  MergeResult r = MergeLines(lines);
  EXPECT_TRUE(r.problems.empty()) << AllProblems(r);
  EXPECT_EQ(r.ExitCode(), 0);
  const auto& t = r.report["tools"]["t"];
  EXPECT_EQ(t["cases"], 3);
  EXPECT_EQ(t["figures"]["states_checked"], 60);
  EXPECT_EQ(t["figures"]["crash_points"], 3);
  EXPECT_EQ(t["epochs"][0][0], 60);
  EXPECT_EQ(t["epochs"][0][1], 120);
  EXPECT_EQ(t["faults_fired"]["faultfs/write"], 3);
  EXPECT_EQ(r.report["campaign_seed"], 9);
}

TEST(Campaign, MergeRefusesMissingRepeatedAndForeignShards) {
  auto problems_of = [](std::vector<std::string> lines, bool partial = false) { return MergeLines(lines, partial); };
  MergeResult missing = problems_of({CaseLine("t", 0, 2, true, 1), ShardLine("t", 0, 2, 1)});
  EXPECT_EQ(missing.ExitCode(), 3);
  EXPECT_NE(AllProblems(missing).find("shard 1/2 is missing"), std::string::npos) << AllProblems(missing);
  MergeResult partial = problems_of({CaseLine("t", 0, 2, true, 1), ShardLine("t", 0, 2, 1)}, true);
  EXPECT_EQ(partial.ExitCode(), 0);
  ASSERT_EQ(partial.notes.size(), 1u);

  MergeResult repeated = problems_of({ShardLine("t", 0, 1, 0), ShardLine("t", 0, 1, 0)});
  EXPECT_NE(AllProblems(repeated).find("appears 2 times"), std::string::npos) << AllProblems(repeated);
  MergeResult repeated_case = problems_of({CaseLine("t", 0, 1, true, 1), CaseLine("t", 0, 1, true, 1), ShardLine("t", 0, 1, 1)});
  EXPECT_NE(AllProblems(repeated_case).find("case 0 appears more than once"), std::string::npos);

  std::string stray = CaseLine("t", 1, 2, true, 1);
  auto j = nlohmann::json::parse(stray);
  j["shard_index"] = 0;  // case 1 claims shard 0 of 2
  MergeResult foreign = problems_of({j.dump(), ShardLine("t", 0, 2, 1), ShardLine("t", 1, 2, 0)});
  EXPECT_NE(AllProblems(foreign).find("does not belong"), std::string::npos) << AllProblems(foreign);

  MergeResult counts = problems_of({ShardLine("t", 0, 2, 0), ShardLine("t", 1, 3, 0)});
  EXPECT_NE(AllProblems(counts).find("different counts"), std::string::npos) << AllProblems(counts);
  MergeResult config = problems_of({ShardLine("t", 0, 2, 0), ShardLine("t", 1, 2, 0, 9, {{"ops", 11}})});
  EXPECT_NE(AllProblems(config).find("different configuration"), std::string::npos) << AllProblems(config);
  MergeResult seeds = problems_of({ShardLine("t", 0, 1, 0, 9), ShardLine("u", 0, 1, 0, 10)});
  EXPECT_NE(AllProblems(seeds).find("more than one campaign seed"), std::string::npos);
  MergeResult lost = problems_of({CaseLine("t", 0, 1, true, 1), ShardLine("t", 0, 1, 2)});
  EXPECT_NE(AllProblems(lost).find("says it ran 2 cases"), std::string::npos) << AllProblems(lost);
  MergeResult garbage = problems_of({"{not json", "[1,2]", ShardLine("t", 0, 1, 0)});
  EXPECT_EQ(garbage.problems.size(), 2u) << AllProblems(garbage);
  EXPECT_EQ(problems_of({}).ExitCode(), 3);
  MergeResult unreadable = Merge({"/nonexistent/cases.jsonl"});
  EXPECT_NE(AllProblems(unreadable).find("cannot be read"), std::string::npos);
  const std::string empty = ::testing::TempDir() + "/campaign_empty_shard";
  std::filesystem::create_directories(empty);
  MergeResult empty_dir = Merge({empty});  // a directory without cases.jsonl
  EXPECT_NE(AllProblems(empty_dir).find("cases.jsonl: cannot be read"), std::string::npos) << AllProblems(empty_dir);
}

TEST(Campaign, MergeKeepsEachViolationOnce) {
  // Cases 0 and 1: the same steps with another key and size (one counterexample); case 2: a delete.
  std::vector<std::string> lines = {CaseLine("t", 0, 2, false, 1, "0: commit {put k244 (34 bytes)}"),
                                    CaseLine("t", 1, 2, false, 1, "0: commit {put k7 (5 bytes)}"),
                                    CaseLine("t", 2, 2, false, 1, "0: commit {del k244}"), CaseLine("t", 3, 2, true, 1),
                                    ShardLine("t", 0, 2, 2), ShardLine("t", 1, 2, 2)};
  MergeResult r = MergeLines(lines);
  EXPECT_TRUE(r.problems.empty()) << AllProblems(r);
  EXPECT_EQ(r.ExitCode(), 1);
  EXPECT_EQ(r.violations, 2u);
  const auto& t = r.report["tools"]["t"];
  ASSERT_EQ(t["violations"].size(), 2u);
  EXPECT_EQ(t["violations"][0]["case"], 0);  // the lowest case is kept
  EXPECT_EQ(t["violations"][0]["repeats"], 1);
  EXPECT_EQ(t["violations"][0]["repeat_cases"], nlohmann::json::array({1}));
  EXPECT_EQ(t["violations"][1]["case"], 2);
  // Other numbers still tell counterexamples apart: an errno, a kill step.
  MergeResult errnos = MergeLines({CaseLine("t", 0, 1, false, 1, "write fails with errno 5"),
                                   CaseLine("t", 1, 1, false, 1, "write fails with errno 28"), ShardLine("t", 0, 1, 2)});
  EXPECT_EQ(errnos.violations, 2u);
  EXPECT_EQ(t["violations"][0]["invariant"], "I2");
  EXPECT_EQ(t["violations"][0]["replay"], "dbdb-crash --seed 9");
  EXPECT_EQ(t["duplicate_violations_removed"], 1);
  EXPECT_EQ(t["passed"], 1);
}

TEST(Campaign, MalformedLinesAreProblemsNotCrashes) {
  std::string good = CaseLine("t", 0, 1, true, 1);
  auto with = [&](const std::string& field, nlohmann::json value) {
    auto j = nlohmann::json::parse(good);
    j[field] = value;
    return j.dump();
  };
  auto without = [&](const std::string& field) {
    auto j = nlohmann::json::parse(good);
    j.erase(field);
    return j.dump();
  };
  std::vector<std::string> bad = {
      with("figures", {{"states_checked", -1}}), with("figures", "many"), with("figures", {{"x", "1"}}),
      with("epochs", {{1}}), with("epochs", {1, 2}), with("epochs", "x"), with("verdict", 3), with("verdict", "maybe"),
      with("t", "soon"), with("seconds", -2), with("faults_fired", {{"p", -3}}), with("work", {1}),
      with("shard_count", 0), with("shard_index", 5), with("case", "zero"), with("tool", 7),
      with("verdict", "violation"), without("figures"), without("replay"), without("seed"),
      [] {
        auto j = nlohmann::json::parse(CaseLine("t", 0, 1, false, 1, "x"));
        j["violation"]["counterexample"] = nlohmann::json::array({1});
        return j.dump();
      }(),
      [] {
        auto j = nlohmann::json::parse(CaseLine("t", 0, 1, false, 1, "x"));
        j["violation"] = "lost";
        return j.dump();
      }(),
      nlohmann::json{{"kind", "shard"}, {"tool", "t"}, {"campaign_seed", 9}, {"shard_index", 0}, {"shard_count", 1},
                     {"cases", "1"}, {"seconds", 1.0}, {"commit", "a"}, {"stopped_by", "x"}}.dump(),
      nlohmann::json{{"kind", "manifest"}, {"campaign_seed", 9}, {"shard_index", 0}, {"shard_count", 1}, {"tools", "t"}}.dump(),
      R"({"kind": 5})", "null", "\"text\""};
  for (const auto& line : bad) {
    MergeResult r = MergeLines({line, ShardLine("t", 0, 1, 1)});
    EXPECT_EQ(r.ExitCode(), 3) << line;
    ASSERT_FALSE(r.problems.empty()) << line;
    EXPECT_EQ(r.problems.front().rfind("line 1: ", 0), 0u) << line << " -> " << AllProblems(r);  // refused itself
    EXPECT_NO_THROW(HtmlReport(r, "t", "")) << line;
  }
  MergeResult fine = MergeLines({good, ShardLine("t", 0, 1, 1)});  // the line they were made from
  EXPECT_EQ(fine.ExitCode(), 0) << AllProblems(fine);
  // A saturated sum (two huge counts) formats instead of recursing.
  MergeResult huge = MergeLines({with("figures", {{"states_exist", UINT64_MAX}}), ShardLine("t", 0, 1, 1)});
  EXPECT_EQ(huge.ExitCode(), 0) << AllProblems(huge);
  EXPECT_NE(HtmlReport(huge, "t", "").find("1.845e+19"), std::string::npos);
}

TEST(Campaign, ManifestsRequireEveryToolOfEveryShard) {
  auto manifest = [](uint64_t i, uint64_t n) {
    return nlohmann::json{{"kind", "manifest"}, {"campaign_seed", 9}, {"shard_index", i}, {"shard_count", n},
                          {"tools", {"t", "stress"}}}
        .dump();
  };
  // The stress tool failed to start on both shards: no line of it at all.
  MergeResult r = MergeLines({manifest(0, 2), manifest(1, 2), ShardLine("t", 0, 2, 0), ShardLine("t", 1, 2, 0)});
  EXPECT_EQ(r.ExitCode(), 3);
  EXPECT_NE(AllProblems(r).find("stress: named in the manifests"), std::string::npos) << AllProblems(r);
  MergeResult no_manifest = MergeLines({manifest(0, 2), ShardLine("t", 0, 2, 0), ShardLine("t", 1, 2, 0),
                                        ShardLine("stress", 0, 2, 0), ShardLine("stress", 1, 2, 0)});
  EXPECT_NE(AllProblems(no_manifest).find("shard 1/2 has no manifest line"), std::string::npos) << AllProblems(no_manifest);
  MergeResult whole = MergeLines({manifest(0, 2), manifest(1, 2), ShardLine("t", 0, 2, 0), ShardLine("t", 1, 2, 0),
                                  ShardLine("stress", 0, 2, 0), ShardLine("stress", 1, 2, 0)});
  EXPECT_EQ(whole.ExitCode(), 0) << AllProblems(whole);
}

TEST(Campaign, CaseLogLinesMergeBack) {
  std::string dir = ::testing::TempDir() + "/campaign_caselog";
  std::filesystem::create_directories(dir);
  for (uint64_t i = 0; i < 3; i++) {
    CaseLog log(dir + "/s" + std::to_string(i) + ".jsonl", "tool", 5, Shard{i, 3}, {{"ops", 3}});
    ASSERT_TRUE(log.ok());
    for (uint64_t k = 0; k < 10; k++) {
      if (!Shard{i, 3}.Owns(k)) continue;
      log.Case(k, CaseSeed(5, k), k != 4, {{"states_checked", k}}, 0.01, "replay " + std::to_string(k),
               k == 4 ? nlohmann::json{{"violation", {{"message", "x (I3 prefix)"}, {"counterexample", "w"}}}}
                      : nlohmann::json::object());
    }
    log.Finish("all cases");
  }
  // A shard's directory stands for its cases.jsonl.
  std::filesystem::create_directories(dir + "/shard-2");
  std::filesystem::copy_file(dir + "/s2.jsonl", dir + "/shard-2/cases.jsonl",
                             std::filesystem::copy_options::overwrite_existing);
  MergeResult r = Merge({dir + "/s0.jsonl", dir + "/s1.jsonl", dir + "/shard-2"});
  EXPECT_TRUE(r.problems.empty()) << AllProblems(r);
  EXPECT_EQ(r.report["tools"]["tool"]["cases"], 10);
  EXPECT_EQ(r.report["tools"]["tool"]["figures"]["states_checked"], 45);
  EXPECT_EQ(r.report["tools"]["tool"]["violations"][0]["invariant"], "I3");
  EXPECT_EQ(r.report["tools"]["tool"]["violations"][0]["seed"], 9);
  EXPECT_EQ(r.report["commit"], BuildCommit());
  CaseLog unwritable("/nonexistent/dir/x.jsonl", "tool", 5, Shard{}, nullptr);
  EXPECT_FALSE(unwritable.ok());
}

std::string ReadAll(int fd) {
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, static_cast<size_t>(n));
  return out;
}

TEST(Campaign, ProgressWritesLinesWhenNotATerminal) {
  ScopedEnv interval("DBDB_PROGRESS_SECONDS", nullptr);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  {
    Progress p(fds[1], 3600);
    EXPECT_FALSE(p.terminal());
    p.Update("first");   // printed: the first line always is
    p.Update("second");  // held back: within the interval
    p.Update("third");
    p.Done();            // the newest held-back text
  }
  ::close(fds[1]);
  EXPECT_EQ(ReadAll(fds[0]), "first\nthird\n");
  ::close(fds[0]);
  ScopedEnv every("DBDB_PROGRESS_SECONDS", "0");
  ASSERT_EQ(::pipe(fds), 0);
  {
    Progress p(fds[1]);
    p.Update("a");
    p.Update("b");
  }
  ::close(fds[1]);
  EXPECT_EQ(ReadAll(fds[0]), "a\nb\n");  // no carriage returns in a log file
  ::close(fds[0]);
}

TEST(Campaign, HtmlReportShowsFiguresChartsAndEscapedViolations) {
  std::vector<std::string> lines = {CaseLine("t", 0, 1, true, 1000), CaseLine("t", 1, 1, false, 500, "put <script>alert(1)</script>")};
  // One rate point per case: a chart only from 4 cases on (one case per shard is no curve).
  EXPECT_EQ(HtmlReport(MergeLines(lines), "x", "").find("id='t-rate'"), std::string::npos);
  for (uint64_t k = 2; k < 5; k++) lines.push_back(CaseLine("t", k, 1, true, 0));
  lines.push_back(ShardLine("t", 0, 1, 5));
  MergeResult r = MergeLines(lines);
  std::string html = HtmlReport(r, "A & B", "<?xml version='1.0'?><svg id='bench'></svg>");
  EXPECT_NE(html.find("<title>A &amp; B</title>"), std::string::npos);
  EXPECT_NE(html.find("data-figure='states_checked'>1,500<"), std::string::npos) << html;
  EXPECT_NE(html.find("id='t-rate'"), std::string::npos);
  EXPECT_NE(html.find("id='t-epochs'"), std::string::npos);
  EXPECT_NE(html.find("id='t-faults'"), std::string::npos);
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  // A tool name cannot leave its (single-quoted) attribute.
  std::vector<std::string> odd = {CaseLine("a' onmouseover='x", 0, 1, true, 1), ShardLine("a' onmouseover='x", 0, 1, 1)};
  std::string odd_html = HtmlReport(MergeLines(odd), "t", "");
  EXPECT_EQ(odd_html.find("' onmouseover='"), std::string::npos);
  EXPECT_NE(odd_html.find("a&#39; onmouseover=&#39;x"), std::string::npos);
  EXPECT_NE(html.find("put &lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("dbdb-crash --seed 10"), std::string::npos);  // the violation's replay line
  EXPECT_NE(html.find("<svg id='bench'>"), std::string::npos);
  EXPECT_EQ(html.find("<?xml"), std::string::npos);
  EXPECT_NE(html.find("class='verdict failed'"), std::string::npos);
}

}  // namespace
}  // namespace faultfs::campaign
