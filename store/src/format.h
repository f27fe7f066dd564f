// The on-disk format of a dbdb file. Every constant of the format lives here; docs/FORMAT.md
// describes each byte, with a worked example. A change to anything in this file bumps
// kFormatVersion and edits docs/FORMAT.md in the same commit.
//
// A file is a 512-byte header followed by records, appended and never overwritten:
//   record := u32 payload_length | u8 type | 3 zero bytes | payload | u64 checksum
// The checksum is XXH3-64, seeded with the record's file offset, of everything before it in the
// record; a record copied to another offset, or a stale one left behind, does not verify.
// Version 2: a transaction appends one batch record (its puts and deletes), then one commit record,
// then — once the commit is durable — a seal record naming it. A commit names the tree of the last
// fold; the batches of the commits since that fold are replayed on top of it. A fold (once the
// unfolded batches pass Options::fold_threshold_bytes) also writes the changed tree nodes, leaf to
// root, before its batch. Readers take the newest commit only when it is sealed or no writer is
// active, so they never see a commit whose sync may still fail. Version 1 (every commit a fold,
// no batches, an 80-byte commit payload) is still read, read-only. Version 4: a checkpoint (a
// commit that restates its predecessor's txn id) holds in its batch every key's newest change since
// the fold, so a reader replays it and the batches after it, not the whole log. Version 5: a
// close fold (a fold with no batch that restates its predecessor's txn id), written when a handle
// closes, so the next open replays nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dbdb/status.h"
#include "large_alloc.h"

