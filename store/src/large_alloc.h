// Large allocations backed by transparent huge pages where the kernel offers them.
//
// Opening a database reads its newest checkpoint (up to a few MiB) into memory and decodes it into
// an array of changes. In a fresh process every page of those buffers is touched for the first
// time, and on a virtual machine each first touch of a 4 KiB page is a fault the hypervisor takes
// part in: on the machine dbdb is measured on, reading a 952 KB checkpoint into a new buffer took
// 3.6-3.7 ms (3.8 us a KiB, most of it faults), and 0.32-0.43 ms into a buffer on a huge page
// (one fault for 2 MiB). So a block of kLargeBytesMin or more is mapped on its own, aligned to the
// huge page size (2 MiB with 4 KiB pages) and advised MADV_HUGEPAGE; smaller blocks come from
// operator new. The same helps a log overlay's arena and sorted array, which grow by doubling
// while a writer commits.
//
// Memory: a large block takes whole huge pages once touched, so it holds up to a huge page less
// one byte more than it asked for (1.75 MiB at most, for a 256 KiB block; huge pages larger than
// 2 MiB, as with 16 or 64 KiB base pages, are not used). Nothing more when the kernel has no huge
// page to give, or transparent huge pages are off or absent: then the block is a plain anonymous
// mapping, its pages touched one by one as before. The blocks that use it are few: four at most a
// log overlay (a checkpoint's bytes, array and prefixes, and its sorted array), and a read of a
// large record one while it runs. An arena (LargeArena) takes chunks of whole huge pages, which
// round nothing up.
//
// Reuse: while a database handle or snapshot is alive, a freed block is kept, not unmapped, for
// the next block of its mapped length, up to kKeptBytesMax (64 MiB) in all: a handle's log overlay (its arena's chunks and its arrays, tens of
// MiB at a million keys) is freed at each compaction and built again by the next, and each huge
// page of a fresh block costs a fault and 2 MiB of zeros written by the kernel, which took 65% of
// the time a compaction spent building its copied log's overlay in a profile of a 1M-key fill
// (docs/PERFORMANCE.md, stop 51). So a process holds up to 64 MiB more than it uses while it has
// a handle or snapshot open, and none once the last is gone.
//
// Latency: with the kernel's transparent_hugepage/defrag at "madvise" (a common default), a fault
// in an advised block may compact memory before it is served: milliseconds, where memory is
// fragmented. A log overlay takes such faults under its lock, while it applies a commit or merges.
//
// Under AddressSanitizer every block comes from operator new, so that its overflows are caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace dbdb {

inline constexpr size_t kLargeBytesMin = size_t{256} << 10;
// Freed mapped blocks are kept for reuse, up to this many bytes and blocks in the process.
inline constexpr size_t kKeptBytesMax = size_t{64} << 20;
inline constexpr size_t kKeptBlocksMax = 32;

// A block of at least `bytes` bytes (0: null), aligned for any scalar type, contents unspecified.
// Throws std::bad_alloc when memory is exhausted, as operator new does.
void* AllocateLarge(size_t bytes);
// Frees a block AllocateLarge(bytes) returned (the same `bytes`). While a LargeBlocksUser exists,
// a mapped block is kept for the next AllocateLarge of the same mapped length, the blocks kept
// longest unmapped to keep within kKeptBytesMax and kKeptBlocksMax; else it is unmapped.
void FreeLarge(void* block, size_t bytes) noexcept;
// While one exists (a database handle or a snapshot holds one), freed blocks are kept for reuse;
// when the last is destroyed, the blocks kept are unmapped.
class LargeBlocksUser {
 public:
  LargeBlocksUser();
  ~LargeBlocksUser();
  LargeBlocksUser(const LargeBlocksUser&) = delete;
  LargeBlocksUser& operator=(const LargeBlocksUser&) = delete;
};
// The bytes of the freed blocks kept for reuse, and unmapping them all (for tests: both wait for
// the cache's lock, so not in a child forked while another thread may have held it).
size_t KeptLargeBytes();
void DropKeptLargeBlocks();
// True if AllocateLarge(bytes) maps the block on its own (for tests).
bool LargeBlockIsMapped(size_t bytes);

// A std allocator over AllocateLarge, for arrays that can grow large (the decoded checkpoint).
template <typename T>
struct LargeAllocator {
  using value_type = T;
  LargeAllocator() = default;
  template <typename U>
  LargeAllocator(const LargeAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_array_new_length();
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
    return static_cast<T*>(AllocateLarge(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { FreeLarge(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const LargeAllocator<U>&) const noexcept { return true; }
};

// The size of a huge page blocks are aligned to (2 MiB with 4 KiB pages), or 0 when large blocks
// come from operator new (under AddressSanitizer, or where huge pages are larger than 2 MiB).
size_t HugePageBytes();

// The size of this machine's transparent huge pages (2 MiB with 4 KiB pages), or 0 where they
// would be larger than 2 MiB; whether the kernel gives any is its own (advice only).
size_t TransparentHugePageBytes();

// `bytes` (a multiple of `huge`) of private anonymous memory, zero pages allocated as they are
// touched, aligned to `huge` and advised onto huge pages; null if the address space is refused
// (or the sizes are not as required). Unmapped with munmap(block, bytes).
void* MapHugeAligned(size_t bytes, size_t huge);

// A bump allocator whose memory is freed all at once, when it is destroyed (a log overlay's keys,
// values and versions). Its chunks double from 64 KiB: from operator new while smaller than a huge
// page, then whole huge pages from AllocateLarge (2, 4, then 8 MiB a chunk, kChunkBytesMax), so that
// no chunk is rounded up to a huge page it does not fill. Not thread-safe.
class LargeArena {
 public:
  LargeArena() = default;
  ~LargeArena();
  LargeArena(const LargeArena&) = delete;
  LargeArena& operator=(const LargeArena&) = delete;

  // `bytes` bytes aligned to `alignment` (a power of two, at most 16). Throws std::bad_alloc.
  void* Allocate(size_t bytes, size_t alignment);
  // The bytes of every chunk taken (for tests).
  size_t chunk_bytes() const;

 private:
  struct Chunk {
    char* data;
    size_t bytes;
    bool large;  // from AllocateLarge, else operator new
  };
  static constexpr size_t kFirstChunkBytes = size_t{64} << 10;
  // At most 8 MiB a chunk, so that an overlay's chunks are few sizes that freed ones (kept for
  // reuse up to kKeptBytesMax) fit: a 32 MiB chunk was never kept, and faulted in fresh each time.
  static constexpr size_t kChunkBytesMax = size_t{8} << 20;
  std::vector<Chunk> chunks_;
  char* next_ = nullptr;  // in the newest chunk
  size_t left_ = 0;       // bytes after next_ in it
  size_t next_chunk_bytes_ = kFirstChunkBytes;
};

}  // namespace dbdb
