// Large blocks (large_alloc.h): which blocks are mapped on their own, that they are on small pages
// (advised MADV_NOHUGEPAGE, never MADV_HUGEPAGE), that freed ones are kept for reuse, and that the
// buffers an open at a checkpoint fills (ReadBytes, the decoded array) are such blocks.
#include <gtest/gtest.h>

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "format.h"
#include "large_alloc.h"
#include "read_bytes.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::AdvisedHuge;
using testing::AdvisedSmall;
using testing::KernelTakesNoHugePageAdvice;
using testing::VmFlagsOf;

#if defined(DBDB_SANITIZER_ADDRESS) || defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

// Whether operator new is glibc's malloc (not a sanitizer's allocator, which aligns its blocks
// otherwise).
#if defined(DBDB_SANITIZER_THREAD) || defined(DBDB_SANITIZER_ADDRESS)
constexpr bool kGlibcHeap = false;
#else
constexpr bool kGlibcHeap = !kAsan;
#endif

// Unless AddressSanitizer wants every block from the heap, a block of kLargeBytesMin or more is
// mapped on its own, whole units of kLargeBlockUnitBytes aligned to one, advised MADV_NOHUGEPAGE
// where the kernel takes the advice (it has transparent huge pages), and never MADV_HUGEPAGE (a
// fresh huge page cost up to 20 ms to fault in: large_alloc.h); smaller ones, and all of them
// under AddressSanitizer, come from operator new.
TEST(LargeAlloc, LargeBlocksAreOnMappingsOfTheirOwnOnSmallPagesSmallOnesOnTheHeap) {
  const bool expect_mapped = !kAsan;
  const bool expect_advised = expect_mapped && KernelTakesNoHugePageAdvice();
  SCOPED_TRACE(kAsan ? "AddressSanitizer" : "");
  for (size_t bytes : {kLargeBytesMin, size_t{1} << 20, (size_t{5} << 20) + 3}) {
    SCOPED_TRACE(bytes);
    EXPECT_EQ(LargeBlockIsMapped(bytes), expect_mapped);
    auto* block = static_cast<unsigned char*>(AllocateLarge(bytes));
    ASSERT_NE(block, nullptr);
    for (size_t i = 0; i < bytes; i += 4096) block[i] = static_cast<unsigned char>(i);
    block[bytes - 1] = 7;
    if (expect_mapped) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % kLargeBlockUnitBytes, 0u);
    }
    EXPECT_EQ(AdvisedSmall(block), expect_advised) << VmFlagsOf(block);
    EXPECT_EQ(AdvisedSmall(block + bytes - 1), expect_advised) << VmFlagsOf(block + bytes - 1);
    EXPECT_FALSE(AdvisedHuge(block)) << VmFlagsOf(block);
    EXPECT_EQ(block[bytes - 1], 7);
    FreeLarge(block, bytes);
  }
  EXPECT_FALSE(LargeBlockIsMapped(kLargeBytesMin - 1));
  void* small = AllocateLarge(kLargeBytesMin - 1);
  ASSERT_NE(small, nullptr);
  FreeLarge(small, kLargeBytesMin - 1);
  EXPECT_EQ(AllocateLarge(0), nullptr);
  EXPECT_EQ(LargeBlockUnitBytes(), expect_mapped ? kLargeBlockUnitBytes : 0u);
}

// True if no page of [p, p + bytes) is mapped in this process any more.
bool Unmapped(const void* p, size_t bytes) {
  std::vector<unsigned char> pages(bytes / 4096 + 1);
  return mincore(const_cast<void*>(p), bytes, pages.data()) != 0 && errno == ENOMEM;
}

