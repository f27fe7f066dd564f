// Campaigns: shards, case lines, merge and progress (campaign.h, docs/CAMPAIGNS.md).
#include "faultfs/campaign.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdlib>
#include <regex>
#include <set>

#include "dbdb_build_commit.h"

namespace faultfs::campaign {

namespace {

double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A whole decimal number that fits in 64 bits; nothing else.
bool ParseCount(const std::string& text, uint64_t* value) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  *value = std::stoull(text);
  return true;
}

const char* Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : nullptr;
}

bool EnvCount(const char* name, std::optional<uint64_t>* value, std::string* error) {
  const char* text = Env(name);
  if (text == nullptr) return true;
  uint64_t v;
  if (!ParseCount(text, &v)) {
    *error = std::string(name) + "='" + text + "' is not a whole number";
    return false;
  }
  *value = v;
  return true;
}

}  // namespace

bool ResolveShard(const std::string& flag, Shard* shard, std::string* error) {
  std::optional<uint64_t> job_index, gtest_index, gtest_total;
  if (!EnvCount("JOB_COMPLETION_INDEX", &job_index, error) || !EnvCount("GTEST_SHARD_INDEX", &gtest_index, error) ||
      !EnvCount("GTEST_TOTAL_SHARDS", &gtest_total, error)) {
    return false;
  }
  if (job_index && gtest_index && *job_index != *gtest_index) {
    *error = "JOB_COMPLETION_INDEX and GTEST_SHARD_INDEX disagree";
    return false;
  }
  std::optional<uint64_t> env_index = job_index ? job_index : gtest_index;
  Shard s;
  size_t slash = flag.find('/');
  if (!flag.empty() && slash != std::string::npos) {
    if (!ParseCount(flag.substr(0, slash), &s.index) || !ParseCount(flag.substr(slash + 1), &s.count)) {
      *error = "--shard '" + flag + "' is not I/N (two whole numbers)";
      return false;
    }
    if (env_index && *env_index != s.index) {
      *error = "--shard " + flag + " disagrees with the environment's shard index " + std::to_string(*env_index);
      return false;
    }
  } else if (!flag.empty()) {
    if (!ParseCount(flag, &s.count)) {
      *error = "--shard '" + flag + "' is not I/N or N";
      return false;
    }
    if (!env_index) {
      *error = "--shard " + flag + " takes the shard index from JOB_COMPLETION_INDEX or GTEST_SHARD_INDEX; neither is set";
      return false;
    }
    s.index = *env_index;
  } else if (gtest_index || gtest_total) {
    if (!gtest_index || !gtest_total) {
      *error = "GTEST_SHARD_INDEX and GTEST_TOTAL_SHARDS must be set together";
      return false;
    }
    s.index = *gtest_index;
    s.count = *gtest_total;
  } else if (job_index) {
    *error = "JOB_COMPLETION_INDEX is set but not the shard count: pass --shard N (the Job's completions)";
    return false;
  }
  if (gtest_total && *gtest_total != s.count) {
    *error = "the shard count " + std::to_string(s.count) + " disagrees with GTEST_TOTAL_SHARDS=" + std::to_string(*gtest_total);
    return false;
  }
  if (s.count == 0 || s.index >= s.count) {
    *error = "shard " + s.ToString() + " does not exist: the index must be below the count, the count above 0";
    return false;
  }
  *shard = s;
  return true;
}

std::string BuildCommit() { return DBDB_BUILD_COMMIT; }

std::string InvariantOf(const std::string& message) {
  static const std::regex kGroup(R"(\((I[0-9][^)]*)\))");
  std::string found = message.rfind("recovery failed", 0) == 0             ? "recovery failed"
                      : message.find("Corruption") != std::string::npos ? "corruption"
                                                                         : "other";
  for (auto it = std::sregex_iterator(message.begin(), message.end(), kGroup); it != std::sregex_iterator(); ++it) {
    found = (*it)[1].str();
    size_t space = found.find(' ');  // "I1 atomic commit" -> "I1"
    if (space != std::string::npos) found.resize(space);
  }
  return found;
}

