// LogOverlay: versioned changes since the last fold.
#include "log_overlay.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>

#include "dbdb_assert.h"

namespace dbdb {

uint64_t LogOverlay::through_offset() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return through_offset_;
}

uint64_t LogOverlay::through_txn_id() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return through_txn_id_;
}

uint64_t LogOverlay::log_bytes() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return log_bytes_;
}

size_t LogOverlay::key_count() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return base_.size() + merged_.size() + recent_.size();
}

uint64_t LogOverlay::checkpoint_bytes() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return checkpoint_bytes_;
}

uint64_t LogOverlay::checkpoints_bytes() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return checkpoints_bytes_;
}

uint64_t LogOverlay::merges() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return merges_;
}

uint64_t LogOverlay::commits_after_checkpoint() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return commits_after_checkpoint_;
}

void LogOverlay::RebuildFilter() const {
  filter_.Reset(base_.size() + merged_.size() + recent_.size());
  for (const format::BatchChange& change : base_) filter_.Add(change.key);
  for (const Entry& entry : merged_) filter_.Add(entry.held->key());
  for (const Entry& entry : recent_) filter_.Add(entry.held->key());
}

void LogOverlay::BuildFilter() const {
  std::lock_guard<std::mutex> guard(filter_build_mutex_);
  if (filter_built_.load(std::memory_order_relaxed)) return;
  // base_, merged_ and recent_ change only under the exclusive lock, which the caller's shared one keeps
  // out; other readers wait here or, seeing filter_built_ false, do not read filter_.
  RebuildFilter();
  filter_built_.store(true, std::memory_order_release);
}

LogOverlay::Probe::Probe(std::string_view k) : prefix(KeyPrefix(k)), key(k) {}

std::string_view LogOverlay::Copy(std::string_view bytes) {
  if (bytes.empty()) return std::string_view("", 0);  // not a null pointer: handed out by Seek and Next
  char* to = static_cast<char*>(arena_.Allocate(bytes.size(), 1));
  std::memcpy(to, bytes.data(), bytes.size());
  return {to, bytes.size()};
}

void LogOverlay::Apply(uint64_t commit_offset, uint64_t txn_id, const std::vector<format::BatchChange>& changes,
                       uint64_t record_bytes) {
  std::unique_lock<std::shared_mutex> guard(mutex_);
  // Every version held is through_txn_id_'s or older (and the fold's txn is older than them all),
  // so each key's list stays newest first.
  DBDB_ASSERT(commit_offset > through_offset_ && txn_id > through_txn_id_);
  for (const auto& change : changes) {
    const Probe probe(change.key);
    auto it = recent_.lower_bound(probe);
    Held* held;
    // The prefixes tell most new keys apart without reading the held key (a cache miss). A key
    // only in merged_ is new to the tree: its versions from now on are listed here, and the merge
    // links them to the older ones.
    if (it == recent_.end() || it->prefix != probe.prefix || it->held->key() != change.key) {
      const std::string_view key = Copy(change.key);
      held = new (arena_.Allocate(sizeof(Held), alignof(Held))) Held{key.data(), key.size(), nullptr};
      recent_.insert(it, Entry{probe.prefix, held});  // invalidates it (a B-tree's insert may move others)
      generation_++;  // and every Position
      // filter_built_ only turns true under the shared lock, which this exclusive one excludes.
      if (filter_built_.load(std::memory_order_relaxed) && filter_.Add(change.key)) RebuildFilter();
    } else {
      held = it->held;
    }
    auto* version = static_cast<Version*>(arena_.Allocate(sizeof(Version), alignof(Version)));
    new (version) Version{txn_id, held->newest, change.value ? Copy(*change.value) : std::string_view(), !change.value};
    held->newest = version;
  }
  if (recent_.size() >= RecentLimit()) MergeRecent();
  through_offset_ = commit_offset;
  through_txn_id_ = txn_id;
  log_bytes_ += record_bytes;
  commits_after_checkpoint_++;
}

size_t LogOverlay::RecentLimit() const {
  return std::max(merge_keys_, merged_.size() / 4);
}

void LogOverlay::SetMergeKeys(size_t keys) {
  std::unique_lock<std::shared_mutex> guard(mutex_);
  merge_keys_ = std::max<size_t>(keys, 1);
}