// While a database handle or snapshot (a LargeBlocksUser) is alive, a freed mapped block is kept
// for the next allocation of its mapped length (a log overlay's arena and arrays are freed and
// allocated again at every compaction; each page of a fresh block costs a fault and a page of
// zeros), never handed out for another length; the blocks kept stay within kKeptBytesMax, the
// oldest unmapped first; with no user none is kept, and the last user's end unmaps them all.
TEST(LargeAlloc, AFreedBlockIsKeptForTheNextOfItsSizeWithinABound) {
  if (LargeBlockUnitBytes() == 0) GTEST_SKIP() << "large blocks come from operator new in this build";
  const size_t unit = LargeBlockUnitBytes();
  const size_t bytes = 3 * unit / 2;  // two units mapped
  DropKeptLargeBlocks();              // what earlier tests in this process left
  {
    // No user: freed is unmapped.
    auto* lone = static_cast<char*>(AllocateLarge(bytes));
    lone[0] = 'l';
    FreeLarge(lone, bytes);
    EXPECT_EQ(KeptLargeBytes(), 0u);
    EXPECT_TRUE(Unmapped(lone, 2 * unit)) << "kept with no handle or snapshot alive";
  }
  auto user = std::make_unique<LargeBlocksUser>();
  auto* a = static_cast<char*>(AllocateLarge(bytes));
  a[0] = 'a';
  FreeLarge(a, bytes);
  EXPECT_EQ(KeptLargeBytes(), 2 * unit);
  void* other = AllocateLarge(unit / 2);  // one unit: not the kept block
  EXPECT_NE(other, a);
  FreeLarge(other, unit / 2);
  auto* b = static_cast<char*>(AllocateLarge(bytes - 100));  // the same mapped length
  EXPECT_EQ(b, a) << "not reused";
  EXPECT_EQ(b[0], 'a');
  FreeLarge(b, bytes - 100);
  // More than the bound: the oldest are unmapped, the newest kept.
  std::vector<char*> blocks;
  for (size_t i = 0; i < kKeptBytesMax / (2 * unit) + 8; i++) {
    blocks.push_back(static_cast<char*>(AllocateLarge(bytes)));
    blocks.back()[0] = 'x';
  }
  for (char* block : blocks) FreeLarge(block, bytes);
  EXPECT_LE(KeptLargeBytes(), kKeptBytesMax);
  EXPECT_TRUE(Unmapped(blocks.front(), 2 * unit)) << "the oldest kept past the bound";
  EXPECT_FALSE(Unmapped(blocks.back(), 2 * unit)) << "the newest not kept";
  char* big = static_cast<char*>(AllocateLarge(kKeptBytesMax + 1));
  big[0] = 'y';
  FreeLarge(big, kKeptBytesMax + 1);
  EXPECT_TRUE(Unmapped(big, kKeptBytesMax)) << "a block larger than the bound kept";
  EXPECT_LE(KeptLargeBytes(), kKeptBytesMax);
  // The last user gone: nothing kept.
  user.reset();
  EXPECT_EQ(KeptLargeBytes(), 0u);
  EXPECT_TRUE(Unmapped(blocks.back(), 2 * unit)) << "kept after the last user";
}

// An array that grows past kLargeBytesMin moves from the heap to a mapped block and keeps its
// contents on the way.
TEST(LargeAlloc, AnArrayGrowsFromTheHeapOntoAMappedBlock) {
  std::vector<uint64_t, LargeAllocator<uint64_t>> words;
  for (uint64_t i = 0; i < 300000; i++) words.push_back(i * 7);
  for (uint64_t i = 0; i < words.size(); i++) ASSERT_EQ(words[i], i * 7) << i;
  if (LargeBlockIsMapped(words.capacity() * sizeof(uint64_t))) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(words.data()) % kLargeBlockUnitBytes, 0u);
  }
}

// A buffer shrunk and then destroyed, or moved over, frees the block it allocated (the size it
// allocated, not the size it holds now: a large block freed as a small one would be handed to
// operator delete, which aborts).
TEST(LargeAlloc, AShrunkBufferFreesTheBlockItAllocated) {
  for (int round = 0; round < 3; round++) {
    ReadBytes bytes;
    bytes.Resize(size_t{3} << 20);
    bytes.span().back() = 'x';
    bytes.Resize(100);
    EXPECT_EQ(bytes.size(), 100u);
    if (round == 1) bytes = ReadBytes();
    if (round == 2) {
      ReadBytes other;
      other.Resize(kLargeBytesMin + 1);
      bytes = std::move(other);
      EXPECT_EQ(bytes.size(), kLargeBytesMin + 1);
    }
  }
}

