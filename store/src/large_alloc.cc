// Large allocations on transparent huge pages (large_alloc.h).
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

size_t TransparentHugePageBytes() {
  // What one page table of 8-byte entries maps (2 MiB with 4 KiB pages, as on x86-64). Computed,
  // not read from /sys/kernel/mm/transparent_hugepage/hpage_pmd_size: only posix_file_system.cc
  // makes file system calls. A kernel without transparent huge pages refuses the advice, and the
  // memory is a plain anonymous mapping.
  static const size_t bytes = [] {
    const long page = ::sysconf(_SC_PAGESIZE);
    if (page <= 0) return size_t{0};
    const size_t huge = static_cast<size_t>(page) * (static_cast<size_t>(page) / 8);
    // Larger huge pages (16 or 64 KiB base pages: 32 or 512 MiB) would round a block up by more
    // than the faults it saves are worth; such systems fault a tenth as often per byte anyway.
    return huge <= (size_t{2} << 20) ? huge : size_t{0};
  }();
  return bytes;
}

void* MapHugeAligned(size_t bytes, size_t huge) {
  if (bytes == 0 || huge == 0 || bytes % huge != 0 || bytes > SIZE_MAX - huge) return nullptr;
  // Mapped one huge page longer, then trimmed to a huge-page-aligned run of `bytes`: only a range
  // aligned to a huge page, whole inside its mapping, can be backed by one.
  void* raw = ::mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t first = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (first + huge - 1) / huge * huge;
  if (start > first) ::munmap(raw, start - first);
  ::munmap(reinterpret_cast<void*>(start + bytes), huge - (start - first));  // never 0 bytes
  void* block = reinterpret_cast<void*>(start);
  // Advice only: a kernel that has no huge page to give, or has them off, backs it with small pages.
  (void)::madvise(block, bytes, MADV_HUGEPAGE);
  return block;
}

namespace {

size_t MappedLength(size_t bytes) {
  const size_t huge = HugePageBytes();
  return (bytes + huge - 1) / huge * huge;
}

}  // namespace

size_t HugePageBytes() { return kMapLargeBlocks ? TransparentHugePageBytes() : 0; }

bool LargeBlockIsMapped(size_t bytes) {
  return bytes >= kLargeBytesMin && HugePageBytes() != 0 && bytes <= SIZE_MAX - 2 * HugePageBytes();
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

size_t KeptLargeBytes() { return HugePageBytes() == 0 ? 0 : Kept().kept_bytes(); }

void DropKeptLargeBlocks() {
  if (HugePageBytes() != 0) Kept().Drop(/*wait=*/true);
}

void* AllocateLarge(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (!LargeBlockIsMapped(bytes)) return ::operator new(bytes);
  const size_t length = MappedLength(bytes);
  if (void* kept = Kept().Take(length)) return kept;
  void* block = MapHugeAligned(length, HugePageBytes());
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
    const size_t huge = HugePageBytes();
    size_t chunk_bytes = next_chunk_bytes_;
    while (chunk_bytes < bytes + alignment) chunk_bytes *= 2;
    // Whole huge pages once a chunk reaches one (a multiple of the huge page: nothing rounded up).
    const bool large = huge != 0 && chunk_bytes >= huge;
    if (large) chunk_bytes = (chunk_bytes + huge - 1) / huge * huge;
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