namespace dbdb::format {

// "dbdb" then 0x00 0x0d 0x0a 0x1a, so text-mode transfers and NUL truncation break it visibly.
inline constexpr char kFileMagic[8] = {'d', 'b', 'd', 'b', 0x00, 0x0d, 0x0a, 0x1a};
inline constexpr uint32_t kFormatVersion = 5;  // 3: nodes searched in place; 4: checkpoints; 5: close folds
// The first version whose files may hold checkpoints: commits that restate their predecessor's
// txn id and whose batch holds every change since the fold (docs/FORMAT.md, "Checkpoints").
inline constexpr uint32_t kCheckpointVersion = 4;
// The first version whose files may hold close folds: folds with no batch that restate their
// predecessor's txn id, written when a handle closes (docs/FORMAT.md, "Close folds").
inline constexpr uint32_t kCloseFoldVersion = 5;
inline constexpr uint32_t kFormatVersionMin = 1;  // read (read-only) and upgraded by `dbdb upgrade`
inline constexpr uint64_t kFileHeaderSizeBytes = 512;  // one sector: written whole or not at all
inline constexpr uint64_t kFileHeaderChecksumOffset = 56;
// Bytes [24, 56) and [64, 512) of the header are reserved: zero, and checked to be.
inline constexpr uint64_t kFileHeaderReservedOffset = 24;

inline constexpr uint64_t kRecordHeaderSizeBytes = 8;    // length + type + padding
inline constexpr uint64_t kRecordTrailerSizeBytes = 8;   // checksum
inline constexpr uint64_t kRecordOverheadBytes = kRecordHeaderSizeBytes + kRecordTrailerSizeBytes;

enum class RecordType : uint8_t {
  kLeaf = 1,
  kInternal = 2,
  kCommit = 3,
  kSeal = 4,  // payload: the offset of the commit it seals, which it directly follows
  kBatch = 5,  // (version 2) a transaction's puts and deletes; ends where its commit record starts
  // (version 4) a checkpoint's batch: every key's newest change since the fold, in a batch's
  // encoding; named by a commit that restates its predecessor's txn id, and only by one.
  kCheckpoint = 6,
};
inline constexpr uint8_t kRecordTypeMax = 6;

inline constexpr uint64_t kCommitPayloadSizeBytes = 96;    // version 2
inline constexpr uint64_t kCommitPayloadSizeBytesV1 = 80;  // version 1: no fold or batch fields
inline constexpr uint64_t kCommitRecordSizeBytes = kRecordOverheadBytes + kCommitPayloadSizeBytes;
constexpr uint64_t CommitPayloadSize(uint32_t version) {
  return version == 1 ? kCommitPayloadSizeBytesV1 : kCommitPayloadSizeBytes;
}
constexpr uint64_t CommitRecordSize(uint32_t version) { return kRecordOverheadBytes + CommitPayloadSize(version); }
static_assert(kCommitRecordSizeBytes == 112, "docs/FORMAT.md: a version-2 commit record is 112 bytes");
static_assert(CommitRecordSize(1) == 96, "docs/FORMAT.md: a version-1 commit record is 96 bytes");
inline constexpr uint64_t kSealPayloadSizeBytes = 8;
inline constexpr uint64_t kSealRecordSizeBytes = kRecordOverheadBytes + kSealPayloadSizeBytes;
static_assert(kSealRecordSizeBytes == 24, "docs/FORMAT.md: a seal record is 24 bytes");

// Space allocated ahead (docs/FORMAT.md): a writer allocates at most this much past a commit, to a
// page boundary, and every writer keeps zeros after the newest commit up to this plus a page.
inline constexpr uint64_t kAllocateAheadMaxBytes = uint64_t{1} << 20;
inline constexpr uint64_t kAllocationPageBytes = 4096;
inline constexpr uint64_t kAllocatedAheadKeptMaxBytes = kAllocateAheadMaxBytes + kAllocationPageBytes;
static_assert(kRecordOverheadBytes == 16, "docs/FORMAT.md: record framing is 16 bytes");
static_assert(kRecordHeaderSizeBytes == 8, "docs/FORMAT.md: a record's length, type and padding are 8 bytes");
static_assert(kFileHeaderSizeBytes == 512, "docs/FORMAT.md: the file header is 512 bytes");
static_assert(kFileHeaderReservedOffset == 24 && kFileHeaderChecksumOffset == 56,
              "docs/FORMAT.md: the header's magic, version, size and generation end at 24; its checksum is at 56");
static_assert(kCommitPayloadSizeBytes == 96 && kSealPayloadSizeBytes == 8,
              "docs/FORMAT.md: a commit's payload is 96 bytes, a seal's 8");

// Hard limits of the encoding, above any configurable limit (Options).
inline constexpr uint64_t kRecordPayloadSizeMaxBytes = 1u << 30;  // a node may not exceed 1 GiB
inline constexpr uint32_t kKeySizeHardMaxBytes = 16 * 1024;
inline constexpr uint32_t kValueSizeHardMaxBytes = 64 * 1024 * 1024;
inline constexpr uint32_t kTreeHeightMax = 64;

struct FileHeader {
  uint32_t version = kFormatVersion;
  uint64_t generation = 0;  // incremented by every compaction
};

// The commit record's payload. Offsets are absolute file offsets.
struct Commit {
  uint64_t offset = 0;            // where this commit record starts (not stored; where it was read)
  uint64_t txn_id = 0;            // 1 for the first commit of a database; +1 per commit (a checkpoint: +0)
  uint64_t prev_commit_offset = 0;  // the previous commit record in this file, 0 if none
  uint64_t body_offset = 0;       // where the previous commit record ends: its seal, then our nodes
  uint64_t body_checksum = 0;     // XXH3-64 seeded with body_offset of [body_offset, offset)
  uint64_t synced_through = 0;    // [0, synced_through) was durable when this commit was written
  uint64_t root_offset = 0;       // 0 for the empty tree
  uint32_t root_length = 0;       // whole record length of the root node
  uint32_t tree_height = 0;       // 0 empty, 1 when the root is a leaf
  uint64_t key_count = 0;
  uint64_t tree_bytes = 0;        // record bytes of all nodes reachable from the root
  uint64_t commits_in_file = 0;   // commit records in this file up to and including this one
  // (version 2) The commit whose fold wrote the tree named above: this one when it folded (and in
  // a compacted file), else an earlier one; the batches of the commits after it are replayed.
  uint64_t fold_offset = 0;
  uint64_t batch_offset = 0;      // (version 2) this commit's batch record, which ends at `offset`; 0: none
  uint32_t version = kFormatVersion;  // (not stored) the file's format version
  bool sealed = false;            // (not stored) a seal record follows the commit record
  bool seal_durable = false;      // (not stored) ... with kSealDurableBit set

