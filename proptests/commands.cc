// The commands of the stateful property tests: every operation of the store, reopen, compact,
// crash (with a crash plan) and an injected fault (a libfiu point armed for the N-th operation).
// Each asserts its preconditions (shrinking replays commands against other states) and, after it
// runs, the whole store against the model.
#include <fiu-control.h>
#include <fiu.h>

#include <cerrno>

#include "store_harness.h"

namespace proptests {
namespace {

using dbdb::Durability;

// A small key space (so keys repeat and deletes hit), spread so that nodes split.
constexpr int kKeySpace = 160;
std::string KeyNumber(int i) { return "key" + std::to_string(1000 + i * 7); }
std::string GenKey() { return KeyNumber(*rc::gen::inRange(0, kKeySpace)); }

std::string GenValue() {
  int kind = *rc::gen::inRange(0, 10);
  size_t size = kind == 0 ? *rc::gen::inRange<size_t>(500, 3000) : *rc::gen::inRange<size_t>(0, 40);
  char fill = *rc::gen::inRange('a', static_cast<char>('z' + 1));
  return std::string(size, fill) + std::to_string(*rc::gen::inRange(0, 1000));
}

struct Put : Command {
  std::string key = GenKey(), value = GenValue();
  void run(const Abstract&, Sut& sut) const override {
    sut.Write(key, value);
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override { os << "Put(" << key << ", " << value.size() << " bytes)"; }
};

struct Del : Command {
  std::string key = GenKey();
  void run(const Abstract&, Sut& sut) const override {
    sut.Write(key, std::nullopt);
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override { os << "Del(" << key << ")"; }
};

// A DB::Write batch of up to 24 changes over a few keys, so that most batches change a key more
// than once (the last change must win) and some change it more often than a small sort keeps in
// order by accident.
struct PutBatch : Command {
  std::vector<std::pair<std::string, std::optional<std::string>>> changes = [] {
    std::vector<std::string> keys{GenKey(), GenKey(), GenKey()};
    std::vector<std::pair<std::string, std::optional<std::string>>> out;
    const int n = *rc::gen::inRange(1, 25);
    for (int i = 0; i < n; i++) {
      std::string key = keys[*rc::gen::inRange<size_t>(0, keys.size())];
      if (*rc::gen::inRange(0, 4) == 0) {
        out.emplace_back(std::move(key), std::nullopt);
      } else {
        out.emplace_back(std::move(key), GenValue());
      }
    }
    return out;
  }();
  void run(const Abstract&, Sut& sut) const override {
    sut.WriteBatch(changes);
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override {
    os << "PutBatch(";
    for (const auto& [key, value] : changes) {
      os << (&key == &changes.front().first ? "" : ", ") << (value ? "Put " : "Del ") << key;
      if (value) os << " " << value->size() << " bytes";
    }
    os << ")";
  }
};

struct Get : Command {
  std::string key = GenKey();
  void run(const Abstract&, Sut& sut) const override {
    // Into the buffer the last Get left (DB::Get's second form), which a miss must not touch.
    const std::string before = sut.get_buffer;
    auto found = sut.txn ? sut.txn->Get(key, &sut.get_buffer) : sut.db->Get(key, &sut.get_buffer);
    RC_ASSERT(found.ok());
    const std::optional<std::string> want = sut.model.Get(key);
    RC_ASSERT(*found == want.has_value());
    RC_ASSERT(sut.get_buffer == (*found ? *want : before));
  }
  void show(std::ostream& os) const override { os << "Get(" << key << ")"; }
};

struct Scan : Command {
  std::string from = GenKey(), prefix = "key1" + std::to_string(*rc::gen::inRange(0, 10));
  uint64_t limit = *rc::gen::inRange<uint64_t>(1, 50);
  bool by_prefix = *rc::gen::arbitrary<bool>();
  void run(const Abstract&, Sut& sut) const override {
    dbdb::ScanRange range = by_prefix ? dbdb::ScanRange::Prefix(prefix) : dbdb::ScanRange{from, std::nullopt, limit};
    Result rows = sut.txn ? sut.txn->Scan(range) : Snapshot(sut)->Scan(range);
    RC_ASSERT(rows.ok());
    model::State view = sut.model.View();
    auto expected = by_prefix ? model::ScanPrefix(view, prefix) : model::Scan(view, from, std::nullopt, limit);
    RC_ASSERT(rows->size() == expected.size());
    for (size_t i = 0; i < expected.size(); i++) {
      RC_ASSERT((*rows)[i].key == expected[i].first);
      RC_ASSERT((*rows)[i].value == expected[i].second);
    }
  }
  using Result = dbdb::Result<std::vector<dbdb::KeyValue>>;
  static std::unique_ptr<dbdb::Snapshot> Snapshot(Sut& sut) {
    auto s = sut.db->GetSnapshot();
    RC_ASSERT(s.ok());
    return std::move(s).value();
  }
  void show(std::ostream& os) const override {
    if (by_prefix) os << "ScanPrefix(" << prefix << ")";
    else os << "Scan(from " << from << ", limit " << limit << ")";
  }
};

struct Begin : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(!m.in_transaction); }
  void apply(Abstract& m) const override { m.in_transaction = true; }
  void run(const Abstract&, Sut& sut) const override {
    auto txn = sut.db->BeginWrite();
    RC_ASSERT(txn.ok());
    RC_ASSERT((*txn)->base_txn_id() == sut.model.txn_id());  // the newest commit (I4)
    sut.txn = std::move(txn).value();
    sut.model.Begin();
  }
  void show(std::ostream& os) const override { os << "Begin"; }
};

struct Commit : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.in_transaction); }
  void apply(Abstract& m) const override { m.in_transaction = false; }
  void run(const Abstract&, Sut& sut) const override {
    // The store commits whenever the transaction recorded a change; the model whenever its change
    // set is non-empty. Both agree on that, so the oracle learns of exactly the commits made.
    uint64_t before_id = sut.model.txn_id();
    size_t begin_trace = sut.simulated ? sut.sim->TraceSize() : 0;
    dbdb::Status s = sut.txn->Commit();
    if (!s.ok()) RC_FAIL("commit failed: " + s.ToString());
    sut.txn.reset();
    bool committed = sut.model.Commit();
    if (committed) {
      // The commit began before the transaction's Commit call; its writes are all in the trace
      // after begin_trace.
      uint64_t k = sut.oracle.Begin(sut.model.committed());
      RC_ASSERT(k == before_id + 1);
      if (sut.simulated) sut.commit_traces[k] = model::CommitTiming{k, begin_trace};
      sut.AcknowledgeCommit(k);
    }
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override { os << "Commit"; }
};

struct Abort : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.in_transaction); }
  void apply(Abstract& m) const override { m.in_transaction = false; }
  void run(const Abstract&, Sut& sut) const override {
    sut.txn->Abort();
    sut.txn.reset();
    sut.model.Abort();
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override { os << "Abort"; }
};

