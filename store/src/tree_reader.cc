// The B+tree's readers: lookup and ordered iteration (the writer: tree_writer.cc; the bulk loader
// of compaction: bulk_loader.cc).
#include "tree.h"

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


Result<std::optional<std::string>> TreeGet(TreeFile& file, const TreeRoot& root, std::string_view key) {
  NodeRef ref = root.ref;
  for (uint32_t height = root.height; height > 0; height--) {
    DBDB_ASSIGN_OR_RETURN(auto node, file.ReadNode(ref));
    if (node->is_leaf != (height == 1)) return WrongNodeKind(ref, height);
    if (height == 1) {
      size_t i = node->LowerBound(key);
      if (i < node->size() && node->keys[i] == key) return std::optional<std::string>(std::string(node->values[i]));
      break;
    }
    ref = node->children[node->ChildFor(key)];
  }
  return std::optional<std::string>();
}

// ---------------------------------------------------------------------------------------------
// TreeIterator

Status TreeIterator::Descend(NodeRef ref, uint32_t height, std::string_view key, bool leftmost) {
  for (; height > 0; height--) {
    DBDB_ASSIGN_OR_RETURN(auto node, file_->ReadNode(ref));
    if (node->is_leaf != (height == 1)) return WrongNodeKind(ref, height);
    size_t index = height == 1 ? (leftmost ? 0 : node->LowerBound(key)) : (leftmost ? 0 : node->ChildFor(key));
    if (height > 1) ref = node->children[index];
    stack_.push_back(Level{std::move(node), index});
  }
  return Status::Ok();
}

Status TreeIterator::Seek(std::string_view key) {
  stack_.clear();
  if (root_.height == 0) return Status::Ok();
  DBDB_RETURN_IF_ERROR(Descend(root_.ref, root_.height, key, false));
  // The leaf may hold only smaller keys: move on to the next leaf.
  if (stack_.back().index >= stack_.back().node->size()) {
    stack_.back().index = stack_.back().node->size() - (stack_.back().node->size() > 0 ? 1 : 0);
    if (stack_.back().node->size() == 0) {
      stack_.clear();
      return Status::Ok();
    }
    return Next();
  }
  return Status::Ok();
}

Status TreeIterator::Next() {
  assert(Valid());
  if (++stack_.back().index < stack_.back().node->size()) return Status::Ok();
  // Climb to the first ancestor with a next child, then descend to its leftmost leaf.
  stack_.pop_back();
  while (!stack_.empty() && stack_.back().index + 1 >= stack_.back().node->children.size()) stack_.pop_back();
  if (stack_.empty()) return Status::Ok();
  Level& level = stack_.back();
  level.index++;
  uint32_t height = root_.height - static_cast<uint32_t>(stack_.size());
  Status s = Descend(level.node->children[level.index], height, std::string_view(), true);
  if (!s.ok()) {
    stack_.clear();
    return s;
  }
  if (stack_.back().node->size() == 0) {  // only an empty root leaf can be empty
    stack_.clear();
  }
  return Status::Ok();
}

}  // namespace dbdb
