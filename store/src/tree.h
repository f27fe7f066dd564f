// The copy-on-write B+tree over a TreeFile: lookups, ordered iteration (tree_reader.cc), applying a
// transaction's sorted changes (writing new nodes leaf to root into an append buffer:
// tree_writer.cc), and bulk loading a fresh tree for compaction (bulk_loader.cc). Nodes are split and merged by encoded bytes (docs/FORMAT.md, "Nodes").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "node.h"
#include "tree_file.h"

namespace dbdb {

struct TreeRoot {
  NodeRef ref;              // offset 0 for the empty tree
  uint32_t height = 0;      // 0 empty, 1 when the root is a leaf
  uint64_t key_count = 0;
  uint64_t tree_bytes = 0;  // record bytes of every reachable node
};

TreeRoot RootOf(const format::Commit& commit);
// Names `root` as `commit`'s tree (the inverse of RootOf).
void SetRoot(format::Commit* commit, const TreeRoot& root);

// Corruption: the node at `ref` is a leaf where the tree's height says internal, or the reverse.
inline Status WrongNodeKind(NodeRef ref, uint32_t height) {
  return Status::Corruption("node at offset " + std::to_string(ref.offset) +
                            (height == 1 ? " should be a leaf" : " should be an internal node"));
}

// Looks `key` up in the tree: true and its value in `*value` (assigned, so its capacity is reused),
// or false when absent (`*value` untouched). On an error `*value` is unspecified (a fault in the
// copy leaves it resized and partly written). `key` is not read after `*value` is written.
Result<bool> TreeGet(TreeFile& file, const TreeRoot& root, std::string_view key, std::string* value);

// Ordered iteration over one tree. Holds the nodes on its path (and the file), so it stays valid
// while the database moves on; key() and value() are valid until it moves, and never views into a
// mapping: views into a leaf the iterator holds in memory (its copy of a mapped leaf, written over
// by the next leaf it enters; a cached node; or a one-pass read's copy: TreeFile::NodeUse), or
// copies of a mapped leaf's entry (in the leaf a Seek landed in, and those Next enters within
// kScanSteps steps of it).
class TreeIterator {
 public:
  // use: kOnePass for a walk that reads each node once (TreeFile::NodeUse).
  TreeIterator(std::shared_ptr<TreeFile> file, TreeRoot root, TreeFile::NodeUse use = TreeFile::NodeUse::kSearch)
      : file_(std::move(file)), root_(root), use_(use) {}
  // Not copied or moved: key() and value() may view this iterator's own copies.
  TreeIterator(const TreeIterator&) = delete;
  TreeIterator& operator=(const TreeIterator&) = delete;
  Status SeekToFirst() { return Seek(std::string_view()); }
  Status Seek(std::string_view key);  // first key >= key
  Status Next();
  bool Valid() const { return !stack_.empty(); }
  std::string_view key() const { return key_; }
  std::string_view value() const { return value_; }

 private:
  struct Level {
    TreeFile::NodeHandle node;
    NodeRef ref;
    uint32_t index;
    uint32_t count;
  };
  // scanning: the leaf is one a scan goes on into (Next's, once Next was called kScanSteps times
  // since the last Seek), or the first of the tree (a Seek to the first key): a mapped one is copied
  // whole (OwnLeaf). Else (a Seek, or a few steps after one) its entries are copied one by one
  // as they are read.
  Status Descend(NodeRef ref, uint32_t height, std::string_view key, bool leftmost, bool scanning);
  // A mapped leaf copied whole, under one guarded read, into memory the iterator owns, whose
  // entries are then read as plain memory: a guarded read and two copies an entry took 40% of a
  // full scan's instructions, and a scan of a million keys ran 1.18 times as fast. Not after a
  // Seek elsewhere: copying 4 KiB where a few entries are read made a Seek and the 9 entries after
  // it 12% slower, and a Seek alone 4% (docs/PERFORMANCE.md, stop 52).
  Result<TreeFile::NodeHandle> OwnLeaf(NodeRef ref, const NodeView& mapped);
  static constexpr uint32_t kScanSteps = 16;
  Status LoadEntry();         // points key_ and value_ at the current leaf entry (copied if mapped)
  Status Settle(Status s);    // an error leaves the iterator invalid
  std::shared_ptr<TreeFile> file_;
  TreeRoot root_;
  TreeFile::NodeUse use_;
  std::vector<Level> stack_;
  std::string_view key_, value_;
  std::string key_copy_, value_copy_;  // a mapped leaf's entry
  uint32_t steps_ = 0;  // Next calls since the last Seek, up to kScanSteps (a Seek to the first key: kScanSteps)
  // OwnLeaf's copy of the mapped leaf the iterator stands in.
  std::shared_ptr<std::string> leaf_copy_;
};

// One change of a write transaction: a put (value set) or a delete (nullopt).
struct Change {
  std::string_view key;
  const std::optional<std::string>* value;
};

// Applies sorted, distinct-key changes to a tree, appending the new nodes' records to an
// in-memory buffer that is to be written at `append_offset`. Children are always encoded
// before their parent, so the buffer holds nodes leaf to root.
class TreeWriter {
 public:
  TreeWriter(TreeFile& file, uint64_t append_offset, uint32_t node_size_target_bytes)
      : file_(file), append_offset_(append_offset), target_bytes_(node_size_target_bytes) {}