struct OpenSnapshot : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.snapshots < 3); }
  void apply(Abstract& m) const override { m.snapshots++; }
  void run(const Abstract&, Sut& sut) const override {
    auto snapshot = sut.db->GetSnapshot();
    RC_ASSERT(snapshot.ok());
    RC_ASSERT((*snapshot)->txn_id() == sut.model.txn_id());
    sut.snapshots.push_back({std::move(snapshot).value(), sut.model.committed(), sut.model.txn_id()});
  }
  void show(std::ostream& os) const override { os << "OpenSnapshot"; }
};

// A snapshot reads the commit it was opened on, whatever happened since (I4): by a scan, and key
// by key, by a get of every key the commands draw (a get takes the point lookups' path, not the
// scan's; a key changed after the snapshot is where an old snapshot's read can go wrong, and one
// absent from both the snapshot and the newest commit may still have changed between them).
struct ReadSnapshot : Command {
  size_t index = *rc::gen::inRange<size_t>(0, 3);
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.snapshots > 0); }
  void run(const Abstract&, Sut& sut) const override {
    auto& open = sut.snapshots[index % sut.snapshots.size()];
    RC_ASSERT(open.snapshot->txn_id() == open.txn_id);
    RC_ASSERT(sut.ReadAll(*open.snapshot) == open.state);
    auto check = [&](const std::string& key) {
      auto got = open.snapshot->Get(key);
      if (!got.ok()) RC_FAIL("snapshot get failed: " + got.status().ToString());
      auto want = open.state.find(key);
      RC_ASSERT(*got == (want == open.state.end() ? std::nullopt : std::optional<std::string>(want->second)));
    };
    for (int i = 0; i < kKeySpace; i++) check(KeyNumber(i));
  }
  void show(std::ostream& os) const override { os << "ReadSnapshot(" << index << ")"; }
};

