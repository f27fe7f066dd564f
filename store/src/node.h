// B+tree nodes as they sit in the file (docs/FORMAT.md, "Nodes").
//
// Version 3 lays a node out to be searched in place: a count, a slot array of entry offsets, then
// the entries, so a lookup binary-searches the slots without decoding the node (NodeView). Files
// of versions 1 and 2 (read-only until upgraded) hold the older sequential layout; DecodeNode
// reads both. Nodes are immutable.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "coding.h"
#include "dbdb/status.h"
#include "format.h"
#include "key_prefix.h"

namespace dbdb {

// Where a node's whole record lies in the file.
struct NodeRef {
  uint64_t offset = 0;
  uint32_t length = 0;  // whole record bytes, header and checksum included
};

// The first format version whose nodes have the slotted layout.
inline constexpr uint32_t kSlottedNodeVersion = 3;

// A version-3 node payload read in place (from a file mapping or a buffer), without copying or
// decoding it. Every accessor stays inside the payload whatever its bytes say: on bytes that do
// not validate (ValidateNode) they return empty keys and null child references, never read
// outside [data, data + size). Cheap to copy; does not own the bytes.
class NodeView {
 public:
  NodeView() = default;
  NodeView(const char* data, uint32_t size, bool leaf) : data_(data), size_(size), leaf_(leaf) {}

  bool is_leaf() const { return leaf_; }
  uint32_t count() const;
  std::string_view key(uint32_t i) const;    // child 0's key is empty in an internal node
  std::string_view value(uint32_t i) const;  // leaves
  // Leaf entry i's key and value, decoded once (key(i) and value(i) each decode it); false (and
  // empty views) if i is out of range or the entry runs past the payload.
  bool KeyValue(uint32_t i, std::string_view* key, std::string_view* value) const;
  NodeRef child(uint32_t i) const;           // internal nodes
  // The first index i with key(i) >= key (leaves).
  uint32_t LowerBound(std::string_view key) const;
  // The index of the child whose range holds `key` (internal nodes).
  uint32_t ChildFor(std::string_view key) const;

  const char* data() const { return data_; }
  uint32_t size() const { return size_; }
  // Entry i's bytes, from its slot to the next slot (or the payload's end); a null view if the
  // slots point outside the payload.
  std::string_view Entry(uint32_t i) const;

 private:
  uint32_t Slot(uint32_t i) const;  // REQUIRES: i < count(); at most size_
  bool Varint(uint32_t* at, uint64_t* v) const;
  bool LongVarint(uint32_t* at, uint64_t* v) const;  // a varint of two bytes or more
  bool KeyAt(uint32_t at, uint32_t* key_at, uint64_t* key_size, uint64_t* value_size) const;
  std::string_view KeyOfSlot(uint32_t i) const;  // REQUIRES: i < count()
  void PrefetchSlots() const;
  void PrefetchKey(uint32_t i) const;  // REQUIRES: i < count()

