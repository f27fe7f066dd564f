// Large allocations mapped on their own and kept for reuse (large_alloc.h).
#include "large_alloc.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>

namespace dbdb {

static_assert(sizeof(size_t) == 8, "the arena's bounds and the mappings' arithmetic assume 64-bit sizes");

namespace {

#if defined(DBDB_SANITIZER_ADDRESS) || defined(__SANITIZE_ADDRESS__)
constexpr bool kMapLargeBlocks = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kMapLargeBlocks = false;
#else
constexpr bool kMapLargeBlocks = true;
#endif
#else
constexpr bool kMapLargeBlocks = true;
#endif

}  // namespace

void* MapAligned(size_t bytes, size_t unit) {
  if (bytes == 0 || unit == 0 || bytes % unit != 0 || bytes > SIZE_MAX - unit) return nullptr;
  // Mapped one unit longer, then trimmed to a unit-aligned run of `bytes`.
  void* raw = ::mmap(nullptr, bytes + unit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t first = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (first + unit - 1) / unit * unit;
  if (start > first) ::munmap(raw, start - first);
  ::munmap(reinterpret_cast<void*>(start + bytes), unit - (start - first));  // never 0 bytes
  void* block = reinterpret_cast<void*>(start);
  // Small pages even where the kernel puts all anonymous memory on huge ones (large_alloc.h: a
  // fresh huge page cost up to 20 ms to fault in). Advice: a kernel without transparent huge pages
  // refuses it, and its pages are small anyway.
  (void)::madvise(block, bytes, MADV_NOHUGEPAGE);
  return block;
}

namespace {

size_t MappedLength(size_t bytes) {
  const size_t unit = LargeBlockUnitBytes();
  return (bytes + unit - 1) / unit * unit;
}

}  // namespace

size_t LargeBlockUnitBytes() { return kMapLargeBlocks ? kLargeBlockUnitBytes : 0; }

bool LargeBlockIsMapped(size_t bytes) {
  return kMapLargeBlocks && bytes >= kLargeBytesMin && bytes <= SIZE_MAX - 2 * kLargeBlockUnitBytes;
}

namespace {

// Freed mapped blocks kept for reuse (large_alloc.h), at most kKeptBlocksMax of them and
// kKeptBytesMax in all, while a LargeBlocksUser exists. A fixed table, so that freeing allocates
// nothing; a lock only tried, so that a thread never waits for it (and a child forked while
// another thread held it goes on without the cache instead of waiting forever).
class KeptBlocks {
 public:
  // A kept block of exactly `length` mapped bytes, or null.
  void* Take(size_t length) {
    void* taken = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
      if (!lock.owns_lock()) return nullptr;
      for (Slot& slot : slots_) {
        if (slot.block != nullptr && slot.length == length) {
          kept_bytes_ -= length;
          taken = std::exchange(slot.block, nullptr);
          break;
        }
      }
    }
    DropIfUnused();
    return taken;
  }
  // Keeps `block` (`length` mapped bytes), unmapping the blocks kept longest to make room; false
  // if it is not kept (the caller unmaps it): no user, larger than the bound, or the lock busy.
  bool Keep(void* block, size_t length) {
    bool kept = false;
    {
      std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
      if (!lock.owns_lock()) return false;
      if (users_.load() != 0 && length <= kKeptBytesMax) {
        while (length > kKeptBytesMax - kept_bytes_ || kept_count() == kKeptBlocksMax) UnmapOldest();
        for (Slot& slot : slots_) {
          if (slot.block == nullptr) {
            slot = Slot{block, length, ++age_};
            kept_bytes_ += length;
            kept = true;
            break;
          }
        }
      }
    }
    DropIfUnused();
    return kept;
  }
  size_t kept_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return kept_bytes_;
  }
  void AddUser() { users_.fetch_add(1); }
  // The last user gone: every kept block is unmapped, by this thread if the lock is free, else by
  // the Take or Keep holding it, which looks at the users again once it lets the lock go.
  void RemoveUser() {
    if (users_.fetch_sub(1) == 1) Drop(/*wait=*/false);
  }
  void DropIfUnused() {
    if (users_.load() == 0) Drop(/*wait=*/false);
  }
  void Drop(bool wait) {
    std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
    if (wait) {
      lock.lock();
    } else if (!lock.try_lock()) {
      return;
    }
    for (Slot& slot : slots_) {
      if (slot.block != nullptr) ::munmap(std::exchange(slot.block, nullptr), slot.length);
    }
    kept_bytes_ = 0;
  }

 private:
  struct Slot {
    void* block = nullptr;
    size_t length = 0;
    uint64_t age = 0;  // when kept: the smallest is the oldest
  };
  size_t kept_count() const {
    return static_cast<size_t>(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.block != nullptr; }));
  }
  void UnmapOldest() {
    Slot* oldest = nullptr;
    for (Slot& slot : slots_) {
      if (slot.block != nullptr && (oldest == nullptr || slot.age < oldest->age)) oldest = &slot;
    }
    ::munmap(std::exchange(oldest->block, nullptr), oldest->length);
    kept_bytes_ -= oldest->length;
  }
  std::mutex mutex_;
  std::array<Slot, kKeptBlocksMax> slots_{};
  size_t kept_bytes_ = 0;
  uint64_t age_ = 0;
  std::atomic<int> users_{0};
};

