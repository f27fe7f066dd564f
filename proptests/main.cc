// The property tests' main: sets RapidCheck's budget from the test tier unless RC_PARAMS already
// names one, so `RC_PARAMS="seed=…"` and `RC_PARAMS="reproduce=…"` replay a failure as printed.
//   DBDB_TEST_TIER=quick (default): 300 cases a property; long: 3000.
//
// Campaigns (docs/CAMPAIGNS.md), flags taken before googletest's:
//   --campaign-seed S   RapidCheck's seed (each property derives its own from it and its name)
//   --shard I/N         run the properties k with k % N == I, k numbering the properties the
//                       filter selects in googletest's order (so the shards of a campaign run
//                       exactly the unsharded run's properties; GTEST_SHARD_INDEX and
//                       GTEST_TOTAL_SHARDS are read as the shard, not left to googletest)
//   --cases-out FILE    one JSON line per property and a shard line, for `dbdb-campaign merge`
#include <faultfs/campaign.h>
#include <fiu.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <rapidcheck/gtest.h>

// A property that fails on purpose, disabled: the campaign tests run it (with
// --gtest_also_run_disabled_tests) to check that a failing property becomes a violation line with
// RapidCheck's counterexample and a replay command that fails the same way.
RC_GTEST_PROP(DISABLED_CampaignSelfTest, AFailingPropertyIsReportedWithItsCounterexample, (int x)) {
  RC_ASSERT(x < 10);
}

namespace {

namespace campaign = faultfs::campaign;

uint64_t ParamValue(const std::string& params, const std::string& name, uint64_t fallback) {
  size_t at = params.find(name + "=");
  return at == std::string::npos ? fallback : std::strtoull(params.c_str() + at + name.size() + 1, nullptr, 10);
}

std::string Name(const ::testing::TestInfo& info) { return std::string(info.test_suite_name()) + "." + info.name(); }

// googletest's wildcard match: '*' any run of characters, '?' one character.
bool Glob(const char* pattern, const char* name) {
  if (*pattern == '\0') return *name == '\0';
  if (*pattern == '*') return Glob(pattern + 1, name) || (*name != '\0' && Glob(pattern, name + 1));
  return *name != '\0' && (*pattern == '?' || *pattern == *name) && Glob(pattern + 1, name + 1);
}

// googletest's --gtest_filter: "POS1:POS2-NEG1:NEG2". An empty positive part before a '-' means
// '*'; an empty filter without one matches nothing (as in googletest 1.12).
bool MatchesFilter(const std::string& filter, const std::string& name) {
  size_t dash = filter.find('-');
  std::string positive = filter.substr(0, dash), negative = dash == std::string::npos ? "" : filter.substr(dash + 1);
  if (dash == std::string::npos && positive.empty()) return false;
  auto any = [&](const std::string& patterns) {
    size_t start = 0;
    while (true) {
      size_t colon = patterns.find(':', start);
      std::string p = patterns.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!p.empty() && Glob(p.c_str(), name.c_str())) return true;
      if (colon == std::string::npos) return false;
      start = colon + 1;
    }
  };
  return (positive.empty() || any(positive)) && !any(negative);
}

// Numbers the properties the filter selects (disabled ones only with --gtest_also_run_disabled_tests)
// in googletest's order, narrows
// the filter to this shard's (k % N == I), and returns the numbering.
std::map<std::string, uint64_t> ShardTheFilter(const campaign::Shard& shard) {
  std::map<std::string, uint64_t> index;
  std::string filter = ::testing::GTEST_FLAG(filter), mine;
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  uint64_t k = 0;
  for (int i = 0; i < unit.total_test_suite_count(); i++) {
    const ::testing::TestSuite* suite = unit.GetTestSuite(i);
    for (int j = 0; j < suite->total_test_count(); j++) {
      const ::testing::TestInfo& info = *suite->GetTestInfo(j);
      std::string name = Name(info);
      // googletest's rule: a suite or test name matching "DISABLED_*:*/DISABLED_*".
      bool disabled = MatchesFilter("DISABLED_*:*/DISABLED_*", info.test_suite_name()) ||
                      MatchesFilter("DISABLED_*:*/DISABLED_*", info.name());
      if ((disabled && !::testing::GTEST_FLAG(also_run_disabled_tests)) || !MatchesFilter(filter, name)) {
        continue;
      }
      index[name] = k;
      if (shard.Owns(k++)) mine += (mine.empty() ? "" : ":") + name;
    }
  }
  ::testing::GTEST_FLAG(filter) = mine.empty() ? "-*" : mine;
  return index;
}

