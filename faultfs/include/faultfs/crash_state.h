// Crash states: the filesystems a power cut may leave at one operation boundary of a
// SimFileSystem trace, under a crash plan (docs/PERSISTENCE.md, "What a crash may leave").
//
// A PersistenceTracker replays a trace and knows, at each boundary, the durable contents and the
// volatile operations since: writes and truncates per file (since its last sync), and name
// operations per directory (since its last directory sync). A CrashChoice says, for each volatile
// operation, what the crash kept; Build turns a choice into a CrashImage.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "faultfs/sim_file_system.h"

namespace faultfs {

enum class CrashPlan {
  kAll,     // the union of the plans below
  kDrop,    // every volatile operation lost
  kPrefix,  // the first k volatile writes kept, the rest lost (k = 0..n); name operations likewise
  kSubset,  // any subset of the volatile writes kept (reordering), and of the name operations
  kTorn,    // a prefix kept, the next write torn: any proper subset of its 512-byte sectors kept,
            // the space it added reading back as zeros or as garbage
  kOrdered, // a prefix of the volatile operations, writes and name operations together, in the
            // order they were made (a sync still makes its file durable ahead of earlier volatile
            // name operations, as everywhere). Stricter than real filesystems, and not part of
            // kAll (which holds each of its states already): a failure here needs no reordering of
            // volatile operations, where one found only under the other plans needs the
            // reordering POSIX allows
};
const char* CrashPlanName(CrashPlan plan);
bool ParseCrashPlan(const std::string& name, CrashPlan* plan);

// The fate of one volatile write or truncate in a crash.
struct WriteFate {
  enum class Kind : uint8_t {
    kLost,         // never reached the disk
    kKept,         // reached the disk whole
    kTorn,         // only the sectors in `sectors` reached the disk
    kExtendedOnly, // the file size grew to cover it, its bytes did not arrive
  };
  Kind kind = Kind::kLost;
  uint64_t sectors = 0;       // kTorn: bit i = the i-th sector the write touches (at most 64)
  bool garbage_fill = false;  // space the crash added without data: garbage (true) or zeros
};

struct CrashChoice {
  std::vector<WriteFate> writes;     // one per volatile write/truncate, in trace order
  std::vector<bool> name_ops_kept;   // one per volatile name operation, in trace order
  uint64_t garbage_seed = 0;
  std::string Describe() const;      // e.g. "writes KKT(0b01)L names K-" — replayable
};

class PersistenceTracker {
 public:
  // Applies one trace operation.
  void Apply(const TraceOp& op);

  size_t volatile_write_count() const { return volatile_writes_.size(); }
  size_t volatile_name_op_count() const { return volatile_names_.size(); }
  // Sectors touched by the i-th volatile write (0 for a truncate), at most 64.
  uint32_t SectorCount(size_t i) const;

  // The filesystem a crash with this choice leaves.
  CrashImage Build(const CrashChoice& choice) const;

  // How many choices the plan has here; saturates at UINT64_MAX.
  uint64_t CountStates(CrashPlan plan) const;
  // The choice that keeps no volatile write and no name operation (garbage from `seed`).
  CrashChoice NothingKept(uint64_t seed) const;

  // Calls visit(choice) for each crash choice of the plan: every one if there are at most
  // states_max, else states_max of them sampled with `seed` (the first is always "all lost").
  // Stops early if visit returns false.
  void Enumerate(CrashPlan plan, uint64_t states_max, uint64_t seed,
                 const std::function<bool(const CrashChoice&)>& visit) const;

 private:
  struct VolatileWrite {
    uint64_t sequence;  // the order of Apply, shared with names (kOrdered)
    uint64_t inode;
    bool truncate;
    uint64_t offset;  // truncate: the new size
    std::string data;
  };
  struct VolatileName {
    uint64_t sequence;
    TraceOp op;
    std::string dir;
  };
  void EnumerateExhaustive(CrashPlan plan, uint64_t seed, const std::function<bool(const CrashChoice&)>& visit) const;
  // kSubset's and kTorn's choices, in EnumerateExhaustive's order, until `visit` says stop.
  void EnumerateSubsets(uint64_t seed, const std::function<bool(const CrashChoice&)>& visit) const;
  void EnumerateTorn(uint64_t seed, const std::function<bool(const CrashChoice&)>& visit) const;

  std::map<uint64_t, std::string> durable_files_;    // inode -> durable bytes
  std::map<std::string, uint64_t> durable_names_;    // path -> inode
  std::vector<VolatileWrite> volatile_writes_;
  std::vector<VolatileName> volatile_names_;
  uint64_t next_sequence_ = 0;
  // kOrdered: the choice that keeps the first k volatile operations in the order they were made.
  CrashChoice OrderedPrefix(size_t k, uint64_t seed) const;
};

// One crash choice of the plan picked by `seed`: uniformly among all of them when they can be
// counted and listed (up to 4096), else one seeded sample.
CrashChoice PickCrashChoice(const PersistenceTracker& tracker, CrashPlan plan, uint64_t seed);

// The index-th crash choice of the plan (0 <= index < CountStates(plan)), in the order Enumerate
// lists them; only for plans with at most 4096 states (an exhaustive walk over a cut's states).
// False if out of range.
bool CrashChoiceAt(const PersistenceTracker& tracker, CrashPlan plan, uint64_t index, uint64_t seed,
                   CrashChoice* choice);

// A power cut of a whole simulated machine, then a reboot: the crash state the plan picks with
// `seed` (PickCrashChoice), or, when `state_index` is given, the state_index-th of the plan's states
// (CrashChoiceAt; fails beyond 4096 states). `rebooted` holds that state, all durable, with every
// directory the machine had.
struct PowerCut {
  std::shared_ptr<SimFileSystem> rebooted;
  CrashChoice choice;
  uint64_t states = 0;  // how many states the plan allowed at the cut (saturating)
};
dbdb::Result<PowerCut> CutPower(const SimFileSystem& fs, CrashPlan plan, uint64_t seed,
                                const uint64_t* state_index = nullptr);

// The tracker after replaying the first `op_count` operations of `trace`.
PersistenceTracker TrackerAt(const std::vector<TraceOp>& trace, size_t op_count);

}  // namespace faultfs
