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
  return base_.size() + entries_.size();
}

uint64_t LogOverlay::checkpoint_bytes() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return checkpoint_bytes_;
}

uint64_t LogOverlay::checkpoints_bytes() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return checkpoints_bytes_;
}

uint64_t LogOverlay::commits_after_checkpoint() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return commits_after_checkpoint_;
}

void LogOverlay::RebuildFilter() const {
  filter_.Reset(base_.size() + entries_.size());
  for (const format::BatchChange& change : base_) filter_.Add(change.key);
  for (const Entry& entry : entries_) filter_.Add(entry.held->key());
}

void LogOverlay::BuildFilter() const {
  std::lock_guard<std::mutex> guard(filter_build_mutex_);
  if (filter_built_.load(std::memory_order_relaxed)) return;
  // base_ and entries_ change only under the exclusive lock, which the caller's shared one keeps
  // out; other readers wait here or, seeing filter_built_ false, do not read filter_.
  RebuildFilter();
  filter_built_.store(true, std::memory_order_release);
}

LogOverlay::Probe::Probe(std::string_view k) : prefix(KeyPrefix(k)), key(k) {}

std::string_view LogOverlay::Copy(std::string_view bytes) {
  if (bytes.empty()) return {};
  char* to = static_cast<char*>(arena_.allocate(bytes.size(), 1));
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
    auto it = entries_.lower_bound(probe);
    Held* held;
    // The prefixes tell most new keys apart without reading the held key (a cache miss).
    if (it == entries_.end() || it->prefix != probe.prefix || it->held->key() != change.key) {
      const std::string_view key = Copy(change.key);
      held = new (arena_.allocate(sizeof(Held), alignof(Held))) Held{key.data(), key.size(), nullptr};
      entries_.insert(it, Entry{probe.prefix, held});  // invalidates it (a B-tree's insert may move others)
      keys_added_++;  // and every Position
      // filter_built_ only turns true under the shared lock, which this exclusive one excludes.
      if (filter_built_.load(std::memory_order_relaxed) && filter_.Add(change.key)) RebuildFilter();
    } else {
      held = it->held;
    }
    auto* version = static_cast<Version*>(arena_.allocate(sizeof(Version), alignof(Version)));
    new (version) Version{txn_id, held->newest, change.value ? Copy(*change.value) : std::string_view(), !change.value};
    held->newest = version;
  }
  through_offset_ = commit_offset;
  through_txn_id_ = txn_id;
  log_bytes_ += record_bytes;
  commits_after_checkpoint_++;
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

std::vector<uint64_t> LogOverlay::PrefixesOf(const std::vector<format::BatchChange>& changes) {
  std::vector<uint64_t> prefixes;
  prefixes.reserve(changes.size());
  for (const format::BatchChange& c : changes) prefixes.push_back(KeyPrefix(c.key));
  return prefixes;
}

std::vector<format::BatchChange>::const_iterator LogOverlay::BaseSeek(std::string_view key, bool inclusive) const {
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

std::optional<std::optional<std::string>> LogOverlay::Get(std::string_view key, uint64_t txn_id) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  if (!filter_built_.load(std::memory_order_acquire)) BuildFilter();
  if (!filter_.MayContain(key)) return std::nullopt;
  auto it = entries_.find(Probe(key));
  if (it != entries_.end()) {
    if (const Version* v = VisibleAt(it->held->newest, txn_id)) return ValueOf(*v);
  }
  const format::BatchChange* base = BaseFind(key, txn_id);
  if (base == nullptr) return std::nullopt;
  return base->value ? std::optional<std::string>(std::string(*base->value)) : std::nullopt;
}

bool LogOverlay::Seek(std::string_view key, bool inclusive, uint64_t txn_id, std::string* found_key,
                      std::optional<std::string>* value, Position* position) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  const Probe probe(key);
  auto entry = inclusive ? entries_.lower_bound(probe) : entries_.upper_bound(probe);
  const size_t base = base_.empty() ? 0 : static_cast<size_t>(BaseSeek(key, inclusive) - base_.begin());
  return FirstFrom(entry, base, txn_id, found_key, value, position);
}

bool LogOverlay::Next(uint64_t txn_id, std::string* found_key, std::optional<std::string>* value,
                      Position* position) const {
  {
    std::shared_lock<std::shared_mutex> guard(mutex_);
    if (position->keys_added == keys_added_) {
      return FirstFrom(position->entry, position->base, txn_id, found_key, value, position);
    }
  }
  const std::string from = *found_key;  // a key was added since: search past the last one found
  return Seek(from, false, txn_id, found_key, value, position);
}

bool LogOverlay::FirstFrom(Entries::const_iterator entry, size_t base, uint64_t txn_id, std::string* found_key,
                           std::optional<std::string>* value, Position* position) const {
  const Version* v = nullptr;
  for (; entry != entries_.end(); ++entry) {
    v = VisibleAt(entry->held->newest, txn_id);
    if (v != nullptr) break;  // else changed only after the snapshot (and so it stays for this txn)
  }
  if (base < base_.size()) DBDB_ASSERT(txn_id >= base_txn_id_);
  // The smaller key wins; on the same key the tree's version, which is newer than the checkpoint.
  if (base < base_.size() && (v == nullptr || base_[base].key < entry->held->key())) {
    const format::BatchChange& change = base_[base];
    found_key->assign(change.key);
    *value = change.value ? std::optional<std::string>(std::string(*change.value)) : std::nullopt;
    if (position != nullptr) *position = Position{keys_added_, entry, base + 1};
    return true;
  }
  if (v == nullptr) {
    if (position != nullptr) *position = Position{keys_added_, entries_.end(), base_.size()};
    return false;
  }
  found_key->assign(entry->held->key());
  *value = ValueOf(*v);
  if (position != nullptr) {
    // The checkpoint's change of the same key, if any, is hidden by this one: pass it too.
    const bool same = base < base_.size() && base_[base].key == entry->held->key();
    *position = Position{keys_added_, std::next(entry), same ? base + 1 : base};
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
  for (const Entry& entry : entries_) {
    if (const Version* v = VisibleAt(entry.held->newest, txn_id)) {
      if (base_.empty()) {
        out.emplace_hint(out.end(), std::string(entry.held->key()), ValueOf(*v));
      } else {
        out.insert_or_assign(std::string(entry.held->key()), ValueOf(*v));
      }
    }
  }
  return out;
}

}  // namespace dbdb
