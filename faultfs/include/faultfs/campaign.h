// Campaigns: shards, case lines, merging and progress, shared by dbdb-crash, dbdb-stress, the
// property tests and ci/campaign.sh (docs/CAMPAIGNS.md).
//
// A campaign is a campaign seed S and a numbered sequence of cases. Case k's seed is S + k, and
// depends on nothing else: shard I of N runs the cases k with k % N == I, so the N shards of a
// campaign run exactly the cases of the unsharded run, and (S, N, the commit) reproduces all of it.
// Every case writes one JSON line (its seed, verdict, figures, counterexample and the command that
// replays it); every shard ends with one "shard" line naming what it ran. Merge checks that every
// shard 0..N-1 is there exactly once, drops repeated violations and sums the figures.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace faultfs::campaign {

struct Shard {
  uint64_t index = 0;
  uint64_t count = 1;
  bool Owns(uint64_t case_index) const { return case_index % count == index; }
  std::string ToString() const { return std::to_string(index) + "/" + std::to_string(count); }
};

// Resolves the shard from the --shard flag's text ("I/N", or "N" to take I from the environment)
// and the environment: JOB_COMPLETION_INDEX (a Kubernetes Indexed Job), or GTEST_SHARD_INDEX and
// GTEST_TOTAL_SHARDS. Without a flag and without the variables: 0/1. A flag and an environment that
// disagree, an index not below the count, or a count of 0 are errors (false, `error` set).
bool ResolveShard(const std::string& flag, Shard* shard, std::string* error);

// The seed of case `case_index` of campaign `campaign_seed` (wraps modulo 2^64).
inline uint64_t CaseSeed(uint64_t campaign_seed, uint64_t case_index) { return campaign_seed + case_index; }

// The build's commit (git describe at build time, "unknown" outside a checkout).
std::string BuildCommit();

// The violated invariant named in a violation message: the last "(I…)" group, e.g. "I2" or
// "I1/I3"; when there is none, "recovery failed" for a message that starts so (an engine that
// would not open after a crash), "corruption" for one that names a Corruption, else "other".
std::string InvariantOf(const std::string& message);

// Writes the case lines and the final shard line of one tool's shard to a file (JSON Lines,
// flushed after every line so a killed shard leaves whole lines behind). Does nothing when the
// path is empty.
class CaseLog {
 public:
  CaseLog(std::string path, std::string tool, uint64_t campaign_seed, Shard shard, nlohmann::json config);
  bool ok() const { return path_.empty() || static_cast<bool>(out_); }
  const std::string& path() const { return path_; }

  // One case. `figures` are deterministic counts (summed by merge and compared across shardings);
  // `extra` may hold "work" (counts that depend on threads or timing, summed but not compared),
  // "epochs" ([[checked, exist], ...]), "faults_fired" ({point: count}) and "violation"
  // ({"message", "counterexample", ...}); `seconds` is the case's run time.
  void Case(uint64_t case_index, uint64_t seed, bool passed, const nlohmann::json& figures, double seconds,
            const std::string& replay, nlohmann::json extra = nlohmann::json::object());
  // The shard line: how many cases ran and why the shard stopped ("all cases", "duration",
  // "violations"). A shard without this line (killed, or still running) is missing to merge.
  void Finish(const std::string& stopped_by);

 private:
  void Write(const char* kind, nlohmann::json fields);  // the line: kind, tool, seed, shard, then fields
  std::string path_, tool_;
  uint64_t campaign_seed_;
  Shard shard_;
  nlohmann::json config_;
  std::ofstream out_;
  uint64_t cases_ = 0;
  double started_ = 0;  // monotonic seconds at construction
};

// The merge of shard files: see Merge().
struct MergeResult {
  nlohmann::json report;              // {"campaign_seed", "tools": {tool: {...}}, "problems": [...]}
  std::vector<std::string> problems;  // missing, repeated or mismatched shards, unreadable lines
  std::vector<std::string> notes;     // with `partial`: the shards not (yet) there; unknown commits
  std::map<std::string, std::vector<nlohmann::json>> cases;  // per tool: the valid case lines, each once
  uint64_t violations = 0;            // after removing duplicates
  int ExitCode() const { return !problems.empty() ? 3 : violations > 0 ? 1 : 0; }
};

// Reads JSON lines from every input (a file, or a shard's directory holding cases.jsonl: case, shard and manifest lines; every field type-checked, a
// bad line is a problem, never a crash) and, per tool: checks that the shard lines agree on the
// campaign seed, the shard count, the configuration and the commit, that every shard 0..N-1 is
// present exactly once and finished, and that every case belongs to its shard and appears once;
// that every tool a manifest names (ci/campaign.sh writes one per shard) left its shards; sums the
// figures, the work, the epoch coverage and the faults fired; keeps each violation once per
// (invariant, counterexample up to key names and value sizes), the lowest case first, counting the
// repeats it removed and naming the first 20 of their cases. `partial` (a report of the shards done
// so far) notes missing shards instead of failing on them.
MergeResult Merge(const std::vector<std::string>& input_paths, bool partial = false);
MergeResult MergeLines(const std::vector<std::string>& lines, bool partial = false);

// The self-contained HTML report of a merge: the figures, states per second over time (from the
// merge's valid case lines), coverage per sync epoch, faults fired by point and every violation
// with its counterexample and replay line; `bench_svg` (an SVG document of ours, inserted as it
// is; may be empty) is shown beside them.
std::string HtmlReport(const MergeResult& merged, const std::string& title, const std::string& bench_svg);

// Progress on a stream: redrawn in place when it is a terminal, otherwise one plain line every
// `interval_seconds` (DBDB_PROGRESS_SECONDS overrides; default 10), so a log file gets lines.
class Progress {
 public:
  explicit Progress(int fd = 2, double interval_seconds = 10);
  ~Progress();
  // Shows `text` now if on a terminal or if the interval passed since the last plain line.
  void Update(const std::string& text);
  // Ends the progress display: the last text on its own line.
  void Done();
  bool terminal() const { return terminal_; }

 private:
  void Write(const std::string& s);
  int fd_;
  bool terminal_;
  double interval_;
  double last_ = -1e18;
  std::string pending_;
  bool drawn_ = false;
};

}  // namespace faultfs::campaign
