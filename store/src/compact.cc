// Compaction (I8), online: the newest commit is rewritten, packed, into "<path>.compacting", which is
// synced, renamed over the database and made durable with a directory sync.
//
// The tree is written from a reader's snapshot without the writer lock, so writers go on
// committing meanwhile; their commits are then copied after it, batch by batch, in passes: up to
// kUnlockedPassesMax without the writer lock, and a last one under it (with the rename and the
// directory sync), so a writer waits only for the commits made during the pass before. One
// compaction runs at a time ("<path>.compacting.lock", across threads and processes). Readers keep
// reading the old file (their snapshots hold it open); other handles notice the new file by its
// identity and follow it. A crash at any step leaves the old file or the new one under the name,
// both holding the same newest commit, or the new one holding a commit the old one holds too.
#include "checksum.h"
#include "db_impl.h"
#include "dbdb_assert.h"

namespace dbdb {
namespace {

// The passes without the writer lock end when one copies less than this, or after
// kUnlockedPassesMax of them: the pass under the lock copies what was committed during the last.
constexpr uint64_t kLockedPassBytesMax = uint64_t{1} << 20;
constexpr int kUnlockedPassesMax = 4;

// The compacted tree's writeback is started every this many bytes as they are written
// (File::StartWriteback), so that the sync before the rename waits for what is left, not for the
// whole tree: at a million keys the sync took 50 to 70 ms, on its own at the end of the tree's
// pass, and takes 2 to 3 ms so (docs/PERFORMANCE.md, stop 51). The hint itself may block while
// the disk's queue is full (sync_file_range), under the writer lock in an inline compaction that
// holds it, as the sync it shortens would.
constexpr uint64_t kWritebackBytes = uint64_t{4} << 20;

}  // namespace

Status DBImpl::Compact() {
  DBDB_RETURN_IF_ERROR(CheckWritable());
  DBDB_ASSIGN_OR_RETURN(auto compaction_lock, LockCompaction(options_.wait_for_writer));
  return CompactOnline().status();
}

Result<std::unique_ptr<FileLock>> DBImpl::LockCompaction(bool wait) {
  auto lock = fs_->Lock(path_ + ".compacting.lock", {.wait = wait});
  if (!lock.ok() && lock.status().code() == StatusCode::kBusy) {
    return Status::Busy("another compaction of " + path_ + " is running");
  }
  if (!lock.ok()) return lock.status().WithContext("the compaction lock of " + path_);
  return lock;
}

Result<std::optional<DBImpl::Compacted>> DBImpl::CompactOnline() {
  DBDB_ASSIGN_OR_RETURN(View start, ReaderView());
  if (!start.commit) return std::optional<Compacted>();  // nothing committed, nothing to compact
  DBDB_RETURN_IF_ERROR(WritableVersion(*start.file));
  DBDB_ASSIGN_OR_RETURN(Compacted compacted, CompactFrom(start, nullptr));
  return std::optional<Compacted>(std::move(compacted));
}

Result<DBImpl::Compacted> DBImpl::CompactFrom(const View& start, WriterLock* held) {
  const std::string temp = path_ + ".compacting";
  DBDB_ASSIGN_OR_RETURN(auto out, fs_->Open(temp, OpenOptions{.create = true}));
  auto written = WriteCompacted(start, temp, *out, held);
  // Any error before the rename leaves the database untouched: report it, keep the handle. A
  // partial file gives its space back (a full disk must not stay full) but keeps its name and
  // inode: removing it would let the next compaction create a new file under that name, and a
  // power cut that kept the rename but not the create would rename this partial file over the
  // database (found by `dbdb-crash --processes 3`; mutant 35).
  if (!written.ok()) {
    (void)out->Truncate(0);
    return written.status();
  }
  out.reset();
  DBDB_ASSIGN_OR_RETURN(View view, InstallCompacted(temp, written->log.last, std::move(written->log.overlay),
                                                    std::move(written->warmed)));
  return Compacted{std::move(written->lock), std::move(view)};
}

Result<DBImpl::LockedLog> DBImpl::WriteCompacted(const View& start, const std::string& temp, File& out,
                                                 WriterLock* held) {
  DBDB_ASSIGN_OR_RETURN(format::Commit fold, WriteCompactedTree(start, out));
  CopiedLog log{*start.commit, fold, fold.record_end(), NewOverlay(fold.offset, fold.txn_id)};
  // Held: nothing can have been committed since, and no warm-up lengthens the writers' wait.
  if (held != nullptr) return LockedLog{std::move(*held), log, nullptr};
  DBDB_ASSIGN_OR_RETURN(std::shared_ptr<TreeFile> warmed, WarmCompacted(temp, fold));
  for (int pass = 0; pass < kUnlockedPassesMax; pass++) {
    DBDB_RETURN_IF_ERROR(CheckNotClosing());
    DBDB_ASSIGN_OR_RETURN(View now, ReaderView());
    if (now.file != start.file) return Status::Aborted(path_ + " was replaced while it was being compacted");
    auto copied = CopyLog(now, &log, out);
    // Without the writer lock the log may change under a pass (a no-sync commit rolled back), so
    // a record that does not verify gives the compaction up; the pass under the lock, where the
    // log holds still, reports damage as Corruption.
    if (!copied.ok() && copied.status().IsCorruption()) {
      return Status::Aborted(copied.status().message() + " (read without the writer lock; compaction abandoned)");
    }
    if (!copied.ok()) return copied.status();
    if (copied.value() < kLockedPassBytesMax) break;
  }
  // The last pass, under the writer lock: the newest commit, settled as a writer settles it. Once
  // the handle is closing the lock is only tried: the background compaction gives up, and so does
  // the close's own (FoldOrCheckpointOnClose) when another writer holds it, rather than a close
  // waiting for a transaction that may stay open for as long as it likes.
  DBDB_RETURN_IF_ERROR(CheckNotClosing());
  DBDB_ASSIGN_OR_RETURN(WriterLock lock, AcquireWriter(options_.wait_for_writer && !closing_.load(),
                                                       in_background_compaction ? &closing_ : nullptr));
  DBDB_ASSIGN_OR_RETURN(View newest, PrepareWriterView());
  if (newest.file != start.file) return Status::Aborted(path_ + " was replaced while it was being compacted");
  DBDB_RETURN_IF_ERROR(CopyLog(newest, &log, out).status());
  return LockedLog{std::move(lock), log, warmed};
}

Result<std::shared_ptr<TreeFile>> DBImpl::WarmCompacted(const std::string& temp, const format::Commit& tree) {
  const uint64_t reads = ReadsSinceInstall();
  // As many nodes as the reads since the last install could have verified (each a path from the
  // root): none for a handle that only writes (a fill's compactions), the whole tree, up to half
  // the verified-node table, for one that reads. A close's compaction leaves the file to the next
  // open.
  const uint64_t height = std::max<uint64_t>(tree.tree_height, 1);
  const uint64_t nodes = reads > UINT64_MAX / height ? UINT64_MAX : reads * height;
  if (!options_.mmap_reads || closing_.load() || nodes == 0) return std::shared_ptr<TreeFile>();
  auto file = TreeFile::Open(*fs_, temp, /*read_only=*/true, options_.node_cache_bytes, /*map_reads=*/true);
  if (!file.ok()) return file.status().WithContext("opening the compacted file to verify its tree");
  NodeRef failed;
  auto warmed = file.value()->WarmTree(NodeRef{tree.root_offset, tree.root_length}, tree.tree_height, nodes, closing_,
                                       &failed);
  if (!warmed.ok()) {
    // One read of a mapping is not the file: the node is read again from the file (ReadAt). Bytes
    // that verify there install the file unwarmed (its reads verify each node at first use, I5);
    // bytes that do not, or a node of the wrong kind, fail the compaction before the rename.
    Status s = failed.offset == 0 ? warmed.status() : file.value()->ReadNodeUncached(failed).status();
    if (!s.ok()) return s.WithContext("verifying the compacted tree in " + temp + " before installing it");
    return std::shared_ptr<TreeFile>();
  }
  nodes_warmed_.fetch_add(warmed.value(), std::memory_order_relaxed);
  return file;
}

Result<format::Commit> DBImpl::WriteCompactedTree(const View& view, File& out) {
  DBDB_ASSERT(view.commit.has_value());  // callers compact only a file with a commit
  const format::Commit& old = *view.commit;
  format::Commit commit;
  DBDB_RETURN_IF_ERROR(out.Truncate(0));
  format::FileHeader header = view.file->header();
  header.version = format::kFormatVersion;  // compaction is also how a version-1 file is upgraded
  header.generation++;
  DBDB_RETURN_IF_ERROR(out.WriteAt(0, format::EncodeFileHeader(header)));
  BodyHasher body_hash(format::kFileHeaderSizeBytes);
  uint64_t write_offset = format::kFileHeaderSizeBytes;
  uint64_t written_back = 0;  // the writeback started of [0, written_back)
  BulkLoader loader(format::kFileHeaderSizeBytes, options_.node_size_target_bytes,
                    [&](std::string_view bytes) -> Status {
                      body_hash.Update(bytes);
                      DBDB_RETURN_IF_ERROR(out.WriteAt(write_offset, std::span<const char>(bytes.data(), bytes.size())));
                      write_offset += bytes.size();
                      if (write_offset - written_back >= kWritebackBytes) {
                        out.StartWriteback(written_back, write_offset - written_back);
                        written_back = write_offset;
                      }
                      return Status::Ok();
                    });
  // The view's keys: the fold's tree with the unfolded log over it, so compaction also folds.
  // Each node is read once: verified at each read, kept in no table (TreeFile::NodeUse).
  auto it = NewViewIterator(view, TreeFile::NodeUse::kOnePass);
  DBDB_RETURN_IF_ERROR(it->SeekToFirst());
  for (uint64_t n = 1; it->Valid(); n++) {
    DBDB_RETURN_IF_ERROR(loader.Add(it->key(), it->value()));
    DBDB_RETURN_IF_ERROR(it->Next());
    if (n % 4096 == 0) DBDB_RETURN_IF_ERROR(CheckNotClosing());  // a closing handle's background one gives up
  }
  DBDB_ASSIGN_OR_RETURN(TreeRoot root, loader.Finish());
  if (view.log_bytes() == 0 && root.key_count != old.key_count) {
    return Status::Corruption("compaction copied " + std::to_string(root.key_count) + " keys, the commit holds " +
                              std::to_string(old.key_count));
  }
  commit.offset = write_offset;
  commit.txn_id = old.txn_id;  // the same state as the newest commit, so the same id
  commit.body_offset = format::kFileHeaderSizeBytes;
  commit.body_checksum = body_hash.Digest();
  commit.synced_through = format::kFileHeaderSizeBytes;
  SetRoot(&commit, root);
  commit.commits_in_file = 1;
  commit.fold_offset = commit.offset;  // a fold: nothing to replay
  commit.sealed = true;
  std::string record;
  AppendCommitRecord(&record, commit);
  // Synced with the file below, before its name exists: the seal proves the commit durable.
  format::AppendSeal(&record, commit, true);
  commit.seal_durable = true;
  DBDB_RETURN_IF_ERROR(out.WriteAt(commit.offset, record));
  DBDB_RETURN_IF_ERROR(out.Sync());  // the new file is durable before its name is
  return commit;
}

Result<std::vector<format::Commit>> DBImpl::ReadChainSinceCopied(const View& upto, const CopiedLog& log) {
  const format::Commit& newest = *upto.commit;
  // The commit copied last no longer reads back as it was copied: gone from the chain (a no-sync
  // commit rolled back after a failed write; another may even have taken its offset and txn id
  // since), or one bad read. Either way, give up: the database is untouched, and abandoning a
  // compaction is always safe.
  auto left = [&] {
    return Status::Aborted(path_ + ": commit " + std::to_string(log.source.txn_id) +
                           " no longer reads back as copied (rolled back, replaced, or a bad read); "
                           "compaction abandoned");
  };
  auto is_source = [&](const format::Commit& c) {
    return c.offset == log.source.offset && c.txn_id == log.source.txn_id &&
           c.body_checksum == log.source.body_checksum;
  };
  // Read back, not trusted from memory: a commit rolled back and replaced by one of the same size
  // leaves the file's size, and so every handle's view of its newest commit, as it was.
  auto at_source = upto.file->ReadCommit(log.source.offset);
  if (!at_source.ok() && !at_source.status().IsCorruption()) return at_source.status();  // I/O
  if (!at_source.ok() || !is_source(*at_source)) return left();
  if (newest.offset == log.source.offset) return std::vector<format::Commit>{};
  // The commits after the last one copied, newest first, read back along the chain.
  std::vector<format::Commit> chain{newest};
  while (chain.back().prev_commit_offset != log.source.offset) {
    const format::Commit& at = chain.back();
    if (at.prev_commit_offset < log.source.offset || at.prev_commit_offset == 0) return left();
    DBDB_ASSIGN_OR_RETURN(format::Commit prev, upto.file->ReadCommit(at.prev_commit_offset));
    chain.push_back(prev);
  }
  // Oldest first, each follows the one before it (the last copied first): the next txn id, or
  // the same for a checkpoint, which is not copied (the compacted tree holds its state, and the
  // new file's copies of the commits before it replay to the same).
  const bool checkpoints = upto.file->version() >= format::kCheckpointVersion;
  uint64_t txn = log.source.txn_id;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    if (it->txn_id != txn + 1 && !(checkpoints && it->txn_id == txn)) {
      return Status::Corruption(path_ + ": commit at offset " + std::to_string(it->offset) + " has txn " +
                                std::to_string(it->txn_id) + " after txn " + std::to_string(txn));
    }
    txn = it->txn_id;
  }
  return chain;
}

