// Node encoding, in-place reading and decoding (docs/FORMAT.md, "Nodes").
#include "node.h"

#include <algorithm>

#include "coding.h"

namespace dbdb {

using coding::DecodeFixed32;
using coding::DecodeFixed64;
using coding::PutFixed32;
using coding::PutFixed64;
using coding::PutVarint;
using coding::VarintLength;

namespace {

// A varint at the front of *bytes, which it consumes; false if it runs past the end.
bool TakeVarint(std::string_view* bytes, uint64_t* v) {
  coding::Reader reader(*bytes);
  if (!reader.GetVarint(v)) return false;
  bytes->remove_prefix(bytes->size() - reader.remaining());
  return true;
}

// A leaf entry's key and value; false if the entry is malformed or has bytes left over.
bool ParseLeafEntry(std::string_view entry, std::string_view* key, std::string_view* value) {
  uint64_t key_size, value_size;
  if (!TakeVarint(&entry, &key_size) || !TakeVarint(&entry, &value_size)) return false;
  if (key_size > entry.size() || value_size != entry.size() - key_size) return false;
  *key = entry.substr(0, key_size);
  *value = entry.substr(key_size);
  return true;
}

// An internal entry's child reference and key; false if malformed or with bytes left over.
bool ParseInternalEntry(std::string_view entry, NodeRef* ref, std::string_view* key) {
  if (entry.size() < kChildRefSizeBytes) return false;
  ref->offset = DecodeFixed64(entry.data());
  ref->length = DecodeFixed32(entry.data() + 8);
  entry.remove_prefix(kChildRefSizeBytes);
  uint64_t key_size;
  if (!TakeVarint(&entry, &key_size) || key_size != entry.size()) return false;
  *key = entry;
  return true;
}

// Children are written before their parent (leaf to root). Subtraction, not
// ref.offset + ref.length, which wraps past 2^64 (found by dbdb_fuzz_structured: a child at
// 2^64 - 1 passed and was read as an I/O error).
bool LiesBefore(const NodeRef& ref, uint64_t offset) {
  return ref.offset >= format::kFileHeaderSizeBytes && ref.length >= format::kRecordOverheadBytes &&
         ref.offset <= offset && ref.length <= offset - ref.offset;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// NodeView

std::string_view NodeView::Entry(uint32_t i) const {
  uint32_t n = count();
  if (i >= n) return {};
  uint64_t begin = DecodeFixed32(data_ + kNodeCountSizeBytes + kSlotSizeBytes * i);
  uint64_t end = i + 1 < n ? DecodeFixed32(data_ + kNodeCountSizeBytes + kSlotSizeBytes * (i + 1)) : size_;
  if (begin > end || end > size_) return {};
  return std::string_view(data_ + begin, end - begin);
}

bool NodeView::LongVarint(uint32_t* at, uint64_t* v) const {
  coding::Reader reader(std::string_view(data_ + *at, size_ - *at));
  if (!reader.GetVarint(v)) return false;
  *at = size_ - static_cast<uint32_t>(reader.remaining());
  return true;
}

std::string_view NodeView::key(uint32_t i) const { return i < count() ? KeyOfSlot(i) : std::string_view(); }

std::string_view NodeView::value(uint32_t i) const {
  uint32_t at;
  uint64_t key_size, value_size;
  if (!leaf_ || i >= count() || !KeyAt(Slot(i), &at, &key_size, &value_size)) return {};
  if (value_size > size_ - at - key_size) return {};
  return std::string_view(data_ + at + key_size, value_size);
}

bool NodeView::KeyValue(uint32_t i, std::string_view* key, std::string_view* value) const {
  *key = *value = std::string_view();
  uint32_t at;
  uint64_t key_size, value_size;
  if (!leaf_ || i >= count() || !KeyAt(Slot(i), &at, &key_size, &value_size)) return false;
  if (value_size > size_ - at - key_size) return false;
  *key = std::string_view(data_ + at, key_size);
  *value = std::string_view(data_ + at + key_size, value_size);
  return true;
}

NodeRef NodeView::child(uint32_t i) const {
  if (leaf_ || i >= count()) return NodeRef{};
  uint32_t at = Slot(i);
  if (size_ - at < kChildRefSizeBytes) return NodeRef{};
  return NodeRef{DecodeFixed64(data_ + at), DecodeFixed32(data_ + at + 8)};
}

const char* ValidateNode(uint64_t offset, format::RecordType type, std::string_view payload) {
  if (type != format::RecordType::kLeaf && type != format::RecordType::kInternal) return "record is not a node";
  bool leaf = type == format::RecordType::kLeaf;
  if (payload.size() < kNodeCountSizeBytes) return "truncated count";
  if (payload.size() > UINT32_MAX) return "node larger than 4 GiB";
  uint64_t count = DecodeFixed32(payload.data());
  // A leaf is never empty (the empty tree has no root): an empty one would end a scan silently.
  if (count == 0) return leaf ? "empty leaf" : "internal node without children";
  uint64_t first = kNodeCountSizeBytes + kSlotSizeBytes * count;
  if (first > payload.size()) return "count larger than the node";
  NodeView view(payload.data(), static_cast<uint32_t>(payload.size()), leaf);
  uint64_t expected = first;  // where entry i must start: right after entry i - 1
  std::string_view previous;
  for (uint32_t i = 0; i < count; i++) {
    uint64_t slot = DecodeFixed32(payload.data() + kNodeCountSizeBytes + kSlotSizeBytes * i);
    if (slot != expected) return "slot does not point where the entry before it ends";
    std::string_view entry = view.Entry(i);
    if (entry.data() == nullptr) return "slot points outside the node";
    std::string_view key, value;
    if (leaf) {
      if (!ParseLeafEntry(entry, &key, &value)) return "truncated leaf entry";
      if (i > 0 && !(previous < key)) return "leaf keys out of order";
    } else {
      NodeRef ref;
      if (!ParseInternalEntry(entry, &ref, &key)) return "truncated internal entry";
      if (i == 0 && !key.empty()) return "first child has a separator key";
      if (i > 1 && !(previous < key)) return "separator keys out of order";
      if (!LiesBefore(ref, offset)) return "child reference does not point before the node";
    }
    previous = key;
    expected = slot + entry.size();
  }
  if (expected != payload.size()) return "trailing bytes after the entries";
  return nullptr;
}

Status BadNode(uint64_t offset, const char* why) {
  return Status::Corruption(std::string("node at offset ") + std::to_string(offset) + ": " + why);
}

// ---------------------------------------------------------------------------------------------
// Node

size_t Node::ChildFor(std::string_view key) const {
  auto it = std::upper_bound(keys.begin() + 1, keys.end(), key);
  return static_cast<size_t>(it - keys.begin()) - 1;
}

size_t Node::LowerBound(std::string_view key) const {
  return static_cast<size_t>(std::lower_bound(keys.begin(), keys.end(), key) - keys.begin());
}

NodeView Node::view() const { return NodeView(payload.data(), static_cast<uint32_t>(payload.size()), is_leaf); }

size_t LeafEntrySize(std::string_view key, std::string_view value) {
  return kSlotSizeBytes + VarintLength(key.size()) + VarintLength(value.size()) + key.size() + value.size();
}

size_t InternalEntrySize(std::string_view key) {
  return kSlotSizeBytes + kChildRefSizeBytes + VarintLength(key.size()) + key.size();
}

namespace {

// The count and slot array for entries of the given encoded sizes, then the entries appended by
// `append(i, out)`.
template <typename SizeFn, typename AppendFn>
std::string EncodeSlotted(size_t n, SizeFn size_of, AppendFn append) {
  std::string out;
  uint64_t total = kNodeCountSizeBytes + kSlotSizeBytes * n;
  for (size_t i = 0; i < n; i++) total += size_of(i);
  out.reserve(total);
  PutFixed32(&out, static_cast<uint32_t>(n));
  uint64_t at = kNodeCountSizeBytes + kSlotSizeBytes * n;
  for (size_t i = 0; i < n; i++) {
    PutFixed32(&out, static_cast<uint32_t>(at));
    at += size_of(i);
  }
  for (size_t i = 0; i < n; i++) append(i, &out);
  return out;
}

}  // namespace

std::string EncodeLeaf(const std::vector<LeafEntry>& entries, size_t begin, size_t end) {
  return EncodeSlotted(
      end - begin,
      [&](size_t i) { return LeafEntrySize(entries[begin + i].key, entries[begin + i].value) - kSlotSizeBytes; },
      [&](size_t i, std::string* out) {
        const LeafEntry& e = entries[begin + i];
        PutVarint(out, e.key.size());
        PutVarint(out, e.value.size());
        out->append(e.key);
        out->append(e.value);
      });
}

std::string EncodeInternal(const std::vector<ChildEntry>& children, size_t begin, size_t end) {
  // Child 0's key is not stored (it holds everything below child 1's).
  auto key_of = [&](size_t i) { return i == 0 ? std::string_view() : children[begin + i].key; };
  return EncodeSlotted(
      end - begin, [&](size_t i) { return InternalEntrySize(key_of(i)) - kSlotSizeBytes; },
      [&](size_t i, std::string* out) {
        PutFixed64(out, children[begin + i].ref.offset);
        PutFixed32(out, children[begin + i].ref.length);
        PutVarint(out, key_of(i).size());
        out->append(key_of(i));
      });
}

// ---------------------------------------------------------------------------------------------
// Decoding

namespace {

// Versions 1 and 2 (docs/FORMAT.md, "Versions 1 to 4"): count:varint, then sequential
// entries. Fills `entries` or `children`.
const char* DecodeSequential(uint64_t offset, bool leaf, std::string_view payload, std::vector<LeafEntry>* entries,
                             std::vector<ChildEntry>* children) {
  coding::Reader reader(payload);
  uint64_t count;
  if (!reader.GetVarint(&count)) return "truncated count";
  // Each entry takes at least two bytes, so a count beyond that is garbage: refuse it before
  // reserving memory for it.
  if (count > payload.size() / 2) return "count larger than the node";
  if (count == 0) return leaf ? "empty leaf" : "internal node without children";
  for (uint64_t i = 0; i < count; i++) {
    std::string_view key, value;
    if (leaf) {
      uint64_t key_size, value_size;
      if (!reader.GetVarint(&key_size) || !reader.GetVarint(&value_size) || !reader.GetBytes(key_size, &key) ||
          !reader.GetBytes(value_size, &value)) {
        return "truncated leaf entry";
      }
      if (i > 0 && !(entries->back().key < key)) return "leaf keys out of order";
      entries->push_back(LeafEntry{key, value});
      continue;
    }
    if (i > 0) {
      uint64_t key_size;
      if (!reader.GetVarint(&key_size) || !reader.GetBytes(key_size, &key)) return "truncated separator key";
      if (i > 1 && !(children->back().key < key)) return "separator keys out of order";
    }
    NodeRef ref;
    if (!reader.GetFixed64(&ref.offset) || !reader.GetFixed32(&ref.length)) return "truncated child reference";
    if (!LiesBefore(ref, offset)) return "child reference does not point before the node";
    children->push_back(ChildEntry{key, ref});
  }
  if (!reader.done()) return "trailing bytes after the entries";
  return nullptr;
}

}  // namespace

Result<std::shared_ptr<const Node>> DecodeNode(uint64_t offset, format::RecordType type, std::string payload,
                                               uint32_t version) {
  if (type != format::RecordType::kLeaf && type != format::RecordType::kInternal) {
    return BadNode(offset, "record is not a node");
  }
  auto node = std::make_shared<Node>();
  node->is_leaf = type == format::RecordType::kLeaf;
  if (version < kSlottedNodeVersion) {
    std::vector<LeafEntry> entries;
    std::vector<ChildEntry> children;
    if (const char* why = DecodeSequential(offset, node->is_leaf, payload, &entries, &children)) {
      return BadNode(offset, why);
    }
    node->payload = node->is_leaf ? EncodeLeaf(entries, 0, entries.size()) : EncodeInternal(children, 0, children.size());
  } else {
    if (const char* why = ValidateNode(offset, type, payload)) return BadNode(offset, why);
    node->payload = std::move(payload);
  }
  NodeView view = node->view();
  uint32_t n = view.count();
  node->keys.reserve(n);
  if (node->is_leaf) node->values.reserve(n);
  if (!node->is_leaf) node->children.reserve(n);
  for (uint32_t i = 0; i < n; i++) {
    node->keys.push_back(view.key(i));
    if (node->is_leaf) {
      node->values.push_back(view.value(i));
    } else {
      node->children.push_back(view.child(i));
    }
  }
  return std::shared_ptr<const Node>(std::move(node));
}

}  // namespace dbdb
