// The bulk loader: builds a packed tree from keys in order (compaction).
#include "tree.h"

#include <algorithm>

#include "dbdb_assert.h"

namespace dbdb {

// ---------------------------------------------------------------------------------------------
// BulkLoader

namespace {
// The shortest prefix of `key` that is above `below` (REQUIRES: below < key): a separator between
// a leaf whose last key is `below` and the next, whose first key is `key`. Any string s with
// below < s <= key routes both leaves' keys as `key` itself would (docs/FORMAT.md, "Nodes"), and a
// short one makes internal nodes hold more children: 16-byte random keys need about 3 bytes, and
// a million of them a tree of height 3 instead of 4.
std::string_view ShortestSeparator(std::string_view below, std::string_view key) {
  DBDB_ASSERT(below < key);  // Add refuses a key not above the one before it
  size_t common = 0;
  while (common < below.size() && common < key.size() && below[common] == key[common]) common++;
  return key.substr(0, common + 1);  // below < key: common < key.size()
}
}  // namespace

NodeRef BulkLoader::Append(format::RecordType type, const std::string& payload) {
  NodeRef ref{end_offset(), static_cast<uint32_t>(payload.size() + format::kRecordOverheadBytes)};
  format::AppendRecord(&buffer_, ref.offset, type, payload);
  tree_bytes_ += ref.length;
  return ref;
}

Status BulkLoader::MaybeFlush(bool force) {
  if (buffer_.empty() || (!force && buffer_.size() < (1u << 20))) return Status::Ok();
  DBDB_RETURN_IF_ERROR(flush_(buffer_));
  next_offset_ += buffer_.size();
  buffer_.clear();
  return Status::Ok();
}

Status BulkLoader::FlushLeaf() {
  if (leaf_.empty()) return Status::Ok();
  // leaf_data_ holds still from here on: the views stay valid until it is cleared.
  leaf_entries_.clear();
  for (const PendingEntry& e : leaf_) {
    leaf_entries_.push_back({std::string_view(leaf_data_).substr(e.at, e.key_size),
                             std::string_view(leaf_data_).substr(e.at + e.key_size, e.value_size)});
  }
  NodeRef ref = Append(format::RecordType::kLeaf, EncodeLeaf(leaf_entries_, 0, leaf_entries_.size()));
  const std::string_view first = leaf_entries_[0].key;
  slots_.push_back(Slot{std::string(slots_.empty() ? first : ShortestSeparator(last_key_, first)), ref});
  last_key_.assign(leaf_entries_.back().key);
  leaf_.clear();
  leaf_entries_.clear();  // views into leaf_data_, which is cleared next
  leaf_data_.clear();
  leaf_bytes_ = 0;
  return MaybeFlush(false);
}

Status BulkLoader::Add(std::string_view key, std::string_view value) {
  // The keys must rise. A tree whose nodes each verify can still hold them out of order across
  // leaves (a leaf whose keys lie outside its separators: only check() walks the bounds), and
  // a compaction of it must fail with the file as it was, not write a tree that reads differently.
  // (A leaf is flushed only below, as a key is added: leaf_ holds the key before this one.)
  if (!leaf_.empty()) {
    const std::string_view before = std::string_view(leaf_data_).substr(leaf_.back().at, leaf_.back().key_size);
    if (!(before < key)) {
      return Status::Corruption("the tree's keys are out of order: key " + std::to_string(key_count_ + 1) +
                                " is not above the key before it");
    }
  }
  size_t size = LeafEntrySize(key, value);
  if (!leaf_.empty() && leaf_bytes_ + size > target_bytes_) DBDB_RETURN_IF_ERROR(FlushLeaf());
  // One buffer for the leaf's keys and values (reused from leaf to leaf), not two strings an entry.
  leaf_.push_back(PendingEntry{leaf_data_.size(), key.size(), value.size()});
  leaf_data_.append(key);
  leaf_data_.append(value);
  leaf_bytes_ += size;
  key_count_++;
  return Status::Ok();
}

Result<TreeRoot> BulkLoader::Finish() {
  DBDB_RETURN_IF_ERROR(FlushLeaf());
  TreeRoot root;
  root.key_count = key_count_;
  if (slots_.empty()) {
    DBDB_RETURN_IF_ERROR(MaybeFlush(true));
    return root;
  }
  uint32_t height = 1;
  std::vector<Slot> level = std::move(slots_);
  while (level.size() > 1) {
    std::vector<Slot> parents;
    std::vector<ChildEntry> children;
    size_t bytes = 0;
    auto emit = [&] {
      parents.push_back(Slot{std::string(children[0].key), Append(format::RecordType::kInternal,
                                                                   EncodeInternal(children, 0, children.size()))});
      children.clear();
      bytes = 0;
    };
    for (size_t i = 0; i < level.size(); i++) {
      size_t s = InternalEntrySize(level[i].key);
      // Keep at least two children per node so the tree always narrows.
      if (children.size() >= 2 && bytes + s > target_bytes_ && level.size() - i >= 2) emit();
      children.push_back(ChildEntry{level[i].key, level[i].ref});
      bytes += s;
    }
    emit();
    level = std::move(parents);
    height++;
    DBDB_RETURN_IF_ERROR(MaybeFlush(false));
  }
  DBDB_RETURN_IF_ERROR(MaybeFlush(true));
  root.ref = level[0].ref;
  root.height = height;
  root.tree_bytes = tree_bytes_;
  return root;
}

}  // namespace dbdb
