// TreeFile: verified reads and the backward scan for the newest commit.
#include "tree_file.h"

#include "checksum.h"
#include "map_guard.h"
#include "record_walker.h"

#include <string.h>

#include <algorithm>
#include <cstring>

namespace dbdb {

Result<std::shared_ptr<TreeFile>> TreeFile::Open(FileSystem& fs, const std::string& path,
                                                 bool read_only, uint64_t cache_bytes, bool map_reads) {
  DBDB_ASSIGN_OR_RETURN(auto file, fs.Open(path, OpenOptions{.create = false, .read_only = read_only}));
  DBDB_ASSIGN_OR_RETURN(uint64_t identity, file->Identity());
  std::string bytes(format::kFileHeaderSizeBytes, '\0');
  DBDB_ASSIGN_OR_RETURN(size_t n, file->ReadAt(0, bytes));
  bytes.resize(n);
  auto header = format::DecodeFileHeader(bytes);
  if (!header.ok()) return header.status().WithContext(path);
  return std::shared_ptr<TreeFile>(new TreeFile(std::move(file), path, identity, header.value(), cache_bytes, map_reads));
}

Status TreeFile::ReadInto(uint64_t offset, std::span<char> dst) {
  DBDB_ASSIGN_OR_RETURN(size_t n, file_->ReadAt(offset, dst));
  if (n != dst.size()) {
    return Status::Corruption("record at offset " + std::to_string(offset) + " extends past the end of the file");
  }
  return Status::Ok();
}

Status TreeFile::ReadExactly(uint64_t offset, uint64_t length, std::string* buffer) {
  buffer->resize(length);
  return ReadInto(offset, *buffer);
}

Status TreeFile::ReadExactly(uint64_t offset, uint64_t length, ReadBytes* buffer) {
  buffer->Resize(length);
  return ReadInto(offset, buffer->span());
}

namespace {

// Corruption if no record can have `length` bytes (read or mapped, nothing is touched before this).
Status CheckRecordLength(uint64_t offset, uint64_t length) {
  if (length < format::kRecordOverheadBytes ||
      length > format::kRecordPayloadSizeMaxBytes + format::kRecordOverheadBytes) {
    return Status::Corruption("record length " + std::to_string(length) + " at offset " + std::to_string(offset));
  }
  return Status::Ok();
}

}  // namespace

Result<format::RecordView> TreeFile::ReadRecord(uint64_t offset, uint64_t length, std::string* buffer) {
  DBDB_RETURN_IF_ERROR(CheckRecordLength(offset, length));
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
  return DecodeNode(ref.offset, type, std::move(buffer), header_.version);
}

Result<std::shared_ptr<const Node>> TreeFile::ReadNode(NodeRef ref) {
  if (auto cached = cache_.Lookup(ref.offset)) return cached;
  DBDB_ASSIGN_OR_RETURN(auto node, ReadNodeUncached(ref));
  cache_.Insert(ref.offset, node);
  return node;
}

Result<const FileMapping*> TreeFile::MappingCovering(uint64_t end) {
  const FileMapping* mapping = mapping_.load(std::memory_order_acquire);
  if (mapping != nullptr && end <= mapping->size()) return mapping;
  if (unmappable_.load(std::memory_order_relaxed)) return nullptr;
  std::lock_guard<std::mutex> lock(map_mutex_);
  mapping = mapping_.load(std::memory_order_acquire);
  if (mapping != nullptr && end <= mapping->size()) return mapping;
  // Map past the end, so that the file can grow a while before the next mapping: twice its size,
  // at least 64 MiB of address space (pages past the end are never read: see ReadNodeView).
  DBDB_ASSIGN_OR_RETURN(uint64_t size, file_->Size());
  if (end > size) {
    return Status::Corruption("record at offset below " + std::to_string(end) + " extends past the end of the file");
  }
  constexpr uint64_t kMinimumMapBytes = uint64_t{64} << 20;
  uint64_t length = std::max({kMinimumMapBytes, 2 * size, end});
  // A file system that cannot map (NotSupported: a null mapping), or a map that fails (mmap's
  // ENODEV, ENOMEM: no address space), or too many mappings made after faults: this file is read
  // with ReadAt into the node cache from now on, which reads the same bytes.
  std::shared_ptr<const FileMapping> fresh;
  if (mappings_.size() < kMappingsMax) {
    InstallMapFaultHandler();
    auto mapped = file_->Map(length);
    if (mapped.ok()) fresh = std::move(mapped).value();
  }
  if (fresh == nullptr) {
    unmappable_.store(true, std::memory_order_relaxed);
    return nullptr;
  }
  if (fresh->size() < end) {  // a FileSystem that mapped less than asked: never read past a mapping
    return Status::IOError("mapping " + path_ + " gave " + std::to_string(fresh->size()) + " bytes, not " +
                           std::to_string(length));
  }
  mappings_.push_back(fresh);
  // The first mapping maps the verified-node table too (verified_nodes.h); a later one starts it
  // over: what the older mappings verified is checked again in this one. Before the mapping is
  // published, so that a reader that sees it sees the table (acquire, release).
  if (verified_.mapped()) {
    verified_.Clear();
  } else {
    verified_.Map();
  }
  mapping_.store(fresh.get(), std::memory_order_release);
  return fresh.get();
}

bool TreeFile::AdoptMappings(TreeFile& warmed) {
  if (warmed.identity_ != identity_ || !map_reads_ || !warmed.map_reads_ ||
      warmed.unmappable_.load(std::memory_order_relaxed)) {
    return false;
  }
  std::scoped_lock lock(map_mutex_, warmed.map_mutex_);
  if (!mappings_.empty() || warmed.mapping_.load(std::memory_order_acquire) == nullptr) return false;
  mappings_ = std::move(warmed.mappings_);
  warmed.mappings_.clear();
  // The table before the mapping is published: a reader that sees the mapping sees its table.
  verified_.Swap(warmed.verified_);
  mapping_.store(warmed.mapping_.exchange(nullptr, std::memory_order_acq_rel), std::memory_order_release);
  return true;
}

Status TreeFile::MapFault(uint64_t offset) {
  // The next read maps the file anew (the fault may have been the mapping's, not the file's);
  // the faulted mapping stays until this TreeFile goes, as a reader may still hold a view into it.
  mapping_.store(nullptr, std::memory_order_release);
  return Status::IOError("I/O error reading " + path_ + " through its mapping at offset " + std::to_string(offset) +
                         " (SIGBUS: the page could not be read, or the file was cut short under it)");
}

void TreeFile::Prefetch(NodeRef ref, NodeUse use) const {
  const FileMapping* mapping = mapping_.load(std::memory_order_acquire);
  if (mapping == nullptr || ref.offset >= mapping->size() || mapping->size() - ref.offset < 128) return;
  __builtin_prefetch(mapping->data() + ref.offset);
  __builtin_prefetch(mapping->data() + ref.offset + 64);
  if (use != NodeUse::kOnePass) verified_.Prefetch(ref.offset);
}

namespace {

// A mapped node's payload, ref's length checked (CheckRecordLength) and inside `mapping`. Its
// count and first slots are fetched while the verified-node table is asked: both are most often
// a cache miss, and they no longer follow one another. So is the payload's middle, where the key
// of a search's first probe lies when the node's entries are of about one size (a guess that
// costs one line when wrong; 1.06 times the gets a second, the median of ten alternated runs of a
// read driver). With `search` (a get's descent), the quarters too, where its second probe lies:
// the search's first two probes then wait on one miss, not two in turn (1.03 times the gets a
// second: medians of eight alternated runs of a read driver after a 1M-key fill, 587k against
// 567k in its first pass, 597k against 578k in its second). Not for an iterator, which reads
// every entry of a leaf in order anyway. A prefetch reads nothing and never faults.
std::string_view PrefetchedPayload(const FileMapping* mapping, NodeRef ref, bool search) {
  std::string_view payload(mapping->data() + ref.offset + format::kRecordHeaderSizeBytes,
                           ref.length - format::kRecordOverheadBytes);
  __builtin_prefetch(payload.data());
  __builtin_prefetch(payload.data() + std::min<size_t>(64, payload.size()));
  __builtin_prefetch(payload.data() + payload.size() / 2);
  if (search) {
    __builtin_prefetch(payload.data() + payload.size() / 4);
    __builtin_prefetch(payload.data() + payload.size() * 3 / 4);
  }
  return payload;
}

}  // namespace

std::optional<NodeView> TreeFile::VerifiedMappedNode(NodeRef ref, const FileMapping* mapping) const {
  // Found only for exactly the (offset, length, mapping) ReadNodeView inserted after checking
  // the length, the range inside the mapping, the checksum and the structure. The range is
  // checked here too, before the payload's address is formed for the prefetches.
  if (ref.length < format::kRecordOverheadBytes || ref.offset > mapping->size() ||
      ref.length > mapping->size() - ref.offset) {
    return std::nullopt;
  }
  std::string_view payload = PrefetchedPayload(mapping, ref, /*search=*/true);
  const uint8_t type = verified_.Find(ref, mapping);
  if (type == 0) return std::nullopt;
  return NodeView(payload.data(), static_cast<uint32_t>(payload.size()),
                  type == static_cast<uint8_t>(format::RecordType::kLeaf));
}

Result<TreeFile::NodeHandle> TreeFile::ReadNodeView(NodeRef ref, NodeUse use) {
  const FileMapping* mapping = nullptr;
  if (map_reads_) {
    DBDB_RETURN_IF_ERROR(CheckRecordLength(ref.offset, ref.length));
    if (ref.offset > UINT64_MAX - ref.length) {
      return Status::Corruption("record at offset " + std::to_string(ref.offset) + " runs past 2^64");
    }
    DBDB_ASSIGN_OR_RETURN(mapping, MappingCovering(ref.offset + ref.length));
  }
  if (mapping == nullptr) {
    DBDB_ASSIGN_OR_RETURN(auto node, use == NodeUse::kOnePass ? ReadNodeUncached(ref) : ReadNode(ref));
    return NodeHandle{node->view(), node};
  }
  if (use == NodeUse::kOnePass) return ReadNodeCopy(ref, mapping);
  std::string_view record(mapping->data() + ref.offset, ref.length);
  std::string_view payload = PrefetchedPayload(mapping, ref, /*search=*/false);
  uint8_t type = verified_.Find(ref, mapping);
  if (type == 0) {
    // First use in this mapping: the record's checksum and the node's structure (I5), read in
    // place. Nothing in here allocates, so a fault may abandon it (map_guard.h).
    format::RecordCheck check = format::RecordCheck::kOk;
    const char* why = nullptr;
    uint8_t read_type = 0;
    if (!ReadMapped([&] {
          check = format::CheckRecord(ref.offset, record);
          if (check != format::RecordCheck::kOk) return;
          read_type = static_cast<uint8_t>(record[4]);
          why = ValidateNode(ref.offset, static_cast<format::RecordType>(read_type), payload);
        })) {
      return MapFault(ref.offset);
    }
    if (check != format::RecordCheck::kOk) {
      // Build the message from a copy: the mapped bytes may fault again.
      std::string header(format::kRecordHeaderSizeBytes, '\0');  // ref.length covers at least this
      if (!ReadMapped([&] { record.copy(header.data(), header.size()); })) return MapFault(ref.offset);
      return format::RecordCheckStatus(check, ref.offset, header);
    }
    if (why != nullptr) return BadNode(ref.offset, why);
    type = read_type;
    verified_.Insert(ref, mapping, type);
  }
  return NodeHandle{NodeView(payload.data(), static_cast<uint32_t>(payload.size()),
                             type == static_cast<uint8_t>(format::RecordType::kLeaf)),
                    nullptr};
}

Result<TreeFile::NodeHandle> TreeFile::ReadNodeCopy(NodeRef ref, const FileMapping* mapping) {
  // Allocated before the guarded read (a fault abandons it: nothing in there may allocate).
  auto copy = std::make_shared<std::string>(ref.length, '\0');
  if (!ReadMapped([&] { std::memcpy(copy->data(), mapping->data() + ref.offset, ref.length); })) {
    return MapFault(ref.offset);
  }
  // Verified as the bytes it reads (I5): the copy, which nothing can change under it.
  const std::string_view record(*copy);
  const format::RecordCheck check = format::CheckRecord(ref.offset, record);
  if (check != format::RecordCheck::kOk) return format::RecordCheckStatus(check, ref.offset, record);
  const auto type = static_cast<format::RecordType>(record[4]);
  const std::string_view payload = record.substr(format::kRecordHeaderSizeBytes, ref.length - format::kRecordOverheadBytes);
  if (const char* why = ValidateNode(ref.offset, type, payload)) return BadNode(ref.offset, why);
  return NodeHandle{NodeView(payload.data(), static_cast<uint32_t>(payload.size()), type == format::RecordType::kLeaf),
                    std::move(copy)};
}

Result<format::Commit> TreeFile::ReadCommit(uint64_t offset) {
  std::string buffer;
  DBDB_ASSIGN_OR_RETURN(auto record, ReadRecord(offset, commit_record_size(), &buffer));
  if (record.type != format::RecordType::kCommit) {
    return Status::Corruption("record at offset " + std::to_string(offset) + " is not a commit");
  }
  return format::DecodeCommitPayload(offset, record.payload, header_.version);
}

Result<std::optional<std::string_view>> TreeFile::ReadBatchPayload(const format::Commit& commit, ReadBytes* buffer,
                                                                    bool checkpoint) {
  if (commit.batch_offset == 0) return std::optional<std::string_view>();
  // DecodeCommitPayload checked that the batch lies inside the body, ending at the commit.
  const uint64_t length = commit.offset - commit.batch_offset;
  DBDB_RETURN_IF_ERROR(CheckRecordLength(commit.batch_offset, length));
  bool hashed = false;
  std::string_view bytes;
  if (auto kept = TakeKeptBody(commit)) {
    *buffer = std::move(*kept);
    hashed = true;
    bytes = buffer->view().substr(commit.batch_offset - commit.body_offset);  // after the base's seal, if any
  } else {
    DBDB_RETURN_IF_ERROR(ReadExactly(commit.batch_offset, length, buffer));
    bytes = buffer->view();
  }
  DBDB_ASSIGN_OR_RETURN(auto record, format::VerifyRecord(commit.batch_offset, bytes, /*checksum=*/!hashed));
  const auto expected = checkpoint ? format::RecordType::kCheckpoint : format::RecordType::kBatch;
  if (record.type != expected) {
    return Status::Corruption("record at offset " + std::to_string(commit.batch_offset) + " named by commit " +
                              std::to_string(commit.txn_id) + " is not a " +
                              std::string(format::RecordTypeName(expected)) +
                              (checkpoint ? " (the commit restates the txn id of the one before it)" : ""));
  }
  return std::optional<std::string_view>(record.payload);
}

Result<std::vector<format::BatchChange>> TreeFile::ReadBatch(const format::Commit& commit, ReadBytes* buffer,
                                                            bool checkpoint) {
  DBDB_ASSIGN_OR_RETURN(auto payload, ReadBatchPayload(commit, buffer, checkpoint));
  if (!payload) return std::vector<format::BatchChange>();
  return format::DecodeBatch(commit.batch_offset, *payload);
}

Result<format::LargeBatchChanges> TreeFile::ReadCheckpoint(const format::Commit& commit, ReadBytes* buffer) {
  DBDB_ASSIGN_OR_RETURN(auto payload, ReadBatchPayload(commit, buffer, /*checkpoint=*/true));
  if (!payload) return format::LargeBatchChanges();
  return format::DecodeLargeBatch(commit.batch_offset, *payload);
}

Status TreeFile::VerifyCommitBody(const format::Commit& commit, ReadBytes* kept) {
  // In one piece when it is to be kept (the batch record that ReadBatch will want); else in
  // pieces, so that hashing a fold's nodes or a compacted tree takes bounded memory.
  const uint64_t body_bytes = commit.offset - commit.body_offset;
  const bool keep = kept != nullptr && BodyIsBatch(commit) && body_bytes <= kKeptBodyBytesMax;
  const uint64_t chunk_bytes = keep ? body_bytes : uint64_t{1} << 20;
  ReadBytes local;
  ReadBytes& buffer = keep ? *kept : local;
  BodyHasher hasher(commit.body_offset);
  for (uint64_t at = commit.body_offset; at < commit.offset; at += chunk_bytes) {
    uint64_t n = std::min(chunk_bytes, commit.offset - at);
    DBDB_RETURN_IF_ERROR(ReadExactly(at, n, &buffer));
    hasher.Update(buffer.view());
  }
  if (hasher.Digest() != commit.body_checksum) {
    if (keep) *kept = ReadBytes();
    return Status::Corruption("body of commit " + std::to_string(commit.txn_id) + " at offset " +
                              std::to_string(commit.offset) + " does not match its checksum");
  }
  if (kept != nullptr && !keep) *kept = ReadBytes();
  return Status::Ok();
}

bool TreeFile::BodyIsBatch(const format::Commit& commit) {
  // The batch record, after the base's seal when the base was sealed (that seal is in the body).
  return commit.batch_offset != 0 && commit.batch_offset >= commit.body_offset &&
         commit.batch_offset - commit.body_offset <= format::kSealRecordSizeBytes;
}

ReadBytes TreeFile::DropKeptBody() {
  std::lock_guard<std::mutex> guard(kept_mutex_);
  ReadBytes bytes;
  if (kept_) bytes = std::move(kept_->bytes);
  kept_.reset();
  return bytes;
}

std::optional<ReadBytes> TreeFile::TakeKeptBody(const format::Commit& commit) {
  std::lock_guard<std::mutex> guard(kept_mutex_);
  if (!kept_ || kept_->commit_offset != commit.offset || kept_->body_checksum != commit.body_checksum ||
      !BodyIsBatch(commit) || kept_->bytes.size() != commit.offset - commit.body_offset) {
    return std::nullopt;
  }
  ReadBytes bytes = std::move(kept_->bytes);
  kept_.reset();
  return bytes;
}

bool TreeFile::IsCompactedTree(const format::Commit& commit) const {
  // DecodeCommitPayload ties a first commit to a body at the header's end, commits_in_file 1 and a
  // fold of its own. No batch: every writer's commit names one, so a writer's first commit in a
  // file of generation 1 or more (an upgraded empty file, or one whose compacted commit was lost)
  // is hashed like any other.
  return header_.generation > 0 && header_.version >= 2 && commit.prev_commit_offset == 0 &&
         commit.batch_offset == 0;
}

bool TreeFile::IsDurableCloseFold(const format::Commit& commit) {
  if (header_.version < format::kCloseFoldVersion || !commit.folded() || commit.batch_offset != 0 ||
      commit.prev_commit_offset == 0) {
    return false;
  }
  format::Commit sealed = commit;
  return ReadSeal(&sealed, UINT64_MAX).ok() && sealed.seal_durable;  // an error: hashed, as any commit
}

Status TreeFile::VerifyCommitChain(const format::Commit& newest, uint64_t verified_commit) {
  // The newest commit's body, when it is its batch record, is kept for ReadBatch: a handle that
  // opens at a checkpoint reads and hashes it once, not twice.
  ReadBytes newest_body;
  auto keep_newest = [&] {
    std::lock_guard<std::mutex> guard(kept_mutex_);
    kept_.reset();  // a body nobody took is not held on to
    if (newest_body.size() > 0) kept_ = KeptBody{newest.offset, newest.body_checksum, std::move(newest_body)};
  };
  format::Commit commit = newest;
  while (true) {
    if (!IsCompactedTree(commit) && !IsDurableCloseFold(commit)) {
      DBDB_RETURN_IF_ERROR(VerifyCommitBody(commit, commit.offset == newest.offset ? &newest_body : nullptr));
    }
    // Everything before synced_through was durable when this commit was written, so the commits
    // there were complete; between it and this body, each earlier commit must verify too —
    // except the one this handle verified already (with its chain), which stays as it was.
    if (commit.body_offset <= commit.synced_through || commit.prev_commit_offset == 0) {
      keep_newest();
      return Status::Ok();
    }
    DBDB_ASSIGN_OR_RETURN(format::Commit prev, ReadCommit(commit.prev_commit_offset));
    // The next txn id, or the same for a checkpoint (found by the stateful property in no-sync
    // mode: a commit after a checkpoint was refused here, and opening fell back to the checkpoint).
    const bool restates = header_.version >= format::kCheckpointVersion && prev.txn_id == commit.txn_id;
    if (prev.txn_id + 1 != commit.txn_id && !restates) {
      return Status::Corruption("commit at offset " + std::to_string(commit.offset) +
                                " does not follow the commit it names");
    }
    if (verified_commit != 0 && prev.offset == verified_commit) {
      keep_newest();
      return Status::Ok();
    }
    commit = prev;
  }
}

Status TreeFile::ReadSeal(format::Commit* commit, uint64_t size) {
  commit->sealed = false;
  commit->seal_durable = false;
  if (commit->record_end() + format::kSealRecordSizeBytes > size) return Status::Ok();
  std::string buffer;
  auto record = ReadRecord(commit->record_end(), format::kSealRecordSizeBytes, &buffer);
  if (!record.ok()) {
    if (record.status().IsCorruption()) return Status::Ok();  // torn or not a seal: not sealed
    return record.status();
  }
  commit->sealed = format::IsSealOf(record.value(), *commit);
  commit->seal_durable = commit->sealed && format::DecodeSeal(record.value()).durable;
  return Status::Ok();
}

Status TreeFile::ScanBackward(uint64_t top_end, uint64_t floor, const std::string& prefix,
                              const std::function<Result<bool>(uint64_t)>& visit) {
  constexpr uint64_t kWindowBytes = 64 * 1024;
  if (top_end < floor + prefix.size()) return Status::Ok();
  std::string window;
  // Candidate record starts are scanned from the highest possible one down to `floor`.
  uint64_t top = top_end - prefix.size();
  while (true) {
    uint64_t low = top - floor + 1 > kWindowBytes ? top + 1 - kWindowBytes : floor;
    // A writer may cut the file while we scan (a rolled-back commit): a short read just means
    // fewer candidates.
    window.resize(top - low + prefix.size());
    DBDB_ASSIGN_OR_RETURN(size_t got, file_->ReadAt(low, window));
    if (got >= prefix.size()) {
      top = std::min(top, low + got - prefix.size());
      // memrchr finds the candidates' first byte: a zero-filled stretch costs almost nothing.
      const char* base = window.data();
      size_t span = static_cast<size_t>(top - low) + 1;
      while (span > 0) {
        const void* hit = ::memrchr(base, prefix[0], span);
        if (hit == nullptr) break;
        size_t at = static_cast<size_t>(static_cast<const char*>(hit) - base);
        span = at;
        if (std::memcmp(base + at, prefix.data(), prefix.size()) != 0) continue;
        DBDB_ASSIGN_OR_RETURN(bool more, visit(low + at));
        if (!more) return Status::Ok();
      }
    }
    if (low == floor) return Status::Ok();
    top = low - 1;
  }
}

Result<std::optional<format::Commit>> TreeFile::ScanForNewestCommit(uint64_t size, uint64_t floor, uint64_t verified_commit,
                                                                  bool* skipped, uint64_t* above) {
  floor = std::max(floor, format::kFileHeaderSizeBytes);
  // Nothing lies in a trailing hole (space a writer allocated ahead, say): start below it.
  DBDB_ASSIGN_OR_RETURN(uint64_t data_end, file_->DataEnd(floor));
  uint64_t top_end = std::min(size, data_end);
  std::optional<format::Commit> found;
  DBDB_RETURN_IF_ERROR(ScanBackward(top_end, floor, format::CommitRecordPrefix(header_.version), [&](uint64_t p) -> Result<bool> {
    if (p > size || size - p < commit_record_size()) return true;
    auto commit = ReadCommit(p);
    if (!commit.ok()) {
      if (!commit.status().IsCorruption()) return commit.status();
      *skipped = true;  // torn or garbage (or a bad read): keep looking
      return true;
    }
    Status chain = VerifyCommitChain(commit.value(), verified_commit);
    if (chain.ok()) {
      DBDB_RETURN_IF_ERROR(ReadSeal(&commit.value(), size));
      found = commit.value();
      // Bytes above it that are not a commit (a torn tail, or space allocated ahead) are read
      // twice, like a candidate that did not verify: one bad read could have hidden a commit's
      // first bytes (FindNewestCommit).
      if (found->end() < top_end) *above = top_end;
      return false;
    }
    if (!chain.IsCorruption()) return chain;
    *skipped = true;
    return true;
  }));
  if (!found && top_end > floor) *above = top_end;
  return found;
}

Result<std::optional<uint64_t>> TreeFile::DurableSealAbove(uint64_t above, uint64_t size) {
  DBDB_ASSIGN_OR_RETURN(uint64_t data_end, file_->DataEnd(above));
  std::optional<uint64_t> sealed;
  std::string buffer;
  DBDB_RETURN_IF_ERROR(ScanBackward(std::min(size, data_end), above, format::SealRecordPrefix(),
                                    [&](uint64_t p) -> Result<bool> {
    auto record = ReadRecord(p, format::kSealRecordSizeBytes, &buffer);
    if (!record.ok()) {
      if (record.status().IsCorruption()) return true;
      return record.status();
    }
    if (record->type != format::RecordType::kSeal) return true;
    format::SealInfo seal = format::DecodeSeal(record.value());
    if (!seal.durable || seal.commit_offset < above || p - seal.commit_offset != commit_record_size()) {
      return true;
    }
    sealed = seal.commit_offset;
    return false;
  }));
  return sealed;
}

Result<std::optional<format::Commit>> TreeFile::FindNewestCommit(uint64_t size, uint64_t floor, uint64_t verified_commit) {
  // A commit that verifies is real: a bad read can make a good commit look torn, never a torn one
  // look good. So when the scan passed over a candidate that did not verify, it reads again and
  // takes the newer of the two answers: one transient bad read cannot make anyone fall back to an
  // older commit (which a writer would then make permanent by cutting the newer one away).
  bool skipped = false;
  uint64_t above = 0;
  DBDB_ASSIGN_OR_RETURN(auto found, ScanForNewestCommit(size, floor, verified_commit, &skipped, &above));
  const uint64_t lower = found ? found->end() : std::max(floor, format::kFileHeaderSizeBytes);
  if (!skipped && above > lower) {
    // Only bytes above the commit found (or above the floor), no candidate that failed: if a
    // second read of them finds only zeros (space allocated ahead), no commit hides there, and
    // scanning and verifying the chain again would find the same answer.
    DBDB_ASSIGN_OR_RETURN(uint64_t nonzero, EndOfNonZero(*file_, lower, above));
    skipped = nonzero > lower;
  }
  if (skipped) {
    bool again = false;
    uint64_t unused = 0;
    DBDB_ASSIGN_OR_RETURN(auto second, ScanForNewestCommit(size, floor, verified_commit, &again, &unused));
    if (second && (!found || second->offset > found->offset)) found = second;
  }
  // A durable seal above the commit found proves a newer commit was synced. Either a writer
  // committed it while we scanned (then it verifies now: take it, and look above it), or the file
  // is damaged there: refuse rather than fall back past a commit proven durable (I9).
  constexpr int kRoundsMax = 64;  // each round moves up by one commit
  for (int round = 0; round < kRoundsMax; round++) {
    uint64_t above = found ? found->end() : std::max(floor, format::kFileHeaderSizeBytes);
    DBDB_ASSIGN_OR_RETURN(auto proof, DurableSealAbove(above, size));
    if (!proof) return found;
    DBDB_ASSIGN_OR_RETURN(auto proven, VerifiedCommitAt(*proof, size, verified_commit));
    if (!proven) {
      DBDB_ASSIGN_OR_RETURN(proven, VerifiedCommitAt(*proof, size, verified_commit));  // read again
    }
    if (!proven) {
      return Status::Corruption(path_ + ": a seal proves the commit at offset " + std::to_string(*proof) +
                                " durable, but that commit does not verify (refusing to fall back to an older one)");
    }
    found = proven;
  }
  return found;
}

Result<std::optional<format::Commit>> TreeFile::VerifiedCommitAt(uint64_t offset, uint64_t size,
                                                               uint64_t verified_commit) {
  auto commit = ReadCommit(offset);
  if (!commit.ok()) {
    if (commit.status().IsCorruption()) return std::optional<format::Commit>();
    return commit.status();
  }
  Status chain = VerifyCommitChain(commit.value(), verified_commit);
  if (!chain.ok()) {
    if (chain.IsCorruption()) return std::optional<format::Commit>();
    return chain;
  }
  DBDB_RETURN_IF_ERROR(ReadSeal(&commit.value(), size));
  return std::optional<format::Commit>(commit.value());
}

}  // namespace dbdb
