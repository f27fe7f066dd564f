// The B+tree's readers: lookup and ordered iteration (the writer: tree_writer.cc; the bulk loader
// of compaction: bulk_loader.cc).
#include "tree.h"

#include "map_guard.h"

#include <algorithm>
#include <cassert>

namespace dbdb {

TreeRoot RootOf(const format::Commit& commit) {
  return TreeRoot{NodeRef{commit.root_offset, commit.root_length}, commit.tree_height,
                  commit.key_count, commit.tree_bytes};
}

void SetRoot(format::Commit* commit, const TreeRoot& root) {
  commit->root_offset = root.ref.offset;
  commit->root_length = root.ref.length;
  commit->tree_height = root.height;
  commit->key_count = root.key_count;
  commit->tree_bytes = root.tree_bytes;
}


Result<uint64_t> TreeFile::WarmTree(NodeRef root, uint32_t height, uint64_t max_nodes, const std::atomic<bool>& stop,
                                    NodeRef* failed) {
  *failed = NodeRef{};
  if (root.offset == 0 || height == 0 || !map_reads_) return uint64_t{0};
  if (root.offset > UINT64_MAX - root.length) return Status::Corruption("root at offset " + std::to_string(root.offset) + " runs past 2^64");
  auto covering = MappingCovering(root.offset + root.length);
  if (!covering.ok()) *failed = root;  // the mapping's failure (short, or the size unread), or the file's
  DBDB_ASSIGN_OR_RETURN(const FileMapping* mapping, std::move(covering));
  if (mapping == nullptr) return uint64_t{0};  // read without a mapping: nothing to warm
  const uint64_t before = verified_.inserted();
  uint64_t budget = std::min(max_nodes, verified_.capacity() / 2);
  std::vector<NodeRef> level{root}, next;
  for (; !level.empty() && height > 0; height--) {
    next.clear();
    for (const NodeRef& ref : level) {
      if (budget == 0 || stop.load(std::memory_order_relaxed)) return verified_.inserted() - before;
      budget--;
      auto read = ReadNodeView(ref);
      if (!read.ok()) *failed = ref;
      DBDB_ASSIGN_OR_RETURN(NodeHandle node, std::move(read));
      if (node.owner != nullptr) return verified_.inserted() - before;  // read without a mapping since
      if (node.view.is_leaf() != (height == 1)) return WrongNodeKind(ref, height);
      if (height == 1) continue;
      // The children, as many as the budget may still take: the vector is sized outside the
      // fault guard, and filled inside it without allocating.
      uint32_t count = 0;
      if (!ReadMapped([&] { count = node.view.count(); })) {
        *failed = ref;
        return MapFault(ref.offset);
      }
      const uint64_t take = std::min<uint64_t>(count, budget > next.size() ? budget - next.size() : 0);
      if (next.capacity() - next.size() < take) next.reserve(std::max<size_t>(2 * next.capacity(), next.size() + take));
      if (!ReadMapped([&] {
            for (uint32_t i = 0; i < take; i++) next.push_back(node.view.child(i));
          })) {
        *failed = ref;
        return MapFault(ref.offset);
      }
    }
    level.swap(next);
  }
  return verified_.inserted() - before;
}

// Every read of a node's bytes below is inside ReadMapped (a mapped page may fault) and owns
// nothing there; what outlives it is copied out.

namespace {

// The value of `key` in `leaf`, as a view of its bytes: false if the leaf does not hold the key.
// Reads the node: run it under ReadMapped.
bool FindInLeaf(const NodeView& leaf, std::string_view key, std::string_view* found) {
  std::string_view at_key;
  return leaf.KeyValue(leaf.LowerBound(key), &at_key, found) && at_key == key;
}

// Copies the value `found` (in the leaf at `leaf_offset`) into `*value`: sized first, outside the
// fault guard (an allocation abandoned by a fault would leak); the copy alone may fault.
Result<bool> CopyOut(TreeFile& file, uint64_t leaf_offset, std::string_view found, std::string* value) {
  value->resize(found.size());
  if (!ReadMapped([&] { found.copy(value->data(), found.size()); })) return file.MapFault(leaf_offset);
  return true;
}

// What TreeGet's fast path found.
enum class MappedGet { kAbsent, kCopied, kFoundOverCapacity, kUnverified };

// TreeGet through `mapping` alone, from the node `*ref` at `*height` (at least 1), every node on
// the path verified in it already, under one fault guard for the whole descent (ReadMapped costs
// a sigsetjmp; the path through ReadNodeView takes one a level). kUnverified: the node `*ref` at
// `*height` is not verified there (or not of the kind its height says), and the caller goes on
// from it through ReadNodeView, which verifies, maps and reports; the nodes above it are not
// searched again. It runs under ReadMapped, so it allocates nothing: the value is copied only
// into the capacity `*value` has; beyond it, `*found` names it (in the leaf `*ref`) for the
// caller to copy. `*at` is the offset of the node being read, for the fault's message (volatile:
// read after a fault abandons this; `*ref` and `*height` are read only when it returns).
MappedGet GetMapped(const TreeFile& file, const FileMapping* mapping, std::string_view key, NodeRef* ref,
                    uint32_t* height, std::string* value, std::string_view* found, volatile uint64_t* at) {
  std::optional<NodeView> node;
  for (;; --*height) {
    *at = ref->offset;
    node = file.VerifiedMappedNode(*ref, mapping);
    if (!node || node->is_leaf() != (*height == 1)) return MappedGet::kUnverified;
    if (*height == 1) break;
    *ref = node->child(node->ChildFor(key));
  }
  if (!FindInLeaf(*node, key, found)) return MappedGet::kAbsent;
  if (found->size() > value->capacity()) return MappedGet::kFoundOverCapacity;
  value->resize(found->size());  // within its capacity: no allocation. `key` is not read after this.
  found->copy(value->data(), found->size());
  return MappedGet::kCopied;
}

}  // namespace

Result<bool> TreeGet(TreeFile& file, const TreeRoot& root, std::string_view key, std::string* value) {
  if (root.height == 0) return false;
  NodeRef ref = root.ref;
  uint32_t height = root.height;
  if (const FileMapping* mapping = file.CurrentMapping()) {
    MappedGet got = MappedGet::kUnverified;
    std::string_view found;
    volatile uint64_t at = ref.offset;
    if (!ReadMapped([&] { got = GetMapped(file, mapping, key, &ref, &height, value, &found, &at); })) {
      return file.MapFault(at);
    }
    switch (got) {
      case MappedGet::kAbsent:
        return false;
      case MappedGet::kCopied:
        return true;
      case MappedGet::kFoundOverCapacity:
        return CopyOut(file, ref.offset, found, value);
      case MappedGet::kUnverified:
        break;  // on from `ref` at `height`
    }
  }
  // Through ReadNodeView, from the root or from the first node the fast path could not take: a
  // node this process has not verified in this mapping (it is verified now), a file read without
  // a mapping, or a fault or damage to report.
  for (; height > 1; height--) {
    DBDB_ASSIGN_OR_RETURN(auto node, file.ReadNodeView(ref));
    if (node.view.is_leaf()) return WrongNodeKind(ref, height);
    NodeRef child;
    if (!ReadMapped([&] { child = node.view.child(node.view.ChildFor(key)); })) return file.MapFault(ref.offset);
    ref = child;
  }
  DBDB_ASSIGN_OR_RETURN(auto leaf, file.ReadNodeView(ref));
  if (!leaf.view.is_leaf()) return WrongNodeKind(ref, 1);
  std::string_view found;
  bool present = false;
  if (!ReadMapped([&] { present = FindInLeaf(leaf.view, key, &found); })) return file.MapFault(ref.offset);
  if (!present) return false;
  return CopyOut(file, ref.offset, found, value);
}

// ---------------------------------------------------------------------------------------------
// TreeIterator

Status TreeIterator::Descend(NodeRef ref, uint32_t height, std::string_view key, bool leftmost, bool scanning) {
  for (; height > 0; height--) {
    DBDB_ASSIGN_OR_RETURN(auto node, file_->ReadNodeView(ref, use_));
    if (node.view.is_leaf() != (height == 1)) return WrongNodeKind(ref, height);
    uint32_t count = 0, index = 0;
    NodeRef child;
    if (!ReadMapped([&] {
          count = node.view.count();
          if (!leftmost) index = height == 1 ? node.view.LowerBound(key) : node.view.ChildFor(key);
          if (height > 1) child = node.view.child(index);
        })) {
      return file_->MapFault(ref.offset);
    }
    if (height == 1 && scanning && node.owner == nullptr) {
      DBDB_ASSIGN_OR_RETURN(node, OwnLeaf(ref, node.view));
    }
    stack_.push_back(Level{std::move(node), ref, index, count});
    ref = child;
  }
  // A scan reads the next leaf after this one: its first lines and its verified-node table line
  // (each most often a cache miss) are fetched while this leaf is read.
  if (stack_.size() >= 2) {
    const Level& parent = stack_[stack_.size() - 2];
    NodeRef next;
    if (parent.index + 1 < parent.count && ReadMapped([&] { next = parent.node.view.child(parent.index + 1); })) {
      file_->Prefetch(next, use_);
    }
  }
  return Status::Ok();
}

Result<TreeFile::NodeHandle> TreeIterator::OwnLeaf(NodeRef ref, const NodeView& mapped) {
  // One buffer for the iterator's life, written over by each leaf it enters. Whatever viewed the
  // last leaf (key_, value_, a Seek's key) is done with it: the iterator has moved, and a descent
  // has searched the leaf for its key before it copies the leaf here.
  if (leaf_copy_ == nullptr) leaf_copy_ = std::make_shared<std::string>();
  // Sized before the guarded read (a fault abandons it: nothing in there may allocate).
  if (leaf_copy_->size() < mapped.size()) leaf_copy_->resize(mapped.size());
  if (!ReadMapped([&] { std::memcpy(leaf_copy_->data(), mapped.data(), mapped.size()); })) {
    return file_->MapFault(ref.offset);
  }
  return TreeFile::NodeHandle{NodeView(leaf_copy_->data(), mapped.size(), /*leaf=*/true), leaf_copy_};
}

Status TreeIterator::LoadEntry() {
  const Level& leaf = stack_.back();
  if (leaf.node.owner != nullptr) {
    // In memory the iterator holds (with the leaf, until it moves): viewed, not copied.
    leaf.node.view.KeyValue(leaf.index, &key_, &value_);
    return Status::Ok();
  }
  // In the mapping (a leaf a Seek landed in, or one Next entered within kScanSteps steps of it):
  // each entry copied out under the guard.
  std::string_view key, value;
  bool copied = false;
  // One guarded read when the copies have room already (the usual case): assigning within the
  // capacity never allocates, so an abandoned read leaves them whole, only stale.
  if (!ReadMapped([&] {
        leaf.node.view.KeyValue(leaf.index, &key, &value);
        if (key.size() <= key_copy_.capacity() && value.size() <= value_copy_.capacity()) {
          key_copy_.assign(key.data(), key.size());
          value_copy_.assign(value.data(), value.size());
          copied = true;
        }
      })) {
    return file_->MapFault(leaf.ref.offset);
  }
  if (!copied) {
    key_copy_.resize(key.size());  // allocated before the copy
    value_copy_.resize(value.size());
    if (!ReadMapped([&] {
          key.copy(key_copy_.data(), key.size());
          value.copy(value_copy_.data(), value.size());
        })) {
      return file_->MapFault(leaf.ref.offset);
    }
  }
  key_ = key_copy_;
  value_ = value_copy_;
  return Status::Ok();
}

Status TreeIterator::Settle(Status s) {
  if (!s.ok()) stack_.clear();
  return s;
}

Status TreeIterator::Seek(std::string_view key) {
  // `key` may be this iterator's own key() or value(), a view into a leaf it holds (Seek(key())
  // through the public Iterator). A cached leaf is kept alive by the path held here until the
  // descent is done; the copy of a mapped leaf (OwnLeaf) is written over by the new leaf, but only
  // after the descent has searched that leaf for `key`, its last use.
  std::vector<Level> held;
  held.swap(stack_);
  if (root_.height == 0) return Status::Ok();
  // A Seek to the first key starts a scan; a Seek elsewhere may read a few entries only.
  steps_ = key.empty() ? kScanSteps : 0;
  DBDB_RETURN_IF_ERROR(Settle(Descend(root_.ref, root_.height, key, false, /*scanning=*/key.empty())));
  // The leaf may hold only smaller keys: move on to the next leaf.
  if (stack_.back().index >= stack_.back().count) {
    stack_.back().index = stack_.back().count - 1;  // leaves are never empty
    return Next();
  }
  return Settle(LoadEntry());
}

Status TreeIterator::Next() {
  assert(Valid());
  if (steps_ < kScanSteps) steps_++;
  if (++stack_.back().index < stack_.back().count) return Settle(LoadEntry());
  // Climb to the first ancestor with a next child, then descend to its leftmost leaf.
  stack_.pop_back();
  while (!stack_.empty() && stack_.back().index + 1 >= stack_.back().count) stack_.pop_back();
  if (stack_.empty()) return Status::Ok();
  Level& level = stack_.back();
  level.index++;
  NodeRef child;
  if (!ReadMapped([&] { child = level.node.view.child(level.index); })) {
    return Settle(file_->MapFault(level.ref.offset));
  }
  uint32_t height = root_.height - static_cast<uint32_t>(stack_.size());
  DBDB_RETURN_IF_ERROR(Settle(Descend(child, height, std::string_view(), true, /*scanning=*/steps_ >= kScanSteps)));
  return Settle(LoadEntry());
}

}  // namespace dbdb
