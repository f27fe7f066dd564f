// A key's first eight bytes as one number, for searches that compare many keys: the tree's nodes
// searched in place (node.h) and the log overlay's B-tree (log_overlay.h).
//
// KeyPrefix reads them big-endian and zero-padded, so keys whose prefixes differ are in their
// prefixes' order (a key shorter than eight bytes pads with zeros, which sorts it before every
// longer key it begins, and at or before every key it does not), and most comparisons are settled
// without reading the keys further. Equal prefixes say nothing: KeyLess then compares the keys.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace dbdb {

namespace key_prefix_internal {
template <typename T>
T LoadBigEndian(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) {
    if constexpr (sizeof v == 8) v = __builtin_bswap64(v);
    if constexpr (sizeof v == 4) v = __builtin_bswap32(v);
  }
  return v;
}
}  // namespace key_prefix_internal

// Without a loop over the bytes of a key under eight bytes (most of an internal node's separators,
// which compaction shortens; a byte loop was the single costliest line of a lookup, counted by
// callgrind): four to seven bytes are two loads of four that overlap, one to three bytes are the
// first, middle and last byte (which between them are every byte).
inline uint64_t KeyPrefix(std::string_view key) {
  using key_prefix_internal::LoadBigEndian;
  const char* p = key.data();
  const size_t n = key.size();
  if (n >= 8) return LoadBigEndian<uint64_t>(p);
  if (n >= 4) {
    return uint64_t{LoadBigEndian<uint32_t>(p)} << 32 | uint64_t{LoadBigEndian<uint32_t>(p + n - 4)} << (64 - 8 * n);
  }
  if (n == 0) return 0;
  return uint64_t{static_cast<uint8_t>(p[0])} << 56 | uint64_t{static_cast<uint8_t>(p[n / 2])} << (56 - 8 * (n / 2)) |
         uint64_t{static_cast<uint8_t>(p[n - 1])} << (64 - 8 * n);
}

// Whether `a` < `b`, given their KeyPrefix (for keys already in hand; the overlay's comparator
// reads a held key only when the prefixes are equal).
inline bool KeyLess(std::string_view a, uint64_t a_prefix, std::string_view b, uint64_t b_prefix) {
  if (a_prefix != b_prefix) return a_prefix < b_prefix;
  return a < b;
}

}  // namespace dbdb