Result<uint64_t> DBImpl::CopyLog(const View& upto, CopiedLog* log, File& out) {
  DBDB_ASSIGN_OR_RETURN(std::vector<format::Commit> chain, ReadChainSinceCopied(upto, *log));
  if (chain.empty()) return 0;
  // Each is copied as a commit of the new file: its batch, then its record (the same txn id, over
  // the compacted tree), sealed; durable with the file, which is synced before it has the name.
  const uint64_t start = log->last.record_end();
  uint64_t at = start;
  ReadBytes buffer;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    if (it->txn_id == log->source.txn_id) {
      // A checkpoint (its record must say so) or a close fold (a fold with no batch, another
      // handle's, since this compaction started): nothing new to copy.
      if (it->batch_offset == 0 && !(it->folded() && upto.file->version() >= format::kCloseFoldVersion)) {
        return Status::Corruption(path_ + ": commit at offset " + std::to_string(it->offset) + " restates txn " +
                                  std::to_string(it->txn_id) + " and is neither a checkpoint nor a close fold");
      }
      DBDB_RETURN_IF_ERROR(upto.file->ReadBatch(*it, &buffer, /*checkpoint=*/true).status());
      log->source = *it;
      continue;
    }
    DBDB_ASSIGN_OR_RETURN(uint64_t written, CopyCommit(upto, *it, log, out, at, &buffer));
    at += written;
  }
  std::string seal;
  format::AppendSeal(&seal, log->last, true);
  DBDB_RETURN_IF_ERROR(out.WriteAt(at, seal));
  DBDB_RETURN_IF_ERROR(out.Sync());  // before the name, and before the next pass says synced_through
  log->synced_end = log->last.record_end();
  return at + seal.size() - start;
}

