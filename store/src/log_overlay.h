// LogOverlay: the changes of the commits since the last fold, replayed over the fold's tree
// (docs/FORMAT.md, "Commits, batches and folds"). One overlay serves every snapshot of one fold
// epoch of one file: it keeps each key's versions tagged with the commit's txn id, and a snapshot
// at txn T sees the newest version at or before T. A fold (or a compaction) starts a new, empty overlay; snapshots
// of the old epoch keep the old one alive.
//
// Thread safety: Apply takes the lock exclusively; every read takes it shared. Get copies its value
// out under the lock; Seek and Next hand out views of bytes no Apply changes or moves (the arena's
// and the checkpoint's), so nothing a reader holds can change under it. An Apply that merges (below)
// holds the lock for one pass over the sorted array, and reads of this overlay wait for it: in the
// driver below, 9 ms at 514,000 keys and 15 ms at 804,000, and 39 ms at 643,000, where the array
// doubled its capacity (its new pages faulted in), with the array on small pages; on huge pages
// (stops 38 to 51), the longest merge took 5.8 to 27.1 ms (37 to 48 ms on small pages, alternated
// runs, when fresh huge pages were cheap: see below).
//
// Memory: an overlay only grows until it is dropped (versions are never removed), so its keys,
// values and versions come from one arena, freed at once with the overlay: replaying a commit
// costs a few bump allocations, none per key or value (opening a file replays the whole unfolded
// tail; docs/FORMAT.md, "Commits, batches and folds"). The arena's chunks from 2 MiB up, the sorted
// array and a checkpoint's bytes, array and prefixes are large blocks (large_alloc.h): mappings of
// their own, kept for reuse when freed, on small pages. (From stop 38 to 51 they were on huge
// pages: the driver below took 0.21 to 0.60 s with them there, 0.87 to 1.09 s on small pages,
// most of the difference first touches of fresh pages. Since then a fresh huge page came to cost
// 10 to 20 ms on the machine dbdb is measured on, and a 1M-key fill ran 40% faster on small pages
// with the freed blocks kept: large_alloc.h.) The B-tree's nodes come from the heap.
//
// The keys are indexed in two parts, each key with its first eight bytes beside it (most
// comparisons are settled without reading the key, a cache miss):
// - `recent_`, a B-tree (absl::btree_set) of the keys changed since the last merge, about
//   RecentLimit() of them at most (Options::overlay_merge_keys, or a quarter of the array if
//   more; Apply checks after each whole batch, so one large batch may pass it);
// - `merged_`, a sorted array of the keys changed before it, into which Apply merges the tree,
//   in place from the back, once the tree reaches that limit (so each key is moved about five
//   times in all).
// Between folds (and at a million keys and more, where compactions take the place of folds) an
// overlay holds hundreds of thousands of keys, and every change of every commit is one ordered
// insert. In one B-tree of them all (its nodes in the arena, between the values), that insert was a
// third of all samples in a profile of a 1M-key batch fill. A driver applying a thousand sorted
// 1,000-key batches of random 16-byte keys took 1.47-1.75 s that way and takes 0.86-1.0 s now, and
// about as long for limits from 2,048 keys to a quarter of the array; merging into a newly
// allocated array instead of in place took up to 2.3 s (its page faults). Gets got no slower.
//
// A key may be in both: then the tree holds its versions since the merge and the array the older
// ones, and a merge links the two lists. A merge moves entries, so it ends every Position.
//
// Checkpoints: an overlay opened at a checkpoint (a commit whose batch holds every key's newest
// change since the fold, as of its txn; docs/FORMAT.md, "Checkpoints") starts from that batch as
// it was read, a sorted array searched in place (`base_`), and indexes only the commits after it
// in the two parts above: opening costs one read and one decode of the checkpoint, not an insert
// per change. Every snapshot of such an overlay is at the checkpoint's txn or later, so every
// change of the checkpoint's array is visible to it.
//
// Get asks a Bloom filter of every key the overlay holds (key_filter.h) before searching: most
// reads of a large database are of keys the overlay does not hold. The first Get builds it (so
// opening does not hash a checkpoint's keys for a handle that may never read); Apply keeps it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <atomic>
#include <mutex>
#include <new>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/btree_set.h>

