// LogOverlay: versioned changes since the last fold.
#include "log_overlay.h"

#include <mutex>

namespace dbdb {

uint64_t LogOverlay::through_offset() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return through_offset_;
}

uint64_t LogOverlay::log_bytes() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return log_bytes_;
}

size_t LogOverlay::key_count() const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  return entries_.size();
}

void LogOverlay::Apply(uint64_t commit_offset, uint64_t txn_id, const std::vector<format::BatchChange>& changes,
                       uint64_t record_bytes) {
  std::unique_lock<std::shared_mutex> guard(mutex_);
  for (const auto& change : changes) {
    auto it = entries_.find(change.key);
    if (it == entries_.end()) it = entries_.emplace(std::string(change.key), std::vector<Version>()).first;
    std::optional<std::string> value;
    if (change.value) value.emplace(*change.value);
    it->second.push_back(Version{txn_id, std::move(value)});
  }
  through_offset_ = commit_offset;
  log_bytes_ += record_bytes;
}

const LogOverlay::Version* LogOverlay::VisibleAt(const std::vector<Version>& versions, uint64_t txn_id) {
  // Versions are appended in txn order; the newest visible one is the last at or before txn_id.
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (it->txn_id <= txn_id) return &*it;
  }
  return nullptr;
}

std::optional<std::optional<std::string>> LogOverlay::Get(std::string_view key, uint64_t txn_id) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  const Version* v = VisibleAt(it->second, txn_id);
  if (v == nullptr) return std::nullopt;
  return v->value;
}

bool LogOverlay::Seek(std::string_view key, bool inclusive, uint64_t txn_id, std::string* found_key,
                      std::optional<std::string>* value) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  auto it = inclusive ? entries_.lower_bound(key) : entries_.upper_bound(key);
  for (; it != entries_.end(); ++it) {
    const Version* v = VisibleAt(it->second, txn_id);
    if (v == nullptr) continue;  // changed only after the snapshot
    *found_key = it->first;
    *value = v->value;
    return true;
  }
  return false;
}

LogOverlay::Latest LogOverlay::LatestChanges(uint64_t txn_id) const {
  std::shared_lock<std::shared_mutex> guard(mutex_);
  Latest out;
  for (const auto& [key, versions] : entries_) {
    if (const Version* v = VisibleAt(versions, txn_id)) out.emplace_hint(out.end(), key, v->value);
  }
  return out;
}

}  // namespace dbdb
