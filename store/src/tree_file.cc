// TreeFile: verified reads and the backward scan for the newest commit.
#include "tree_file.h"

#include "checksum.h"

#include <algorithm>
#include <cstring>

namespace dbdb {

Result<std::shared_ptr<TreeFile>> TreeFile::Open(FileSystem& fs, const std::string& path,
                                                 bool read_only, uint64_t cache_bytes) {
  DBDB_ASSIGN_OR_RETURN(auto file, fs.Open(path, OpenOptions{.create = false, .read_only = read_only}));
  DBDB_ASSIGN_OR_RETURN(uint64_t identity, file->Identity());
  std::string bytes(format::kFileHeaderSizeBytes, '\0');
  DBDB_ASSIGN_OR_RETURN(size_t n, file->ReadAt(0, bytes));
  bytes.resize(n);
  auto header = format::DecodeFileHeader(bytes);
  if (!header.ok()) return header.status().WithContext(path);
  return std::shared_ptr<TreeFile>(new TreeFile(std::move(file), path, identity, header.value(), cache_bytes));
}

Status TreeFile::ReadExactly(uint64_t offset, uint64_t length, std::string* buffer) {
  buffer->resize(length);
  DBDB_ASSIGN_OR_RETURN(size_t n, file_->ReadAt(offset, *buffer));
  if (n != length) {
    return Status::Corruption("record at offset " + std::to_string(offset) + " extends past the end of the file");
  }
  return Status::Ok();
}

Result<format::RecordView> TreeFile::ReadRecord(uint64_t offset, uint64_t length, std::string* buffer) {
  if (length < format::kRecordOverheadBytes ||
      length > format::kRecordPayloadSizeMaxBytes + format::kRecordOverheadBytes) {
    return Status::Corruption("record length " + std::to_string(length) + " at offset " + std::to_string(offset));
  }
  DBDB_RETURN_IF_ERROR(ReadExactly(offset, length, buffer));
  return format::VerifyRecord(offset, *buffer);
}

Result<std::shared_ptr<const Node>> TreeFile::ReadNodeUncached(NodeRef ref) {
  std::string buffer;
  DBDB_ASSIGN_OR_RETURN(auto record, ReadRecord(ref.offset, ref.length, &buffer));
  // Keep only the payload: move it to the front of the buffer.
  size_t payload_size = record.payload.size();
  auto type = record.type;
  buffer.erase(0, format::kRecordHeaderSizeBytes);
  buffer.resize(payload_size);
  return DecodeNode(ref.offset, type, std::move(buffer));
}

Result<std::shared_ptr<const Node>> TreeFile::ReadNode(NodeRef ref) {
  if (auto cached = cache_.Lookup(ref.offset)) return cached;
  DBDB_ASSIGN_OR_RETURN(auto node, ReadNodeUncached(ref));
  cache_.Insert(ref.offset, node);
  return node;
}

Result<format::Commit> TreeFile::ReadCommit(uint64_t offset) {
  std::string buffer;
  DBDB_ASSIGN_OR_RETURN(auto record, ReadRecord(offset, format::kCommitRecordSizeBytes, &buffer));
  if (record.type != format::RecordType::kCommit) {
    return Status::Corruption("record at offset " + std::to_string(offset) + " is not a commit");
  }
  return format::DecodeCommitPayload(offset, record.payload);
}

Status TreeFile::VerifyCommitBody(const format::Commit& commit) {
  constexpr uint64_t kChunkBytes = 1 << 20;
  std::string buffer;
  BodyHasher hasher(commit.body_offset);
  for (uint64_t at = commit.body_offset; at < commit.offset; at += kChunkBytes) {
    uint64_t n = std::min(kChunkBytes, commit.offset - at);
    DBDB_RETURN_IF_ERROR(ReadExactly(at, n, &buffer));
    hasher.Update(buffer);
  }
  if (hasher.Digest() != commit.body_checksum) {
    return Status::Corruption("body of commit " + std::to_string(commit.txn_id) + " at offset " +
                              std::to_string(commit.offset) + " does not match its checksum");
  }
  return Status::Ok();
}

Status TreeFile::VerifyCommitChain(const format::Commit& newest) {
  format::Commit commit = newest;
  while (true) {
    DBDB_RETURN_IF_ERROR(VerifyCommitBody(commit));
    // Everything before synced_through was durable when this commit was written, so the commits
    // there were complete; between it and this body, each earlier commit must verify too.
    if (commit.body_offset <= commit.synced_through || commit.prev_commit_offset == 0) {
      return Status::Ok();
    }
    DBDB_ASSIGN_OR_RETURN(format::Commit prev, ReadCommit(commit.prev_commit_offset));
    if (prev.txn_id + 1 != commit.txn_id) {
      return Status::Corruption("commit at offset " + std::to_string(commit.offset) +
                                " does not follow the commit it names");
    }
    commit = prev;
  }
}

Result<bool> TreeFile::IsSealed(const format::Commit& commit, uint64_t size) {
  if (commit.record_end() + format::kSealRecordSizeBytes > size) return false;
  std::string buffer;
  auto record = ReadRecord(commit.record_end(), format::kSealRecordSizeBytes, &buffer);
  if (!record.ok()) {
    if (record.status().IsCorruption()) return false;  // torn or not a seal: not sealed
    return record.status();
  }
  return format::IsSealOf(record.value(), commit);
}

Result<std::optional<format::Commit>> TreeFile::FindNewestCommit(uint64_t size, uint64_t floor) {
  constexpr uint64_t kWindowBytes = 64 * 1024;
  const std::string prefix = format::CommitRecordPrefix();
  floor = std::max(floor, format::kFileHeaderSizeBytes);
  if (size < floor + format::kCommitRecordSizeBytes) return std::optional<format::Commit>();
  std::string window;
  // Candidate record starts are scanned from the highest possible one down to `floor`.
  uint64_t top = size - format::kCommitRecordSizeBytes;
  while (true) {
    uint64_t low = top - floor + 1 > kWindowBytes ? top + 1 - kWindowBytes : floor;
    // A writer may cut the file while we scan (a rolled-back commit): a short read just means
    // fewer candidates.
    window.resize(top - low + prefix.size());
    DBDB_ASSIGN_OR_RETURN(size_t got, file_->ReadAt(low, window));
    if (got < prefix.size()) {
      top = low == floor ? floor : low - 1;
      if (low == floor) return std::optional<format::Commit>();
      continue;
    }
    top = std::min(top, low + got - prefix.size());
    for (uint64_t p = top + 1; p-- > low;) {
      if (std::memcmp(window.data() + (p - low), prefix.data(), prefix.size()) != 0) continue;
      auto commit = ReadCommit(p);
      if (!commit.ok()) {
        if (commit.status().IsCorruption()) continue;  // torn or garbage: keep looking
        return commit.status();
      }
      Status chain = VerifyCommitChain(commit.value());
      if (chain.ok()) {
        DBDB_ASSIGN_OR_RETURN(commit->sealed, IsSealed(commit.value(), size));
        return std::optional<format::Commit>(commit.value());
      }
      if (!chain.IsCorruption()) return chain;
    }
    if (low == floor) return std::optional<format::Commit>();
    top = low - 1;
  }
}

}  // namespace dbdb
