// LogOverlay: the changes of the commits since the last fold, replayed over the fold's tree
// (docs/FORMAT.md, "Commits, batches and folds"). One overlay serves every snapshot of one fold
// epoch of one file: it keeps each key's versions tagged with the commit's txn id, and a snapshot
// at txn T sees the newest version at or before T. A fold (or a compaction) starts a new, empty overlay; snapshots
// of the old epoch keep the old one alive.
//
// Thread safety: Apply takes the lock exclusively; every read takes it shared. Values are copied
// out under the lock, so nothing a reader holds can change under it.
//
// Memory: an overlay only grows until it is dropped (versions are never removed), so its keys,
// values and tree nodes come from one arena, freed at once with the overlay. Replaying a commit
// costs one tree lookup per change and a few bump allocations, no allocation per key or value:
// opening a file replays the whole unfolded tail (docs/FORMAT.md, "Commits, batches and folds").
#pragma once

#include <cstdint>
#include <map>
#include <memory_resource>
#include <new>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "format.h"

namespace dbdb {

class LogOverlay {
 public:
  // An empty overlay over the tree the fold commit at `fold_offset` (txn `fold_txn_id`) wrote (in
  // one file: the caller keeps overlays of different files apart).
  LogOverlay(uint64_t fold_offset, uint64_t fold_txn_id)
      : fold_offset_(fold_offset), through_offset_(fold_offset), through_txn_id_(fold_txn_id) {}
  LogOverlay(const LogOverlay&) = delete;
  LogOverlay& operator=(const LogOverlay&) = delete;

  uint64_t fold_offset() const { return fold_offset_; }
  // The newest commit whose batch is applied (the fold commit itself when none is).
  uint64_t through_offset() const;
  // That commit's txn id (the fold commit's while none is applied).
  uint64_t through_txn_id() const;
  // Record bytes of the commits applied (batch, commit and seal records): the unfolded log.
  uint64_t log_bytes() const;
  size_t key_count() const;  // distinct keys with a change

  // Applies the changes of the commit at `commit_offset` (txn `txn_id`, newer than every applied
  // one), whose records took `record_bytes`. REQUIRES: commit_offset > through_offset() and
  // txn_id > through_txn_id() (the caller checks the file's commits link up: a file that says
  // otherwise is Corruption, never this assertion).
  void Apply(uint64_t commit_offset, uint64_t txn_id, const std::vector<format::BatchChange>& changes,
             uint64_t record_bytes);

  // What the overlay holds for `key` as of txn `txn_id`: nullopt when nothing (read the tree);
  // otherwise the value, or nullopt inside when the key was deleted.
  std::optional<std::optional<std::string>> Get(std::string_view key, uint64_t txn_id) const;

  // The first key >= `key` (> when !inclusive) with a change at or before `txn_id`, and that change.
  bool Seek(std::string_view key, bool inclusive, uint64_t txn_id, std::string* found_key,
            std::optional<std::string>* value) const;

  // Every key's newest change at or before `txn_id`, sorted: what a fold applies to the tree.
  using Latest = std::map<std::string, std::optional<std::string>, std::less<>>;
  Latest LatestChanges(uint64_t txn_id) const;

 private:
  // One version of a key, in the arena; a key's versions are a list from the newest back.
  struct Version {
    uint64_t txn_id;
    const Version* older;    // the version before it, or null
    std::string_view value;  // in the arena
    bool deleted;
  };
  // Each key (in the arena) with its newest version.
  using Entries = std::pmr::map<std::string_view, const Version*, std::less<>>;
  static const Version* VisibleAt(const Version* newest, uint64_t txn_id);
  static std::optional<std::string> ValueOf(const Version& v);
  std::string_view Copy(std::string_view bytes);  // REQUIRES: mutex_ held exclusively

  const uint64_t fold_offset_;
  mutable std::shared_mutex mutex_;
  uint64_t through_offset_;                  // GUARDED_BY(mutex_)
  uint64_t through_txn_id_;                  // GUARDED_BY(mutex_)
  uint64_t log_bytes_ = 0;                   // GUARDED_BY(mutex_)
  std::pmr::monotonic_buffer_resource arena_;  // GUARDED_BY(mutex_) for allocation
  // In the arena too, and never destroyed: everything it holds is trivially destructible and the
  // arena frees it all at once, so dropping an overlay does not walk its tree.
  Entries& entries_ = *new (arena_.allocate(sizeof(Entries), alignof(Entries))) Entries(&arena_);  // GUARDED_BY(mutex_)
};

}  // namespace dbdb