#include "format.h"
#include "key_filter.h"
#include "key_prefix.h"
#include "large_alloc.h"
#include "read_bytes.h"

namespace dbdb {

class LogOverlay {
 public:
  // An empty overlay over the tree the fold commit at `fold_offset` (txn `fold_txn_id`) wrote (in
  // one file: the caller keeps overlays of different files apart).
  LogOverlay(uint64_t fold_offset, uint64_t fold_txn_id)
      : fold_offset_(fold_offset), through_offset_(fold_offset), through_txn_id_(fold_txn_id) {}
  // An overlay over the same fold opened at the checkpoint commit at `checkpoint_offset` (txn
  // `txn_id`, whose batch record took `record_bytes`): `changes` is its decoded batch (sorted,
  // one change per key), viewing into `bytes`, which the overlay keeps.
  LogOverlay(uint64_t fold_offset, uint64_t checkpoint_offset, uint64_t txn_id, ReadBytes bytes,
             format::LargeBatchChanges changes, uint64_t record_bytes)
      : fold_offset_(fold_offset), through_offset_(checkpoint_offset), through_txn_id_(txn_id),
        checkpoint_bytes_(record_bytes), checkpoints_bytes_(record_bytes), log_bytes_(record_bytes),
        base_bytes_(std::move(bytes)),
        base_(std::move(changes)), base_prefixes_(PrefixesOf(base_)), base_txn_id_(txn_id) {}
  LogOverlay(const LogOverlay&) = delete;
  LogOverlay& operator=(const LogOverlay&) = delete;

  uint64_t fold_offset() const { return fold_offset_; }
  // The newest commit whose batch is applied (the fold commit itself when none is).
  uint64_t through_offset() const;
  // That commit's txn id (the fold commit's while none is applied).
  uint64_t through_txn_id() const;
  // Record bytes of what a reader replays: the newest checkpoint's records (if any) and those of
  // the commits applied after it (batch, commit and seal records).
  uint64_t log_bytes() const;
  size_t key_count() const;  // keys with a change (at most: a key may be counted in each part)
  // The newest checkpoint's record bytes (0: none since the fold), and the commits applied after it.
  uint64_t checkpoint_bytes() const;
  uint64_t commits_after_checkpoint() const;
  // The record bytes of every checkpoint since the fold this overlay knows of: each it stepped over,
  // and the one it was opened at (not those before that one, which it never read).
  uint64_t checkpoints_bytes() const;
  // How many times Apply has merged the tree into the array.
  uint64_t merges() const;

  // Applies the changes of the commit at `commit_offset` (txn `txn_id`, newer than every applied
  // one), whose records took `record_bytes`. REQUIRES: commit_offset > through_offset() and
  // txn_id > through_txn_id() (the caller checks the file's commits link up: a file that says
  // otherwise is Corruption, never this assertion).
  void Apply(uint64_t commit_offset, uint64_t txn_id, const std::vector<format::BatchChange>& changes,
             uint64_t record_bytes);
  // Steps over the checkpoint at `commit_offset` (restating through_txn_id(), its records taking
  // `record_bytes`): it changes nothing this overlay holds, and is what a reader replays from now.
  // REQUIRES: commit_offset > through_offset() (the caller checks the txn id).
  void Restate(uint64_t commit_offset, uint64_t record_bytes);

  // What the overlay holds for `key` as of txn `txn_id`: kNothing (read the tree), kDeleted, or
  // kValue with the value assigned to `*value` (its capacity reused; untouched otherwise).
  enum class Found { kNothing, kDeleted, kValue };
  Found Get(std::string_view key, uint64_t txn_id, std::string* value) const;

