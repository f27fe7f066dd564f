// VerifiedNodes: a lock-free table of the nodes verified in a mapping (verified_nodes.h).
#include "verified_nodes.h"

#include "dbdb_assert.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <utility>

namespace dbdb {

namespace {
using Word = std::atomic_ref<uint64_t>;
static_assert(Word::is_always_lock_free);
constexpr size_t kLineBytes = 64;  // a set; the mapping is page-aligned
}  // namespace

namespace {

// The size of a transparent huge page that a private anonymous mapping advised MADV_HUGEPAGE
// gets where the kernel has one to give (its `enabled` mode is "always" or "madvise"), or 0:
// no such pages (the mode is "never", or the kernel has no transparent huge pages). Read once.
uint64_t AdvisedHugePageBytes() {
  static const uint64_t bytes = [] {
    auto slurp = [](const char* path) {
      std::string text(256, '\0');
      const int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) return std::string();
      const ssize_t n = ::read(fd, text.data(), text.size());
      close(fd);
      text.resize(n > 0 ? static_cast<size_t>(n) : 0);
      return text;
    };
    const std::string mode = slurp("/sys/kernel/mm/transparent_hugepage/enabled");
    if (mode.find("[always]") == std::string::npos && mode.find("[madvise]") == std::string::npos) return uint64_t{0};
    const uint64_t size = std::strtoull(slurp("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").c_str(), nullptr, 10);
    return size != 0 && (size & (size - 1)) == 0 ? size : uint64_t{0};  // a power of two, or none
  }();
  return bytes;
}

// `bytes` of private anonymous memory aligned to `huge` (which divides bytes) and advised onto
// huge pages, or null. The kernel only puts an aligned range on a huge page: map `huge` more and
// give back the ends.
void* MapHuge(size_t bytes, size_t huge) {
  void* raw = mmap(nullptr, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + huge - 1) & ~(uintptr_t{huge} - 1);
  if (aligned > start) munmap(raw, aligned - start);
  if (start + huge > aligned) munmap(reinterpret_cast<void*>(aligned + bytes), start + huge - aligned);
  void* memory = reinterpret_cast<void*>(aligned);
  if (madvise(memory, bytes, MADV_HUGEPAGE) != 0) {
    munmap(memory, bytes);
    return nullptr;
  }
  return memory;
}

}  // namespace

VerifiedNodes::VerifiedNodes(uint64_t budget_bytes) {
  uint64_t slots = std::clamp<uint64_t>(budget_bytes / 128, kMinSlots, kMaxSlots);
  sets_ = 1;
  shift_ = 64;
  while (sets_ * kWays < slots) {
    sets_ *= 2;
    shift_--;
  }
}

void VerifiedNodes::Map(uint64_t file_bytes) {
  static_assert(kWays * kWords * sizeof(uint64_t) == kLineBytes, "a set is one cache line");
  DBDB_ASSERT(!map_called_);  // once
  map_called_ = true;
  // An anonymous mapping: page-aligned, and zeroed pages the kernel allocates only when touched
  // (an empty slot is all zeros), at every open. (calloc would hand a reopen the heap memory the
  // last table freed, and clear all of it first: a millisecond per open at 16 MiB.)
  //
  // On huge pages for a file at least as large as the table, where nearly every page of a table
  // on small pages would come to hold a node anyway: private, advised MADV_HUGEPAGE. A 16 MiB
  // table is then 8 pages and 16 faults (a lookup maps the huge zero page, the insert after it
  // allocates the page), where on small pages it was 4,096 faults, each 10 to 15 us on this
  // project's (virtual) machines: 90 ms of a reader's first gets for every file a compaction
  // installed (verified_nodes.h).
  //
  // Otherwise shared, on small pages, so that a page's first touch is its only fault
  // (verified_nodes.h), and without MAP_NORESERVE: a shared mapping would then be accounted page
  // by page at each first fault, where a refusal is a SIGBUS (inside a mapped read's guard, taken
  // for the file's), rather than once here.
  //
  // If even the address space is refused, a smaller table (more nodes verified again), down to
  // none at all (every node verified at every use): never an exception out of an open.
  for (;;) {
    bytes_ = sets_ * kWays * kWords * sizeof(uint64_t);
    const uint64_t huge = AdvisedHugePageBytes();
    void* memory = nullptr;
    if (huge != 0 && bytes_ >= huge && file_bytes >= bytes_) {
      memory = MapHuge(bytes_, huge);
      huge_pages_ = memory != nullptr;
    }
    if (memory == nullptr) {
      memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
      if (memory == MAP_FAILED) memory = nullptr;
      // Small pages, so that a few lookups do not make a huge page resident where shared memory
      // is on huge pages (a kernel that refuses the advice loses nothing).
      if (memory != nullptr) (void)madvise(memory, bytes_, MADV_NOHUGEPAGE);
    }
    if (memory != nullptr) {
      table_ = static_cast<uint64_t*>(memory);
      // No place in a core dump, which would fault in every page of the table a process never
      // touched.
      (void)madvise(memory, bytes_, MADV_DONTDUMP);
      return;
    }
    if (sets_ * kWays <= kMinSlots) break;
    sets_ /= 2;
    shift_++;
  }
  sets_ = 0;
  bytes_ = 0;
  table_ = nullptr;
}