Result<uint64_t> DBImpl::CopyCommit(const View& upto, const format::Commit& source, CopiedLog* log, File& out,
                                    uint64_t at, ReadBytes* buffer) {
  if (source.batch_offset == 0) {
    return Status::Corruption(path_ + ": commit at offset " + std::to_string(source.offset) + " has no batch");
  }
  DBDB_ASSIGN_OR_RETURN(auto batch, upto.file->ReadBatch(source, buffer));
  format::Commit c;
  c.txn_id = source.txn_id;
  c.prev_commit_offset = log->last.offset;
  c.commits_in_file = log->last.commits_in_file + 1;
  SetRoot(&c, RootOf(log->last));
  c.fold_offset = log->last.fold_offset;
  c.synced_through = log->synced_end;
  c.batch_offset = log->last.end();
  c.sealed = true;
  c.seal_durable = true;
  std::string records;
  format::AppendRecord(&records, c.batch_offset, format::RecordType::kBatch, format::EncodeBatch(batch));
  std::string bytes = AssembleCommit(log->last, records, &c);
  DBDB_RETURN_IF_ERROR(out.WriteAt(at, bytes));
  log->overlay->Apply(c.offset, c.txn_id, batch, LogRecordBytes(c));  // as a reader of the new file would
  log->last = c;
  log->source = source;
  return bytes.size();
}