struct CloseSnapshot : Command {
  size_t index = *rc::gen::inRange<size_t>(0, 3);
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.snapshots > 0); }
  void apply(Abstract& m) const override { m.snapshots--; }
  void run(const Abstract&, Sut& sut) const override {
    sut.snapshots.erase(sut.snapshots.begin() + static_cast<long>(index % sut.snapshots.size()));
  }
  void show(std::ostream& os) const override { os << "CloseSnapshot(" << index << ")"; }
};

struct Reopen : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(!m.in_transaction); }
  void apply(Abstract& m) const override { m.snapshots = 0; }
  void run(const Abstract&, Sut& sut) const override {
    sut.Close();
    sut.Open();
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override { os << "Reopen"; }
};

struct Compact : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(!m.in_transaction); }
  void run(const Abstract&, Sut& sut) const override {
    dbdb::Status s = sut.db->Compact();
    if (!s.ok()) RC_FAIL("compact failed: " + s.ToString());
    sut.VerifyAll();
    auto report = sut.db->Check();
    if (!report.ok()) RC_FAIL("check() after compaction: " + report.status().ToString());
    RC_ASSERT(report->commits == 1u || sut.model.txn_id() == 0);
    // Open snapshots still read the file they started on.
    for (auto& open : sut.snapshots) RC_ASSERT(sut.ReadAll(*open.snapshot) == open.state);
  }
  void show(std::ostream& os) const override { os << "Compact"; }
};

struct Checkpoint : Command {
  void checkPreconditions(const Abstract& m) const override { RC_PRE(!m.in_transaction); }
  void run(const Abstract&, Sut& sut) const override {
    dbdb::Status s = sut.db->Checkpoint();
    if (!s.ok()) RC_FAIL("checkpoint failed: " + s.ToString());
    // A checkpoint changes nothing: the same txn id and state for the handle, for open snapshots
    // and for a new handle (which starts from the checkpoint instead of replaying the log).
    sut.VerifyAll();
    for (auto& open : sut.snapshots) RC_ASSERT(sut.ReadAll(*open.snapshot) == open.state);
    dbdb::Options read_only = sut.options;
    read_only.read_only = true;
    auto fresh = dbdb::DB::Open(sut.path, read_only);
    if (!fresh.ok()) RC_FAIL("opening a second handle after a checkpoint: " + fresh.status().ToString());
    auto snapshot = (*fresh)->GetSnapshot();
    RC_ASSERT(snapshot.ok());
    RC_ASSERT((*snapshot)->txn_id() == sut.model.txn_id());
    RC_ASSERT(sut.ReadAll(**snapshot) == sut.model.committed());
    auto report = sut.db->Check();
    if (!report.ok()) RC_FAIL("check() after a checkpoint: " + report.status().ToString());
  }
  void show(std::ostream& os) const override { os << "Checkpoint"; }
};

struct Crash : Command {
  faultfs::CrashPlan plan = *rc::gen::element(faultfs::CrashPlan::kDrop, faultfs::CrashPlan::kPrefix,
                                              faultfs::CrashPlan::kSubset, faultfs::CrashPlan::kTorn,
                                              faultfs::CrashPlan::kAll);
  uint64_t choice_seed = *rc::gen::arbitrary<uint64_t>();
  size_t rewind = *rc::gen::weightedOneOf<size_t>({{1, rc::gen::just<size_t>(0)}, {3, rc::gen::inRange<size_t>(0, 12)}});
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.simulated); }
  void apply(Abstract& m) const override {
    m.in_transaction = false;
    m.snapshots = 0;
  }
  void run(const Abstract&, Sut& sut) const override {
    if (sut.txn) sut.model.Abort();  // the open transaction dies with the crash
    sut.Crash(plan, choice_seed, rewind);
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override {
    os << "Crash(plan " << faultfs::CrashPlanName(plan) << ", choice seed " << choice_seed << ", " << rewind
       << " mutations back)";
  }
};

// A fault point fails the N-th call after arming (then disarms); the operation must either
// succeed or fail cleanly with an I/O error or Corruption, and nothing committed may be lost.
struct FaultArm {
  int error_number;  // first: the simulated filesystem reads fiu_failinfo() as an int*
  int calls_to_skip;
};
int FailAfterSkipping(const char*, int*, void** failinfo, unsigned int*) {
  auto* arm = static_cast<FaultArm*>(*failinfo);
  return arm->calls_to_skip-- == 0 ? 1 : 0;
}

