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
// 4M slots) and mapped anonymously (private) with the file's first mapping, zeroed without being
// touched, so only the pages used cost resident memory. If the mapping fails it is made smaller,
// down to no table (every use verifies).
//
// Each page's first touch is a write, its only fault: a bitmap (one bit a page, 512 bytes for a
// 16 MiB table) says which pages an insert has written, and a lookup in a page no insert has
// written answers "not verified" without reading it. (A lookup reading a fresh page of a private
// mapping maps the kernel's zero page, and the insert after it faulted a second time, copied the
// page and flushed the old entry from every CPU running one of the process's threads.)
//
// Pages: small ones (MADV_NOHUGEPAGE), so a 16 MiB table takes up to 4,096 faults, 1.5 to 3 us each
// on the machine dbdb is measured on. Stops 44 to 51 put the table of a file four times its size
// on huge pages (8 faults for 16 MiB); a fresh huge page there came to cost 10 to 20 ms
// (large_alloc.h), and a reader's first gets after a 1M-key fill spent 96 ms in the faults of
// its inserts (perf).
//
// A file that grows after its first mapping keeps its table's pages (a compaction's new file gets
// a new table). A forked child's copy of the table starts empty (MADV_WIPEONFORK; an empty table
// is a valid one), so neither process copies pages on write; no correct program uses a parent's
// handle or snapshot in a child (db.h). The table is left out of core dumps.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

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

  // Maps the table. Once, before any other thread uses this object (the owner publishes it after,
  // with the file's mapping).
  void Map();
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
  // How many nodes the table holds at most (0: no table).
  uint64_t capacity() const { return table_ != nullptr ? sets_ * kWays : 0; }
  // Where the table is mapped (null: none), for tests.
  const void* table_address() const { return table_; }
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
  // Whether an insert has written the page holding `set` (one bit a page: written_).
  bool Written(size_t set) const {
    const size_t page = (set * kWays * kWords * sizeof(uint64_t)) >> page_shift_;
    return (written_[page / 64].load(std::memory_order_acquire) >> (page % 64) & 1) != 0;
  }
  void MarkWritten(size_t set) {
    const size_t page = (set * kWays * kWords * sizeof(uint64_t)) >> page_shift_;
    const uint64_t bit = uint64_t{1} << (page % 64);
    if ((written_[page / 64].load(std::memory_order_relaxed) & bit) == 0) {
      written_[page / 64].fetch_or(bit, std::memory_order_release);
    }
  }
  uint64_t Info(NodeRef ref, uint8_t type) const {
    return uint64_t{ref.length} << 32 | (epoch_.load(std::memory_order_acquire) & 0xFFFFFF) << 8 | type;
  }

  bool map_called_ = false;
  int page_shift_ = 12;  // log2 of the page size
  std::unique_ptr<std::atomic<uint64_t>[]> written_;  // a bit a page of the table: an insert wrote it
  size_t sets_;   // a power of two
  int shift_;     // 64 - log2(sets_)
  size_t bytes_ = 0;  // of the mapping
  uint64_t* table_ = nullptr;  // an anonymous mapping (page-aligned), or null: no table (yet)
  std::atomic<uint64_t> epoch_{1};
  std::atomic<uint64_t> inserted_{0};
};

}  // namespace dbdb
