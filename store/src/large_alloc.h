// Large allocations backed by transparent huge pages where the kernel offers them.
//
// Opening a database reads its newest checkpoint (up to a few MiB) into memory and decodes it into
// an array of changes. In a fresh process every page of those buffers is touched for the first
// time, and on a virtual machine each first touch of a 4 KiB page is a fault the hypervisor takes
// part in: on the machine dbdb is measured on, reading a 952 KB checkpoint into a new buffer took
// 3.6-3.7 ms (3.8 us a KiB, most of it faults), and 0.32-0.43 ms into a buffer on a huge page
// (one fault for 2 MiB); writing 4 MB of fresh memory, 15 ms against 0.34-0.48 ms. So a block of
// kLargeBytesMin or more is mapped on its own, aligned to the huge page size (2 MiB with 4 KiB
// pages) and advised MADV_HUGEPAGE; smaller blocks come from operator new. The same holds for a log overlay's arena
// and sorted array, which grow by doubling while a writer commits.
//
// Memory: a large block takes whole huge pages once touched, so it holds up to a huge page more
// than it asked for (1.75 MiB at most, for a 256 KiB block; nothing more when the kernel has no
// huge page to give, or transparent huge pages are off or absent: then it is a plain anonymous
// mapping, its pages touched one by one as before). The
// blocks that use it are few and short-lived, or belong to a log overlay (its checkpoint, its
// sorted array, its arena's larger blocks), which holds megabytes already when they are used.
//
// Under AddressSanitizer every block comes from operator new, so that its overflows are caught.
#pragma once

#include <cstddef>
#include <memory>
#include <memory_resource>
#include <new>

namespace dbdb {

inline constexpr size_t kLargeBytesMin = size_t{256} << 10;

// A block of at least `bytes` bytes (0: null), aligned for any scalar type, contents unspecified.
// Throws std::bad_alloc when memory is exhausted, as operator new does.
void* AllocateLarge(size_t bytes);
// Frees a block AllocateLarge(bytes) returned (the same `bytes`).
void FreeLarge(void* block, size_t bytes) noexcept;
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

// A memory resource over AllocateLarge: the upstream of an arena whose blocks grow (a monotonic
// buffer resource doubles them), so that its large blocks are on huge pages.
class LargeMemoryResource final : public std::pmr::memory_resource {
 private:
  void* do_allocate(size_t bytes, size_t alignment) override;
  void do_deallocate(void* p, size_t bytes, size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};
// The one instance (it holds no state).
std::pmr::memory_resource* LargeResource();

}  // namespace dbdb
