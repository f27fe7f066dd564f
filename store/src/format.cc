// Encoding and verification of the file header, record framing and commit records
// (docs/FORMAT.md).
#include "format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "coding.h"
#include "dbdb_assert.h"

namespace dbdb::format {

using coding::DecodeFixed32;
using coding::DecodeFixed64;
using coding::PutFixed32;
using coding::PutFixed64;

std::string EncodeFileHeader(const FileHeader& header) {
  std::string out(kFileMagic, sizeof(kFileMagic));
  PutFixed32(&out, header.version);
  PutFixed32(&out, static_cast<uint32_t>(kFileHeaderSizeBytes));
  PutFixed64(&out, header.generation);
  out.resize(kFileHeaderChecksumOffset, '\0');
  PutFixed64(&out, XXH3_64bits(out.data(), kFileHeaderChecksumOffset));
  out.resize(kFileHeaderSizeBytes, '\0');
  DBDB_ASSERT(DecodeFileHeader(out).ok());  // paired with the decode of every open
  return out;
}

Result<FileHeader> DecodeFileHeader(std::string_view bytes) {
  if (bytes.size() < kFileHeaderSizeBytes) {
    return Status::Corruption("file header is " + std::to_string(bytes.size()) +
                              " bytes, expected " + std::to_string(kFileHeaderSizeBytes));
  }
  if (std::memcmp(bytes.data(), kFileMagic, sizeof(kFileMagic)) != 0) {
    return Status::Corruption("not a dbdb file (bad magic number)");
  }
  uint64_t stored = DecodeFixed64(bytes.data() + kFileHeaderChecksumOffset);
  if (stored != XXH3_64bits(bytes.data(), kFileHeaderChecksumOffset)) {
    return Status::Corruption("file header checksum mismatch");
  }
  FileHeader header;
  header.version = DecodeFixed32(bytes.data() + 8);
  if (header.version < kFormatVersionMin || header.version > kFormatVersion) {
    return Status::Corruption("unsupported format version " + std::to_string(header.version) +
                              " (this build reads versions " + std::to_string(kFormatVersionMin) + " to " +
                              std::to_string(kFormatVersion) + ")");
  }
  if (DecodeFixed32(bytes.data() + 12) != kFileHeaderSizeBytes) {
    return Status::Corruption("unexpected file header size");
  }
  header.generation = DecodeFixed64(bytes.data() + 16);
  // Every other byte is reserved and zero: [24, 56) under the checksum, and [64, 512), which no
  // checksum covers, so that no byte of the header goes unverified.
  for (uint64_t i = kFileHeaderReservedOffset; i < kFileHeaderSizeBytes; i++) {
    if (i == kFileHeaderChecksumOffset) i += 8;
    if (bytes[i] != 0) {
      return Status::Corruption("file header byte " + std::to_string(i) + " is reserved and must be zero");
    }
  }
  return header;
}

uint64_t RecordChecksum(uint64_t offset, std::string_view data) {
  return XXH3_64bits_withSeed(data.data(), data.size(), offset);
}

uint64_t BodyChecksum(uint64_t body_offset, std::string_view body) {
  return XXH3_64bits_withSeed(body.data(), body.size(), body_offset);
}

void AppendRecord(std::string* dst, uint64_t offset, RecordType type, std::string_view payload) {
  // Paired with the reader's checks of a record's length and type (CheckRecord, the record walker):
  // a payload the 32-bit length cannot hold would be written as a shorter record.
  DBDB_ASSERT(payload.size() <= kRecordPayloadSizeMaxBytes && offset >= kFileHeaderSizeBytes);
  DBDB_ASSERT(static_cast<uint8_t>(type) >= 1 && static_cast<uint8_t>(type) <= kRecordTypeMax);
  size_t start = dst->size();
  PutFixed32(dst, static_cast<uint32_t>(payload.size()));
  dst->push_back(static_cast<char>(type));
  dst->append(3, '\0');
  dst->append(payload);
  uint64_t checksum = RecordChecksum(offset, std::string_view(*dst).substr(start));
  PutFixed64(dst, checksum);
}

std::string CommitRecordPrefix(uint32_t version) {
  std::string out;
  PutFixed32(&out, static_cast<uint32_t>(CommitPayloadSize(version)));
  out.push_back(static_cast<char>(RecordType::kCommit));
  out.append(3, '\0');
  return out;
}

std::string EncodeCommitPayload(const Commit& c) {
  std::string out;
  PutFixed64(&out, c.txn_id);
  PutFixed64(&out, c.prev_commit_offset);
  PutFixed64(&out, c.body_offset);
  PutFixed64(&out, c.body_checksum);
  PutFixed64(&out, c.synced_through);
  PutFixed64(&out, c.root_offset);
  PutFixed32(&out, c.root_length);
  PutFixed32(&out, c.tree_height);
  PutFixed64(&out, c.key_count);
  PutFixed64(&out, c.tree_bytes);
  PutFixed64(&out, c.commits_in_file);
  if (c.version >= 2) {
    PutFixed64(&out, c.fold_offset);
    PutFixed64(&out, c.batch_offset);
  }
  return out;
}

namespace {

// Why `c`, decoded from the commit record at c.offset, cannot be a commit (its structural checks);
// empty if it can be one.
std::string CommitStructureFault(const Commit& c) {
  const uint64_t offset = c.offset;
  const uint64_t record_size = CommitRecordSize(c.version);
  // Structural checks: everything a commit names lies before it, in the order it was written.
  if (c.txn_id == 0) return "transaction id 0";
  if (c.body_offset < kFileHeaderSizeBytes || c.body_offset > offset) return "body outside the file";
  if (c.prev_commit_offset != 0 && c.prev_commit_offset < kFileHeaderSizeBytes) return "bad previous commit";
  // The body starts where the previous commit record ends (so it covers the previous seal).
  uint64_t expected_body = c.prev_commit_offset == 0 ? kFileHeaderSizeBytes
                                                     : c.prev_commit_offset + record_size;
  if (c.body_offset != expected_body) return "body does not start where the previous commit ends";
  if (c.tree_height > kTreeHeightMax) return "tree height " + std::to_string(c.tree_height);
  if ((c.root_offset == 0) != (c.tree_height == 0)) return "root and height disagree";
  if (c.root_offset != 0) {
    // Subtraction, not root_offset + root_length, which wraps past 2^64 (found by
    // dbdb_fuzz_structured: a root at 2^64 - 518 passed and was read as an I/O error).
    if (c.root_offset < kFileHeaderSizeBytes || c.root_length < kRecordOverheadBytes ||
        c.root_offset > offset || c.root_length > offset - c.root_offset) {
      return "root outside the committed region";
    }
  }
  if (c.commits_in_file == 0 || (c.prev_commit_offset == 0) != (c.commits_in_file == 1)) {
    return "commit count disagrees with the previous commit";
  }
  // The counts are bounded by the bytes before the commit, so that the next commit's counts (these
  // plus what one transaction adds) cannot wrap: each commit record takes 96 bytes, every
  // reachable node is a distinct record before the commit, and every key at least two bytes of one.
  if (c.commits_in_file - 1 > (offset - kFileHeaderSizeBytes) / record_size) {
    return "more commits than fit before it";
  }
  if (c.tree_bytes > offset - kFileHeaderSizeBytes) return "tree larger than the file before it";
  if (c.tree_height == 0 ? (c.key_count != 0 || c.tree_bytes != 0)
                         : (c.key_count == 0 || c.tree_bytes < c.root_length || c.key_count > c.tree_bytes / 2)) {
    return "key count, tree size and height disagree";
  }
  if (c.synced_through > offset) return "synced_through past the commit";
  // The tree is the fold's: it lies before the fold commit, which is this one or an earlier one
  // (at or before the previous commit). The batch, when there is one, ends where the commit starts.
  if (c.fold_offset != offset) {
    if (c.fold_offset < kFileHeaderSizeBytes || c.prev_commit_offset == 0 || c.fold_offset > c.prev_commit_offset) {
      return "fold point outside the commits before it";
    }
    if (c.root_offset != 0 && (c.root_offset > c.fold_offset || c.root_length > c.fold_offset - c.root_offset)) {
      return "root after its fold";
    }
    if (c.batch_offset == 0) return "a commit that does not fold has no batch";
  }
  if (c.batch_offset != 0 &&
      (c.batch_offset < c.body_offset || c.batch_offset > offset || offset - c.batch_offset < kRecordOverheadBytes)) {
    return "batch outside the commit's body";
  }
  if (c.root_offset != 0 && c.batch_offset != 0 && c.root_length > c.batch_offset - std::min(c.batch_offset, c.root_offset)) {
    return "root overlaps the batch";
  }
  return {};
}

}  // namespace

Result<Commit> DecodeCommitPayload(uint64_t offset, std::string_view p, uint32_t version) {
  auto bad = [offset](const std::string& why) {
    return Status::Corruption("commit record at offset " + std::to_string(offset) + ": " + why);
  };
  if (p.size() != CommitPayloadSize(version)) return bad("wrong payload size");
  Commit c;
  c.version = version;
  c.offset = offset;
  c.txn_id = DecodeFixed64(p.data() + 0);
  c.prev_commit_offset = DecodeFixed64(p.data() + 8);
  c.body_offset = DecodeFixed64(p.data() + 16);
  c.body_checksum = DecodeFixed64(p.data() + 24);
  c.synced_through = DecodeFixed64(p.data() + 32);
  c.root_offset = DecodeFixed64(p.data() + 40);
  c.root_length = DecodeFixed32(p.data() + 48);
  c.tree_height = DecodeFixed32(p.data() + 52);
  c.key_count = DecodeFixed64(p.data() + 56);
  c.tree_bytes = DecodeFixed64(p.data() + 64);
  c.commits_in_file = DecodeFixed64(p.data() + 72);
  c.fold_offset = version >= 2 ? DecodeFixed64(p.data() + 80) : offset;  // version 1: every commit folds
  c.batch_offset = version >= 2 ? DecodeFixed64(p.data() + 88) : 0;
  if (std::string why = CommitStructureFault(c); !why.empty()) return bad(why);
  return c;
}

std::string SealRecordPrefix() {
  std::string out;
  PutFixed32(&out, static_cast<uint32_t>(kSealPayloadSizeBytes));
  out.push_back(static_cast<char>(RecordType::kSeal));
  out.append(3, '\0');
  return out;
}

void AppendSeal(std::string* dst, const Commit& commit, bool durable) {
  // Paired with IsSealOf: a commit offset with bit 63 set would read back as another commit's seal.
  DBDB_ASSERT((commit.offset & kSealDurableBit) == 0 && commit.offset >= kFileHeaderSizeBytes);
  std::string payload;
  PutFixed64(&payload, commit.offset | (durable ? kSealDurableBit : 0));
  AppendRecord(dst, commit.record_end(), RecordType::kSeal, payload);
}

SealInfo DecodeSeal(const RecordView& record) {
  uint64_t raw = record.payload.size() == kSealPayloadSizeBytes ? DecodeFixed64(record.payload.data()) : 0;
  return SealInfo{raw & ~kSealDurableBit, (raw & kSealDurableBit) != 0};
}

bool IsSealOf(const RecordView& record, const Commit& commit) {
  return record.type == RecordType::kSeal && record.payload.size() == kSealPayloadSizeBytes &&
         DecodeSeal(record).commit_offset == commit.offset;
}

RecordCheck CheckRecord(uint64_t offset, std::string_view bytes, bool checksum) {
  if (bytes.size() < kRecordOverheadBytes) return RecordCheck::kTruncated;
  uint32_t length = DecodeFixed32(bytes.data());
  uint8_t type = static_cast<uint8_t>(bytes[4]);
  if (bytes.size() != kRecordOverheadBytes + length) return RecordCheck::kLengthMismatch;
  uint64_t stored = DecodeFixed64(bytes.data() + kRecordHeaderSizeBytes + length);
  if (checksum && stored != RecordChecksum(offset, bytes.substr(0, kRecordHeaderSizeBytes + length))) {
    return RecordCheck::kChecksum;
  }
  if (type < 1 || type > kRecordTypeMax || bytes[5] != 0 || bytes[6] != 0 || bytes[7] != 0) {
    return RecordCheck::kType;
  }
  return RecordCheck::kOk;
}

Status RecordCheckStatus(RecordCheck check, uint64_t offset, std::string_view bytes) {
  std::string where = " at offset " + std::to_string(offset);
  switch (check) {
    case RecordCheck::kOk:
      return Status::Ok();
    case RecordCheck::kTruncated:
      return Status::Corruption("truncated record" + where);
    case RecordCheck::kLengthMismatch:
      return Status::Corruption("record length " + std::to_string(DecodeFixed32(bytes.data())) + " does not match" + where);
    case RecordCheck::kChecksum:
      return Status::Corruption("checksum mismatch in record" + where);
    case RecordCheck::kType:
      return Status::Corruption("unknown record type " + std::to_string(static_cast<uint8_t>(bytes[4])) + where);
  }
  return Status::Corruption("record" + where);
}

Result<RecordView> VerifyRecord(uint64_t offset, std::string_view bytes, bool checksum) {
  RecordCheck check = CheckRecord(offset, bytes, checksum);
  if (check != RecordCheck::kOk) return RecordCheckStatus(check, offset, bytes);
  return RecordView{static_cast<RecordType>(bytes[4]), bytes.substr(kRecordHeaderSizeBytes, bytes.size() - kRecordOverheadBytes)};
}

std::string EncodeBatch(const std::vector<BatchChange>& changes) {
  std::string out;
  coding::PutVarint(&out, changes.size());
  for (const auto& c : changes) {
    out.push_back(static_cast<char>(c.value ? kBatchPut : kBatchDelete));
    coding::PutVarint(&out, c.key.size());
    out.append(c.key);
    if (c.value) {
      coding::PutVarint(&out, c.value->size());
      out.append(*c.value);
    }
  }
  return out;
}

namespace {

template <typename Changes>
Result<Changes> DecodeBatchAs(uint64_t offset, std::string_view payload) {
  auto bad = [offset](const std::string& why) {
    return Status::Corruption("batch record at offset " + std::to_string(offset) + ": " + why);
  };
  coding::Reader in(payload);
  uint64_t count = 0;
  if (!in.GetVarint(&count)) return bad("truncated count");
  // Every change takes at least two bytes (op, key length): a count above that is a lie.
  if (count == 0 || count > payload.size() / 2) return bad("change count " + std::to_string(count));
  Changes changes;
  changes.reserve(std::min<uint64_t>(count, payload.size() / 16));  // not what a damaged count claims
  for (uint64_t i = 0; i < count; i++) {
    std::string_view op, key;
    uint64_t length = 0;
    if (!in.GetBytes(1, &op) || (op[0] != kBatchPut && op[0] != kBatchDelete)) return bad("bad change type");
    if (!in.GetVarint(&length) || length > kKeySizeHardMaxBytes || !in.GetBytes(length, &key)) {
      return bad("truncated or oversized key");
    }
    if (!changes.empty() && !(changes.back().key < key)) return bad("keys out of order");
    BatchChange change{key, std::nullopt};
    if (op[0] == kBatchPut) {
      std::string_view value;
      if (!in.GetVarint(&length) || length > kValueSizeHardMaxBytes || !in.GetBytes(length, &value)) {
        return bad("truncated or oversized value");
      }
      change.value = value;
    }
    changes.push_back(change);
  }
  if (!in.done()) return bad("trailing bytes");
  return changes;
}

}  // namespace

Result<std::vector<BatchChange>> DecodeBatch(uint64_t offset, std::string_view payload) {
  return DecodeBatchAs<std::vector<BatchChange>>(offset, payload);
}

Result<LargeBatchChanges> DecodeLargeBatch(uint64_t offset, std::string_view payload) {
  return DecodeBatchAs<LargeBatchChanges>(offset, payload);
}

std::string_view RecordTypeName(RecordType type) {
  switch (type) {
    case RecordType::kLeaf: return "leaf";
    case RecordType::kInternal: return "internal";
    case RecordType::kCommit: return "commit";
    case RecordType::kSeal: return "seal";
    case RecordType::kBatch: return "batch";
    case RecordType::kCheckpoint: return "checkpoint";
  }
  return "unknown";
}

}  // namespace dbdb::format