  Result<TreeRoot> Apply(const TreeRoot& base, const std::vector<Change>& changes);

  std::string& buffer() { return buffer_; }
  uint64_t end_offset() const { return append_offset_ + buffer_.size(); }

 private:
  struct Pending;
  struct Item;
  // The node at `ref` holds the keys in [lower, upper) (no upper bound when nullopt).
  Result<std::vector<Pending>> ApplyNode(NodeRef ref, uint32_t height, std::string_view lower,
                                         std::optional<std::string_view> upper, const Change* begin,
                                         const Change* end);
  std::vector<Pending> SplitLeaf(std::vector<LeafEntry> entries, std::string_view lower);
  std::vector<Pending> SplitInternal(std::vector<ChildEntry> children, std::string_view lower);
  Status FixUnderflow(std::vector<Item>* items, uint32_t child_height, std::optional<std::string_view> upper);
  Result<std::vector<ChildEntry>> WriteItems(std::vector<Item>& items);
  NodeRef Write(const Pending& pending);
  Result<std::shared_ptr<const Node>> Load(NodeRef ref);

  TreeFile& file_;
  uint64_t append_offset_;
  uint32_t target_bytes_;
  std::string buffer_;
  std::vector<std::shared_ptr<const Node>> pinned_;  // keeps the views of read nodes alive
  int64_t key_delta_ = 0;
  int64_t bytes_delta_ = 0;
};

// Builds a tree from entries added in strictly increasing key order, packing nodes full.
// Records go to `flush` in chunks, in file order starting at `start_offset`.
class BulkLoader {
 public:
  using FlushFn = std::function<Status(std::string_view bytes)>;
  BulkLoader(uint64_t start_offset, uint32_t node_size_target_bytes, FlushFn flush)
      : next_offset_(start_offset), target_bytes_(node_size_target_bytes), flush_(std::move(flush)) {}
  Status Add(std::string_view key, std::string_view value);
  Result<TreeRoot> Finish();  // flushes everything; the root is the last record written
  uint64_t end_offset() const { return next_offset_ + buffer_.size(); }

 private:
  struct Slot {
    std::string key;
    NodeRef ref;
  };
  Status FlushLeaf();
  NodeRef Append(format::RecordType type, const std::string& payload);
  Status MaybeFlush(bool force);

  uint64_t next_offset_;  // file offset of buffer_[0]
  uint32_t target_bytes_;
  FlushFn flush_;
  std::string buffer_;
  // The leaf being built: each entry's key and value, back to back in leaf_data_.
  struct PendingEntry {
    size_t at;
    size_t key_size;
    size_t value_size;
  };
  std::vector<PendingEntry> leaf_;
  std::string leaf_data_;
  std::vector<LeafEntry> leaf_entries_;  // views into leaf_data_ while a leaf is encoded
  size_t leaf_bytes_ = 0;
  std::vector<Slot> slots_;  // the leaves written so far
  std::string last_key_;     // the last key of the leaf written last
  uint64_t key_count_ = 0;
  uint64_t tree_bytes_ = 0;
};

}  // namespace dbdb