void LogOverlay::MergeRecent() {
  // In place, from the back: the array grows to hold both (its capacity doubling, so that a merge
  // seldom reallocates, and never touches fresh pages for all of it), then each slot from the end
  // takes the larger of the two candidates. Keys in both leave a gap at the front, closed after.
  const EntryLess less;
  const size_t old_size = merged_.size();
  if (merged_.capacity() < old_size + recent_.size()) merged_.reserve(std::max(2 * old_size, old_size + recent_.size()));
  merged_.resize(old_size + recent_.size());
  size_t old = old_size;          // merged_[0, old) not yet placed
  size_t to = merged_.size();     // merged_[to, end) placed
  for (auto it = recent_.rbegin(); it != recent_.rend(); ++it) {
    const Entry& entry = *it;
    while (old > 0 && less(entry, merged_[old - 1])) merged_[--to] = merged_[--old];
    if (old > 0 && !less(merged_[old - 1], entry)) {
      // The same key: every version in the tree is newer than every version in the array (the
      // array's were applied before the last merge), so the tree's list goes on with the array's.
      Version* oldest = entry.held->newest;
      while (oldest->older != nullptr) oldest = oldest->older;
      DBDB_ASSERT(oldest->txn_id > merged_[old - 1].held->newest->txn_id);
      oldest->older = merged_[old - 1].held->newest;
      --old;
    }
    merged_[--to] = entry;
  }
  // merged_[0, old) are in place already; keys in both left to - old slots free before merged_[to].
  DBDB_ASSERT(to >= old);
  if (to > old) merged_.erase(merged_.begin() + static_cast<std::ptrdiff_t>(old), merged_.begin() + static_cast<std::ptrdiff_t>(to));
  recent_.clear();
  generation_++;  // every Position's iterators and indexes
  merges_++;
}

void LogOverlay::Restate(uint64_t commit_offset, uint64_t record_bytes) {
  std::unique_lock<std::shared_mutex> guard(mutex_);
  DBDB_ASSERT(commit_offset > through_offset_);
  through_offset_ = commit_offset;
  // What a reader opening now replays: this checkpoint, as an overlay opened at it counts.
  checkpoint_bytes_ = record_bytes;
  checkpoints_bytes_ += record_bytes;
  log_bytes_ = record_bytes;
  commits_after_checkpoint_ = 0;
}

const format::BatchChange* LogOverlay::BaseFind(std::string_view key, uint64_t txn_id) const {
  if (base_.empty()) return nullptr;
  DBDB_ASSERT(txn_id >= base_txn_id_);  // no snapshot of this overlay predates its checkpoint
  auto it = BaseSeek(key, true);
  return it != base_.end() && it->key == key ? &*it : nullptr;
}

LogOverlay::Prefixes LogOverlay::PrefixesOf(const format::LargeBatchChanges& changes) {
  Prefixes prefixes;
  prefixes.reserve(changes.size());
  for (const format::BatchChange& c : changes) prefixes.push_back(KeyPrefix(c.key));
  return prefixes;
}

size_t LogOverlay::MergedSeek(const Probe& probe, bool inclusive) const {
  const EntryLess less;
  auto it = inclusive ? std::lower_bound(merged_.begin(), merged_.end(), probe, less)
                      : std::upper_bound(merged_.begin(), merged_.end(), probe, less);
  return static_cast<size_t>(it - merged_.begin());
}

const LogOverlay::Version* LogOverlay::FindVisible(const Probe& probe, uint64_t txn_id) const {
  auto it = recent_.find(probe);
  if (it != recent_.end()) {
    if (const Version* v = VisibleAt(it->held->newest, txn_id)) return v;
  }
  // Not in the tree, or changed there only after txn_id: the array holds the older versions.
  const size_t at = MergedSeek(probe, true);
  if (at < merged_.size() && merged_[at].held->key() == probe.key) return VisibleAt(merged_[at].held->newest, txn_id);
  return nullptr;
}

format::LargeBatchChanges::const_iterator LogOverlay::BaseSeek(std::string_view key, bool inclusive) const {
  // KeyPrefix keeps the keys' order (key_prefix.h): every key with a smaller prefix is smaller,
  // every key with a larger one larger, so the answer lies in the run of keys with key's prefix
  // or at its end, and only that run's keys are compared.
  const uint64_t prefix = KeyPrefix(key);
  auto [first, last] = std::equal_range(base_prefixes_.begin(), base_prefixes_.end(), prefix);
  auto begin = base_.begin() + (first - base_prefixes_.begin());
  auto end = base_.begin() + (last - base_prefixes_.begin());
  auto less = [](const format::BatchChange& c, std::string_view k) { return c.key < k; };
  auto more = [](std::string_view k, const format::BatchChange& c) { return k < c.key; };
  return inclusive ? std::lower_bound(begin, end, key, less) : std::upper_bound(begin, end, key, more);
}

const LogOverlay::Version* LogOverlay::VisibleAt(const Version* newest, uint64_t txn_id) {
  // The newest visible version is the first at or before txn_id, going back from the newest.
  for (const Version* v = newest; v != nullptr; v = v->older) {
    if (v->txn_id <= txn_id) return v;
  }
  return nullptr;
}

std::optional<std::string> LogOverlay::ValueOf(const Version& v) {
  if (v.deleted) return std::nullopt;
  return std::string(v.value);
}

