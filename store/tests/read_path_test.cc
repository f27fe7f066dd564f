// The read path's two lookup structures, alone: the overlay's key filter (key_filter.h) and the
// table of verified mapped nodes (verified_nodes.h). Both may only err on the safe side: the filter
// never says "absent" of a key it holds, the table never says "verified" of a node it was not told
// of, in that mapping, since the last Clear.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "key_filter.h"
#include "log_overlay.h"
#include "test_util.h"
#include "verified_nodes.h"

namespace dbdb {
namespace {

std::string Key(uint64_t i) { return "key-" + std::to_string(i * 2654435761u); }

// LogOverlay::Get as one value: nullopt when the overlay holds nothing for `key` at `txn`, else the
// value or (inside) nullopt for a delete. The buffer it reads into starts with a sentinel, so that
// a Get that reports nothing or a delete must also have left it alone.
std::optional<std::optional<std::string>> OverlayGet(const LogOverlay& overlay, std::string_view key, uint64_t txn) {
  const std::string sentinel = "untouched: longer than any short-string buffer";
  std::string value = sentinel;
  switch (overlay.Get(key, txn, &value)) {
    case LogOverlay::Found::kValue:
      return std::optional<std::string>(value);
    case LogOverlay::Found::kDeleted:
      EXPECT_EQ(value, sentinel) << "a delete wrote the value";
      return std::optional<std::string>();
    case LogOverlay::Found::kNothing:
      EXPECT_EQ(value, sentinel) << "an absent key wrote the value";
      return std::nullopt;
  }
  return std::nullopt;
}

TEST(KeyFilter, NeverForgetsAKeyAcrossItsRebuildsAndRarelyClaimsOneItLacks) {
  KeyFilter filter;
  std::vector<std::string> added;
  for (uint64_t i = 0; i < 100000; i++) {
    added.push_back(Key(i));
    if (filter.Add(added.back())) {  // the owner rebuilds from every key it holds
      filter.Reset(added.size());
      for (const std::string& k : added) filter.Add(k);
    }
    if (i % 9973 == 0) {
      for (const std::string& k : added) ASSERT_TRUE(filter.MayContain(k)) << k << " after " << i + 1 << " keys";
    }
  }
  for (const std::string& k : added) ASSERT_TRUE(filter.MayContain(k)) << k;
  EXPECT_GE(filter.bytes() * 8, added.size() * 10);  // at least 10 bits a key
  size_t false_positives = 0;
  for (uint64_t i = 100000; i < 200000; i++) false_positives += filter.MayContain(Key(i)) ? 1 : 0;
  EXPECT_LT(false_positives, 5000u) << "more than 5% false positives";
  EXPECT_FALSE(KeyFilter().MayContain("anything"));
}

// A checkpoint's keys (the sorted base) and the commits after it (the tree), past several rebuilds
// of the filter; the first Get builds it, either before the commits (which Apply then adds) or
// after them (the build adds them).
void CheckOverlayFindsEveryKey(bool get_first) {
  SCOPED_TRACE(get_first ? "a get before the commits" : "the first get after them");
  format::LargeBatchChanges base;
  std::string text;
  for (uint64_t i = 0; i < 500; i++) text.append(Key(i)).push_back('\0');
  ReadBytes bytes;
  bytes.Resize(text.size());
  std::copy(text.begin(), text.end(), bytes.span().begin());
  std::vector<std::string_view> keys;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\0', at);
    keys.emplace_back(bytes.view().substr(at, end - at));
    at = end + 1;
  }
  std::sort(keys.begin(), keys.end());
  for (std::string_view k : keys) base.push_back(format::BatchChange{k, k});
  LogOverlay overlay(100, 200, 7, std::move(bytes), std::move(base), 1000);
  uint64_t offset = 300, txn = 8;
  if (get_first) {
    EXPECT_FALSE(OverlayGet(overlay, Key(20000), 7).has_value());
  }
  for (uint64_t batch = 0; batch < 40; batch++) {
    std::vector<std::string> owned;
    for (uint64_t i = 0; i < 250; i++) owned.push_back(Key(10000 + batch * 250 + i));
    std::vector<format::BatchChange> changes;
    for (const std::string& k : owned) changes.push_back(format::BatchChange{k, std::nullopt});  // deletes
    overlay.Apply(offset++, txn++, changes, 100);
  }
  for (uint64_t i = 0; i < 500; i++) {
    auto found = OverlayGet(overlay, Key(i), txn);
    ASSERT_TRUE(found.has_value()) << "checkpoint key " << i;
    EXPECT_EQ(**found, Key(i));
  }
  for (uint64_t i = 10000; i < 20000; i++) {
    auto found = OverlayGet(overlay, Key(i), txn);
    ASSERT_TRUE(found.has_value()) << "applied key " << i;
    EXPECT_FALSE(found->has_value()) << "a delete reads as a value";
  }
  for (uint64_t i = 20000; i < 21000; i++) EXPECT_FALSE(OverlayGet(overlay, Key(i), txn).has_value());
}

TEST(KeyFilter, TheOverlayFindsEveryKeyItHoldsAndNoOther) {
  CheckOverlayFindsEveryKey(true);
  CheckOverlayFindsEveryKey(false);
}

// Under TSan too: the first gets of a fresh overlay build its filter while commits are applied to
// it. A reader that has seen a commit applied (the counter below, published after Apply returns)
// must find its key, whichever of the build and that Apply came first. Every other round the
// overlay merges its tree into its array as often as it may, so that gets race merges too.
TEST(KeyFilter, AFilterBuiltWhileCommitsAreAppliedMissesNoneOfThem) {
  for (int round = 0; round < 20; round++) {
    LogOverlay overlay(100, 7);
    if (round % 2 == 1) overlay.SetMergeKeys(1);
    constexpr uint64_t kCommits = 100;
    std::atomic<uint64_t> applied{0};  // commits whose Apply has returned
    std::atomic<uint64_t> missed{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; r++) {
      readers.emplace_back([&] {
        for (uint64_t seen = 0; seen < kCommits;) {
          seen = applied.load(std::memory_order_acquire);
          if (seen == 0) {
            if (OverlayGet(overlay, Key(0), 7).has_value()) missed++;  // nothing applied yet: absent
          } else {
            // The newest applied commit's key, and the first one's.
            for (uint64_t i : {seen - 1, uint64_t{0}}) {
              auto found = OverlayGet(overlay, Key(i), 7 + seen);
              if (!found.has_value() || !found->has_value() || **found != Key(i)) missed++;
            }
          }
          std::this_thread::yield();  // let the applying thread take the lock (readers are preferred)
        }
      });
    }
    for (uint64_t i = 0; i < kCommits; i++) {
      std::string key = Key(i);
      std::vector<format::BatchChange> changes{format::BatchChange{key, key}};
      overlay.Apply(200 + i, 8 + i, changes, 100);
      applied.store(i + 1, std::memory_order_release);
    }
    for (auto& t : readers) t.join();
    ASSERT_EQ(missed.load(), 0u) << "round " << round;
    if (round % 2 == 1) {
      EXPECT_GE(overlay.merges(), 4u) << "round " << round;
    }
  }
}

// A key drawn to collide in its first eight bytes with others: 0 to 12 bytes of 0, 1, 'a' and 0xff.
std::string DrawCollidingKey(std::mt19937_64& rng) {
  const char alphabet[] = {'\0', '\x01', 'a', '\xff'};
  std::string k(rng() % 13, '\0');
  for (char& c : k) c = alphabet[rng() % 4];
  return k;
}

// An overlay opened at a checkpoint (txn 10, of fold 100 at offset 200) whose batch holds
// `changes` (a value, or nullopt for a delete), its keys and values viewing into bytes it keeps,
// as a decoded checkpoint's do.
std::unique_ptr<LogOverlay> OverlayAtCheckpoint(const std::map<std::string, std::optional<std::string>>& changes) {
  std::string text;
  for (const auto& [k, v] : changes) text += k + v.value_or("");
  ReadBytes bytes;
  bytes.Resize(text.size());
  std::copy(text.begin(), text.end(), bytes.span().begin());
  format::LargeBatchChanges base;
  size_t at = 0;
  for (const auto& [k, v] : changes) {
    const std::string_view key = bytes.view().substr(at, k.size());
    at += k.size();
    std::optional<std::string_view> value;
    if (v) value = bytes.view().substr(at, v->size());
    at += v.value_or("").size();
    base.push_back(format::BatchChange{key, value});
  }
  return std::make_unique<LogOverlay>(100, 200, 10, std::move(bytes), std::move(base), 1000);
}

// The overlay orders its keys by their first eight bytes before the whole keys: keys that share
// those bytes, end inside them, or hold zero and 0xff bytes there must still be told apart and kept
// in byte order. Gets, seeks both ways and whole walks with Next (which see the order), and the
// fold's LatestChanges (which sees which versions are kept), at several snapshots, against a
// model, for keys drawn to collide: lengths 0 to 12 over the bytes 0, 1, 'a' and 0xff. And the
// empty view, whose data() is null (an iterator's SeekToFirst seeks it).
//
// `merge_keys` low makes Apply merge its B-tree into its sorted array every few commits, so that
// many keys have versions in both, linked by the merges (log_overlay.h); `with_checkpoint` puts a
// checkpoint's array under both, whose changes theirs hide.
void CheckVersionsAgainstModel(size_t merge_keys, bool with_checkpoint) {
  std::mt19937_64 rng(20261203);
  SCOPED_TRACE("seed 20261203, merge_keys " + std::to_string(merge_keys) +
               (with_checkpoint ? ", over a checkpoint" : ""));
  auto draw = [&] { return DrawCollidingKey(rng); };
  // key -> (txn, value or deleted), oldest first
  std::map<std::string, std::vector<std::pair<uint64_t, std::optional<std::string>>>> model;
  std::unique_ptr<LogOverlay> overlay;
  uint64_t first_txn;  // the overlay's: its fold's, or its checkpoint's
  if (with_checkpoint) {
    std::map<std::string, std::optional<std::string>> checkpoint;
    for (int i = 0; i < 300; i++) {
      std::string k = draw();
      checkpoint[k] = rng() % 4 == 0 ? std::nullopt : std::optional<std::string>(k + "@checkpoint");
    }
    for (const auto& [k, v] : checkpoint) model[k].emplace_back(10, v);
    overlay = OverlayAtCheckpoint(checkpoint);
    first_txn = 10;
  } else {
    overlay = std::make_unique<LogOverlay>(100, 7);
    first_txn = 7;
  }
  if (merge_keys != 0) overlay->SetMergeKeys(merge_keys);
  std::vector<std::string> probes;
  for (uint64_t commit = 0; commit < 60; commit++) {
    std::map<std::string, std::optional<std::string>> batch;
    for (int i = 0; i < 40; i++) {
      std::string k = draw();
      batch[k] = rng() % 4 == 0 ? std::nullopt : std::optional<std::string>(k + "@" + std::to_string(commit));
      probes.push_back(draw());
    }
    std::vector<format::BatchChange> changes;
    for (const auto& [k, v] : batch) changes.push_back({k, v ? std::optional<std::string_view>(*v) : std::nullopt});
    const uint64_t txn = first_txn + 1 + commit;
    overlay->Apply(300 + commit, txn, changes, 100);
    for (const auto& [k, v] : batch) model[k].emplace_back(txn, v);
  }
  if (merge_keys != 0) {
    EXPECT_GT(overlay->merges(), 5u) << "too few merges";
  }
  for (const auto& [k, versions] : model) probes.push_back(k);
  // What the model holds for `key` at `txn`: nullopt if nothing.
  auto at = [&](const std::string& key, uint64_t txn) -> std::optional<std::optional<std::string>> {
    auto it = model.find(key);
    if (it == model.end()) return std::nullopt;
    std::optional<std::optional<std::string>> out;
    for (const auto& [t, v] : it->second) {
      if (t <= txn) out = v;
    }
    return out;
  };
  if (!with_checkpoint) {
    // Before the first commit nothing is visible (a seek from here would walk every key).
    EXPECT_EQ(OverlayGet(*overlay, std::string_view(), first_txn), std::nullopt);
    EXPECT_EQ(OverlayGet(*overlay, draw(), first_txn), std::nullopt);
  }
  {
    std::string_view found;
    std::optional<std::string_view> value;
    ASSERT_TRUE(overlay->Seek(std::string_view(), true, first_txn + 60, &found, &value));
    EXPECT_EQ(found, model.begin()->first);
  }
  for (uint64_t txn : {first_txn, first_txn + 1, first_txn + 23, first_txn + 60}) {
    for (const std::string& probe : probes) {
      ASSERT_EQ(OverlayGet(*overlay, probe, txn), at(probe, txn)) << "get, txn " << txn;
      for (bool inclusive : {true, false}) {
        std::optional<std::string> want_key;
        for (auto it = inclusive ? model.lower_bound(probe) : model.upper_bound(probe); it != model.end(); ++it) {
          if (at(it->first, txn)) {
            want_key = it->first;
            break;
          }
        }
        std::string_view found;
        std::optional<std::string_view> value;
        const bool got = overlay->Seek(probe, inclusive, txn, &found, &value);
        ASSERT_EQ(got, want_key.has_value()) << "seek, txn " << txn << (inclusive ? " >=" : " >");
        if (got) {
          ASSERT_EQ(found, *want_key) << "seek, txn " << txn;
          ASSERT_EQ(value, *at(std::string(found), txn));
        }
      }
    }
    LogOverlay::Latest want;
    for (const auto& [k, versions] : model) {
      if (auto v = at(k, txn)) want.emplace(k, *v);
    }
    ASSERT_EQ(overlay->LatestChanges(txn), want) << "txn " << txn;
    // A whole walk from the first key, stepping with Next.
    LogOverlay::Latest walked;
    std::string_view found;
    std::optional<std::string_view> value;
    LogOverlay::Position position;
    for (bool valid = overlay->Seek(std::string_view(), true, txn, &found, &value, &position); valid;
         valid = overlay->Next(txn, &found, &value, &position)) {
      ASSERT_TRUE(walked.empty() || walked.rbegin()->first < found) << "walk out of order at txn " << txn;
      walked.emplace(found, value);
    }
    ASSERT_EQ(walked, want) << "walk, txn " << txn;
  }
}

TEST(LogOverlay, KeysThatShareOrEndInsideTheirPrefixKeepTheirOrderAndVersions) {
  // 0: 2,400 changes, no merge at the default; 1: a merge every quarter of the array. Under a
  // sanitizer (this test took 10 s under ASan and 30 s under TSan for all three) only 1.
#if defined(DBDB_SANITIZER_THREAD) || defined(DBDB_SANITIZER_ADDRESS)
  const size_t merge_keys[] = {1};
#else
  const size_t merge_keys[] = {0, 1, 40};
#endif
  for (bool with_checkpoint : {false, true}) {
    for (size_t keys : merge_keys) CheckVersionsAgainstModel(keys, with_checkpoint);
  }
}

// An overlay opened at a checkpoint searches the checkpoint's sorted array by the keys' first eight
// bytes first (log_overlay.h): keys that share those bytes, end inside them, or hold zero and 0xff
// bytes there are found, and seeks both ways land on the model's next key.
TEST(LogOverlay, ACheckpointsKeysThatShareOrEndInsideTheirPrefixAreFoundInOrder) {
  std::mt19937_64 rng(20261204);
  SCOPED_TRACE("seed 20261204");
  auto draw = [&] { return DrawCollidingKey(rng); };
  std::map<std::string, std::optional<std::string>> model;
  for (int i = 0; i < 3000; i++) {
    std::string k = draw();
    model[k] = rng() % 4 == 0 ? std::nullopt : std::optional<std::string>(k + "@checkpoint");
  }
  const std::unique_ptr<LogOverlay> at_checkpoint = OverlayAtCheckpoint(model);
  const LogOverlay& overlay = *at_checkpoint;
  std::vector<std::string> probes;
  for (const auto& [k, v] : model) probes.push_back(k);
  for (int i = 0; i < 3000; i++) probes.push_back(draw());
  for (const std::string& probe : probes) {
    auto it = model.find(probe);
    ASSERT_EQ(OverlayGet(overlay, probe, 10),
              it == model.end() ? std::nullopt : std::optional<std::optional<std::string>>(it->second))
        << "get";
    for (bool inclusive : {true, false}) {
      auto want = inclusive ? model.lower_bound(probe) : model.upper_bound(probe);
      std::string_view found;
      std::optional<std::string_view> value;
      const bool got = overlay.Seek(probe, inclusive, 10, &found, &value);
      ASSERT_EQ(got, want != model.end()) << (inclusive ? "seek >=" : "seek >");
      if (got) {
        ASSERT_EQ(found, want->first) << (inclusive ? "seek >=" : "seek >");
        ASSERT_EQ(value, want->second);
      }
    }
  }
}

// A walk through the overlay's changes with Next (as an iterator's cursor walks) steps on from
// where it stopped while the overlay gains no key, and searches again when it does: commits after
// the walk's snapshot, adding keys before and after where it stands and new versions of keys it
// has yet to reach, change nothing it sees. With and without a checkpoint under the tree, whose
// changes the tree's hide on the same key; and with `merge_keys` 1, merges of the tree into the
// array during the walk (each ends every position).
void CheckWalkAsCommitsArrive(bool with_checkpoint, size_t merge_keys) {
  SCOPED_TRACE(std::string(with_checkpoint ? "over a checkpoint" : "no checkpoint") + ", merge_keys " +
               std::to_string(merge_keys));
  std::mt19937_64 rng(20261204);
  auto key = [&](uint64_t n) { return "k" + std::to_string(n % 3000 + 1000); };  // 1000..3999, byte order as numbers
  std::map<std::string, std::optional<std::string>> want;  // as of the walk's snapshot, txn 20
  std::unique_ptr<LogOverlay> overlay;
  if (with_checkpoint) {
    std::map<std::string, std::optional<std::string>> checkpoint;
    for (int i = 0; i < 400; i++) checkpoint[key(rng())] = std::nullopt;  // deletes
    for (const auto& [k, v] : checkpoint) want[k] = std::nullopt;
    overlay = OverlayAtCheckpoint(checkpoint);
  } else {
    overlay = std::make_unique<LogOverlay>(100, 10);
  }
  if (merge_keys != 0) overlay->SetMergeKeys(merge_keys);
  uint64_t offset = 300, txn = 11;
  auto commit = [&](int keys, bool seen) {
    std::map<std::string, std::optional<std::string>> batch;
    for (int i = 0; i < keys; i++) batch[key(rng())] = "v" + std::to_string(txn);
    std::vector<format::BatchChange> changes;
    for (const auto& [k, v] : batch) changes.push_back(format::BatchChange{k, std::string_view(*v)});
    overlay->Apply(offset++, txn++, changes, 100);
    if (seen) {
      for (const auto& [k, v] : batch) want[k] = v;
    }
  };
  while (txn <= 20) commit(60, true);  // the snapshot: txn 20
  const uint64_t merges_before_walk = overlay->merges();
  std::vector<std::string> got;
  std::string_view found;
  std::optional<std::string_view> value;
  LogOverlay::Position position;
  for (bool valid = overlay->Seek("", true, 20, &found, &value, &position); valid;
       valid = overlay->Next(20, &found, &value, &position)) {
    ASSERT_TRUE(want.count(std::string(found))) << found << " is not in the snapshot";
    ASSERT_EQ(value, want[std::string(found)]) << found;
    got.emplace_back(found);
    if (rng() % 8 == 0) commit(static_cast<int>(rng() % 5), false);  // new keys, new versions, after the snapshot
  }
  std::vector<std::string> keys;
  for (const auto& [k, v] : want) keys.push_back(k);
  EXPECT_EQ(got, keys);
  EXPECT_GT(txn, 40u) << "too few commits arrived during the walk";
  if (merge_keys == 1) {
    EXPECT_GE(overlay->merges() - merges_before_walk, 1u) << "no merge during the walk";
  }
}

TEST(LogOverlay, AWalkGoesOnFromWhereItStoppedAndSeesNoLaterCommit) {
  for (bool with_checkpoint : {false, true}) {
    CheckWalkAsCommitsArrive(with_checkpoint, 0);
    CheckWalkAsCommitsArrive(with_checkpoint, 1);
  }
}

// A FileMapping is only compared by address here; two distinct objects stand for two mappings.
const FileMapping* FakeMapping(int i) {
  static char storage[4];
  return reinterpret_cast<const FileMapping*>(&storage[i]);
}

TEST(VerifiedNodes, AnswersOnlyForTheOffsetLengthAndMappingItWasToldUntilCleared) {
  VerifiedNodes verified(1 << 20);
  const FileMapping* a = FakeMapping(0);
  const FileMapping* b = FakeMapping(1);
  NodeRef ref{4096, 512};
  // Before its table is mapped (with the file's first mapping) it holds nothing.
  EXPECT_EQ(verified.capacity(), 0u);
  verified.Insert(ref, a, 2);
  EXPECT_EQ(verified.Find(ref, a), 0) << "trusted before the table was mapped";
  verified.Map();
  EXPECT_TRUE(verified.mapped());
  EXPECT_GT(verified.capacity(), 0u);
  EXPECT_EQ(verified.Find(ref, a), 0);
  verified.Insert(ref, a, 2);
  EXPECT_EQ(verified.Find(ref, a), 2);
  EXPECT_EQ(verified.Find(ref, b), 0) << "trusted in another mapping";
  EXPECT_EQ(verified.Find(NodeRef{4096, 513}, a), 0) << "trusted at another length";
  EXPECT_EQ(verified.Find(NodeRef{4097, 512}, a), 0) << "trusted at another offset";
  verified.Clear();
  EXPECT_EQ(verified.Find(ref, a), 0) << "trusted after Clear";
  verified.Insert(ref, a, 3);
  EXPECT_EQ(verified.Find(ref, a), 3);
  // Many more nodes than slots: whatever it still answers for, it answers right.
  for (uint64_t i = 1; i < 100000; i++) verified.Insert(NodeRef{i * 64, static_cast<uint32_t>(i % 1000 + 16)}, a, 1 + i % 2);
  size_t found = 0;
  for (uint64_t i = 1; i < 100000; i++) {
    uint8_t type = verified.Find(NodeRef{i * 64, static_cast<uint32_t>(i % 1000 + 16)}, a);
    if (type != 0) {
      found++;
      ASSERT_EQ(type, 1 + i % 2) << "node " << i;
    }
    ASSERT_EQ(verified.Find(NodeRef{i * 64, static_cast<uint32_t>(i % 1000 + 17)}, a), 0);
  }
  EXPECT_GT(found, 1000u);
}

// This thread's minor faults so far.
uint64_t ThreadFaults() {
  rusage usage{};
  EXPECT_EQ(getrusage(RUSAGE_THREAD, &usage), 0);
  return static_cast<uint64_t>(usage.ru_minflt);
}

// The faults of `nodes` lookups into a fresh table of a 64 MiB budget (512Ki slots of 32 bytes:
// 16 MiB), each followed by the insert, as ReadNodeView does after verifying a node the table
// did not hold.
uint64_t FaultsOfAFreshTable(uint64_t nodes) {
  constexpr uint64_t kBudget = uint64_t{64} << 20;
  VerifiedNodes verified(kBudget);
  verified.Map();
  EXPECT_EQ(verified.capacity(), kBudget / 128);
  const FileMapping* a = FakeMapping(0);
  const uint64_t before = ThreadFaults();
  uint64_t found = 0;
  for (uint64_t i = 1; i <= nodes; i++) {
    const NodeRef ref{i * 4096, 4000};
    found += verified.Find(ref, a) != 0;  // as ReadNodeView: look, verify, insert
    verified.Insert(ref, a, 1);
  }
  const uint64_t taken = ThreadFaults() - before;
  EXPECT_EQ(found, 0u);
  EXPECT_GT(verified.inserted(), nodes / 2);
  return taken;
}

constexpr uint64_t kTableBytes = uint64_t{16} << 20;  // FaultsOfAFreshTable's

// Whether this thread's faults are counted a page each: a control of 64 pages written once each,
// on small pages.
bool FaultsAreCountedAPageEach(uint64_t page) {
  constexpr uint64_t kControlPages = 64;
  void* control = mmap(nullptr, kControlPages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(control, MAP_FAILED);
  if (control == MAP_FAILED) return false;
  (void)madvise(control, kControlPages * page, MADV_NOHUGEPAGE);
  const uint64_t before = ThreadFaults();
  for (uint64_t i = 0; i < kControlPages; i++) static_cast<volatile char*>(control)[i * page] = 1;
  const uint64_t taken = ThreadFaults() - before;
  munmap(control, kControlPages * page);
  return taken >= kControlPages / 2;
}

// A lookup would first touch a table page by reading it, then the insert after the node's
// verification writes it. In a private anonymous mapping that read maps the zero page and the
// write faults again, copies it and flushes the old entry from the CPUs of the process's other
// threads; the table's lookups read no page an insert has not written, so the first touch is the
// page's only fault (verified_nodes.h). Counted on this thread (its minor faults): about one a
// small page, where reading first took two, and not one a huge page (the table is advised onto
// small pages: a fresh huge page cost up to 20 ms to fault in, large_alloc.h). On x86-64, whose
// hardware sets a page's dirty bit without a fault, and not under TSan, whose shadow memory faults
// on the table's writes too.
TEST(VerifiedNodes, APageOfTheTableFaultsOnceWhenALookupTouchesItFirst) {
#if defined(DBDB_SANITIZER_THREAD) || !defined(__x86_64__)
  GTEST_SKIP() << "counts faults only on x86-64 without TSan";
#else
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  // A kernel (or sandbox) that does not count this thread's faults, or maps anonymous memory on
  // huge pages whatever the advice, cannot say.
  if (!FaultsAreCountedAPageEach(page)) GTEST_SKIP() << "this thread's faults are not counted a page each";
  const uint64_t pages = kTableBytes / page;
  // Enough nodes that nearly every page of the table holds a few (the hash spreads them).
  const uint64_t faults = FaultsOfAFreshTable(16 * pages * (page / 4096));
  // Each page once (an ASan build faults in the table's shadow too: an eighth as many pages).
  EXPECT_LE(faults, pages + pages / 4) << "a page faulted twice: a read mapped the zero page, the insert copied it";
  EXPECT_GE(faults, pages / 2) << "the table was not touched lazily, or is on huge pages";
#endif
}

// The table is advised onto small pages (MADV_NOHUGEPAGE, verified_nodes.h), never huge ones,
// whatever the kernel's mode and whether it has huge pages to give now: read from the mapping's
// flags, where the kernel records the advice.
TEST(VerifiedNodes, TheTableIsAdvisedOntoSmallPages) {
  VerifiedNodes verified(uint64_t{64} << 20);
  verified.Map();
  const void* table = verified.table_address();
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(testing::AdvisedSmall(table), testing::KernelTakesNoHugePageAdvice()) << testing::VmFlagsOf(table);
  EXPECT_FALSE(testing::AdvisedHuge(table)) << testing::VmFlagsOf(table);
}

// Two inserts racing into the same slot of a page no insert has written yet (each takes its slot
// without reading the ways first: verified_nodes.h) leave it holding one node whole, or neither,
// never one node's offset with the other's type: many fresh tables, two threads from a common
// start, each inserting a node that falls in the same set and way as the other's. Under TSan too.
TEST(VerifiedNodes, InsertsRacingIntoAnUnwrittenSlotNeverMixTwoNodes) {
  const FileMapping* a = FakeMapping(0);
  // Offsets in one set and way of the smallest table (4,096 slots: 2,048 sets of 2 ways), by the
  // table's hash (verified_nodes.h); checked below, so a change of hash fails here rather than
  // weakening the test.
  std::vector<uint64_t> same;
  const uint64_t set_of_first = (uint64_t{64} * 0x9E3779B97F4A7C15ULL) >> 53;
  for (uint64_t offset = 64; same.size() < 3; offset += 64) {
    if (((offset * 0x9E3779B97F4A7C15ULL) >> 53) == set_of_first && (offset >> 4) % 2 == (64 >> 4) % 2) same.push_back(offset);
  }
  {
    VerifiedNodes verified(0);
    verified.Map();
    ASSERT_EQ(verified.capacity(), 4096u);
    for (uint64_t offset : same) verified.Insert(NodeRef{offset, 100}, a, 1);
    int held = 0;
    for (uint64_t offset : same) held += verified.Find(NodeRef{offset, 100}, a) != 0;
    ASSERT_LT(held, 3) << "three offsets held in a set of two ways: not one set";
  }
  int both_tried = 0;
  for (int round = 0; round < 2000; round++) {
    VerifiedNodes verified(0);
    verified.Map();
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; t++) {
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < 2) {
        }
        verified.Insert(NodeRef{same[t], 100}, a, static_cast<uint8_t>(1 + t));
      });
    }
    for (auto& thread : threads) thread.join();
    const uint8_t first = verified.Find(NodeRef{same[0], 100}, a);
    const uint8_t second = verified.Find(NodeRef{same[1], 100}, a);
    ASSERT_TRUE(first == 0 || first == 1) << "round " << round << ": the first node answers type " << int{first};
    ASSERT_TRUE(second == 0 || second == 2) << "round " << round << ": the second node answers type " << int{second};
    ASSERT_TRUE(first != 0 || second != 0) << "round " << round << ": neither insert took the slot";
    both_tried++;
  }
  EXPECT_EQ(both_tried, 2000);
}

