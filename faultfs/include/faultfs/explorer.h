// The crash-state explorer: runs a workload on an engine under test (engine.h; dbdb unless told
// otherwise) on the simulated filesystem, then at every mutation boundary of its trace enumerates
// the crash states a plan allows (exhaustively up to a bound, sampled with a seed beyond it),
// recovers each, and checks it with the crash oracle's bounds (I1 atomic commit, I2 durability as
// far as the engine's configuration promises it, I3 prefix), the engine's own check, and what the
// engine checks after the first write that follows recovery (dbdb: the tail was truncated, I6).
// An engine that does not number its commits gets a marker key in every commit naming it, so a
// recovered state names the commit it claims to be. Runs states in parallel; each thread its own
// filesystem.
#pragma once

#include <dbdb/db.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "faultfs/crash_state.h"
#include "faultfs/engine.h"

namespace faultfs {

struct WorkloadStep {
  enum class Kind : uint8_t { kCommit, kCompact, kReopen };
  Kind kind = Kind::kCommit;
  std::vector<std::pair<std::string, std::optional<std::string>>> changes;  // kCommit: put or delete
  std::string ToString() const;
};
using Workload = std::vector<WorkloadStep>;

// A workload of `steps` steps drawn with `seed`: mostly small transactions over a small key space
// (so keys repeat and nodes split and merge), with occasional large values, compactions and
// reopenings.
Workload GenerateWorkload(uint64_t seed, size_t steps);
std::string DescribeWorkload(const Workload& workload);

struct ExploreOptions {
  CrashPlan plan = CrashPlan::kAll;
  uint64_t states_max = 64;  // per crash point
  uint64_t seed = 1;
  unsigned threads = 1;
  dbdb::Durability durability = dbdb::Durability::kSync;
  uint32_t node_size_target_bytes = 512;
  // Small by default, so that short workloads fold and compact by themselves.
  uint64_t fold_threshold_bytes = 1024;
  uint64_t auto_compact_slack_bytes = 4096;
  size_t violations_max = 5;  // report this many (the first in the order the states are listed)
  bool keep_trace = false;     // ExploreResult::trace: the workload's trace (for a report)
  // The engine under test; null: dbdb, made durable by `durability` and tuned by the fields above.
  std::shared_ptr<Engine> engine;
};

// The key the explorer adds to every commit of an engine that does not number its commits: its
// value is the commit's number. It sorts after every workload key.
inline constexpr std::string_view kCommitMarkerKey = "\xff\xfe-explorer-commit";

struct Violation {
  size_t crash_point = 0;       // the number of trace operations that happened before the crash
  std::string last_operation;   // the trace operation just before the crash
  std::string crash_state;      // CrashChoice::Describe()
  std::string message;
};

struct EpochCoverage {
  size_t crash_points = 0;
  uint64_t states_exist = 0;    // saturating
  uint64_t states_checked = 0;
};

struct ExploreResult {
  size_t trace_operations = 0;
  size_t crash_points = 0;
  uint64_t states_checked = 0;    // (crash point, crash state) pairs checked against the oracle
  uint64_t distinct_states = 0;   // distinct filesystem images among them
  uint64_t recoveries = 0;        // recoveries run (one per distinct image)
  uint64_t states_exist = 0;      // saturating sum of the states each crash point has
  // States that recovered, as the promise allows, to a commit older than the newest one
  // acknowledged before the crash: a non-durable configuration losing commits as documented.
  uint64_t states_losing_acknowledged = 0;
  std::vector<EpochCoverage> epochs;  // one per sync epoch (interval between two syncs)
  std::vector<Violation> violations;
  std::vector<TraceOp> trace;  // with keep_trace
  double seconds = 0;
};

ExploreResult Explore(const Workload& workload, const ExploreOptions& options);

// Removes steps, then changes within steps, while `still_fails` holds: a minimal workload.
Workload ShrinkWorkload(Workload workload, const std::function<bool(const Workload&)>& still_fails);

}  // namespace faultfs
