// RecordWalker: see record_walker.h.
#include "record_walker.h"

#include <algorithm>

#include "checksum.h"
#include "coding.h"

namespace dbdb {

Result<std::string_view> RecordWalker::Read(uint64_t offset, uint64_t n) {
  if (offset >= end_) return std::string_view();
  n = std::min(n, end_ - offset);
  if (offset < start_ || offset + n > start_ + filled_) {
    uint64_t want = std::min(std::max(n, kWindowBytes), end_ - offset);
    if (buffer_.size() != want) std::string(want, '\0').swap(buffer_);  // a big record's buffer is freed
    start_ = offset;
    filled_ = 0;
    DBDB_ASSIGN_OR_RETURN(size_t got, file_.ReadAt(offset, buffer_));
    filled_ = got;
    // A short read below the end: the file was cut meanwhile. Its end is here now.
    if (got < want) end_ = offset + got;
  }
  uint64_t available = start_ + filled_ - std::min(offset, start_ + filled_);
  return std::string_view(buffer_).substr(offset - start_, std::min(n, available));
}

Result<std::optional<format::RecordView>> RecordWalker::At(uint64_t offset, std::string* why) {
  using Maybe = std::optional<format::RecordView>;
  auto stop = [&](const std::string& reason) {
    if (why != nullptr) *why = reason + " at offset " + std::to_string(offset);
    return Maybe();
  };
  if (offset > end_ || end_ - offset < format::kRecordOverheadBytes) {
    return stop("a record cut off by the end (" + std::to_string(end_) + ")");
  }
  DBDB_ASSIGN_OR_RETURN(std::string_view header, Read(offset, format::kRecordHeaderSizeBytes));
  if (header.size() < format::kRecordHeaderSizeBytes) return stop("a record header cut off by the file's end");
  uint64_t length = coding::DecodeFixed32(header.data()) + format::kRecordOverheadBytes;
  if (length > format::kRecordPayloadSizeMaxBytes + format::kRecordOverheadBytes) {
    return stop("record length " + std::to_string(length) + " above the format's limit");
  }
  if (length > end_ - offset) {  // (offset <= end_: no wrap)
    return stop("record length " + std::to_string(length) + " running past the end (" + std::to_string(end_) + ")");
  }
  if (length > kWindowBytes) {
    BodyHasher hasher(offset);  // the record checksum: XXH3-64 seeded with the record's offset
    uint64_t hashed_end = offset + length - format::kRecordTrailerSizeBytes;
    for (uint64_t at = offset; at < hashed_end;) {
      DBDB_ASSIGN_OR_RETURN(std::string_view piece, Read(at, std::min(kWindowBytes, hashed_end - at)));
      if (piece.empty()) return stop("a record cut off by the file's end");
      hasher.Update(piece);
      at += piece.size();
    }
    DBDB_ASSIGN_OR_RETURN(std::string_view trailer, Read(hashed_end, format::kRecordTrailerSizeBytes));
    if (trailer.size() < format::kRecordTrailerSizeBytes) return stop("a record cut off by the file's end");
    if (coding::DecodeFixed64(trailer.data()) != hasher.Digest()) return stop("checksum mismatch in record");
  }
  DBDB_ASSIGN_OR_RETURN(std::string_view bytes, Read(offset, length));
  auto record = format::VerifyRecord(offset, bytes);  // also rejects a short read
  if (!record.ok()) {
    if (why != nullptr) *why = record.status().message();
    return Maybe();
  }
  return Maybe(*record);
}

Result<uint64_t> AllocatedAheadAfter(File& file, uint64_t end, uint64_t size) {
  if (size <= end || size - end > format::kAllocatedAheadKeptMaxBytes) return 0;
  DBDB_ASSIGN_OR_RETURN(uint64_t data_end, file.DataEnd(end));
  data_end = std::min(data_end, size);
  if (data_end <= end) return size - end;
  DBDB_ASSIGN_OR_RETURN(uint64_t nonzero, EndOfNonZero(file, end, data_end));
  return nonzero == end ? size - end : 0;
}

Result<uint64_t> EndOfNonZero(File& file, uint64_t from, uint64_t to) {
  constexpr uint64_t kWindowBytes = 64 * 1024;
  std::string window;
  for (uint64_t top = to; top > from;) {
    const uint64_t low = top - std::min(kWindowBytes, top - from);
    window.resize(top - low);
    DBDB_ASSIGN_OR_RETURN(size_t got, file.ReadAt(low, window));
    // A read that comes up short (the file cut meanwhile) leaves nothing there.
    for (size_t i = std::min<size_t>(got, window.size()); i > 0; i--) {
      if (window[i - 1] != 0) return low + i;
    }
    top = low;
  }
  return from;
}

}  // namespace dbdb
