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

inline uint64_t KeyPrefix(std::string_view key) {
  uint64_t v = 0;
  if (key.size() >= 8) {
    std::memcpy(&v, key.data(), 8);
    if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
    return v;
  }
  for (size_t i = 0; i < 8; i++) v = v << 8 | (i < key.size() ? static_cast<uint8_t>(key[i]) : 0);
  return v;
}

// Whether `a` < `b`, given their KeyPrefix (for keys already in hand; the overlay's comparator
// reads a held key only when the prefixes are equal).
inline bool KeyLess(std::string_view a, uint64_t a_prefix, std::string_view b, uint64_t b_prefix) {
  if (a_prefix != b_prefix) return a_prefix < b_prefix;
  return a < b;
}

}  // namespace dbdb
