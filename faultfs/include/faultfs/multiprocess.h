// Multi-process histories of an engine on one simulated machine, and the multi-process oracle.
//
// The engine is any engine.h engine that supports several processes (dbdb, SQLite), driven only
// through the engine interface. A MultiWorkload is a script per simulated process (open read-write or read-only, commit,
// read a snapshot, compact, close), faults armed per process, and a Schedule that interleaves the
// processes one filesystem operation at a time and kills the process it picks at given steps
// (sim_file_system.h). RunMulti runs it deterministically and records what every process did, at
// which trace position. Every commit writes a marker key naming its attempt, so any state read
// from the store — by a reader, by a writer's base, after a power cut — names the attempt it comes
// from, and the attempts form a tree (each names the attempt it was built on).
//
// The oracle (DESIGN.md I1-I9), over the whole history:
//  (a) every commit acknowledged by any process survives every later power cut if the engine's
//      configuration promises it (a durable one: all; SQLite's rollback journal under FULL: once a
//      later commit was acknowledged) (I2);
//  (b) in a durable configuration, what any reader saw survives a power cut too (seen implies
//      durable), except the fsyncgate limit no dbdb reader can close (docs/PERSISTENCE.md,
//      "Limits"): a reader's view of an attempt never acknowledged, after a sync of the file the
//      attempt wrote lost pages since the attempt began;
//  (c) recovery is stable: a read-only handle, check(), a read-write handle before and after it
//      settles the tail, and a second read-only handle all recover the same commit (I9), and the
//      visible state never moves except forward along one chain of commits (no commit comes back
//      after it was gone, no state is seen that a later one does not build on);
//  (d) every state seen is exactly the state its chain of commits produces (I1, I3, I4);
//  (e) what the engine promises about a handle whose commit failed (dbdb: it refuses further
//      writes, I7);
//  and no operation fails with Corruption, or with an I/O error no fault explains. Busy is an
//  answer (SQLite's locks do not wait: its busy handler retries, then gives up).
#pragma once

#include <dbdb/db.h>
#include <model/model.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "faultfs/crash_state.h"
#include "faultfs/engine.h"
#include "faultfs/sim_file_system.h"

namespace faultfs {

struct ProcessStep {
  enum class Kind : uint8_t { kOpen, kOpenReadOnly, kClose, kCommit, kRead, kCompact };
  Kind kind = Kind::kCommit;
  std::vector<std::pair<std::string, std::optional<std::string>>> changes;  // kCommit: put or delete
  std::string ToString() const;
};

struct ProcessScript {
  std::vector<ProcessStep> steps;
  std::vector<ArmedFault> faults;
};

struct MultiWorkload {
  std::vector<ProcessScript> processes;
  Schedule schedule;
  // The engine configuration ("sqlite/wal-full"); "" is dbdb in `durability`, tuned by the fields
  // below (which only dbdb reads).
  std::string engine;
  dbdb::Durability durability = dbdb::Durability::kSync;
  uint32_t node_size_target_bytes = 512;
  uint64_t file_size_max_bytes = uint64_t{1} << 40;
  // Small by default, so that short histories fold and compact by themselves.
  uint64_t fold_threshold_bytes = 1024;
  uint64_t auto_compact_slack_bytes = 4096;
  // Hold the engine to its promise (EngineInfo): what its findings document (docs/findings/) is
  // excused, as the property and `dbdb-crash --fault-points promised` do; false holds it to every
  // check, as the findings' replays do.
  bool held_to_promise = false;
  std::string Describe() const;
  std::string EngineName() const {
    if (!engine.empty()) return engine;
    return durability == dbdb::Durability::kSync ? "dbdb/sync" : "dbdb/nosync";
  }
};

// The key every commit writes: the decimal id of its attempt.
inline constexpr std::string_view kAttemptMarkerKey = "\xff\xff\xff attempt";

struct CommitAttempt {
  uint64_t id = 0;      // 1, 2, ... (0 is the empty database)
  uint32_t process = 0;
  uint64_t parent = 0;  // the attempt its base came from
  model::Changes changes;  // including the marker
  uint64_t begun_at = 0;   // trace position before its Commit call
  uint64_t acknowledged_at = UINT64_MAX;  // trace position after Commit returned OK
  bool durable = false;  // acknowledged in a durable configuration
};

struct Observation {
  uint32_t process = 0;
  uint64_t attempt = 0;
  uint64_t txn_id = 0;      // the engine's commit number, or the attempt's depth in its chain
  uint64_t started_at = 0;  // trace position when the read began
  uint64_t at = 0;          // trace position when it had read everything
  std::string what;  // "read", "writer base"
};

// One thing the history showed: an attempt seen or acknowledged during [started_at, ended_at]
// (trace positions, for reports). Anything that ended before another began must be an ancestor of
// it (or the same attempt). "Before" is told by the scheduler's steps, not by trace positions:
// operations that leave no trace entry (an Exists, a Size) are scheduling points too, so another
// process may act between two trace positions. A process runs alone from the step the scheduler
// granted it to its next operation, so two processes never see the same step: a fact that ended at
// step s came before one of another process that started at a later step, and a process's own
// facts come in program order.
struct Fact {
  uint64_t started_at = 0;
  uint64_t ended_at = 0;
  uint64_t attempt = 0;
  std::string what;
  uint32_t process = 0;
  uint64_t started_step = 0;
  uint64_t ended_step = 0;
};

// One history on one boot of the machine.
struct MultiRun {
  std::vector<TraceOp> trace;  // the machine's whole trace (the boot's start image included)
  size_t first_trace_position = 0;  // where this boot's operations start in it
  uint64_t first_attempt = 1;       // attempts from this id on began in this boot
  std::map<uint64_t, CommitAttempt> attempts;  // this boot's, plus the ones it started from
  std::vector<Observation> observations;
  std::vector<std::string> violations;  // found while it ran
  std::map<std::string, uint64_t> faults_fired;
  uint64_t steps = 0;
  uint64_t commits_acknowledged = 0;
  uint64_t kills = 0;
  std::map<uint32_t, uint64_t> killed_at;  // process (1, 2, ...) -> trace position of its kill
};

// What a crash image recovers to, as every observer saw it.
struct Recovery {
  std::string violation;  // observers disagree, recovery failed, check() failed, ...
  uint64_t attempt = 0;
  uint64_t txn_id = 0;
};

class MultiOracle {
 public:
  // `known` holds the attempts of earlier boots (with their changes), `floor` the attempt the boot
  // started from (0: no database yet).
  explicit MultiOracle(std::map<uint64_t, CommitAttempt> known = {}, uint64_t floor = 0);