LogOverlay::Found LogOverlay::Get(std::string_view key, uint64_t txn_id, std::string* value) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  if (!filter_built_.load(std::memory_order_acquire)) BuildFilter();
  if (!filter_.MayContain(key)) return Found::kNothing;
  std::optional<std::string_view> change;  // copied out under the lock
  if (const Version* v = FindVisible(Probe(key), txn_id)) {
    if (!v->deleted) change = v->value;
  } else if (const format::BatchChange* base = BaseFind(key, txn_id)) {
    change = base->value;
  } else {
    return Found::kNothing;
  }
  if (!change) return Found::kDeleted;
  value->assign(*change);
  return Found::kValue;
}

bool LogOverlay::Seek(std::string_view key, bool inclusive, uint64_t txn_id, std::string_view* found_key,
                      std::optional<std::string_view>* value, Position* position) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  const Probe probe(key);
  auto entry = inclusive ? recent_.lower_bound(probe) : recent_.upper_bound(probe);
  const size_t merged = MergedSeek(probe, inclusive);
  const size_t base = base_.empty() ? 0 : static_cast<size_t>(BaseSeek(key, inclusive) - base_.begin());
  return FirstFrom(entry, merged, base, txn_id, found_key, value, position);
}

bool LogOverlay::Next(uint64_t txn_id, std::string_view* found_key, std::optional<std::string_view>* value,
                      Position* position) const {
  {
    std::shared_lock<std::shared_mutex> guard(mutex_);
    if (position->generation == generation_) {
      return FirstFrom(position->entry, position->merged, position->base, txn_id, found_key, value, position);
    }
  }
  // A key was added or a merge ran since: search past the last one found (in the arena or the
  // checkpoint, which neither moves).
  return Seek(*found_key, false, txn_id, found_key, value, position);
}

bool LogOverlay::FirstFrom(Entries::const_iterator entry, size_t merged, size_t base, uint64_t txn_id,
                           std::string_view* found_key, std::optional<std::string_view>* value, Position* position) const {
  const Version* v = nullptr;  // the tree's candidate's visible version
  for (; entry != recent_.end(); ++entry) {
    v = VisibleAt(entry->held->newest, txn_id);
    if (v != nullptr) break;  // else changed only after the snapshot (and so it stays for this txn)
  }
  const Version* m = nullptr;  // the array's
  for (; merged < merged_.size(); ++merged) {
    m = VisibleAt(merged_[merged].held->newest, txn_id);
    if (m != nullptr) break;
  }
  if (base < base_.size()) DBDB_ASSERT(txn_id >= base_txn_id_);
  // The smallest key wins; on one key the tree's version, then the array's, then the checkpoint's
  // (newest first). Every source holding the key found steps past it.
  std::optional<std::string_view> key;
  if (v != nullptr) key = entry->held->key();
  if (m != nullptr && (!key || merged_[merged].held->key() < *key)) key = merged_[merged].held->key();
  if (base < base_.size() && (!key || base_[base].key < *key)) key = base_[base].key;
  if (!key) {
    if (position != nullptr) *position = Position{generation_, recent_.end(), merged_.size(), base_.size()};
    return false;
  }
  const bool in_tree = v != nullptr && entry->held->key() == *key;
  const bool in_merged = m != nullptr && merged_[merged].held->key() == *key;
  const bool in_base = base < base_.size() && base_[base].key == *key;
  if (in_tree || in_merged) {
    const Version& found = in_tree ? *v : *m;
    *value = found.deleted ? std::nullopt : std::optional<std::string_view>(found.value);
  } else {
    *value = base_[base].value;
  }
  *found_key = *key;  // in the overlay's arena or its checkpoint
  if (position != nullptr) {
    *position = Position{generation_, in_tree ? std::next(entry) : entry, in_merged ? merged + 1 : merged,
                         in_base ? base + 1 : base};
  }
  return true;
}

LogOverlay::Latest LogOverlay::LatestChanges(uint64_t txn_id) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  Latest out;
  if (!base_.empty()) DBDB_ASSERT(txn_id >= base_txn_id_);
  for (const format::BatchChange& change : base_) {
    out.emplace_hint(out.end(), std::string(change.key),
                     change.value ? std::optional<std::string>(std::string(*change.value)) : std::nullopt);
  }
  // Oldest first, each overriding the one before on a key they share: the checkpoint, the array,
  // the tree (a key the tree holds only in versions after txn_id keeps the array's).
  for (const Entry& entry : merged_) {
    if (const Version* v = VisibleAt(entry.held->newest, txn_id)) {
      if (base_.empty()) {
        out.emplace_hint(out.end(), std::string(entry.held->key()), ValueOf(*v));
      } else {
        out.insert_or_assign(std::string(entry.held->key()), ValueOf(*v));
      }
    }
  }
  for (const Entry& entry : recent_) {
    if (const Version* v = VisibleAt(entry.held->newest, txn_id)) out.insert_or_assign(std::string(entry.held->key()), ValueOf(*v));
  }
  return out;
}

}  // namespace dbdb
