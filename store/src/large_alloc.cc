// Large allocations on transparent huge pages (large_alloc.h).
#include "large_alloc.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace dbdb {

namespace {

#if defined(__SANITIZE_ADDRESS__)
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

// The size of a huge page where the kernel offers them: what one page table of 8-byte entries
// maps (2 MiB with 4 KiB pages, as on x86-64). Computed, not read from
// /sys/kernel/mm/transparent_hugepage/hpage_pmd_size: only posix_file_system.cc makes file system
// calls. 0 (blocks from operator new) when larger than worth aligning to. A kernel without
// transparent huge pages refuses the advice, and the block is a plain anonymous mapping.
size_t HugePageBytes() {
  static const size_t bytes = [] {
    if (!kMapLargeBlocks) return size_t{0};
    const long page = ::sysconf(_SC_PAGESIZE);
    if (page <= 0) return size_t{0};
    const size_t huge = static_cast<size_t>(page) * (static_cast<size_t>(page) / 8);
    return huge <= (size_t{64} << 20) ? huge : size_t{0};
  }();
  return bytes;
}

size_t MappedLength(size_t bytes) {
  const size_t huge = HugePageBytes();
  return (bytes + huge - 1) / huge * huge;
}

}  // namespace

bool LargeBlockIsMapped(size_t bytes) {
  return bytes >= kLargeBytesMin && HugePageBytes() != 0 && bytes <= SIZE_MAX - 2 * HugePageBytes();
}

void* AllocateLarge(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (!LargeBlockIsMapped(bytes)) return ::operator new(bytes);
  const size_t huge = HugePageBytes();
  const size_t length = MappedLength(bytes);
  // Mapped one huge page longer, then trimmed to a huge-page-aligned run of `length` bytes: only a
  // range aligned to a huge page, whole inside its mapping, can be backed by one.
  void* raw = ::mmap(nullptr, length + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t first = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (first + huge - 1) / huge * huge;
  if (start > first) ::munmap(raw, start - first);
  const size_t tail = huge - (start - first);
  if (tail > 0) ::munmap(reinterpret_cast<void*>(start + length), tail);
  void* block = reinterpret_cast<void*>(start);
  // Advice only: a kernel that has no huge page to give, or has them off, backs it with small pages.
  (void)::madvise(block, length, MADV_HUGEPAGE);
  return block;
}

void FreeLarge(void* block, size_t bytes) noexcept {
  if (block == nullptr) return;
  if (!LargeBlockIsMapped(bytes)) {
    ::operator delete(block);
    return;
  }
  ::munmap(block, MappedLength(bytes));
}

void* LargeMemoryResource::do_allocate(size_t bytes, size_t alignment) {
  // Operator new's alignment, or a huge page's for a mapped block.
  if (alignment > __STDCPP_DEFAULT_NEW_ALIGNMENT__) throw std::bad_alloc();
  void* block = AllocateLarge(bytes == 0 ? 1 : bytes);
  return block;
}

void LargeMemoryResource::do_deallocate(void* p, size_t bytes, size_t /*alignment*/) {
  FreeLarge(p, bytes == 0 ? 1 : bytes);
}

std::pmr::memory_resource* LargeResource() {
  static LargeMemoryResource resource;
  return &resource;
}

}  // namespace dbdb