// Only points the operation can reach: a Get never writes, truncates or syncs. (faultfs/remove
// is never called by the store; faultfs/write/misdirect is a silent, acknowledged misplacement
// no store can detect when it happens, so no oracle of acknowledged commits can include it.)
struct InjectFault : Command {
  bool read_op = *rc::gen::arbitrary<bool>();
  std::string point = read_op ? *rc::gen::element<std::string>("faultfs/read", "faultfs/read/corrupt", "faultfs/map",
                                                                      "faultfs/map/fault", "faultfs/map/corrupt")
                              : *rc::gen::element<std::string>("faultfs/write", "faultfs/write/short", "faultfs/sync",
                                                               "faultfs/sync/lose", "faultfs/read",
                                                               "faultfs/read/corrupt", "faultfs/truncate",
                                                               "faultfs/allocate", "faultfs/lock", "faultfs/syncdir");
  int skip = *rc::gen::inRange(0, 4);
  bool no_space = *rc::gen::arbitrary<bool>();
  std::string key = GenKey(), value = GenValue();
  void checkPreconditions(const Abstract& m) const override { RC_PRE(m.simulated && !m.in_transaction); }
  void apply(Abstract& m) const override { m.snapshots = 0; }
  void run(const Abstract&, Sut& sut) const override {
    sut.snapshots.clear();
    FaultArm arm{no_space ? ENOSPC : EIO, skip};
    fiu_enable_external(point.c_str(), 1, &arm, 0, FailAfterSkipping);
    if (read_op) {
      auto got = sut.db->Get(key);
      fiu_disable(point.c_str());
      if (got.ok()) {
        RC_ASSERT(*got == sut.model.Get(key));  // never wrong data (I5)
      } else {
        RC_ASSERT(got.status().IsIOError() || got.status().IsCorruption());
      }
      sut.VerifyAll();
      return;
    }
    model::Changes changes{{key, value}};
    uint64_t k = sut.BeginCommit(model::Apply(sut.model.committed(), changes));
    dbdb::Status s = sut.db->Put(key, value);
    fiu_disable(point.c_str());
    if (s.ok()) {
      sut.AcknowledgeCommit(k);
      sut.model.Begin();
      sut.model.Put(key, value);
      sut.model.Commit();
      sut.VerifyAll();
      return;
    }
    RC_ASSERT(s.IsIOError() || s.IsCorruption());
    if (s.IsIOError()) RC_ASSERT(s.message().find("injected") != std::string::npos);
    // A handle that failed on the write path refuses further writes until reopened (I7).
    if (s.message().find("writing") != std::string::npos || s.message().find("syncing") != std::string::npos) {
      dbdb::Status again = sut.db->Put(key, value);
      RC_ASSERT(again.code() == dbdb::StatusCode::kFailed);
    }
    sut.ReopenAfterFailure(k);
    sut.VerifyAll();
  }
  void show(std::ostream& os) const override {
    os << "InjectFault(" << point << " after " << skip << " calls, " << (no_space ? "ENOSPC" : "EIO") << ", "
       << (read_op ? "Get(" + key + ")" : "Put(" + key + ")") << ")";
  }
};

}  // namespace

void RunStateful(bool simulated, Durability durability) {
  fiu_init(0);  // the fault commands arm libfiu points; a second call returns at once
  Abstract initial;
  initial.simulated = simulated;
  Sut sut(simulated, durability, *rc::gen::arbitrary<uint64_t>());
  const auto commands = *rc::state::gen::commands(
      initial, rc::state::gen::execOneOfWithArgs<Put, Put, Put, Del, PutBatch, Get, Scan, Begin, Commit, Abort, OpenSnapshot,
                                                  ReadSnapshot, CloseSnapshot, Reopen, Compact, Checkpoint, Crash, Crash,
                                                  InjectFault, InjectFault>());
  RC_CLASSIFY(commands.size() < 20, "under 20 commands");
  RC_CLASSIFY(commands.size() >= 20 && commands.size() < 60, "20-59 commands");
  RC_CLASSIFY(commands.size() >= 60, "60+ commands");
  rc::state::runAll(commands, initial, sut);
}

}  // namespace proptests