// Writes one case line per property that ran: the property's index among the runnable tests
// (googletest's shard numbering), its verdict, the RapidCheck cases it passed, and on failure the
// failure messages (RapidCheck's counterexample) with the line that replays it.
class CaseListener : public ::testing::EmptyTestEventListener {
 public:
  CaseListener(std::unique_ptr<campaign::CaseLog> log, uint64_t seed, std::string params, campaign::Shard shard,
               std::map<std::string, uint64_t> index)
      : log_(std::move(log)), seed_(seed), params_(std::move(params)), shard_(shard), index_(std::move(index)) {}
  void OnTestStart(const ::testing::TestInfo&) override {
    failures_.clear();
    started_ = std::chrono::steady_clock::now();
  }
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed()) failures_ += std::string(result.summary()) + "\n";
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    std::string name = Name(info);
    uint64_t k = index_.count(name) ? index_[name] : UINT64_MAX;
    if (k == UINT64_MAX || !shard_.Owns(k)) {
      std::cerr << "proptests: " << name << " ran in shard " << shard_.ToString() << " but is case " << k << "\n";
      std::abort();  // the case numbering here and googletest's sharding disagree: a harness bug
    }
    bool passed = !info.result()->Failed();
    nlohmann::json figures = {{"properties", 1}, {"cases_passed", passed ? ParamValue(params_, "max_success", 100) : 0}};
    // The replay names the budget too: the same seed with another max_success or max_size runs
    // other cases.
    std::string replay = "RC_PARAMS='seed=" + std::to_string(seed_) +
                         " max_success=" + std::to_string(ParamValue(params_, "max_success", 100)) +
                         " max_size=" + std::to_string(ParamValue(params_, "max_size", 100)) +
                         "' proptests --gtest_filter=" + name +
                         (name.find("DISABLED_") != std::string::npos ? " --gtest_also_run_disabled_tests" : "");
    nlohmann::json extra = {{"property", name}};
    if (!passed) {
      extra["violation"] = {{"message", failures_.substr(0, failures_.find('\n'))},
                            {"counterexample", failures_},
                            {"replay", replay}};
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    log_->Case(k, seed_, passed, figures, seconds, replay, extra);
  }
  void OnTestProgramEnd(const ::testing::UnitTest&) override { log_->Finish("all cases"); }

 private:
  std::unique_ptr<campaign::CaseLog> log_;
  uint64_t seed_;
  std::string params_;
  campaign::Shard shard_;
  std::map<std::string, uint64_t> index_;
  std::string failures_;
  std::chrono::steady_clock::time_point started_;
};

// Removes "--name VALUE" or "--name=VALUE" from argv; returns whether it was there.
bool TakeFlag(int* argc, char** argv, const std::string& name, std::string* value) {
  for (int i = 1; i < *argc; i++) {
    std::string arg = argv[i];
    int used = 0;
    if (arg == name && i + 1 < *argc) {
      *value = argv[i + 1];
      used = 2;
    } else if (arg.rfind(name + "=", 0) == 0) {
      *value = arg.substr(name.size() + 1);
      used = 1;
    }
    if (used == 0) continue;
    for (int j = i; j + used < *argc; j++) argv[j] = argv[j + used];
    *argc -= used;
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::string seed_text, shard_text, cases_path;
  bool has_seed = TakeFlag(&argc, argv, "--campaign-seed", &seed_text);
  bool has_shard = TakeFlag(&argc, argv, "--shard", &shard_text);
  TakeFlag(&argc, argv, "--cases-out", &cases_path);

  const char* tier = ::getenv("DBDB_TEST_TIER");
  bool long_tier = tier != nullptr && std::string(tier) == "long";
  const char* existing = ::getenv("RC_PARAMS");
  std::string params = existing != nullptr ? existing : "";
  if (params.find("max_success") == std::string::npos && params.find("reproduce") == std::string::npos) {
    params += long_tier ? " max_success=3000" : " max_success=300";
  }
  if (params.find("max_size") == std::string::npos) params += " max_size=120";
  uint64_t seed = 0;
  if (has_seed) {
    if (seed_text.empty() || seed_text.find_first_not_of("0123456789") != std::string::npos) {
      std::cerr << "proptests: --campaign-seed '" << seed_text << "' is not a whole number\n";
      return 2;
    }
    if (params.find("seed=") != std::string::npos) {
      std::cerr << "proptests: --campaign-seed and RC_PARAMS's seed= both name a seed\n";
      return 2;
    }
    seed = std::stoull(seed_text);
    params += " seed=" + std::to_string(seed);
  }
  ::setenv("RC_PARAMS", params.c_str(), 1);

  campaign::Shard shard;
  std::string error;
  if ((has_shard || !cases_path.empty()) && !campaign::ResolveShard(shard_text, &shard, &error)) {
    std::cerr << "proptests: " << error << "\n";
    return 2;
  }
  bool sharding = has_shard || !cases_path.empty();
  if (sharding) {  // the shard is resolved: googletest must not shard again
    ::unsetenv("GTEST_SHARD_INDEX");
    ::unsetenv("GTEST_TOTAL_SHARDS");
  }
  fiu_init(0);
  ::testing::InitGoogleTest(&argc, argv);
  const std::string filter = ::testing::GTEST_FLAG(filter);
  std::map<std::string, uint64_t> index;
  if (sharding) index = ShardTheFilter(shard);
  if (!cases_path.empty()) {
    if (!has_seed) {
      std::cerr << "proptests: --cases-out needs --campaign-seed (the case lines name it)\n";
      return 2;
    }
    nlohmann::json config = {{"filter", filter},
                             {"also_run_disabled_tests", ::testing::GTEST_FLAG(also_run_disabled_tests)},
                             {"max_success", ParamValue(params, "max_success", 100)},
                             {"max_size", ParamValue(params, "max_size", 100)}};
    auto log = std::make_unique<campaign::CaseLog>(cases_path, "proptests", seed, shard, config);
    if (!log->ok()) {
      std::cerr << "proptests: cannot write " << cases_path << "\n";
      return 2;
    }
    ::testing::UnitTest::GetInstance()->listeners().Append(new CaseListener(std::move(log), seed, params, shard, std::move(index)));
  }
  return RUN_ALL_TESTS();
}
