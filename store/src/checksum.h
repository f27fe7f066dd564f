// BodyHasher: the streaming form of format::BodyChecksum (XXH3-64 with a seed), for bodies read
// or written in pieces. The one place dbdb keeps an XXH3 streaming state.
//
// XXH3_INITSTATE is not optional: XXH3_64bits_reset_withSeed skips deriving its secret when the
// state already holds the same seed, so a stale state on the stack silently gives a wrong hash.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t by value
#include <xxhash.h>

#include <cstdint>
#include <string_view>

namespace dbdb {

class BodyHasher {
 public:
  explicit BodyHasher(uint64_t seed) {
    XXH3_INITSTATE(&state_);
    XXH3_64bits_reset_withSeed(&state_, seed);
  }
  BodyHasher(const BodyHasher&) = delete;
  BodyHasher& operator=(const BodyHasher&) = delete;

  void Update(std::string_view bytes) { XXH3_64bits_update(&state_, bytes.data(), bytes.size()); }
  uint64_t Digest() const { return XXH3_64bits_digest(&state_); }

 private:
  XXH3_state_t state_;
};

}  // namespace dbdb
