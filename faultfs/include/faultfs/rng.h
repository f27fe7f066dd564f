// Rng: the one seeded random number generator of dbdb's harness (SplitMix64). Passed in, never
// global; every randomized program prints its seed first and takes --seed.
#pragma once

#include <cstdint>

namespace faultfs {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound); bound > 0.
  uint64_t Uniform(uint64_t bound) { return Next() % bound; }
  bool OneIn(uint64_t n) { return Uniform(n) == 0; }

 private:
  uint64_t state_;
};

// The byte a crash leaves as garbage at `offset` for `seed`: a pure function, so a crash image is
// the same every time it is built.
inline uint8_t GarbageByte(uint64_t seed, uint64_t offset) {
  Rng rng(seed ^ (offset * 0xD1B54A32D192ED03ULL));
  return static_cast<uint8_t>(rng.Next());
}

}  // namespace faultfs
