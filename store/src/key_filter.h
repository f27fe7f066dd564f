// KeyFilter: a blocked Bloom filter over a set of keys, for LogOverlay. Most reads of a large
// database miss the overlay (it holds the keys changed since the last fold, a small share of them
// once the tree is large), and the overlay's search misses the CPU cache at every level; the filter
// answers "not here" from one 64-bit word.
//
// Each key sets 3 bits of one word (the word and the bits chosen by one XXH3 hash): about 2-3%
// false positives at the 10 to 20 bits a key it keeps (it doubles and rebuilds itself from the
// owner's keys when it would fall below 10). Never a false negative: a key added is found.
//
// Not thread-safe: the owner (LogOverlay) guards it with its own lock.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace dbdb {

class KeyFilter {
 public:
  KeyFilter() : words_(kMinWords, 0) {}

  // Adds `key`. True if the filter is now too full and the owner should call Rebuild with every
  // key it holds (which doubles it). A key whose bits are all set already (added before, or a
  // false positive) changes nothing and is not counted: the owner may add a key more than once.
  bool Add(std::string_view key) {
    const uint64_t h = Hash(key);
    uint64_t& word = words_[h & (words_.size() - 1)];
    const uint64_t mask = Mask(h);
    if ((word & mask) == mask) return false;
    word |= mask;
    return ++keys_ * kBitsPerKeyMin > words_.size() * 64;
  }

  // Starts over at a size for `keys` keys; Add each of them after.
  void Reset(size_t keys) {
    size_t words = kMinWords;
    while (words * 64 < keys * kBitsPerKeyMin * 2) words *= 2;
    words_.assign(words, 0);
    keys_ = 0;
  }

  bool MayContain(std::string_view key) const {
    uint64_t h = Hash(key);
    uint64_t mask = Mask(h);
    return (words_[h & (words_.size() - 1)] & mask) == mask;
  }

  size_t keys() const { return keys_; }
  size_t bytes() const { return words_.size() * sizeof(uint64_t); }

 private:
  static constexpr size_t kMinWords = 64;  // 512 bytes
  static constexpr size_t kBitsPerKeyMin = 10;

  // XXH3 of the key, compiled into key_filter.cc with the hash's code inlined (XXH_INLINE_ALL):
  // a call into the shared library for a 16-byte key cost more than the hashing. Kept out of
  // this header, where the macro would rename xxhash's names for every file including it.
  static uint64_t Hash(std::string_view key);
  // Three bits from the hash's high bits (the low ones pick the word).
  static uint64_t Mask(uint64_t h) {
    return (uint64_t{1} << ((h >> 46) & 63)) | (uint64_t{1} << ((h >> 52) & 63)) | (uint64_t{1} << ((h >> 58) & 63));
  }

  std::vector<uint64_t> words_;  // a power of two of them
  size_t keys_ = 0;
};

}  // namespace dbdb