CaseLog::CaseLog(std::string path, std::string tool, uint64_t campaign_seed, Shard shard, nlohmann::json config)
    : path_(std::move(path)), tool_(std::move(tool)), campaign_seed_(campaign_seed), shard_(shard),
      config_(std::move(config)), started_(MonotonicSeconds()) {
  if (!path_.empty()) out_.open(path_, std::ios::out | std::ios::trunc);
}

void CaseLog::Write(const char* kind, nlohmann::json fields) {
  nlohmann::json line = {{"kind", kind},
                         {"tool", tool_},
                         {"campaign_seed", campaign_seed_},
                         {"shard_index", shard_.index},
                         {"shard_count", shard_.count}};
  line.update(fields);
  // Replace, never throw: a message may quote bytes that are not UTF-8.
  out_ << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
}

void CaseLog::Case(uint64_t case_index, uint64_t seed, bool passed, const nlohmann::json& figures, double seconds,
                   const std::string& replay, nlohmann::json extra) {
  cases_++;
  if (path_.empty()) return;
  if (extra.contains("violation") && !extra["violation"].contains("invariant")) {
    extra["violation"]["invariant"] = InvariantOf(extra["violation"].value("message", ""));
  }
  nlohmann::json fields = {{"case", case_index},
                           {"seed", seed},
                           {"verdict", passed ? "pass" : "violation"},
                           {"figures", figures},
                           {"seconds", seconds},
                           {"t", MonotonicSeconds() - started_},
                           {"replay", replay}};
  fields.update(extra);
  Write("case", std::move(fields));
}

void CaseLog::Finish(const std::string& stopped_by) {
  if (path_.empty()) return;
  Write("shard", {{"config", config_},
                  {"commit", BuildCommit()},
                  {"cases", cases_},
                  {"stopped_by", stopped_by},
                  {"seconds", MonotonicSeconds() - started_}});
}

// ---- merge ----

