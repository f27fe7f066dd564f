// The B+tree's writer: applies a transaction's (or a fold's) sorted changes copy-on-write, splitting
// and merging nodes by encoded bytes (docs/FORMAT.md, "Nodes").
#include "tree.h"

#include <algorithm>
#include <cassert>

namespace dbdb {

// ---------------------------------------------------------------------------------------------
// TreeWriter

struct TreeWriter::Pending {
  std::string_view lower;  // lower bound of the node's keys (its separator in the parent)
  bool is_leaf = true;
  std::vector<LeafEntry> entries;
  std::vector<ChildEntry> children;
  size_t bytes = 0;  // encoded payload size, approximately
};

struct TreeWriter::Item {
  std::string_view key;
  std::optional<Pending> pending;  // set: a node of this transaction, not yet written
  NodeRef ref;                     // otherwise: an unchanged node
  bool settled = false;            // already merged once; never merged again
};

// A node the writer rewrites or merges must hold only keys of the range its parent gives it,
// [lower, upper): the decoder checks each node alone, and a misplaced key that a damaged (but
// checksum-valid) file puts there would be merged into an unsorted node, written as if valid.
// Found by dbdb_fuzz_structured (proptests/fuzz/regressions/structured-crash-2f49fe48...).
static Status CheckRange(NodeRef ref, const Node& node, std::string_view lower,
                         std::optional<std::string_view> upper) {
  bool inside = true;
  if (node.is_leaf) {
    inside = node.size() > 0 && node.keys.front() >= lower && (!upper || node.keys.back() < *upper);
  } else if (node.size() > 1) {  // separators keys[1..]: each child's range must be non-empty
    inside = node.keys[1] > lower && (!upper || node.keys.back() < *upper);
  }
  if (inside) return Status::Ok();
  return Status::Corruption("node at offset " + std::to_string(ref.offset) +
                            ": a key lies outside the range its parent gives it");
}

Result<std::shared_ptr<const Node>> TreeWriter::Load(NodeRef ref) {
  DBDB_ASSIGN_OR_RETURN(auto node, file_.ReadNode(ref));
  pinned_.push_back(node);
  return node;
}

template <typename Entry, typename SizeFn>
static std::vector<std::pair<size_t, size_t>> ChunkBySize(const std::vector<Entry>& entries,
                                                          uint32_t target, SizeFn size_of) {
  // Greedy packing up to `target` bytes; then, if the last chunk is under half full, the last two
  // are rebalanced so that no node this produces is tiny.
  std::vector<std::pair<size_t, size_t>> chunks;
  size_t begin = 0, bytes = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    size_t s = size_of(entries[i]);
    if (i > begin && bytes + s > target) {
      chunks.emplace_back(begin, i);
      begin = i;
      bytes = 0;
    }
    bytes += s;
  }
  if (begin < entries.size()) chunks.emplace_back(begin, entries.size());
  if (chunks.size() >= 2 && bytes < target / 2) {
    auto [first, mid] = chunks[chunks.size() - 2];
    size_t last = chunks.back().second;
    size_t total = 0;
    for (size_t i = first; i < last; i++) total += size_of(entries[i]);
    size_t acc = 0, cut = first;
    while (cut < last - 1 && acc + size_of(entries[cut]) <= total / 2) acc += size_of(entries[cut++]);
    if (cut == first) cut = first + 1;
    chunks[chunks.size() - 2] = {first, cut};
    chunks.back() = {cut, last};
  }
  return chunks;
}