  // Where a forward walk through the changes stands (an iterator's LogCursor): the next candidates
  // in the tree, in the merged array and in the checkpoint's array. Valid only while no key has
  // been added to the tree and no merge has run since it was taken (both move entries); Next
  // checks, and seeks if either happened.
  // A position passes for good the keys with no version visible to the walk's txn: sound
  // because a version applied later is newer than every snapshot of the overlay (Apply requires
  // txn ids above through_txn_id(), and a view is at most that), so such a key stays invisible.
  class Position;

  // The first key >= `key` (> when !inclusive) with a change at or before `txn_id`, and that change
  // (nullopt: a delete); with `position`, where to go on from it. The key and value found are
  // views into the overlay's arena or its checkpoint's bytes, which never change or move while the
  // overlay lives (a walk holds it, and reads them without the lock).
  bool Seek(std::string_view key, bool inclusive, uint64_t txn_id, std::string_view* found_key,
            std::optional<std::string_view>* value, Position* position = nullptr) const;
  // The next key after `*found_key` (what Seek or Next last found through `position`) with a change
  // at or before `txn_id`, and that change: a step from `position`, not a search, unless a key was
  // added since.
  bool Next(uint64_t txn_id, std::string_view* found_key, std::optional<std::string_view>* value, Position* position) const;

  // Every key's newest change at or before `txn_id`, sorted: what a fold applies to the tree.
  using Latest = std::map<std::string, std::optional<std::string>, std::less<>>;
  Latest LatestChanges(uint64_t txn_id) const;

 private:
  // One version of a key, in the arena; a key's versions are a list from the newest back.
  struct Version {
    uint64_t txn_id;
    Version* older;          // the version before it, or null (changed only by MergeRecent)
    std::string_view value;  // in the arena
    bool deleted;
  };
  // A key held (in the arena, as are its bytes) and its newest version.
  struct Held {
    const char* data;
    size_t size;
    Version* newest;
    std::string_view key() const { return {data, size}; }
  };
  // The tree's element: a held key and its KeyPrefix (key_prefix.h), so that
  // most comparisons are settled inside the node without reading the key (a cache miss each).
  // Keys whose prefixes differ are in the prefixes' order; equal prefixes compare the whole keys.
  struct Entry {
    uint64_t prefix;
    Held* held;
  };
  // What a lookup compares: a key and its prefix, computed once.
  struct Probe {
    explicit Probe(std::string_view k);
    uint64_t prefix;
    std::string_view key;
  };
  struct EntryLess {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      // Not KeyLess: a held key is read (a cache miss) only when the prefixes are equal.
      if (a.prefix != b.prefix) return a.prefix < b.prefix;
      return KeyOf(a) < KeyOf(b);
    }
    static std::string_view KeyOf(const Entry& e) { return e.held->key(); }
    static std::string_view KeyOf(const Probe& p) { return p.key; }
  };
  using Entries = absl::btree_set<Entry, EntryLess>;

 public:
  class Position {
   public:
    Position() = default;

   private:
    friend class LogOverlay;
    Position(uint64_t g, Entries::const_iterator e, size_t m, size_t b) : generation(g), entry(e), merged(m), base(b) {}
    uint64_t generation = UINT64_MAX;  // generation_ when taken (UINT64_MAX: never taken)
    Entries::const_iterator entry;     // the first tree entry not yet passed
    size_t merged = 0;                 // the first entry of merged_ not yet passed
    size_t base = 0;                   // the first checkpoint change not yet passed
  };

  // Apply merges the tree into the array once the tree holds `keys` keys (at least 1) or a quarter
  // as many as the array, whichever is more (Options::overlay_merge_keys; kMergeKeysDefault).
  void SetMergeKeys(size_t keys);
  static constexpr size_t kMergeKeysDefault = 16384;

