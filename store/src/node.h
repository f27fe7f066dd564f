// B+tree nodes as they sit in the file (docs/FORMAT.md, "Nodes"), decoded without copying keys
// or values: a Node owns its payload bytes and holds views into them. Nodes are immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dbdb/status.h"
#include "format.h"

namespace dbdb {

// Where a node's whole record lies in the file.
struct NodeRef {
  uint64_t offset = 0;
  uint32_t length = 0;  // whole record bytes, header and checksum included
};

struct Node {
  bool is_leaf = true;
  std::string payload;
  // Leaf: keys[i] -> values[i], strictly increasing keys.
  // Internal: children[i] holds the keys in [keys[i], keys[i+1]); keys[0] is empty and unused
  // (child 0 holds everything below keys[1]).
  std::vector<std::string_view> keys;
  std::vector<std::string_view> values;
  std::vector<NodeRef> children;

  size_t size() const { return keys.size(); }
  // The index of the child whose range holds `key`.
  size_t ChildFor(std::string_view key) const;
  // The first index i with keys[i] >= key (leaves).
  size_t LowerBound(std::string_view key) const;
};

// Decodes a node payload. Corruption (naming `offset`) if it is malformed: truncated, trailing
// bytes, unsorted keys, a child that does not lie before the node, an empty internal node.
Result<std::shared_ptr<const Node>> DecodeNode(uint64_t offset, format::RecordType type,
                                               std::string payload);

// Encoded sizes, for splitting nodes by bytes.
size_t LeafEntrySize(std::string_view key, std::string_view value);
size_t InternalEntrySize(std::string_view key);  // child 0's key is not stored: subtract its size
inline constexpr size_t kNodeCountSizeBytes = 4;  // upper bound of the count varint we budget

struct LeafEntry {
  std::string_view key;
  std::string_view value;
};
struct ChildEntry {
  std::string_view key;  // lower bound of the child's keys (ignored for the first child)
  NodeRef ref;
};

std::string EncodeLeaf(const std::vector<LeafEntry>& entries, size_t begin, size_t end);
std::string EncodeInternal(const std::vector<ChildEntry>& children, size_t begin, size_t end);

}  // namespace dbdb