KeptBlocks& Kept() {
  static KeptBlocks* kept = new KeptBlocks;  // never destroyed: blocks may be freed during exit
  return *kept;
}

}  // namespace

LargeBlocksUser::LargeBlocksUser() { Kept().AddUser(); }
LargeBlocksUser::~LargeBlocksUser() { Kept().RemoveUser(); }

size_t KeptLargeBytes() { return kMapLargeBlocks ? Kept().kept_bytes() : 0; }

void DropKeptLargeBlocks() {
  if (kMapLargeBlocks) Kept().Drop(/*wait=*/true);
}

void* AllocateLarge(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (!LargeBlockIsMapped(bytes)) return ::operator new(bytes);
  const size_t length = MappedLength(bytes);
  if (void* kept = Kept().Take(length)) return kept;
  void* block = MapAligned(length, kLargeBlockUnitBytes);
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

void FreeLarge(void* block, size_t bytes) noexcept {
  if (block == nullptr) return;
  if (!LargeBlockIsMapped(bytes)) {
    ::operator delete(block);
    return;
  }
  const size_t length = MappedLength(bytes);
  if (!Kept().Keep(block, length)) ::munmap(block, length);
}

LargeArena::~LargeArena() {
  for (const Chunk& chunk : chunks_) {
    if (chunk.large) {
      FreeLarge(chunk.data, chunk.bytes);
    } else {
      ::operator delete(chunk.data);
    }
  }
}

void* LargeArena::Allocate(size_t bytes, size_t alignment) {
  const size_t pad = (alignment - reinterpret_cast<uintptr_t>(next_) % alignment) % alignment;
  if (next_ == nullptr || left_ < pad || left_ - pad < bytes) {
    if (bytes > (size_t{1} << 40)) throw std::bad_alloc();  // (so that the doubling below cannot wrap)
    const size_t unit = LargeBlockUnitBytes();
    size_t chunk_bytes = next_chunk_bytes_;
    while (chunk_bytes < bytes + alignment) chunk_bytes *= 2;
    // Whole units once a chunk reaches one (a multiple of the unit: nothing rounded up).
    const bool large = unit != 0 && chunk_bytes >= unit;
    if (large) chunk_bytes = (chunk_bytes + unit - 1) / unit * unit;
    if (chunks_.size() == chunks_.capacity()) {  // so that push_back cannot throw once the chunk is taken
      chunks_.reserve(std::max<size_t>(2 * chunks_.capacity(), 8));
    }
    char* data = static_cast<char*>(large ? AllocateLarge(chunk_bytes) : ::operator new(chunk_bytes));
    chunks_.push_back(Chunk{data, chunk_bytes, large});
    next_ = data;
    left_ = chunk_bytes;
    next_chunk_bytes_ = std::min(2 * next_chunk_bytes_, kChunkBytesMax);
    return Allocate(bytes, alignment);
  }
  char* at = next_ + pad;
  next_ = at + bytes;
  left_ -= pad + bytes;
  return at;
}

size_t LargeArena::chunk_bytes() const {
  size_t total = 0;
  for (const Chunk& chunk : chunks_) total += chunk.bytes;
  return total;
}

}  // namespace dbdb