namespace {

void AddFigures(nlohmann::json& sum, const nlohmann::json& figures) {
  for (const auto& [key, value] : figures.items()) {
    if (value.is_number_unsigned() || value.is_number_integer()) {
      uint64_t add = value.get<uint64_t>(), have = sum.value(key, uint64_t{0});
      sum[key] = add > UINT64_MAX - have ? UINT64_MAX : have + add;  // saturating, like states_exist
    } else if (value.is_number()) {
      sum[key] = sum.value(key, 0.0) + value.get<double>();
    }
  }
}

// A counterexample with its key names and value sizes taken out: the shrinker minimizes steps, not
// names or sizes, so "put k244 (34 bytes)" and "put k184 (5 bytes)" are one counterexample. Every
// other number (an errno, a schedule, a kill step, a threshold) still tells counterexamples apart.
std::string Shape(const std::string& text) {
  static const std::regex kKey(R"(\bk[0-9]+\b)"), kSize(R"(\b[0-9]+ bytes\b)");
  return std::regex_replace(std::regex_replace(text, kKey, "k#"), kSize, "# bytes");
}

struct ToolMerge {
  std::vector<nlohmann::json> shards;
  std::vector<nlohmann::json> cases;
};

// What a tool's shard lines say: how many shards the campaign had, its configuration, which
// shards finished (and how often), and their time.
struct ShardLines {
  uint64_t count = 0;
  nlohmann::json config;
  std::map<uint64_t, int> present;
  double seconds_total = 0, seconds_max = 0;
};

// The shard lines of one tool, each missing, repeated or foreign shard a problem (a missing one
// only a note when `partial`).
ShardLines ReadShardLines(const std::string& tool, const ToolMerge& m, bool partial, MergeResult* result) {
  auto problem = [&](const std::string& what) { result->problems.push_back(tool + ": " + what); };
  ShardLines l;
  for (const auto& s : m.shards) {
    if (l.count == 0) {
      l.count = s.value("shard_count", uint64_t{0});
      l.config = s.value("config", nlohmann::json::object());
    } else if (s.value("shard_count", uint64_t{0}) != l.count) {
      problem("shards of different counts (" + std::to_string(l.count) + " and " +
              std::to_string(s.value("shard_count", uint64_t{0})) + ") in one merge");
    } else if (s.value("config", nlohmann::json::object()) != l.config) {
      problem("shard " + std::to_string(s.value("shard_index", uint64_t{0})) +
              " ran a different configuration: " + s.value("config", nlohmann::json::object()).dump() + " vs " +
              l.config.dump());
    }
    l.present[s.value("shard_index", uint64_t{0})]++;
    l.seconds_total += s.value("seconds", 0.0);
    l.seconds_max = std::max(l.seconds_max, s.value("seconds", 0.0));
  }
  if (m.shards.empty()) {
    problem("case lines but no shard line: no shard finished");
    l.count = 0;
  }
  for (uint64_t i = 0; i < l.count; i++) {
    int n = l.present.count(i) ? l.present[i] : 0;
    std::string missing = "shard " + std::to_string(i) + "/" + std::to_string(l.count) + " is missing (no shard line)";
    if (n == 0 && partial) result->notes.push_back(tool + ": " + missing);
    if (n == 0 && !partial) problem(missing);
    if (n > 1) problem("shard " + std::to_string(i) + "/" + std::to_string(l.count) + " appears " + std::to_string(n) + " times");
  }
  for (const auto& [i, n] : l.present) {
    if (l.count != 0 && i >= l.count) problem("shard " + std::to_string(i) + " is beyond the count " + std::to_string(l.count));
  }
  return l;
}

// The sums of one tool's case lines, and its violations with the repeats of each removed.
struct CaseSums {
  std::map<uint64_t, uint64_t> cases_per_shard;
  std::set<uint64_t> seen_cases;
  nlohmann::json figures = nlohmann::json::object(), work = nlohmann::json::object(), faults = nlohmann::json::object();
  std::vector<std::pair<uint64_t, uint64_t>> epochs;  // per sync epoch index: checked, exist
  std::map<std::string, size_t> violation_index;      // the violation's kind: its index in violations
  nlohmann::json violations = nlohmann::json::array();
  uint64_t passed = 0, duplicates = 0;
};

void AddEpochs(const nlohmann::json& c, CaseSums* sums) {
  if (!c.contains("epochs") || !c["epochs"].is_array()) return;
  const auto& e = c["epochs"];
  if (sums->epochs.size() < e.size()) sums->epochs.resize(e.size());
  for (size_t i = 0; i < e.size(); i++) {
    uint64_t checked = e[i].at(0).get<uint64_t>(), exist = e[i].at(1).get<uint64_t>();
    sums->epochs[i].first += checked;
    sums->epochs[i].second = exist > UINT64_MAX - sums->epochs[i].second ? UINT64_MAX : sums->epochs[i].second + exist;
  }
}

// A violating case's violation: the first of its kind (its invariant and the shape of its
// counterexample) is kept, later ones count as its repeats.
void AddViolation(const nlohmann::json& c, uint64_t k, CaseSums* sums) {
  nlohmann::json v = c.value("violation", nlohmann::json::object());
  v["case"] = k;
  v["seed"] = c.value("seed", uint64_t{0});
  if (!v.contains("replay")) v["replay"] = c.value("replay", "");
  if (!v.contains("invariant")) v["invariant"] = InvariantOf(v.value("message", ""));
  std::string key = v.value("invariant", "") + "\n" + Shape(v.value("counterexample", v.value("message", "")));
  auto [it, fresh] = sums->violation_index.emplace(key, sums->violations.size());
  if (fresh) {
    v["repeats"] = 0;
    v["repeat_cases"] = nlohmann::json::array();
    sums->violations.push_back(v);
    return;
  }
  nlohmann::json& first = sums->violations[it->second];
  first["repeats"] = first["repeats"].get<uint64_t>() + 1;
  if (first["repeat_cases"].size() < 20) first["repeat_cases"].push_back(k);
  sums->duplicates++;
}

// One tool's case lines, in case order, each once (a repeated or foreign case a problem); leaves
// m.cases holding each case once.
CaseSums SumCases(const std::string& tool, ToolMerge& m, uint64_t count, MergeResult* result) {
  auto problem = [&](const std::string& what) { result->problems.push_back(tool + ": " + what); };
  CaseSums sums;
  std::sort(m.cases.begin(), m.cases.end(),
            [](const nlohmann::json& a, const nlohmann::json& b) { return a.value("case", 0ull) < b.value("case", 0ull); });
  std::vector<nlohmann::json> unique_cases;
  for (const auto& c : m.cases) {
    uint64_t k = c.value("case", uint64_t{0}), shard = c.value("shard_index", uint64_t{0});
    if (!sums.seen_cases.insert(k).second) {
      problem("case " + std::to_string(k) + " appears more than once");
      continue;
    }
    unique_cases.push_back(c);
    sums.cases_per_shard[shard]++;
    if (count != 0 && (c.value("shard_count", uint64_t{0}) != count || k % count != shard)) {
      problem("case " + std::to_string(k) + " does not belong to shard " + std::to_string(shard) + "/" +
              std::to_string(count));
    }
    AddFigures(sums.figures, c.value("figures", nlohmann::json::object()));
    AddFigures(sums.work, c.value("work", nlohmann::json::object()));
    AddFigures(sums.faults, c.value("faults_fired", nlohmann::json::object()));
    AddEpochs(c, &sums);
    if (c.value("verdict", "") == "pass") {
      sums.passed++;
      continue;
    }
    AddViolation(c, k, &sums);
  }
  m.cases = std::move(unique_cases);
  return sums;
}

void MergeTool(const std::string& tool, ToolMerge& m, bool partial, MergeResult* result, nlohmann::json* out) {
  ShardLines lines = ReadShardLines(tool, m, partial, result);
  CaseSums sums = SumCases(tool, m, lines.count, result);
  for (const auto& s : m.shards) {
    uint64_t i = s.value("shard_index", uint64_t{0}), claimed = s.value("cases", uint64_t{0});
    if (sums.cases_per_shard[i] != claimed && lines.present[i] == 1) {
      result->problems.push_back(tool + ": shard " + std::to_string(i) + "/" + std::to_string(lines.count) +
                                 " says it ran " + std::to_string(claimed) + " cases; " +
                                 std::to_string(sums.cases_per_shard[i]) + " case lines are here");
    }
  }
  nlohmann::json epoch_json = nlohmann::json::array();
  for (const auto& [checked, exist] : sums.epochs) epoch_json.push_back({checked, exist});
  result->violations += sums.violations.size();
  *out = {{"shard_count", lines.count},
          {"shards_present", lines.present.size()},
          {"config", lines.config},
          {"cases", sums.seen_cases.size()},
          {"passed", sums.passed},
          {"figures", sums.figures},
          {"work", sums.work},
          {"epochs", epoch_json},
          {"faults_fired", sums.faults},
          {"violations", sums.violations},
          {"duplicate_violations_removed", sums.duplicates},
          {"seconds_total", lines.seconds_total},
          {"seconds_max", lines.seconds_max}};
  if (sums.figures.contains("states_checked") && lines.seconds_total > 0) {
    (*out)["states_per_second"] = sums.figures["states_checked"].get<double>() / lines.seconds_total;
  }
}

}  // namespace