 private:
  // The first change at or after the candidates `entry`, `merged` (skipping, in both, keys with no
  // version at or before `txn_id`) and `base`; with `position`, where to go on from it. On one key,
  // the tree's version wins over the array's, and either over the checkpoint's. REQUIRES: mutex_
  // held shared.
  bool FirstFrom(Entries::const_iterator entry, size_t merged, size_t base, uint64_t txn_id, std::string_view* found_key,
                 std::optional<std::string_view>* value, Position* position) const;
  static const Version* VisibleAt(const Version* newest, uint64_t txn_id);
  // The newest version of `key` at or before `txn_id` in the tree, then in the array; null if
  // neither has one. REQUIRES: mutex_ held.
  const Version* FindVisible(const Probe& probe, uint64_t txn_id) const;
  // The first entry of merged_ >= `probe` (> when !inclusive).
  size_t MergedSeek(const Probe& probe, bool inclusive) const;
  // How many keys the tree may hold before Apply merges it into the array: a quarter of the array
  // (each key is then moved about five times in all), at least merge_keys_.
  size_t RecentLimit() const;
  // Merges recent_ into merged_ and empties it. REQUIRES: mutex_ held exclusively.
  void MergeRecent();
  // The checkpoint's change of `key`, or null. REQUIRES: mutex_ held; txn_id >= base_txn_id_.
  const format::BatchChange* BaseFind(std::string_view key, uint64_t txn_id) const;
  // The first checkpoint change with a key >= `key` (> when !inclusive).
  format::LargeBatchChanges::const_iterator BaseSeek(std::string_view key, bool inclusive) const;
  static std::optional<std::string> ValueOf(const Version& v);
  using Prefixes = std::vector<uint64_t, LargeAllocator<uint64_t>>;
  static Prefixes PrefixesOf(const format::LargeBatchChanges& changes);
  std::string_view Copy(std::string_view bytes);  // REQUIRES: mutex_ held exclusively
  // Sizes the filter for every key held and adds them all. REQUIRES: mutex_ held exclusively, or
  // shared with filter_build_mutex_ while filter_built_ is false (BuildFilter).
  void RebuildFilter() const;
  // Builds the filter if no Get has yet. REQUIRES: mutex_ held shared.
  void BuildFilter() const;

  const uint64_t fold_offset_;
  mutable std::shared_mutex mutex_;
  uint64_t through_offset_;                  // GUARDED_BY(mutex_)
  uint64_t through_txn_id_;                  // GUARDED_BY(mutex_)
  uint64_t checkpoint_bytes_ = 0;            // GUARDED_BY(mutex_)
  uint64_t commits_after_checkpoint_ = 0;    // GUARDED_BY(mutex_)
  uint64_t checkpoints_bytes_ = 0;           // GUARDED_BY(mutex_)
  uint64_t log_bytes_ = 0;                   // GUARDED_BY(mutex_)
  // GUARDED_BY(mutex_): inserts into recent_ and merges, each of which may move entries (Position).
  uint64_t generation_ = 0;
  uint64_t merges_ = 0;  // GUARDED_BY(mutex_)
  // The checkpoint this overlay was opened at (empty if none): its changes, viewing into its
  // bytes, at base_txn_id_. Never changed after construction. The three are large blocks when
  // large (large_alloc.h): an open at a checkpoint touches each of their pages first.
  const ReadBytes base_bytes_;
  const format::LargeBatchChanges base_;
  // KeyPrefix of each key of base_, in its order: a search probes this array, one line holding
  // eight probes' worth, and reads a key only among those with the prefix it looks for.
  const Prefixes base_prefixes_;
  const uint64_t base_txn_id_ = 0;
  LargeArena arena_;  // GUARDED_BY(mutex_) for allocation
  size_t merge_keys_ = kMergeKeysDefault;  // GUARDED_BY(mutex_)
  // The keys changed since the last merge (the tree's nodes from the heap, freed by each merge),
  // and, sorted, those changed before it. GUARDED_BY(mutex_).
  Entries recent_;
  std::vector<Entry, LargeAllocator<Entry>> merged_;
  // Every key of base_, merged_ and recent_ once built (never a false negative: a key missing here is
  // read from the tree, a stale read). Built by the first Get under the shared lock and
  // filter_build_mutex_, published by filter_built_ (release); from then on changed only by Apply,
  // under the exclusive lock.
  mutable KeyFilter filter_;
  mutable std::mutex filter_build_mutex_;
  mutable std::atomic<bool> filter_built_{false};
};

}  // namespace dbdb