std::vector<TreeWriter::Pending> TreeWriter::SplitLeaf(std::vector<LeafEntry> entries, std::string_view lower) {
  std::vector<Pending> out;
  auto size_of = [](const LeafEntry& e) { return LeafEntrySize(e.key, e.value); };
  for (auto [b, e] : ChunkBySize(entries, target_bytes_, size_of)) {
    Pending p;
    p.lower = out.empty() ? lower : entries[b].key;
    p.entries.assign(entries.begin() + b, entries.begin() + e);
    for (const auto& entry : p.entries) p.bytes += size_of(entry);
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<TreeWriter::Pending> TreeWriter::SplitInternal(std::vector<ChildEntry> children, std::string_view lower) {
  std::vector<Pending> out;
  auto size_of = [](const ChildEntry& c) { return InternalEntrySize(c.key); };
  for (auto [b, e] : ChunkBySize(children, target_bytes_, size_of)) {
    Pending p;
    p.is_leaf = false;
    p.lower = out.empty() ? lower : children[b].key;
    p.children.assign(children.begin() + b, children.begin() + e);
    for (const auto& child : p.children) p.bytes += size_of(child);
    out.push_back(std::move(p));
  }
  return out;
}

NodeRef TreeWriter::Write(const Pending& pending) {
  std::string payload = pending.is_leaf ? EncodeLeaf(pending.entries, 0, pending.entries.size())
                                        : EncodeInternal(pending.children, 0, pending.children.size());
  NodeRef ref{end_offset(), static_cast<uint32_t>(payload.size() + format::kRecordOverheadBytes)};
  format::AppendRecord(&buffer_, ref.offset,
                       pending.is_leaf ? format::RecordType::kLeaf : format::RecordType::kInternal, payload);
  bytes_delta_ += ref.length;
  return ref;
}

Result<std::vector<TreeWriter::Pending>> TreeWriter::ApplyNode(NodeRef ref, uint32_t height,
                                                               std::string_view lower,
                                                               std::optional<std::string_view> upper,
                                                               const Change* begin, const Change* end) {
  DBDB_ASSIGN_OR_RETURN(auto node, Load(ref));
  if (node->is_leaf != (height == 1)) return WrongNodeKind(ref, height);
  DBDB_RETURN_IF_ERROR(CheckRange(ref, *node, lower, upper));
  bytes_delta_ -= ref.length;
  if (node->is_leaf) {
    std::vector<LeafEntry> merged;
    merged.reserve(node->size() + static_cast<size_t>(end - begin));
    size_t i = 0;
    for (const Change* c = begin; c != end; ++c) {
      while (i < node->size() && node->keys[i] < c->key) {
        merged.push_back({node->keys[i], node->values[i]});
        i++;
      }
      bool exists = i < node->size() && node->keys[i] == c->key;
      if (exists) i++;
      if (c->value->has_value()) {
        merged.push_back({c->key, **c->value});
        if (!exists) key_delta_++;
      } else if (exists) {
        key_delta_--;
      }
    }
    for (; i < node->size(); i++) merged.push_back({node->keys[i], node->values[i]});
    return SplitLeaf(std::move(merged), lower);
  }
  std::vector<Item> items;
  const Change* c = begin;
  for (size_t i = 0; i < node->children.size(); i++) {
    std::string_view key = i == 0 ? lower : node->keys[i];
    const Change* child_end = end;
    std::optional<std::string_view> child_upper = upper;
    if (i + 1 < node->children.size()) {
      child_upper = node->keys[i + 1];
      child_end = std::lower_bound(c, end, *child_upper, [](const Change& ch, std::string_view k) { return ch.key < k; });
    }
    if (c == child_end) {
      items.push_back(Item{key, std::nullopt, node->children[i]});
      continue;
    }
    DBDB_ASSIGN_OR_RETURN(auto replaced, ApplyNode(node->children[i], height - 1, key, child_upper, c, child_end));
    for (auto& p : replaced) {
      std::string_view k = p.lower;
      items.push_back(Item{k, std::move(p), NodeRef{}});
    }
    c = child_end;
  }
  DBDB_RETURN_IF_ERROR(FixUnderflow(&items, height - 1, upper));
  DBDB_ASSIGN_OR_RETURN(auto children, WriteItems(items));
  if (children.empty()) return std::vector<Pending>();
  return SplitInternal(std::move(children), lower);
}

Status TreeWriter::FixUnderflow(std::vector<Item>* items, uint32_t child_height,
                                std::optional<std::string_view> upper) {
  const size_t small_bytes = target_bytes_ / 4;
  for (size_t i = 0; i < items->size() && items->size() > 1; i++) {
    Item& item = (*items)[i];
    if (!item.pending || item.settled || item.pending->bytes >= small_bytes) continue;
    size_t left = i + 1 < items->size() ? i : i - 1;  // merge with the right neighbour, else the left
    std::vector<Pending> parts;
    for (size_t j = left; j <= left + 1; j++) {
      Item& it = (*items)[j];
      if (it.pending) {
        parts.push_back(std::move(*it.pending));
        continue;
      }
      DBDB_ASSIGN_OR_RETURN(auto node, Load(it.ref));
      if (node->is_leaf != (child_height == 1)) return WrongNodeKind(it.ref, child_height);
      // An unchanged neighbour: its range ends where the next item's begins.
      std::optional<std::string_view> it_upper = j + 1 < items->size() ? std::optional((*items)[j + 1].key) : upper;
      DBDB_RETURN_IF_ERROR(CheckRange(it.ref, *node, it.key, it_upper));
      bytes_delta_ -= it.ref.length;
      Pending p;
      p.lower = it.key;
      p.is_leaf = node->is_leaf;
      for (size_t k = 0; k < node->size(); k++) {
        if (node->is_leaf) p.entries.push_back({node->keys[k], node->values[k]});
        else p.children.push_back({k == 0 ? it.key : node->keys[k], node->children[k]});
      }
      parts.push_back(std::move(p));
    }
    std::string_view lower = (*items)[left].key;
    std::vector<Pending> merged;
    if (child_height == 1) {
      auto entries = std::move(parts[0].entries);
      entries.insert(entries.end(), parts[1].entries.begin(), parts[1].entries.end());
      merged = SplitLeaf(std::move(entries), lower);
    } else {
      auto children = std::move(parts[0].children);
      parts[1].children[0].key = parts[1].lower;  // the right part's first child gets a separator
      children.insert(children.end(), parts[1].children.begin(), parts[1].children.end());
      merged = SplitInternal(std::move(children), lower);
    }
    std::vector<Item> replacement;
    for (auto& p : merged) {
      std::string_view k = p.lower;
      replacement.push_back(Item{k, std::move(p), NodeRef{}, true});
    }
    items->erase(items->begin() + static_cast<long>(left), items->begin() + static_cast<long>(left) + 2);
    items->insert(items->begin() + static_cast<long>(left), replacement.begin(), replacement.end());
    i = left + replacement.size() - 1;
  }
  return Status::Ok();
}

Result<std::vector<ChildEntry>> TreeWriter::WriteItems(std::vector<Item>& items) {
  std::vector<ChildEntry> children;
  children.reserve(items.size());
  for (auto& item : items) {
    NodeRef ref = item.pending ? Write(*item.pending) : item.ref;
    children.push_back(ChildEntry{item.key, ref});
  }
  return children;
}

Result<TreeRoot> TreeWriter::Apply(const TreeRoot& base, const std::vector<Change>& changes) {
  if (changes.empty()) return base;
  std::vector<Pending> level;
  uint32_t height = base.height;
  if (base.height == 0) {
    std::vector<LeafEntry> entries;
    for (const auto& c : changes) {
      if (c.value->has_value()) entries.push_back({c.key, **c.value});
    }
    key_delta_ += static_cast<int64_t>(entries.size());
    if (!entries.empty()) level = SplitLeaf(std::move(entries), std::string_view());
    height = 1;
  } else {
    DBDB_ASSIGN_OR_RETURN(level, ApplyNode(base.ref, base.height, std::string_view(), std::nullopt,
                                           changes.data(), changes.data() + changes.size()));
  }
  TreeRoot root;
  while (true) {
    if (level.empty()) {
      root.ref = NodeRef{};
      root.height = 0;
      break;
    }
    if (level.size() == 1) {
      Pending& top = level[0];
      if (!top.is_leaf && top.children.size() == 1) {
        // A root with one child: the child becomes the root (the tree shrinks).
        NodeRef child = top.children[0].ref;
        height--;
        while (height > 1) {
          DBDB_ASSIGN_OR_RETURN(auto node, Load(child));
          if (node->is_leaf || node->children.size() != 1) break;
          bytes_delta_ -= child.length;
          child = node->children[0];
          height--;
        }
        root.ref = child;
        root.height = height;
        break;
      }
      root.ref = Write(top);
      root.height = height;
      break;
    }
    std::vector<ChildEntry> children;
    for (auto& p : level) children.push_back(ChildEntry{p.lower, Write(p)});
    level = SplitInternal(std::move(children), std::string_view());
    height++;
  }
  if (root.height > format::kTreeHeightMax) return Status::LimitExceeded("tree height limit reached");
  root.key_count = static_cast<uint64_t>(static_cast<int64_t>(base.key_count) + key_delta_);
  root.tree_bytes = static_cast<uint64_t>(static_cast<int64_t>(base.tree_bytes) + bytes_delta_);
  return root;
}

}  // namespace dbdb
