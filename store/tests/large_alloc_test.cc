// Large blocks on transparent huge pages (large_alloc.h): which blocks are mapped on their own,
// that the kernel was asked for huge pages for them, and that the buffers an open at a checkpoint
// fills (ReadBytes, the decoded array) are such blocks.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "format.h"
#include "large_alloc.h"
#include "read_bytes.h"

namespace dbdb {
namespace {

#if defined(__SANITIZE_ADDRESS__)
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

// The huge page size the kernel states (0: none: no transparent huge pages).
size_t StatedHugePageBytes() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
  size_t bytes = 0;
  if (!(in >> bytes)) return 0;
  return bytes;
}

// The huge page size large_alloc.cc computes: what a page table of 8-byte entries maps.
size_t ComputedHugePageBytes() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page * (page / 8);
}

// The VmFlags of the mapping of this process that holds `p` ("" if none does).
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long long lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (line.find("VmFlags:") == 0) {
      if (inside) return line;
      continue;
    }
    if ((head >> std::hex >> lo >> dash >> hi) && dash == '-' && line.find(':') > line.find(' ')) {
      inside = lo <= at && at < hi;
    }
  }
  return "";
}

bool AdvisedHuge(const void* p) { return VmFlagsOf(p).find(" hg") != std::string::npos; }

// Unless AddressSanitizer wants every block from the heap, a block of kLargeBytesMin or more is
// mapped on its own, aligned to a huge page and, where the kernel has transparent huge pages,
// advised MADV_HUGEPAGE; smaller ones, and all of them under AddressSanitizer, come from operator
// new. The size computed is the size the kernel states.
TEST(LargeAlloc, LargeBlocksAreOnAdvisedHugePageMappingsSmallOnesOnTheHeap) {
  const size_t huge = ComputedHugePageBytes();
  const size_t stated = StatedHugePageBytes();
  const bool expect_mapped = !kAsan && huge <= (size_t{64} << 20);
  const bool expect_advised = expect_mapped && stated != 0;
  SCOPED_TRACE("huge page bytes " + std::to_string(huge) + ", stated " + std::to_string(stated) +
               (kAsan ? ", AddressSanitizer" : ""));
  if (expect_mapped && stated != 0) {
    EXPECT_EQ(huge, stated);
  }
  for (size_t bytes : {kLargeBytesMin, size_t{1} << 20, (size_t{5} << 20) + 3}) {
    SCOPED_TRACE(bytes);
    EXPECT_EQ(LargeBlockIsMapped(bytes), expect_mapped);
    auto* block = static_cast<unsigned char*>(AllocateLarge(bytes));
    ASSERT_NE(block, nullptr);
    for (size_t i = 0; i < bytes; i += 4096) block[i] = static_cast<unsigned char>(i);
    block[bytes - 1] = 7;
    if (expect_mapped) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % huge, 0u);
    }
    EXPECT_EQ(AdvisedHuge(block), expect_advised) << VmFlagsOf(block);
    EXPECT_EQ(AdvisedHuge(block + bytes - 1), expect_advised) << VmFlagsOf(block + bytes - 1);
    EXPECT_EQ(block[bytes - 1], 7);
    FreeLarge(block, bytes);
  }
  EXPECT_FALSE(LargeBlockIsMapped(kLargeBytesMin - 1));
  void* small = AllocateLarge(kLargeBytesMin - 1);
  EXPECT_FALSE(AdvisedHuge(small));
  FreeLarge(small, kLargeBytesMin - 1);
  EXPECT_EQ(AllocateLarge(0), nullptr);
}

// What an open at a checkpoint allocates: the record's buffer and its decoded array.
TEST(LargeAlloc, ACheckpointsBufferAndDecodedArrayAreLargeBlocks) {
  const bool expect_advised = !kAsan && StatedHugePageBytes() != 0 && ComputedHugePageBytes() <= (size_t{64} << 20);
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
  EXPECT_EQ(AdvisedHuge(bytes.view().data()), expect_advised) << VmFlagsOf(bytes.view().data());
  EXPECT_EQ(AdvisedHuge(decoded->data()), expect_advised) << VmFlagsOf(decoded->data());
  // A buffer that grows keeps nothing of the old block, and a moved one owns the block.
  bytes.Resize(3 * payload.size());
  bytes.span().back() = 'x';
  ReadBytes moved = std::move(bytes);
  EXPECT_EQ(bytes.size(), 0u);
  EXPECT_EQ(moved.view().back(), 'x');
}

}  // namespace
}  // namespace dbdb