  // Runs one boot of `workload` on `machine` (whose files are the start image) and checks the live
  // history: (c) one chain, (d), (e), clean errors.
  MultiRun Run(const MultiWorkload& workload, const std::shared_ptr<SimFileSystem>& machine);

  // Recovers `image` with every observer and checks (a)-(d) for a power cut after `point` trace
  // operations of `run`. Returns the recovery (its violation empty if allowed).
  Recovery CheckCrash(const MultiWorkload& workload, const MultiRun& run, size_t point, const CrashImage& image) const;

  const std::map<uint64_t, CommitAttempt>& attempts() const { return attempts_; }
  uint64_t floor() const { return floor_; }
  // A new attempt id (unique across the processes and boots of one oracle).
  uint64_t TakeAttemptId() { return next_attempt_++; }
  uint64_t next_attempt() const { return next_attempt_; }
  // The state attempt `id` produces (its whole chain applied), or nullopt if unknown.
  std::optional<model::State> StateOf(uint64_t id) const;
  uint64_t DepthOf(uint64_t id) const;
  bool IsAncestorOrSelf(uint64_t ancestor, uint64_t id) const;

 private:
  std::map<uint64_t, CommitAttempt> attempts_;
  uint64_t floor_;
  uint64_t next_attempt_ = 1;
};

// A workload of `processes` scripts of about `steps` steps each, drawn with `seed`: small commits
// over a small key space with keys of any bytes, reads, compactions, reopenings, read-only
// handles, faults armed per process at points its steps can reach, and a random schedule with
// kills. `engine` as in MultiWorkload ("": dbdb, its durability drawn too).
MultiWorkload GenerateMultiWorkload(uint64_t seed, size_t processes, size_t steps, const std::string& engine = "");
// The fault points a process of `engine` ("" is dbdb) can reach through the filesystem: a writer's,
// or a reader's. Only dbdb takes file locks and maps files through it, and only dbdb promises to
// notice a flipped bit (SQLite keeps no page checksums).
// `held_to_promise`: without the points of the engine's findings, the faults it is found not to
// survive (SQLite: a failed sync or directory sync, docs/findings/): what a test that holds the
// engine to its promise arms (dbdb-crash --fault-points promised).
const std::vector<std::string>& MultiFaultPoints(const std::string& engine, bool reader, bool held_to_promise = false);

struct MultiExploreResult {
  uint64_t histories = 0;
  uint64_t crash_points = 0;
  uint64_t states_checked = 0;
  uint64_t distinct_states = 0;
  std::map<std::string, uint64_t> faults_fired;
  uint64_t kills = 0;
  uint64_t commits_acknowledged = 0;
  std::vector<std::string> violations;  // each with its crash point and state when it has one
  double seconds = 0;
};

// Where a power cut may fall in one boot (trace positions: the cut comes after that many
// operations): after each of the boot's mutations, and after its last operation when that is not
// a mutation (so every read and acknowledgement comes before the cut).
std::vector<size_t> CrashPoints(const MultiRun& run);

// Runs the workload, then checks every crash state (up to states_max per point, sampled beyond)
// at every mutation boundary, and after the history's last operation (every read and
// acknowledgement before the power cut), with CheckCrash, on `threads` threads.
MultiExploreResult ExploreMulti(const MultiWorkload& workload, CrashPlan plan, uint64_t states_max, uint64_t seed,
                                unsigned threads, size_t violations_max = 3);

// Removes processes, steps, faults, kills and schedule choices while `still_fails` holds.
MultiWorkload ShrinkMultiWorkload(MultiWorkload workload, const std::function<bool(const MultiWorkload&)>& still_fails);

}  // namespace faultfs