// The arena's chunks: from the heap while smaller than a unit (kLargeBlockUnitBytes), then whole
// units, on small pages; every allocation aligned as asked and inside a chunk.
TEST(LargeAlloc, AnArenasChunksAreHeapBlocksThenWholeUnits) {
  const size_t unit = LargeBlockUnitBytes();
  const bool advised = unit != 0 && KernelTakesNoHugePageAdvice();
  LargeArena arena;
  size_t chunks_before = 0, allocated = 0;
  std::vector<size_t> chunk_sizes;
  for (int i = 0; i < 200000; i++) {
    const size_t bytes = 1 + static_cast<size_t>(i % 97) * 3;
    const size_t alignment = size_t{1} << (i % 5);
    auto* p = static_cast<unsigned char*>(arena.Allocate(bytes, alignment));
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u);
    p[0] = 1;
    p[bytes - 1] = 2;
    allocated += bytes;
    if (arena.chunk_bytes() != chunks_before) {  // p opens a new chunk
      const size_t chunk = arena.chunk_bytes() - chunks_before;
      chunks_before = arena.chunk_bytes();
      chunk_sizes.push_back(chunk);
      SCOPED_TRACE("chunk of " + std::to_string(chunk));
      if (unit != 0 && chunk >= unit) {
        EXPECT_EQ(chunk % unit, 0u);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % unit, 0u);
      } else if (unit != 0 && kGlibcHeap) {
        // From the heap, not mapped on its own (glibc's blocks start past a header: never on a
        // unit's boundary), and not advised. (ThreadSanitizer's
        // allocator may hand out a 64 KiB block on one.)
        EXPECT_NE(reinterpret_cast<uintptr_t>(p) % unit, 0u);
      }
      EXPECT_EQ(AdvisedSmall(p), advised && chunk >= unit) << VmFlagsOf(p);
      EXPECT_FALSE(AdvisedHuge(p)) << VmFlagsOf(p);
    }
  }
  ASSERT_GE(chunk_sizes.size(), 5u);
  EXPECT_EQ(chunk_sizes.front(), size_t{64} << 10);
  // Doubling chunks: what was taken is at most about twice what was asked for.
  EXPECT_LE(arena.chunk_bytes(), 2 * allocated + (size_t{64} << 10) + unit);
  if (unit != 0) {
    EXPECT_GE(chunk_sizes.back(), unit);
  }
  // Never more than 8 MiB a chunk: few sizes, which the next arena's chunks take again (below).
  for (size_t chunk : chunk_sizes) EXPECT_LE(chunk, size_t{8} << 20);
}

// An arena's chunks, freed with it, are what the next arena of about its size is built from (a
// handle's log overlay is dropped and built again at each compaction): its pages are not
// faulted in and zeroed again.
TEST(LargeAlloc, ANewArenaTakesTheChunksTheLastOneFreed) {
  if (LargeBlockUnitBytes() == 0) GTEST_SKIP() << "large blocks come from operator new in this build";
  DropKeptLargeBlocks();
  LargeBlocksUser user;  // as a database handle holds one
  auto fill = [](LargeArena& arena) {
    for (int i = 0; i < 300000; i++) static_cast<char*>(arena.Allocate(100, 8))[0] = 1;  // 30 MB
  };
  size_t first_chunks = 0;
  {
    LargeArena arena;
    fill(arena);
    first_chunks = arena.chunk_bytes();
  }
  const size_t kept = KeptLargeBytes();
  EXPECT_GE(kept, first_chunks - (size_t{2} << 20)) << "the freed chunks were not kept";
  {
    LargeArena arena;
    fill(arena);
    EXPECT_EQ(arena.chunk_bytes(), first_chunks);
    EXPECT_LE(KeptLargeBytes(), kept - (first_chunks - (size_t{2} << 20))) << "the kept chunks were not taken";
  }
}

// What an open at a checkpoint allocates: the record's buffer and its decoded array.
TEST(LargeAlloc, ACheckpointsBufferAndDecodedArrayAreLargeBlocks) {
  const bool expect_advised = !kAsan && KernelTakesNoHugePageAdvice();
  std::vector<format::BatchChange> changes;
  std::vector<std::string> keys;
  for (int i = 0; i < 40000; i++) keys.push_back("key" + std::to_string(100000 + i));
  for (const std::string& k : keys) changes.push_back(format::BatchChange{k, std::string_view("value")});
  const std::string payload = format::EncodeBatch(changes);
  ReadBytes bytes;
  bytes.Resize(payload.size());
  std::copy(payload.begin(), payload.end(), bytes.span().begin());
  auto decoded = format::DecodeLargeBatch(100, bytes.view());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_EQ(decoded->size(), changes.size());
  EXPECT_EQ(decoded->back().key, keys.back());
  EXPECT_GE(payload.size(), kLargeBytesMin);
  EXPECT_GE(decoded->capacity() * sizeof(format::BatchChange), kLargeBytesMin);
  EXPECT_EQ(AdvisedSmall(bytes.view().data()), expect_advised) << VmFlagsOf(bytes.view().data());
  EXPECT_EQ(AdvisedSmall(decoded->data()), expect_advised) << VmFlagsOf(decoded->data());
  // A buffer that grows keeps nothing of the old block, and a moved one owns the block.
  bytes.Resize(3 * payload.size());
  bytes.span().back() = 'x';
  ReadBytes moved = std::move(bytes);
  EXPECT_EQ(bytes.size(), 0u);
  EXPECT_EQ(moved.view().back(), 'x');
}

}  // namespace
}  // namespace dbdb
