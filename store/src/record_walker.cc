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

Result<std::optional<format::RecordView>> RecordWalker::At(uint64_t offset) {
  using Maybe = std::optional<format::RecordView>;
  if (offset > end_ || end_ - offset < format::kRecordOverheadBytes) return Maybe();
  DBDB_ASSIGN_OR_RETURN(std::string_view header, Read(offset, format::kRecordHeaderSizeBytes));
  if (header.size() < format::kRecordHeaderSizeBytes) return Maybe();
  uint64_t length = coding::DecodeFixed32(header.data()) + format::kRecordOverheadBytes;
  if (length > format::kRecordPayloadSizeMaxBytes + format::kRecordOverheadBytes) return Maybe();
  if (length > end_ - offset) return Maybe();  // (offset <= end_: no wrap)
  if (length > kWindowBytes) {
    BodyHasher hasher(offset);  // the record checksum: XXH3-64 seeded with the record's offset
    uint64_t hashed_end = offset + length - format::kRecordTrailerSizeBytes;
    for (uint64_t at = offset; at < hashed_end;) {
      DBDB_ASSIGN_OR_RETURN(std::string_view piece, Read(at, std::min(kWindowBytes, hashed_end - at)));
      if (piece.empty()) return Maybe();
      hasher.Update(piece);
      at += piece.size();
    }
    DBDB_ASSIGN_OR_RETURN(std::string_view trailer, Read(hashed_end, format::kRecordTrailerSizeBytes));
    if (trailer.size() < format::kRecordTrailerSizeBytes || coding::DecodeFixed64(trailer.data()) != hasher.Digest()) {
      return Maybe();
    }
  }
  DBDB_ASSIGN_OR_RETURN(std::string_view bytes, Read(offset, length));
  auto record = format::VerifyRecord(offset, bytes);  // also rejects a short read
  if (!record.ok()) return Maybe();
  return Maybe(*record);
}

}  // namespace dbdb