  uint64_t record_end() const { return offset + CommitRecordSize(version); }
  bool folded() const { return fold_offset == offset; }
  // Where the next transaction starts: after the seal, if there is one.
  uint64_t end() const { return record_end() + (sealed ? kSealRecordSizeBytes : 0); }
};

struct RecordView {
  RecordType type;
  std::string_view payload;
};

// Encodes the header sector (kFileHeaderSizeBytes bytes).
std::string EncodeFileHeader(const FileHeader& header);
// Decodes and verifies a header sector; Corruption with the reason when it is not one.
Result<FileHeader> DecodeFileHeader(std::string_view bytes);

// The checksum of a record whose bytes (without the trailer) are `data`, at `offset`.
uint64_t RecordChecksum(uint64_t offset, std::string_view data);
uint64_t BodyChecksum(uint64_t body_offset, std::string_view body);

// Appends a whole record (header, payload, trailer) for a record at file offset `offset`.
void AppendRecord(std::string* dst, uint64_t offset, RecordType type, std::string_view payload);

// The first 8 bytes of every commit record of a file of `version`, which the backward scan for the
// newest commit looks for: u32 CommitPayloadSize(version) | u8 kCommit | 3 zero bytes.
std::string CommitRecordPrefix(uint32_t version = kFormatVersion);

std::string EncodeCommitPayload(const Commit& commit);
// Bit 63 of a seal's payload: the seal was written after a sync of its commit succeeded, so it
// proves the commit durable. No-sync seals (written with their commit) leave it clear.
inline constexpr uint64_t kSealDurableBit = uint64_t{1} << 63;
// The first 8 bytes of every seal record: u32 kSealPayloadSizeBytes | u8 kSeal | 3 zero bytes.
std::string SealRecordPrefix();
// Appends the seal record of `commit` (at commit.record_end()); `durable`: see kSealDurableBit.
void AppendSeal(std::string* dst, const Commit& commit, bool durable);
// True if `record` (verified, at commit.record_end()) is the seal of `commit`.
bool IsSealOf(const RecordView& record, const Commit& commit);
// The commit offset a verified seal record names, and whether it proves the commit durable.
struct SealInfo {
  uint64_t commit_offset;
  bool durable;
};
SealInfo DecodeSeal(const RecordView& record);
// Decodes a commit payload read at record offset `offset` in a file of `version`; structural
// checks included.
Result<Commit> DecodeCommitPayload(uint64_t offset, std::string_view payload, uint32_t version = kFormatVersion);

// A batch record's payload: count:varint then, per change, op:u8 (1 put, 2 delete)
// key_len:varint key [value_len:varint value]. Keys are strictly increasing.
struct BatchChange {
  std::string_view key;
  std::optional<std::string_view> value;  // nullopt: a delete
};
inline constexpr uint8_t kBatchPut = 1;
inline constexpr uint8_t kBatchDelete = 2;
// The payload of a batch record holding `changes` (sorted by key, distinct).
std::string EncodeBatch(const std::vector<BatchChange>& changes);
// Decodes a verified batch payload read at record offset `offset`; the views point into `payload`.
Result<std::vector<BatchChange>> DecodeBatch(uint64_t offset, std::string_view payload);
// The same into an array of large blocks (large_alloc.h), for a checkpoint an overlay keeps: one
// freed while a handle was open is taken again, its pages already faulted in.
using LargeBatchChanges = std::vector<BatchChange, LargeAllocator<BatchChange>>;
Result<LargeBatchChanges> DecodeLargeBatch(uint64_t offset, std::string_view payload);


// The checks of VerifyRecord without building a Status (no allocation: it runs on mapped memory
// under a fault guard); RecordCheckStatus turns a failed one into VerifyRecord's Corruption.
enum class RecordCheck : uint8_t { kOk, kTruncated, kLengthMismatch, kChecksum, kType };
// `checksum` false: every check but the record's own checksum, for bytes a body checksum that
// covers them (the record's checksum field included) has just matched.
RecordCheck CheckRecord(uint64_t offset, std::string_view bytes, bool checksum = true);
Status RecordCheckStatus(RecordCheck check, uint64_t offset, std::string_view bytes);

// Parses and verifies a whole record held in `bytes` (which start at file offset `offset`).
// Returns the payload view into `bytes` and the type.
Result<RecordView> VerifyRecord(uint64_t offset, std::string_view bytes, bool checksum = true);

std::string_view RecordTypeName(RecordType type);

}  // namespace dbdb::format