  const char* data_ = nullptr;
  uint32_t size_ = 0;
  bool leaf_ = true;
};

// The hot path of a lookup, inline (a lookup spent about a third of its instructions calling them):
// one slot and one or two varints per key compared, every read bounded by the payload (not by the
// entry, which only ValidateNode needs to pin down).
inline constexpr size_t kNodeCountSizeBytes = 4;  // the count
inline constexpr uint64_t kSlotSizeBytes = 4;
inline constexpr uint64_t kChildRefSizeBytes = 12;  // offset:u64 length:u32

inline uint32_t NodeView::count() const {
  if (size_ < kNodeCountSizeBytes) return 0;
  uint64_t count = coding::DecodeFixed32(data_);
  return static_cast<uint32_t>(std::min<uint64_t>(count, (size_ - kNodeCountSizeBytes) / kSlotSizeBytes));
}

inline uint32_t NodeView::Slot(uint32_t i) const {
  uint32_t at = coding::DecodeFixed32(data_ + kNodeCountSizeBytes + kSlotSizeBytes * i);
  return at < size_ ? at : size_;
}

inline bool NodeView::Varint(uint32_t* at, uint64_t* v) const {
  if (*at < size_ && static_cast<uint8_t>(data_[*at]) < 0x80) {  // one byte: almost every length
    *v = static_cast<uint8_t>(data_[(*at)++]);
    return true;
  }
  return LongVarint(at, v);
}

// Where the key of the entry at `at` starts, and its size; false if it runs past the payload.
inline bool NodeView::KeyAt(uint32_t at, uint32_t* key_at, uint64_t* key_size, uint64_t* value_size) const {
  *value_size = 0;
  if (!leaf_) {
    if (size_ - at < kChildRefSizeBytes) return false;
    at += kChildRefSizeBytes;
  }
  if (!Varint(&at, key_size) || (leaf_ && !Varint(&at, value_size))) return false;
  if (*key_size > size_ - at) return false;
  *key_at = at;
  return true;
}

inline std::string_view NodeView::KeyOfSlot(uint32_t i) const {
  uint32_t at;
  uint64_t key_size, value_size;
  if (!KeyAt(Slot(i), &at, &key_size, &value_size)) return {};
  return std::string_view(data_ + at, key_size);
}

// A hint: the address stays inside the payload (at most one past it) whatever the bytes say.
inline void NodeView::PrefetchKey(uint32_t i) const {
  uint32_t at = Slot(i);
  uint64_t key_at = at + (leaf_ ? 2 : kChildRefSizeBytes + 1);  // past one-byte varints
  __builtin_prefetch(data_ + (key_at <= size_ ? key_at : at));
}

// Both searches are binary searches whose every probe reads a slot and then the entry it names,
// most often a cache miss each when the node was not read lately. So the slots are fetched ahead
// at the start, and each probe fetches ahead the entries of both probes that may come next: the
// misses of a search overlap instead of following one another.
inline void NodeView::PrefetchSlots() const {
  uint64_t end = kNodeCountSizeBytes + kSlotSizeBytes * count();  // at most size_
  for (uint64_t at = 64; at < end; at += 64) __builtin_prefetch(data_ + at);
}

inline uint32_t NodeView::LowerBound(std::string_view key) const {
  uint64_t prefix = KeyPrefix(key);
  uint32_t lo = 0, hi = count();
  PrefetchSlots();
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (mid > lo) PrefetchKey(lo + (mid - lo) / 2);
    if (hi - mid > 1) PrefetchKey(mid + 1 + (hi - mid - 1) / 2);
    std::string_view k = KeyOfSlot(mid);
    if (KeyLess(k, KeyPrefix(k), key, prefix)) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

inline uint32_t NodeView::ChildFor(std::string_view key) const {
  // The last i with key(i) <= key, treating key(0) as minus infinity.
  uint64_t prefix = KeyPrefix(key);
  uint32_t lo = 1, hi = count();
  PrefetchSlots();
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (mid > lo) PrefetchKey(lo + (mid - lo) / 2);
    if (hi - mid > 1) PrefetchKey(mid + 1 + (hi - mid - 1) / 2);
    std::string_view k = KeyOfSlot(mid);
    if (!KeyLess(key, prefix, k, KeyPrefix(k))) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo - 1;
}

// Checks that a version-3 node payload is well formed: the count, the slots (each entry starting
// exactly where the one before ends, the last ending at the payload's end), strictly increasing
// keys, and child references lying before the node at `offset`. nullptr if it is; else what is
// wrong, as a static string (no allocation: it runs on mapped memory under a fault guard).
const char* ValidateNode(uint64_t offset, format::RecordType type, std::string_view payload);

// Corruption naming the node at `offset` and `why`.
Status BadNode(uint64_t offset, const char* why);

// A node decoded into vectors, for the writer, check() and dump. Owns its payload bytes; the
// views point into them.
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
  // The payload in the version-3 layout, to read in place (a version-3 node's own payload; a
  // version-1 or -2 node's re-encoded when decoded).
  NodeView view() const;
};

// Decodes a node payload of a file of `version`. Corruption (naming `offset`) if it is malformed:
// truncated, trailing bytes, unsorted keys, a child that does not lie before the node, an empty
// node. A version-1 or -2 node's payload is re-encoded in the version-3 layout.
Result<std::shared_ptr<const Node>> DecodeNode(uint64_t offset, format::RecordType type, std::string payload,
                                               uint32_t version = format::kFormatVersion);

// Encoded sizes (version 3, the slot included), for splitting nodes by bytes.
size_t LeafEntrySize(std::string_view key, std::string_view value);
size_t InternalEntrySize(std::string_view key);  // child 0's key is not stored: subtract its size

struct LeafEntry {
  std::string_view key;
  std::string_view value;
};
struct ChildEntry {
  std::string_view key;  // lower bound of the child's keys (ignored for the first child)
  NodeRef ref;
};

// Version-3 encodings.
std::string EncodeLeaf(const std::vector<LeafEntry>& entries, size_t begin, size_t end);
std::string EncodeInternal(const std::vector<ChildEntry>& children, size_t begin, size_t end);

}  // namespace dbdb
