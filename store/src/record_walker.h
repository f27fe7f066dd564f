// RecordWalker: the one way the library walks a file's records front to back (check() and
// DumpFile). It reads through a 1 MiB window, so a walk costs about one pread per window and holds
// at most one window in memory, or one record if that is larger (verified piecewise before it is
// read whole, so garbage that looks like the header of a huge record costs reading it, never
// holding it).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dbdb/file_system.h"
#include "format.h"

namespace dbdb {

class RecordWalker {
 public:
  static constexpr uint64_t kWindowBytes = 1 << 20;

  // Walks `file` up to `end` (its size, or the end of the newest commit for check()).
  RecordWalker(File& file, uint64_t end) : file_(file), end_(end) {}

  // The bytes [offset, offset + n) below end(), fewer if the file ends first. Valid until the
  // next call.
  Result<std::string_view> Read(uint64_t offset, uint64_t n);

  // The record at `offset` if one that verifies (framing, length limit, checksum) starts there
  // and ends at or before end(); nullopt if not: that is where the records end, and `why` (if
  // given) says what did not verify, naming the offset. An error only for a failed read. The
  // view is valid until the next call.
  Result<std::optional<format::RecordView>> At(uint64_t offset, std::string* why = nullptr);

  // The walk's end: lowered if a read finds the file shorter than it was (a writer's rollback
  // cut it meanwhile).
  uint64_t end() const { return end_; }

 private:
  File& file_;
  uint64_t end_;
  std::string buffer_;
  uint64_t start_ = 0, filled_ = 0;
};

// Where the bytes of `file` in [from, to) stop holding anything but zeros: `from` when all of them
// read as zeros, else just past the last byte that does not. Reads backward, 64 KiB at a time.
Result<uint64_t> EndOfNonZero(File& file, uint64_t from, uint64_t to);

// The bytes after a newest commit ending at `end`, in a file of `size`, that a writer keeps as
// space allocated ahead (docs/FORMAT.md): all of them when every one reads as zero and they are at
// most format::kAllocatedAheadKeptMaxBytes, else none (they are a tail, which a writer cuts).
// Reads only what lies below the trailing hole (File::DataEnd), at most that bound.
Result<uint64_t> AllocatedAheadAfter(File& file, uint64_t end, uint64_t size);

}  // namespace dbdb