Result<View> DBImpl::InstallCompacted(const std::string& temp, const format::Commit& newest,
                                      std::shared_ptr<LogOverlay> overlay, std::shared_ptr<TreeFile> warmed) {
  // The rename, the open of the renamed file and the handle's switch to it under one hold of
  // state_mutex_: this handle's readers, which follow a replaced file by its link count, never
  // find the file renamed under a handle that has not switched (each would open the new file
  // itself and replay its log, all thrown away at the switch). What they read in the new file is
  // the newest commit the old one holds, as another process's readers may from the rename on;
  // this handle commits nothing in it until the directory's sync below has returned (the
  // compaction holds the writer lock).
  View compacted;
  std::shared_ptr<TreeFile> installed;
  Status s;
  {
    Retired retired;  // the file and overlay the handle stops reading, let go after the lock
    MutexLock guard(&state_mutex_);
    s = InstallLocked(temp, newest, overlay, warmed, &retired, &installed);
    if (s.ok()) compacted = CurrentView();
  }
  // A failure here fails the handle (I7): a failed rename may still have happened (or happen at
  // the next crash), and this handle must not go on appending to a file that may no longer have
  // the name; a new handle finds whichever file the name holds, both with the same newest commit.
  if (!s.ok()) return Fail(s);
  // Until the directory is synced the rename may be lost in a crash; commits appended to the new
  // file before that could vanish with it.
  s = fs_->SyncDir(DirName(path_));
  if (!s.ok()) return Fail(s.WithContext("syncing the directory after compacting " + path_));
  SetDurable(compacted, newest.record_end());
  name_durable_file_ = installed;
  return compacted;
}

