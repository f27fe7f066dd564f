// Trust in the injector: the simulated filesystem against a small reference model of the
// persistence rules of docs/PERSISTENCE.md, written independently of PersistenceTracker.
// For random sequences of writes, truncates and syncs (successful or lost) on one file, the live
// contents and every crash state the tracker builds under the drop, prefix, subset and torn plans
// must equal what the reference model computes from the rules alone.
#include <fiu-control.h>
#include <fiu.h>
#include <faultfs/crash_state.h>
#include <faultfs/sim_file_system.h>
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

namespace proptests {
namespace {

struct Op {
  enum Kind { kWrite, kTruncate, kSync, kLostSync } kind;
  uint64_t offset;  // write offset, or truncate size
  std::string data;
};

void showValue(const Op& op, std::ostream& os) {
  const char* names[] = {"write", "truncate", "sync", "lost sync"};
  os << names[op.kind] << "(" << op.offset << (op.kind == Op::kWrite ? ", " + std::to_string(op.data.size()) + " bytes" : "")
     << ")";
}

// The reference model: durable bytes, and the volatile operations since the last sync.
struct Reference {
  std::string durable, live;
  std::vector<Op> pending;

  static void ApplyTo(std::string* bytes, const Op& op) {
    if (op.kind == Op::kTruncate) {
      bytes->resize(op.offset, '\0');
    } else if (op.kind == Op::kWrite) {
      if (bytes->size() < op.offset + op.data.size()) bytes->resize(op.offset + op.data.size(), '\0');
      bytes->replace(op.offset, op.data.size(), op.data);
    }
  }
  void Do(const Op& op) {
    if (op.kind == Op::kSync) {
      for (const auto& p : pending) ApplyTo(&durable, p);
      pending.clear();
    } else if (op.kind == Op::kLostSync) {
      pending.clear();  // rule 9: those writes never become durable
    } else {
      ApplyTo(&live, op);
      pending.push_back(op);
    }
  }
  // Rule 4: any subset of the volatile operations, in order.
  std::string Crash(const std::vector<bool>& kept) const {
    std::string bytes = durable;
    for (size_t i = 0; i < pending.size(); i++) {
      if (kept[i]) ApplyTo(&bytes, pending[i]);
    }
    return bytes;
  }
  // Rule 5: the first `prefix` kept, then the sectors `mask` of write `prefix` (zero fill: rule 6).
  std::string Torn(size_t prefix, uint64_t mask) const {
    std::string bytes = durable;
    for (size_t i = 0; i < prefix; i++) ApplyTo(&bytes, pending[i]);
    const Op& w = pending[prefix];
    uint64_t first_sector = w.offset / 512;
    for (uint64_t s = 0; s < 64; s++) {
      if ((mask >> s & 1) == 0) continue;
      uint64_t begin = std::max(w.offset, (first_sector + s) * 512);
      uint64_t end = std::min(w.offset + w.data.size(), (first_sector + s + 1) * 512);
      if (begin >= end) continue;
      if (bytes.size() < end) bytes.resize(end, '\0');
      bytes.replace(begin, end - begin, w.data.substr(begin - w.offset, end - begin));
    }
    return bytes;
  }
};

// Whole-range draws: rc::gen::inRange scales with the size, which would starve the rare kinds.
template <typename T>
T Draw(T low, T high) {
  return *rc::gen::resize(100, rc::gen::inRange<T>(low, high));
}

rc::Gen<Op> GenOp() {
  return rc::gen::exec([] {
    Op op{};
    int roll = Draw(0, 10);
    if (roll < 6) {
      op.kind = Op::kWrite;
      op.offset = Draw<uint64_t>(0, 3000);
      op.data = std::string(Draw<size_t>(1, 1400), static_cast<char>('a' + Draw(0, 26)));
    } else if (roll < 7) {
      op.kind = Op::kTruncate;
      op.offset = Draw<uint64_t>(0, 4000);
    } else if (roll < 9) {
      op.kind = Op::kSync;
    } else {
      op.kind = Op::kLostSync;
    }
    return op;
  });
}

RC_GTEST_PROP(SimulatedFilesystem, CrashStatesMatchTheReferenceModelOfThePersistenceRules, ()) {
  fiu_init(0);
  const auto ops = *rc::gen::resize(30, rc::gen::container<std::vector<Op>>(GenOp()));
  faultfs::SimFileSystem fs(*rc::gen::arbitrary<uint64_t>());
  auto file = std::move(fs.Open("f", dbdb::OpenOptions{.create = true})).value();
  RC_ASSERT(file->Sync().ok());
  RC_ASSERT(fs.SyncDir(".").ok());
  Reference ref;
  for (const auto& op : ops) {
    if (op.kind == Op::kWrite) RC_ASSERT(file->WriteAt(op.offset, op.data).ok());
    if (op.kind == Op::kTruncate) RC_ASSERT(file->Truncate(op.offset).ok());
    if (op.kind == Op::kSync) RC_ASSERT(file->Sync().ok());
    if (op.kind == Op::kLostSync) {
      fiu_enable("faultfs/sync/lose", 1, nullptr, FIU_ONETIME);
      RC_ASSERT(!file->Sync().ok());
      fiu_disable("faultfs/sync/lose");
    }
    ref.Do(op);
  }
  RC_ASSERT(fs.LiveImage().files.at("f") == ref.live);
  RC_CLASSIFY(std::any_of(ops.begin(), ops.end(), [](const Op& o) { return o.kind == Op::kLostSync; }), "with a lost sync");
  auto tracker = faultfs::TrackerAt(fs.Trace(), fs.TraceSize());
  RC_ASSERT(tracker.volatile_write_count() == ref.pending.size());
  const size_t n = ref.pending.size();
  auto build = [&](const faultfs::CrashChoice& c) { return tracker.Build(c).files.at("f"); };
  // drop and prefix
  for (size_t k = 0; k <= n; k++) {
    faultfs::CrashChoice c;
    c.writes.resize(n);
    for (size_t i = 0; i < k; i++) c.writes[i].kind = faultfs::WriteFate::Kind::kKept;
    std::vector<bool> kept(n, false);
    for (size_t i = 0; i < k; i++) kept[i] = true;
    RC_ASSERT(build(c) == ref.Crash(kept));
  }
  // a few subsets (reordering)
  for (int trial = 0; trial < 8 && n > 0; trial++) {
    faultfs::CrashChoice c;
    c.writes.resize(n);
    std::vector<bool> kept(n);
    for (size_t i = 0; i < n; i++) {
      kept[i] = *rc::gen::arbitrary<bool>();
      if (kept[i]) c.writes[i].kind = faultfs::WriteFate::Kind::kKept;
    }
    RC_ASSERT(build(c) == ref.Crash(kept));
  }
  // a torn write (zero fill)
  if (n > 0) {
    size_t j = Draw<size_t>(0, n);
    if (ref.pending[j].kind == Op::kWrite && tracker.SectorCount(j) > 1) {
      uint64_t units = tracker.SectorCount(j);
      uint64_t mask = Draw<uint64_t>(1, (uint64_t{1} << units) - 1);
      faultfs::CrashChoice c;
      c.writes.resize(n);
      for (size_t i = 0; i < j; i++) c.writes[i].kind = faultfs::WriteFate::Kind::kKept;
      c.writes[j] = faultfs::WriteFate{faultfs::WriteFate::Kind::kTorn, mask, false};
      RC_ASSERT(build(c) == ref.Torn(j, mask));
    }
  }
}

}  // namespace
}  // namespace proptests
