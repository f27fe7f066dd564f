// VerifiedNodes: a lock-free table of the nodes verified in a mapping (verified_nodes.h).
#include "verified_nodes.h"

#include "dbdb_assert.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <utility>

namespace dbdb {

namespace {
using Word = std::atomic_ref<uint64_t>;
static_assert(Word::is_always_lock_free);
constexpr size_t kLineBytes = 64;  // a set; the mapping is page-aligned
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

void VerifiedNodes::Map() {
  static_assert(kWays * kWords * sizeof(uint64_t) == kLineBytes, "a set is one cache line");
  DBDB_ASSERT(!map_called_);  // once
  map_called_ = true;
  const long page = sysconf(_SC_PAGESIZE);
  if (page < static_cast<long>(kLineBytes) || (page & (page - 1)) != 0) {
    sets_ = 0;
    return;  // no table: every node verified at every use
  }
  page_shift_ = __builtin_ctzl(static_cast<unsigned long>(page));
  // A private anonymous mapping: page-aligned, and zeroed pages the kernel allocates only when
  // touched (an empty slot is all zeros), for every file's first mapping. (calloc would hand a
  // reopen the heap memory the last table freed, and clear all of it first: a millisecond per
  // open at 16 MiB.)
  // No lookup reads a page no insert has written (written_), so each page's first touch is a
  // write and its only fault. On small pages (verified_nodes.h). If even the address space is
  // refused, a smaller table (more nodes verified again), down to no table at all (every node
  // verified at every use): never an exception out of an open.
  for (;;) {
    bytes_ = sets_ * kWays * kWords * sizeof(uint64_t);
    void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory != MAP_FAILED) {
      // Small pages even where the kernel puts all anonymous memory on huge ones (advice: a
      // kernel that refuses it loses nothing).
      (void)madvise(memory, bytes_, MADV_NOHUGEPAGE);
      const size_t pages = (bytes_ + (size_t{1} << page_shift_) - 1) >> page_shift_;  // at least 1
      written_.reset(new (std::nothrow) std::atomic<uint64_t>[(pages + 63) / 64]());
      if (written_ == nullptr) {
        munmap(memory, bytes_);
        break;
      }
      table_ = static_cast<uint64_t*>(memory);
      // A forked child's copy starts empty (which is a valid table) rather than shared
      // copy-on-write, which would copy a page at the parent's next insert into it; and no
      // place in a core dump, which would fault in every page of the table a process never
      // touched. (Advice: a kernel that refuses either loses nothing.)
#ifdef MADV_WIPEONFORK
      (void)madvise(memory, bytes_, MADV_WIPEONFORK);
#endif
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
  std::swap(page_shift_, other.page_shift_);
  std::swap(written_, other.written_);
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
  if (!Written(set)) return 0;  // nothing inserted there: never read a page before it is written
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
  // The way already holding this offset, else an empty one, else the one the offset picks. On a
  // page no insert has written yet every way is empty, and the first touch is the write below
  // (a read first would map the zero page there, and the write fault again).
  size_t way = (ref.offset >> 4) % kWays;
  uint64_t sequence = 0;
  if (Written(set)) {
    for (size_t w = 0; w < kWays; w++) {
      uint64_t held_offset = Word(SlotOf(set, w)[1]).load(std::memory_order_relaxed);
      if (held_offset == ref.offset) {
        way = w;
        break;
      }
      if (held_offset == 0) way = w;
    }
    sequence = Word(SlotOf(set, way)[0]).load(std::memory_order_relaxed);
  }
  uint64_t* slot = SlotOf(set, way);
  if ((sequence & 1) != 0 ||
      !Word(slot[0]).compare_exchange_strong(sequence, sequence + 1, std::memory_order_acquire)) {
    return;  // another thread is writing it (or wrote it since the page was first seen): best effort
  }
  // Release stores: a reader whose acquire load sees one of them sees the odd sequence before it.
  Word(slot[1]).store(ref.offset, std::memory_order_release);
  Word(slot[2]).store(reinterpret_cast<uintptr_t>(mapping), std::memory_order_release);
  Word(slot[3]).store(Info(ref, type), std::memory_order_release);
  Word(slot[0]).store(sequence + 2, std::memory_order_release);
  MarkWritten(set);
  inserted_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace dbdb
