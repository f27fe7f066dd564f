// Node encoding and decoding (docs/FORMAT.md, "Nodes").
#include "node.h"

#include <algorithm>

#include "coding.h"

namespace dbdb {

using coding::PutFixed32;
using coding::PutFixed64;
using coding::PutVarint;
using coding::VarintLength;

size_t Node::ChildFor(std::string_view key) const {
  // The last i with keys[i] <= key, treating keys[0] as minus infinity.
  auto it = std::upper_bound(keys.begin() + 1, keys.end(), key);
  return static_cast<size_t>(it - keys.begin()) - 1;
}

size_t Node::LowerBound(std::string_view key) const {
  return static_cast<size_t>(std::lower_bound(keys.begin(), keys.end(), key) - keys.begin());
}

size_t LeafEntrySize(std::string_view key, std::string_view value) {
  return VarintLength(key.size()) + VarintLength(value.size()) + key.size() + value.size();
}

size_t InternalEntrySize(std::string_view key) { return VarintLength(key.size()) + key.size() + 12; }

std::string EncodeLeaf(const std::vector<LeafEntry>& entries, size_t begin, size_t end) {
  std::string out;
  PutVarint(&out, end - begin);
  for (size_t i = begin; i < end; i++) {
    PutVarint(&out, entries[i].key.size());
    PutVarint(&out, entries[i].value.size());
    out.append(entries[i].key);
    out.append(entries[i].value);
  }
  return out;
}

std::string EncodeInternal(const std::vector<ChildEntry>& children, size_t begin, size_t end) {
  std::string out;
  PutVarint(&out, end - begin);
  for (size_t i = begin; i < end; i++) {
    if (i != begin) {
      PutVarint(&out, children[i].key.size());
      out.append(children[i].key);
    }
    PutFixed64(&out, children[i].ref.offset);
    PutFixed32(&out, children[i].ref.length);
  }
  return out;
}

Result<std::shared_ptr<const Node>> DecodeNode(uint64_t offset, format::RecordType type,
                                               std::string payload) {
  auto bad = [offset](const char* why) {
    return Status::Corruption(std::string("node at offset ") + std::to_string(offset) + ": " + why);
  };
  if (type != format::RecordType::kLeaf && type != format::RecordType::kInternal) {
    return bad("record is not a node");
  }
  auto node = std::make_shared<Node>();
  node->is_leaf = type == format::RecordType::kLeaf;
  node->payload = std::move(payload);
  coding::Reader reader(node->payload);
  uint64_t count;
  if (!reader.GetVarint(&count)) return bad("truncated count");
  // Each entry takes at least two bytes, so a count beyond that is garbage: refuse it before
  // reserving memory for it.
  if (count > node->payload.size() / 2) return bad("count larger than the node");
  node->keys.reserve(count);
  if (node->is_leaf) {
    // A leaf is never empty (the empty tree has no root): an empty one would end a scan silently.
    if (count == 0) return bad("empty leaf");
    node->values.reserve(count);
    for (uint64_t i = 0; i < count; i++) {
      uint64_t key_size, value_size;
      std::string_view key, value;
      if (!reader.GetVarint(&key_size) || !reader.GetVarint(&value_size) ||
          !reader.GetBytes(key_size, &key) || !reader.GetBytes(value_size, &value)) {
        return bad("truncated leaf entry");
      }
      if (i > 0 && !(node->keys.back() < key)) return bad("leaf keys out of order");
      node->keys.push_back(key);
      node->values.push_back(value);
    }
  } else {
    if (count == 0) return bad("internal node without children");
    node->children.reserve(count);
    for (uint64_t i = 0; i < count; i++) {
      std::string_view key;
      if (i > 0) {
        uint64_t key_size;
        if (!reader.GetVarint(&key_size) || !reader.GetBytes(key_size, &key)) {
          return bad("truncated separator key");
        }
        if (i > 1 && !(node->keys.back() < key)) return bad("separator keys out of order");
      }
      NodeRef ref;
      if (!reader.GetFixed64(&ref.offset) || !reader.GetFixed32(&ref.length)) {
        return bad("truncated child reference");
      }
      // Children are written before their parent (leaf to root). Subtraction, not
      // ref.offset + ref.length, which wraps past 2^64 (found by dbdb_fuzz_structured: a child at
      // 2^64 - 1 passed and was read as an I/O error).
      if (ref.offset < format::kFileHeaderSizeBytes || ref.length < format::kRecordOverheadBytes ||
          ref.offset > offset || ref.length > offset - ref.offset) {
        return bad("child reference does not point before the node");
      }
      node->keys.push_back(key);
      node->children.push_back(ref);
    }
  }
  if (!reader.done()) return bad("trailing bytes after the entries");
  return std::shared_ptr<const Node>(std::move(node));
}

}  // namespace dbdb
