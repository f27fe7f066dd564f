// VerifiedNodes: which mapped nodes this process has verified (I5: a node's checksum and structure
// are checked once per mapping, before its first use), asked on every node a lookup visits.
//
// A fixed table, set-associative (two ways a set, each set one 64-byte cache line), read without
// a lock: each slot is a seqlock (an odd sequence while a writer fills it; a reader that sees the
// sequence change, or odd, takes the slot as empty). A slot holds the node's offset, the mapping
// that verified it, its length and record type, and the epoch of Clear it belongs to. So a lookup
// is one hash and one cache line, where a mutex and a node-based hash map took two or three misses.
//
// It only ever answers "verified" for exactly the (offset, length, mapping, epoch) inserted: a
// reader that loses a race, or a slot another node evicted, answers "not verified", and the node
// is verified again. Inserts are best effort (one that finds its slot being written gives up).
//
// Memory: the table is sized from the budget (budget_bytes / 128 slots of 32 bytes, from 4,096 to
// 4M slots) and mapped anonymously, zeroed without being touched, so only the pages used cost
// resident memory. If the mapping fails it is made smaller, down to no table (every use verifies).
//
// Two kinds of pages:
// - For a file at least as large as the table (nearly every page of the table would come to hold
//   a node), where the kernel has transparent huge pages for memory that asks (its mode "always"
//   or "madvise"): private, aligned to and advised onto huge pages (MADV_HUGEPAGE). A 16 MiB table
//   is then 8 pages, and a reader's first lookups fault 16 times (a lookup maps the huge zero
//   page, the insert after it allocates the page) where small pages took 4,096 faults: each 10 to
//   15 us on this project's virtual machines, 60 to 90 ms of a reader's first gets on every file
//   a compaction installed. Where the kernel cannot find a huge page at the fault, it falls back
//   to small pages there (each then faulting twice, as below). A forked child gets a
//   copy-on-write copy of the table: a write in either copies a 2 MiB page.
// - Otherwise shared (MAP_SHARED | MAP_ANONYMOUS) on small pages (MADV_NOHUGEPAGE), not private:
//   a page's first touch is a lookup, a read, and in a private mapping a read maps the kernel's
//   zero page, so the insert after it faulted a second time, copied the page and flushed the old
//   entry from every CPU running one of the process's threads (an interrupt to the reader's CPU
//   for each page a background compaction's warm-up touched, and the other way round). A shared
//   page is allocated at the first touch, read or write, and mapped writable: one fault a page
//   where the hardware sets a page's dirty bit itself (x86-64; most arm64). Its memory counts as
//   shared memory (Shmem). A forked child shares the pages of the tables that existed at the fork,
//   which no correct program touches there (db.h: a parent's handle refuses reads in a child, and
//   its snapshots must not be used): their pages stay allocated until the child too has unmapped
//   them (destroying its copy of the handle, exiting or exec'ing), as do the parent's mappings of
//   the file (db.h).
// Either way the table is left out of core dumps.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "node.h"

namespace dbdb {

class FileMapping;

class VerifiedNodes {
 public:
  // A table of budget_bytes / 128 slots (within bounds), not yet mapped: until Map, every Find
  // answers 0 and every Insert is dropped.
  explicit VerifiedNodes(uint64_t budget_bytes);
  ~VerifiedNodes();
  VerifiedNodes(const VerifiedNodes&) = delete;
  VerifiedNodes& operator=(const VerifiedNodes&) = delete;

  // Maps the table for a file of `file_bytes`, which picks its pages (above). Once, before any
  // other thread uses this object (the owner publishes it after, with the file's mapping).
  void Map(uint64_t file_bytes);
  // Whether Map has run (whether it mapped a table or not).
  bool mapped() const { return map_called_; }
  // The record type verified at `ref` in `mapping` since the last Clear, or 0 if none.
  uint8_t Find(NodeRef ref, const FileMapping* mapping) const;
  void Insert(NodeRef ref, const FileMapping* mapping, uint8_t type);
  // Fetches the cache line a Find of `offset` will read (a hint: it reads nothing).
  void Prefetch(uint64_t offset) const {
    if (table_ != nullptr) __builtin_prefetch(SlotOf(SetOf(offset), 0));
  }
  // Forgets every node (a new epoch: nothing inserted before matches again).
  void Clear() { epoch_.fetch_add(1, std::memory_order_acq_rel); }
  // How many inserts into this object have taken a slot (Swap exchanges the tables, not this).
  uint64_t inserted() const { return inserted_.load(std::memory_order_relaxed); }
  // Whether the table is on huge pages (advised: the kernel may still give a part small ones).
  bool huge_pages() const { return huge_pages_; }
  // How many nodes the table holds at most (0: no table).
  uint64_t capacity() const { return table_ != nullptr ? sets_ * kWays : 0; }
  // Exchanges the two tables and their epochs, not their insert counts (TreeFile::AdoptMappings).
  // REQUIRES: no other thread uses either.
  void Swap(VerifiedNodes& other);

 private:
  // A slot's words: the sequence, the offset, the mapping, and length << 32 | epoch << 8 | type.
  static constexpr size_t kWords = 4;
  static constexpr size_t kWays = 2;
  static constexpr uint64_t kMinSlots = 4096;           // 128 KiB
  static constexpr uint64_t kMaxSlots = uint64_t{1} << 22;  // 128 MiB of address space
  uint64_t* SlotOf(size_t set, size_t way) const { return table_ + (set * kWays + way) * kWords; }
  size_t SetOf(uint64_t offset) const { return static_cast<size_t>((offset * 0x9E3779B97F4A7C15ULL) >> shift_); }
  uint64_t Info(NodeRef ref, uint8_t type) const {
    return uint64_t{ref.length} << 32 | (epoch_.load(std::memory_order_acquire) & 0xFFFFFF) << 8 | type;
  }

  bool map_called_ = false;
  bool huge_pages_ = false;
  size_t sets_;   // a power of two
  int shift_;     // 64 - log2(sets_)
  size_t bytes_ = 0;  // of the mapping
  uint64_t* table_ = nullptr;  // an anonymous mapping (page-aligned), or null: no table (yet)
  std::atomic<uint64_t> epoch_{1};
  std::atomic<uint64_t> inserted_{0};
};

}  // namespace dbdb
