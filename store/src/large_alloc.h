// Large allocations, mapped on their own and kept for reuse.
//
// Opening a database reads its newest checkpoint (up to a few MiB) into memory and decodes it into
// an array of changes; a log overlay's arena and sorted array grow while a writer commits, and are
// freed and built again at every compaction. In a fresh process every page of those buffers is
// touched for the first time, and on a virtual machine each first touch is a fault the hypervisor
// may take part in. So a block of kLargeBytesMin or more is mapped on its own (a whole number of
// kLargeBlockUnitBytes, 2 MiB, aligned to one), and a freed one is kept for the next block of its
// mapped length (below), whose pages are then resident already. Smaller blocks come from operator
// new.
//
// Small pages: every block is advised MADV_NOHUGEPAGE, so that it is on small pages whatever the
// kernel's transparent huge page mode. Stops 38 to 51 put these blocks (and the verified-node
// table, verified_nodes.h) on huge pages, which then faulted in 2 MiB for 0.3-0.4 ms. On the
// machine dbdb is measured on, a fresh huge page came to cost 10-20 ms in a process that started
// after the machine had been idle for a few seconds, and 0.25-0.33 ms otherwise: its balloon
// driver reports free memory to the hypervisor (free page reporting, which hands back free blocks
// of 2 MiB and up), which must then give each small page of a huge one back at its first touch. A
// small page cost 1.5-3 us (0.8-1.6 ms for 2 MiB) either way. A 1M-key fill after 8 s idle ran at
// 402k-570k puts a second with huge pages and 601k-702k with this advice (four alternations;
// docs/PERFORMANCE.md, stop 52).
//
// Memory: a block takes whole units of address space but only the pages it touches; what
// is kept counts whole units. (Blocks are still aligned to a unit, which only huge pages needed:
// it costs a fresh block two munmap calls to trim its mapping. Until stop 52, systems whose huge
// pages are larger than 2 MiB, with 16 or 64 KiB base pages, took large blocks from operator new;
// now they are mapped and kept there too.)
//
// Reuse: while a database handle or snapshot is alive, a freed block is kept, not unmapped, for
// the next block of its mapped length, up to kKeptBytesMax (64 MiB) and kKeptBlocksMax blocks in
// all, the oldest unmapped to make room: a handle's log overlay (its arena's chunks and its arrays,
// tens of MiB at a million keys) is freed at each compaction and built again by the next, and the
// kernel zeroing fresh pages took 65% of the time a compaction spent building its copied log's
// overlay in a profile of a 1M-key fill (docs/PERFORMANCE.md, stop 51). So a process holds up to
// 64 MiB more than it uses while it has a handle or snapshot open, and none once the last is gone.
//
// Under AddressSanitizer every block comes from operator new, so that its overflows are caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace dbdb {

inline constexpr size_t kLargeBytesMin = size_t{256} << 10;
// A mapped block's length and alignment are whole multiples of this.
inline constexpr size_t kLargeBlockUnitBytes = size_t{2} << 20;
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

// The unit mapped blocks are made of (kLargeBlockUnitBytes), or 0 when large blocks come from
// operator new (under AddressSanitizer).
size_t LargeBlockUnitBytes();

// `bytes` (a multiple of `unit`) of private anonymous memory, zero pages allocated as they are
// touched, aligned to `unit` and advised MADV_NOHUGEPAGE (above); null if the address space is
// refused (or the sizes are not as required). Unmapped with munmap(block, bytes).
void* MapAligned(size_t bytes, size_t unit);

// A bump allocator whose memory is freed all at once, when it is destroyed (a log overlay's keys,
// values and versions). Its chunks double from 64 KiB: from operator new while smaller than a unit
// (kLargeBlockUnitBytes), then whole units from AllocateLarge (2, 4, then 8 MiB a chunk,
// kChunkBytesMax), so that no chunk is rounded up to a unit it does not fill. Not thread-safe.
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