Status DBImpl::InstallLocked(const std::string& temp, const format::Commit& newest,
                             std::shared_ptr<LogOverlay>& overlay, const std::shared_ptr<TreeFile>& warmed,
                             Retired* retired, std::shared_ptr<TreeFile>* installed) {
  Status renamed = fs_->Rename(temp, path_);
  if (!renamed.ok()) return renamed.WithContext("renaming the compacted file over " + path_);
  auto file = TreeFile::Open(*fs_, path_, false, options_.node_cache_bytes, options_.mmap_reads);
  if (!file.ok()) return file.status().WithContext("reopening " + path_ + " after compaction");
  if (warmed != nullptr) (void)file.value()->AdoptMappings(*warmed);  // false: another file (not expected)
  *installed = file.value();
  // The commits copied after the compacted tree, as copied (CopyLog); caught up from the file
  // only if it is not through `newest` (never expected).
  DBDB_ASSERT(overlay != nullptr && overlay->fold_offset() == newest.fold_offset);
  SwitchFile(file.value(), overlay->through_offset() == newest.offset ? std::move(overlay) : nullptr, retired);
  newest_ = newest;
  reads_at_install_.store(reads_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  return CatchUpOverlay().WithContext("reading " + path_ + " after compaction");
}

}  // namespace dbdb