namespace {

bool IsCount(const nlohmann::json& j) { return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0); }

// An object of counts ({"name": n, ...}), as figures, work and faults_fired are.
bool IsCounts(const nlohmann::json& j) {
  if (!j.is_object()) return false;
  for (const auto& [key, value] : j.items()) {
    if (!IsCount(value)) return false;
  }
  return true;
}

// Why a parsed line cannot be merged ("" when it can): the merge's input is files from many
// machines, so every field it reads is checked here, once, before anything reads it.
std::string Invalid(const nlohmann::json& j, const std::string& kind) {
  auto has = [&](const char* key, bool (*ok)(const nlohmann::json&)) { return j.contains(key) && ok(j[key]); };
  auto is_string = [](const nlohmann::json& v) { return v.is_string(); };
  auto is_number = [](const nlohmann::json& v) { return v.is_number() && v.get<double>() >= 0; };
  if (!has("campaign_seed", IsCount) || !has("shard_index", IsCount) || !has("shard_count", IsCount)) {
    return "campaign_seed, shard_index and shard_count must be whole numbers";
  }
  if (j["shard_count"].get<uint64_t>() == 0 || j["shard_index"].get<uint64_t>() >= j["shard_count"].get<uint64_t>()) {
    return "shard " + j["shard_index"].dump() + "/" + j["shard_count"].dump() + " does not exist";
  }
  if (kind == "manifest") {
    if (!j.contains("tools") || !j["tools"].is_array()) return "a manifest names its tools in an array";
    for (const auto& t : j["tools"]) {
      if (!t.is_string()) return "a manifest's tools are names";
    }
    return "";
  }
  if (!has("tool", is_string)) return "no tool name";
  if (kind == "shard") {
    if (!has("cases", IsCount) || !has("seconds", is_number) || !has("commit", is_string) || !has("stopped_by", is_string)) {
      return "a shard line has cases, seconds, commit and stopped_by";
    }
    return "";
  }
  if (!has("case", IsCount) || !has("seed", IsCount) || !has("figures", IsCounts) || !has("seconds", is_number) ||
      !has("t", is_number) || !has("replay", is_string) || !has("verdict", is_string)) {
    return "a case line has case, seed, verdict, figures (counts), seconds, t and replay";
  }
  if (j["verdict"] != "pass" && j["verdict"] != "violation") return "verdict is pass or violation";
  if (j.contains("work") && !IsCounts(j["work"])) return "work must be counts";
  if (j.contains("faults_fired") && !IsCounts(j["faults_fired"])) return "faults_fired must be counts";
  if (j.contains("epochs")) {
    if (!j["epochs"].is_array()) return "epochs must be an array";
    for (const auto& e : j["epochs"]) {
      if (!e.is_array() || e.size() != 2 || !IsCount(e[0]) || !IsCount(e[1])) return "each epoch is [checked, exist]";
    }
  }
  if (j["verdict"] == "violation") {
    if (!j.contains("violation") || !j["violation"].is_object()) return "a violation line describes its violation";
    for (const auto& [key, value] : j["violation"].items()) {
      if (key != "case" && key != "seed" && key != "repeats" && key != "repeat_cases" && key != "workload_seed" &&
          key != "crash_point" && !value.is_string()) {
        return "the violation's " + key + " must be text";
      }
    }
  }
  return "";
}

}  // namespace

