// Large allocations on transparent huge pages (large_alloc.h).
#include "large_alloc.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

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

// The size of a transparent huge page, as the kernel states it; 0 when it does not (no THP), or
// states one too small or too large to be worth aligning to (then blocks come from operator new).
size_t ReadHugePageBytes() {
  int fd = ::open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[32] = {};
  ssize_t n = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  char* end = nullptr;
  unsigned long long bytes = std::strtoull(text, &end, 10);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (end == text || page <= 0 || bytes <= static_cast<unsigned long long>(page) || bytes > (uint64_t{64} << 20) ||
      (bytes & (bytes - 1)) != 0) {
    return 0;
  }
  return static_cast<size_t>(bytes);
}

size_t HugePageBytes() {
  static const size_t bytes = kMapLargeBlocks ? ReadHugePageBytes() : 0;
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