// Under TSan (ci/test.sh runs the store tests there): readers race writers on the same slots and
// never see a slot half written.
TEST(VerifiedNodes, ReadersRacingWritersNeverSeeAWrongAnswer) {
  VerifiedNodes verified(0);  // the smallest table: every slot contended
  verified.Map();
  const FileMapping* a = FakeMapping(0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> wrong{0};
  auto ref_of = [](uint64_t i) { return NodeRef{(i % 20000 + 1) * 40, static_cast<uint32_t>(i % 20000 + 100)}; };
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; w++) {
    threads.emplace_back([&, w] {
      for (uint64_t i = w; !stop.load(); i += 2) verified.Insert(ref_of(i), a, static_cast<uint8_t>(1 + i % 20000 % 2));
    });
  }
  for (int r = 0; r < 2; r++) {
    threads.emplace_back([&, r] {
      for (uint64_t i = r; i < 400000; i++) {
        uint8_t type = verified.Find(ref_of(i), a);
        if (type != 0 && type != 1 + i % 20000 % 2) wrong++;
        // The same offset at another length was never inserted.
        NodeRef other = ref_of(i);
        other.length++;
        if (verified.Find(other, a) != 0) wrong++;
      }
    });
  }
  threads[2].join();
  threads[3].join();
  stop = true;
  threads[0].join();
  threads[1].join();
  EXPECT_EQ(wrong.load(), 0u);
}

}  // namespace
}  // namespace dbdb