MergeResult MergeLines(const std::vector<std::string>& lines, bool partial) {
  MergeResult result;
  std::map<std::string, ToolMerge> tools;
  std::set<uint64_t> campaign_seeds;
  std::set<std::string> commits, required_tools;
  std::map<uint64_t, int> manifests;  // shard index -> manifest lines
  uint64_t manifest_count = 0;
  for (size_t i = 0; i < lines.size(); i++) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    std::string kind = j.is_object() && j.contains("kind") && j["kind"].is_string() ? j["kind"].get<std::string>() : "";
    std::string why = kind == "case" || kind == "shard" || kind == "manifest" ? Invalid(j, kind)
                                                                              : "not a case, shard or manifest line";
    if (!why.empty()) {
      result.problems.push_back("line " + std::to_string(i + 1) + ": " + why + ": " + lines[i].substr(0, 120));
      continue;
    }
    campaign_seeds.insert(j["campaign_seed"].get<uint64_t>());
    if (kind == "manifest") {
      manifests[j["shard_index"].get<uint64_t>()]++;
      if (manifest_count != 0 && manifest_count != j["shard_count"].get<uint64_t>()) {
        result.problems.push_back("manifests of different shard counts");
      }
      manifest_count = j["shard_count"].get<uint64_t>();
      for (const auto& t : j["tools"]) required_tools.insert(t.get<std::string>());
    } else if (kind == "shard") {
      commits.insert(j["commit"].get<std::string>());
      tools[j["tool"].get<std::string>()].shards.push_back(j);
    } else {
      tools[j["tool"].get<std::string>()].cases.push_back(j);
    }
  }
  if (campaign_seeds.size() > 1) result.problems.push_back("lines from more than one campaign seed");
  if (commits.size() > 1) result.problems.push_back("shards built from different commits");
  if (commits.count("unknown") > 0) result.notes.push_back("a shard's commit is unknown (built outside a git checkout)");
  if (tools.empty()) result.problems.push_back("no case or shard line at all");
  // ci/campaign.sh's manifest: the tools every shard was to run. A tool that left no line at all
  // (it failed to start on every shard) is missing, not absent.
  for (uint64_t i = 0; i < manifest_count; i++) {
    int n = manifests.count(i) ? manifests[i] : 0;
    std::string shard = "shard " + std::to_string(i) + "/" + std::to_string(manifest_count);
    if (n == 0 && partial) result.notes.push_back(shard + " has no manifest line");
    if (n == 0 && !partial) result.problems.push_back(shard + " has no manifest line (it never started)");
    if (n > 1) result.problems.push_back(shard + " has " + std::to_string(n) + " manifest lines");
  }
  for (const auto& tool : required_tools) {
    if (tools.count(tool) == 0) result.problems.push_back(tool + ": named in the manifests, but no shard of it finished");
  }
  nlohmann::json tools_json = nlohmann::json::object();
  for (auto& [tool, m] : tools) {
    MergeTool(tool, m, partial, &result, &tools_json[tool]);
    result.cases[tool] = std::move(m.cases);
  }
  result.report = {{"campaign_seed", campaign_seeds.size() == 1 ? nlohmann::json(*campaign_seeds.begin()) : nullptr},
                   {"commit", commits.size() == 1 ? *commits.begin() : std::string("mixed")},
                   {"tools", tools_json},
                   {"violations", result.violations},
                   {"problems", result.problems},
                   {"notes", result.notes}};
  return result;
}

