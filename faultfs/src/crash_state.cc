// PersistenceTracker: durable state and volatile operations along a trace, and the crash states
// they allow (docs/PERSISTENCE.md).
#include "faultfs/crash_state.h"

#include <algorithm>

#include "faultfs/rng.h"

namespace faultfs {

namespace {

constexpr uint64_t kSector = dbdb::kSectorSizeBytes;
constexpr uint32_t kTearUnitsMax = 64;

uint64_t SaturatingMul(uint64_t a, uint64_t b) {
  if (a != 0 && b > UINT64_MAX / a) return UINT64_MAX;
  return a * b;
}
uint64_t SaturatingAdd(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
uint64_t Pow2(uint64_t n) { return n >= 64 ? UINT64_MAX : uint64_t{1} << n; }

// Grows `bytes` to `size`, the new space reading as zeros or garbage.
void Extend(std::string* bytes, uint64_t size, bool garbage, uint64_t seed) {
  uint64_t old = bytes->size();
  if (size <= old) return;
  bytes->resize(size, '\0');
  if (garbage) {
    for (uint64_t i = old; i < size; i++) (*bytes)[i] = static_cast<char>(GarbageByte(seed, i));
  }
}

// The pieces of a write [offset, offset + size) a torn crash keeps or loses: sector-aligned
// units, grouped into at most 64 so that a mask of 64 bits names any subset.
struct TearUnits {
  uint64_t first_sector, sector_count, per_unit;
  uint32_t count;
  TearUnits(uint64_t offset, uint64_t size) {
    first_sector = offset / kSector;
    uint64_t last_sector = size == 0 ? first_sector : (offset + size - 1) / kSector;
    sector_count = last_sector - first_sector + 1;
    per_unit = (sector_count + kTearUnitsMax - 1) / kTearUnitsMax;
    count = static_cast<uint32_t>((sector_count + per_unit - 1) / per_unit);
  }
  // The byte range of unit i, clipped to the write.
  std::pair<uint64_t, uint64_t> Range(uint32_t i, uint64_t offset, uint64_t size) const {
    uint64_t begin = std::max(offset, (first_sector + i * per_unit) * kSector);
    uint64_t end = std::min(offset + size, (first_sector + (i + 1) * per_unit) * kSector);
    return {begin, end};
  }
};

}  // namespace

const char* CrashPlanName(CrashPlan plan) {
  switch (plan) {
    case CrashPlan::kAll: return "all";
    case CrashPlan::kDrop: return "drop";
    case CrashPlan::kPrefix: return "prefix";
    case CrashPlan::kSubset: return "subset";
    case CrashPlan::kTorn: return "torn";
    case CrashPlan::kOrdered: return "ordered";
  }
  return "?";
}

bool ParseCrashPlan(const std::string& name, CrashPlan* plan) {
  for (CrashPlan p : {CrashPlan::kAll, CrashPlan::kDrop, CrashPlan::kPrefix, CrashPlan::kSubset, CrashPlan::kTorn,
                      CrashPlan::kOrdered}) {
    if (name == CrashPlanName(p)) {
      *plan = p;
      return true;
    }
  }
  return false;
}

std::string CrashChoice::Describe() const {
  std::string out = "writes ";
  for (const auto& w : writes) {
    switch (w.kind) {
      case WriteFate::Kind::kLost: out += "L"; break;
      case WriteFate::Kind::kKept: out += "K"; break;
      case WriteFate::Kind::kTorn: out += "T(" + std::to_string(w.sectors) + (w.garbage_fill ? ",g)" : ",z)"); break;
      case WriteFate::Kind::kExtendedOnly: out += w.garbage_fill ? "Eg" : "Ez"; break;
    }
  }
  if (writes.empty()) out += "-";
  out += " names ";
  for (bool kept : name_ops_kept) out += kept ? "K" : "L";
  if (name_ops_kept.empty()) out += "-";
  out += " garbage_seed " + std::to_string(garbage_seed);
  return out;
}

void PersistenceTracker::Apply(const TraceOp& op) {
  using Kind = TraceOp::Kind;
  switch (op.kind) {
    case Kind::kCreate:
    case Kind::kRename:
    case Kind::kRemove:
      volatile_names_.push_back(VolatileName{next_sequence_++, op, dbdb::DirName(op.kind == Kind::kRename ? op.path2 : op.path)});
      break;
    case Kind::kWrite:
      volatile_writes_.push_back(VolatileWrite{next_sequence_++, op.inode, false, op.offset, op.data});
      break;
    case Kind::kTruncate:
      volatile_writes_.push_back(VolatileWrite{next_sequence_++, op.inode, true, op.offset, ""});
      break;
    case Kind::kSync:
    case Kind::kSyncLost: {
      std::string& durable = durable_files_[op.inode];
      std::vector<VolatileWrite> rest;
      for (auto& w : volatile_writes_) {
        if (w.inode != op.inode) {
          rest.push_back(std::move(w));
        } else if (op.kind == Kind::kSync) {
          if (w.truncate) {
            durable.resize(w.offset, '\0');
          } else {
            Extend(&durable, w.offset + w.data.size(), false, 0);
            std::copy(w.data.begin(), w.data.end(), durable.begin() + static_cast<long>(w.offset));
          }
        }  // kSyncLost: the write is gone for good
      }
      volatile_writes_ = std::move(rest);
      break;
    }
    case Kind::kSyncDir: {
      std::vector<VolatileName> rest;
      for (auto& n : volatile_names_) {
        if (n.dir != op.path) {
          rest.push_back(std::move(n));
          continue;
        }
        if (n.op.kind == Kind::kCreate) {
          durable_names_[n.op.path] = n.op.inode;
        } else if (n.op.kind == Kind::kRemove) {
          durable_names_.erase(n.op.path);
        } else if (auto it = durable_names_.find(n.op.path); it != durable_names_.end()) {
          uint64_t inode = it->second;
          durable_names_.erase(it);
          durable_names_[n.op.path2] = inode;
        }
      }
      volatile_names_ = std::move(rest);
      break;
    }
    case Kind::kRead:
      break;
  }
}

uint32_t PersistenceTracker::SectorCount(size_t i) const {
  const VolatileWrite& w = volatile_writes_[i];
  if (w.truncate) return 0;
  return TearUnits(w.offset, w.data.size()).count;
}

CrashImage PersistenceTracker::Build(const CrashChoice& choice) const {
  using Kind = TraceOp::Kind;
  std::map<std::string, uint64_t> names = durable_names_;
  for (size_t i = 0; i < volatile_names_.size(); i++) {
    if (i >= choice.name_ops_kept.size() || !choice.name_ops_kept[i]) continue;
    const TraceOp& op = volatile_names_[i].op;
    if (op.kind == Kind::kCreate) {
      names[op.path] = op.inode;
    } else if (op.kind == Kind::kRemove) {
      names.erase(op.path);
    } else if (auto it = names.find(op.path); it != names.end()) {
      uint64_t inode = it->second;
      names.erase(it);
      names[op.path2] = inode;
    }
  }
  std::map<uint64_t, std::string> contents;
  for (const auto& [path, inode] : names) {
    auto it = durable_files_.find(inode);
    contents[inode] = it == durable_files_.end() ? std::string() : it->second;
  }
  for (size_t i = 0; i < volatile_writes_.size(); i++) {
    const VolatileWrite& w = volatile_writes_[i];
    auto file = contents.find(w.inode);
    if (file == contents.end()) continue;  // its name did not survive
    WriteFate fate = i < choice.writes.size() ? choice.writes[i] : WriteFate{};
    std::string& bytes = file->second;
    uint64_t seed = choice.garbage_seed + i;
    if (fate.kind == WriteFate::Kind::kLost) continue;
    if (w.truncate) {
      bytes.resize(w.offset, '\0');
      continue;
    }
    uint64_t end = w.offset + w.data.size();
    switch (fate.kind) {
      case WriteFate::Kind::kKept:
        Extend(&bytes, end, fate.garbage_fill, seed);
        std::copy(w.data.begin(), w.data.end(), bytes.begin() + static_cast<long>(w.offset));
        break;
      case WriteFate::Kind::kExtendedOnly:
        Extend(&bytes, end, fate.garbage_fill, seed);
        break;
      case WriteFate::Kind::kTorn: {
        TearUnits units(w.offset, w.data.size());
        for (uint32_t u = 0; u < units.count; u++) {
          if ((fate.sectors >> u & 1) == 0) continue;
          auto [begin, stop] = units.Range(u, w.offset, w.data.size());
          Extend(&bytes, stop, fate.garbage_fill, seed);
          std::copy(w.data.begin() + static_cast<long>(begin - w.offset), w.data.begin() + static_cast<long>(stop - w.offset),
                    bytes.begin() + static_cast<long>(begin));
        }
        break;
      }
      case WriteFate::Kind::kLost:
        break;
    }
  }
  CrashImage image;
  for (const auto& [path, inode] : names) image.files[path] = contents[inode];
  return image;
}

uint64_t PersistenceTracker::CountStates(CrashPlan plan) const {
  const uint64_t writes = volatile_writes_.size();
  const uint64_t names = volatile_names_.size();
  switch (plan) {
    case CrashPlan::kDrop:
      return 1;
    case CrashPlan::kPrefix:
      return SaturatingMul(writes + 1, names + 1);
    case CrashPlan::kSubset:
      return SaturatingMul(Pow2(writes), Pow2(names));
    case CrashPlan::kOrdered:
      return writes + names + 1;
    case CrashPlan::kTorn: {
      // For each write: every proper, non-empty subset of its units, and "extended only", each
      // with zero or garbage fill; the writes before it kept; names as a prefix.
      uint64_t total = 0;
      for (size_t i = 0; i < writes; i++) {
        uint64_t units = SectorCount(i);
        uint64_t masks = units <= 1 ? 0 : Pow2(units) == UINT64_MAX ? UINT64_MAX : Pow2(units) - 2;
        total = SaturatingAdd(total, SaturatingMul(SaturatingAdd(masks, 1), 2));
      }
      return SaturatingMul(total, names + 1);
    }
    case CrashPlan::kAll: {
      uint64_t total = 0;
      for (CrashPlan p : {CrashPlan::kDrop, CrashPlan::kPrefix, CrashPlan::kSubset, CrashPlan::kTorn}) {
        total = SaturatingAdd(total, CountStates(p));
      }
      return total;
    }
  }
  return 0;
}

CrashChoice PersistenceTracker::NothingKept(uint64_t seed) const {
  CrashChoice c;
  c.writes.resize(volatile_writes_.size());
  c.name_ops_kept.resize(volatile_names_.size(), false);
  c.garbage_seed = seed;
  return c;
}

namespace {

void KeepWritesPrefix(CrashChoice* c, size_t k) {
  for (size_t i = 0; i < k; i++) c->writes[i].kind = WriteFate::Kind::kKept;
}

void KeepNamesPrefix(CrashChoice* c, size_t k) {
  for (size_t i = 0; i < c->name_ops_kept.size(); i++) c->name_ops_kept[i] = i < k;
}

}  // namespace

void PersistenceTracker::EnumerateSubsets(uint64_t seed, const std::function<bool(const CrashChoice&)>& visit) const {
  const size_t writes = volatile_writes_.size();
  const size_t names = volatile_names_.size();
  for (uint64_t mask = 0; mask < (uint64_t{1} << writes); mask++) {
    for (uint64_t name_mask = 0; name_mask < (uint64_t{1} << names); name_mask++) {
      CrashChoice c = NothingKept(seed);
      for (size_t i = 0; i < writes; i++) {
        if (mask >> i & 1) c.writes[i].kind = WriteFate::Kind::kKept;
      }
      for (size_t i = 0; i < names; i++) c.name_ops_kept[i] = (name_mask >> i & 1) != 0;
      if (!visit(c)) return;
    }
  }
}

void PersistenceTracker::EnumerateTorn(uint64_t seed, const std::function<bool(const CrashChoice&)>& visit) const {
  const size_t writes = volatile_writes_.size();
  const size_t names = volatile_names_.size();
  for (size_t j = 0; j < writes; j++) {
    uint32_t units = SectorCount(j);
    for (int garbage = 0; garbage <= 1; garbage++) {
      for (size_t d = 0; d <= names; d++) {
        CrashChoice c = NothingKept(seed);
        KeepWritesPrefix(&c, j);
        KeepNamesPrefix(&c, d);
        c.writes[j] = WriteFate{WriteFate::Kind::kExtendedOnly, 0, garbage == 1};
        if (!visit(c)) return;
        for (uint64_t mask = 1; units > 1 && mask + 1 < (uint64_t{1} << units); mask++) {
          c.writes[j] = WriteFate{WriteFate::Kind::kTorn, mask, garbage == 1};
          if (!visit(c)) return;
        }
      }
    }
  }
}

void PersistenceTracker::EnumerateExhaustive(CrashPlan plan, uint64_t seed,
                                             const std::function<bool(const CrashChoice&)>& visit) const {
  const size_t writes = volatile_writes_.size();
  const size_t names = volatile_names_.size();
  switch (plan) {
    case CrashPlan::kDrop:
      visit(NothingKept(seed));
      return;
    case CrashPlan::kOrdered:
      for (size_t k = 0; k <= writes + names; k++) {
        if (!visit(OrderedPrefix(k, seed))) return;
      }
      return;
    case CrashPlan::kPrefix:
      for (size_t k = 0; k <= writes; k++) {
        for (size_t d = 0; d <= names; d++) {
          CrashChoice c = NothingKept(seed);
          KeepWritesPrefix(&c, k);
          KeepNamesPrefix(&c, d);
          if (!visit(c)) return;
        }
      }
      return;
    case CrashPlan::kSubset:
      EnumerateSubsets(seed, visit);
      return;
    case CrashPlan::kTorn:
      EnumerateTorn(seed, visit);
      return;
    case CrashPlan::kAll: {
      bool go = true;
      auto wrapped = [&](const CrashChoice& c) { return go = visit(c); };
      for (CrashPlan p : {CrashPlan::kDrop, CrashPlan::kPrefix, CrashPlan::kSubset, CrashPlan::kTorn}) {
        EnumerateExhaustive(p, seed, wrapped);
        if (!go) return;
      }
      return;
    }
  }
}

void PersistenceTracker::Enumerate(CrashPlan plan, uint64_t states_max, uint64_t seed,
                                   const std::function<bool(const CrashChoice&)>& visit) const {
  if (states_max == 0) return;
  if (CountStates(plan) <= states_max) {
    EnumerateExhaustive(plan, seed, visit);
    return;
  }
  // Sampled: the "everything lost" state first, then random choices within the plan.
  Rng rng(seed);
  const size_t writes = volatile_writes_.size();
  const size_t names = volatile_names_.size();
  for (uint64_t n = 0; n < states_max; n++) {
    CrashChoice c = NothingKept(seed + n);
    if (n > 0 && plan == CrashPlan::kOrdered) {  // spread evenly; the last sample keeps everything
      c = OrderedPrefix(n * (writes + names) / (states_max - 1), seed + n);
    } else if (n > 0) {
      CrashPlan p = plan;
      if (p == CrashPlan::kAll) p = static_cast<CrashPlan>(1 + rng.Uniform(4));
      size_t k = writes == 0 ? 0 : rng.Uniform(writes + 1);
      switch (p) {
        case CrashPlan::kDrop:
        case CrashPlan::kOrdered:  // handled above
          break;
        case CrashPlan::kPrefix:
          for (size_t i = 0; i < k; i++) c.writes[i].kind = WriteFate::Kind::kKept;
          break;
        case CrashPlan::kSubset:
          for (auto& w : c.writes) w.kind = rng.OneIn(2) ? WriteFate::Kind::kKept : WriteFate::Kind::kLost;
          break;
        case CrashPlan::kTorn:
        case CrashPlan::kAll:
          for (size_t i = 0; i < k && i < writes; i++) c.writes[i].kind = WriteFate::Kind::kKept;
          if (k < writes) {
            uint32_t units = SectorCount(k);
            bool garbage = rng.OneIn(2);
            uint64_t full = units >= 64 ? UINT64_MAX : (uint64_t{1} << units) - 1;
            uint64_t mask = rng.Next() & full;
            if (units <= 1 || mask == 0 || mask == full) {
              c.writes[k] = WriteFate{WriteFate::Kind::kExtendedOnly, 0, garbage};
            } else {
              c.writes[k] = WriteFate{WriteFate::Kind::kTorn, mask, garbage};
            }
          }
          break;
      }
      bool subset_names = p == CrashPlan::kSubset;
      size_t d = names == 0 ? 0 : rng.Uniform(names + 1);
      for (size_t i = 0; i < names; i++) c.name_ops_kept[i] = subset_names ? rng.OneIn(2) : i < d;
    }
    if (!visit(c)) return;
  }
}

CrashChoice PersistenceTracker::OrderedPrefix(size_t k, uint64_t seed) const {
  CrashChoice c = NothingKept(seed);
  // Both lists are in sequence order: merge them, keeping the first k.
  size_t w = 0, n = 0;
  for (size_t kept = 0; kept < k; kept++) {
    bool take_write = n == volatile_names_.size() ||
                      (w < volatile_writes_.size() && volatile_writes_[w].sequence < volatile_names_[n].sequence);
    if (take_write) {
      c.writes[w++].kind = WriteFate::Kind::kKept;
    } else {
      c.name_ops_kept[n++] = true;
    }
  }
  return c;
}

bool CrashChoiceAt(const PersistenceTracker& tracker, CrashPlan plan, uint64_t index, uint64_t seed,
                   CrashChoice* choice) {
  constexpr uint64_t kListable = 4096;
  uint64_t count = tracker.CountStates(plan);
  if (count > kListable || index >= std::max<uint64_t>(count, 1)) return false;
  *choice = tracker.NothingKept(seed);
  if (count == 0) return true;
  uint64_t n = 0;
  tracker.Enumerate(plan, kListable, seed, [&](const CrashChoice& c) {
    if (n++ < index) return true;
    *choice = c;
    return false;
  });
  return true;
}

CrashChoice PickCrashChoice(const PersistenceTracker& tracker, CrashPlan plan, uint64_t seed) {
  constexpr uint64_t kListable = 4096;
  uint64_t count = tracker.CountStates(plan);
  CrashChoice picked = tracker.NothingKept(seed);
  if (count == 0) return picked;  // e.g. nothing to tear: everything volatile is lost
  if (count <= kListable) {
    uint64_t target = Rng(seed).Uniform(count), n = 0;
    tracker.Enumerate(plan, kListable, seed, [&](const CrashChoice& c) {
      if (n++ < target) return true;
      picked = c;
      return false;
    });
    return picked;
  }
  // Sampling: the first sample is always "all lost"; take the second.
  uint64_t n = 0;
  tracker.Enumerate(plan, 2, seed, [&](const CrashChoice& c) {
    picked = c;
    return ++n < 2;
  });
  return picked;
}

PersistenceTracker TrackerAt(const std::vector<TraceOp>& trace, size_t op_count) {
  PersistenceTracker tracker;
  for (size_t i = 0; i < op_count && i < trace.size(); i++) {
    if (trace[i].IsMutation()) tracker.Apply(trace[i]);
  }
  return tracker;
}

dbdb::Result<PowerCut> CutPower(const SimFileSystem& fs, CrashPlan plan, uint64_t seed, const uint64_t* state_index) {
  PowerCut cut;
  CrashImage image;
  bool in_range = true;
  fs.WithTracker([&](const PersistenceTracker& tracker) {
    cut.states = tracker.CountStates(plan);
    if (state_index != nullptr) {
      in_range = CrashChoiceAt(tracker, plan, *state_index, seed, &cut.choice);
    } else {
      cut.choice = PickCrashChoice(tracker, plan, seed);
    }
    if (in_range) image = tracker.Build(cut.choice);
  });
  if (!in_range) {
    return dbdb::Status::InvalidArgument("crash state " + std::to_string(*state_index) + " of plan " +
                                         CrashPlanName(plan) + ": the plan has " + std::to_string(cut.states) +
                                         " states here" + (cut.states > 4096 ? " (more than 4096 cannot be listed)" : ""));
  }
  cut.rebooted = SimFileSystem::FromImage(image, seed, fs.Dirs());
  return cut;
}

}  // namespace faultfs
