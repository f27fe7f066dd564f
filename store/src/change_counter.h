// The change counter: 8 bytes at the start of the writer lock file (PATH.lock) that let a reader
// know, without a system call, that no writer has touched the database since it last looked
// (docs/FORMAT.md, "The change counter"; docs/PERSISTENCE.md, "Readers skip the fstat").
//
// A writer writes a fresh random odd value as soon as it holds the writer lock, before it may
// change the database file or its name, and that value plus one (even) just before it lets the
// lock go: the counter never returns to a value a reader kept. A reader reads the counter from a
// read-only mapping of the lock file before it looks at the database file; if it was even (no
// writer at work), the view it found stays the newest for as long as the counter keeps that
// value. A writer that dies leaves it odd (its commit may be in the file, unsealed), and readers
// look at the file every time until the next writer lets the lock go.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "dbdb/file_system.h"

namespace dbdb {

// A writer's odd mark: made even (one more) when released. A failed write of the even value
// leaves the counter odd, which only costs readers their fast path.
class ChangeMark {
 public:
  // Writes a fresh random odd value into `lock_file`: the caller holds the writer lock.
  // `lock_file` must outlive the mark. If the write fails, the lock file is cut to nothing
  // (no counter: readers look at the database file every time) and the mark writes nothing when
  // released; an error only if that fails too.
  static Result<std::unique_ptr<ChangeMark>> Take(File& lock_file);
  ~ChangeMark();
  // The odd value written, and whether it was (false: the counter was removed instead).
  uint64_t value() const { return value_; }
  bool written() const { return written_; }
  ChangeMark(const ChangeMark&) = delete;
  ChangeMark& operator=(const ChangeMark&) = delete;

 private:
  ChangeMark(File& file, uint64_t value, bool written) : file_(file), value_(value), written_(written) {}
  File& file_;
  const uint64_t value_;  // odd
  const bool written_;    // false: the counter was removed instead
};

// A reader's read-only mapping of the counter.
class ChangeCounterView {
 public:
  // Maps the counter of the lock file at `lock_path` if it exists and holds one; false if not
  // (no lock file yet, an empty one from a writer that has not marked it, or a file system that
  // does not map files). Never creates or writes anything.
  bool Map(FileSystem& fs, const std::string& lock_path);
  // Maps the counter of an open lock file (the writer's own, to read what it holds before it
  // marks it); false as Map. The mapping does not need `lock_file` to stay open.
  bool MapOpen(File& lock_file);
  bool mapped() const { return mapping_ != nullptr; }
  // The counter now; nullopt if not mapped, or if the mapped page cannot be read (SIGBUS: the file
  // was cut), which also drops the mapping.
  std::optional<uint64_t> Read();

 private:
  std::unique_ptr<File> file_;
  std::shared_ptr<const FileMapping> mapping_;
};

}  // namespace dbdb
