// The system under test of the stateful property tests: a dbdb store on the simulated or the real
// filesystem, plus the precise model of what it must hold (model::Store) and the crash oracle.
// RapidCheck's own model (Abstract) only tracks what preconditions need, because what survives a
// crash is decided by the crash state, not known in advance; the checks live in Sut.
#pragma once

#include <dbdb/db.h>
#include <faultfs/crash_state.h>
#include <faultfs/sim_file_system.h>
#include <model/crash_oracle.h>
#include <model/model.h>
#include <rapidcheck.h>
#include <rapidcheck/state.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace proptests {

struct Abstract {
  bool simulated = true;
  bool in_transaction = false;
  size_t snapshots = 0;
};

class Sut {
 public:
  Sut(bool simulated, dbdb::Durability durability, uint64_t seed);
  ~Sut();

  // Every check failure is an RC_ASSERT / RC_FAIL, so RapidCheck shrinks it.
  void Open();
  void Close();
  // Compares the whole store (or the open transaction's view) with the model.
  void VerifyAll();
  model::State ReadAll(dbdb::Snapshot& snapshot);

  // An auto-commit (or, in a transaction, buffered) put or delete.
  void Write(const std::string& key, const std::optional<std::string>& value);
  // Writes the changes, in order, as one DB::Write batch (inside an open transaction: through it).
  void WriteBatch(const std::vector<std::pair<std::string, std::optional<std::string>>>& changes);
  // Reopens after a failed write (no crash): the store shows the failed commit `k` or the one
  // before it; the model adopts what it shows.
  void ReopenAfterFailure(uint64_t k);
  // Power-cuts the simulated filesystem `rewind` mutations before now (so possibly in the middle
  // of an earlier command's commit) with the crash choice `seed` picks under `plan`, recovers,
  // and checks the recovered state with the oracle (I1, I2, I3) and that check() passes.
  void Crash(faultfs::CrashPlan plan, uint64_t seed, size_t rewind);

  // Commit k is about to be written / was acknowledged: remembers where in the trace, so a crash
  // at an earlier point knows which commits had started and which were acknowledged.
  uint64_t BeginCommit(model::State after);
  void AcknowledgeCommit(uint64_t k);

  dbdb::Options options;
  std::string path;
  bool simulated;
  std::shared_ptr<faultfs::SimFileSystem> sim;
  std::string temp_dir;
  std::unique_ptr<dbdb::DB> db;
  model::Store model;
  model::CrashOracle oracle;
  std::unique_ptr<dbdb::WriteTransaction> txn;
  struct OpenSnapshot {
    std::unique_ptr<dbdb::Snapshot> snapshot;
    model::State state;
    uint64_t txn_id;
  };
  std::vector<OpenSnapshot> snapshots;
  // The buffer Get reads into, kept from one Get to the next (DB::Get's second form must assign
  // it when it finds the key and leave it alone when it does not); it starts as no value the
  // commands write, so that a miss that empties or writes it shows before the first hit.
  std::string get_buffer = std::string(40, '\x7f');
  uint64_t seed;
  // Commits on the current simulated filesystem, with trace positions (model::AllowedAt).
  std::map<uint64_t, model::CommitTiming> commit_traces;
  size_t epoch_start = 0;    // trace size when the current simulated filesystem started
  uint64_t epoch_floor = 0;  // the oracle's durable floor then
};

using Command = rc::state::Command<Abstract, Sut>;

// Runs a stateful property over the commands (commands.cc).
void RunStateful(bool simulated, dbdb::Durability durability);

}  // namespace proptests