MergeResult Merge(const std::vector<std::string>& input_paths, bool partial) {
  std::vector<std::string> lines;
  MergeResult unreadable;
  for (const auto& input : input_paths) {
    // A shard's directory (ci/campaign.sh --dir) stands for the cases.jsonl in it.
    std::error_code ec;
    const std::string path = std::filesystem::is_directory(input, ec) ? input + "/cases.jsonl" : input;
    std::ifstream in(path);
    if (!in || std::filesystem::is_directory(path, ec)) {
      unreadable.problems.push_back(path + ": cannot be read");
      continue;
    }
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    if (in.bad()) unreadable.problems.push_back(path + ": reading failed");
  }
  MergeResult result = MergeLines(lines, partial);
  result.problems.insert(result.problems.begin(), unreadable.problems.begin(), unreadable.problems.end());
  result.report["problems"] = result.problems;
  return result;
}

// ---- progress ----

Progress::Progress(int fd, double interval_seconds) : fd_(fd), terminal_(::isatty(fd) == 1), interval_(interval_seconds) {
  if (const char* env = Env("DBDB_PROGRESS_SECONDS")) interval_ = std::atof(env);
}

Progress::~Progress() { Done(); }

void Progress::Write(const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd_, s.data() + done, s.size() - done);
    if (n <= 0) return;  // progress is best effort: a closed stream loses it
    done += static_cast<size_t>(n);
  }
}

void Progress::Update(const std::string& text) {
  if (terminal_) {
    Write("\r\033[K" + text);
    drawn_ = true;
    return;
  }
  double now = MonotonicSeconds();
  if (now - last_ >= interval_) {
    Write(text + "\n");
    last_ = now;
    pending_.clear();
  } else {
    pending_ = text;
  }
}

void Progress::Done() {
  if (terminal_ && drawn_) Write("\n");
  if (!terminal_ && !pending_.empty()) Write(pending_ + "\n");
  drawn_ = false;
  pending_.clear();
}

}  // namespace faultfs::campaign