VerifiedNodes::~VerifiedNodes() {
  if (table_ != nullptr) munmap(table_, bytes_);
}

void VerifiedNodes::Swap(VerifiedNodes& other) {
  std::swap(map_called_, other.map_called_);
  std::swap(huge_pages_, other.huge_pages_);
  std::swap(sets_, other.sets_);
  std::swap(shift_, other.shift_);
  std::swap(bytes_, other.bytes_);
  std::swap(table_, other.table_);
  const uint64_t epoch = epoch_.load(std::memory_order_relaxed);
  epoch_.store(other.epoch_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  other.epoch_.store(epoch, std::memory_order_relaxed);
}

uint8_t VerifiedNodes::Find(NodeRef ref, const FileMapping* mapping) const {
  if (table_ == nullptr) return 0;
  const size_t set = SetOf(ref.offset);
  const uint64_t info = Info(ref, 0);
  for (size_t way = 0; way < kWays; way++) {
    uint64_t* slot = SlotOf(set, way);
    const uint64_t before = Word(slot[0]).load(std::memory_order_acquire);
    if (before & 1) continue;  // being written
    // Acquire loads (plain loads on x86): if one sees a writer's word, the sequence load after it
    // sees that writer's odd sequence or later. No fences, so TSan follows all of it.
    const uint64_t offset = Word(slot[1]).load(std::memory_order_acquire);
    const uint64_t map = Word(slot[2]).load(std::memory_order_acquire);
    const uint64_t held = Word(slot[3]).load(std::memory_order_acquire);
    if (Word(slot[0]).load(std::memory_order_relaxed) != before) continue;  // changed while read
    if (offset == ref.offset && map == reinterpret_cast<uintptr_t>(mapping) && (held & ~uint64_t{0xFF}) == info &&
        (held & 0xFF) != 0) {
      return static_cast<uint8_t>(held & 0xFF);
    }
  }
  return 0;
}

void VerifiedNodes::Insert(NodeRef ref, const FileMapping* mapping, uint8_t type) {
  if (table_ == nullptr) return;
  const size_t set = SetOf(ref.offset);
  // The way already holding this offset, else an empty one, else the one the offset picks.
  size_t way = (ref.offset >> 4) % kWays;
  for (size_t w = 0; w < kWays; w++) {
    uint64_t held_offset = Word(SlotOf(set, w)[1]).load(std::memory_order_relaxed);
    if (held_offset == ref.offset) {
      way = w;
      break;
    }
    if (held_offset == 0) way = w;
  }
  uint64_t* slot = SlotOf(set, way);
  uint64_t sequence = Word(slot[0]).load(std::memory_order_relaxed);
  if ((sequence & 1) != 0 ||
      !Word(slot[0]).compare_exchange_strong(sequence, sequence + 1, std::memory_order_acquire)) {
    return;  // another thread is writing it: best effort
  }
  // Release stores: a reader whose acquire load sees one of them sees the odd sequence before it.
  Word(slot[1]).store(ref.offset, std::memory_order_release);
  Word(slot[2]).store(reinterpret_cast<uintptr_t>(mapping), std::memory_order_release);
  Word(slot[3]).store(Info(ref, type), std::memory_order_release);
  Word(slot[0]).store(sequence + 2, std::memory_order_release);
  inserted_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace dbdb
