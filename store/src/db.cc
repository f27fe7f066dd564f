// DB: opening and creating, following the newest commit, snapshots and write transactions.
#include <algorithm>
#include <chrono>
#include <system_error>

#include "dbdb_assert.h"
#include "checksum.h"
#include "db_impl.h"
#include "key_prefix.h"
#include "large_alloc.h"
#include "record_walker.h"

namespace dbdb {
namespace {

// A write transaction buffers its changes and applies them to the tree at commit.
constexpr uint64_t kTransactionBytesMax = uint64_t{1} << 30;


Status ValidateOptions(const Options& o) {
  if (o.node_size_target_bytes < 512 || o.node_size_target_bytes > (1u << 20)) {
    return Status::InvalidArgument("node_size_target_bytes must be in [512, 1048576]");
  }
  if (o.key_size_max_bytes == 0 || o.key_size_max_bytes > format::kKeySizeHardMaxBytes ||
      o.key_size_max_bytes > o.node_size_target_bytes / 4) {
    return Status::InvalidArgument("key_size_max_bytes must be in [1, min(16384, node_size_target_bytes / 4)]");
  }
  if (o.value_size_max_bytes > format::kValueSizeHardMaxBytes) {
    return Status::InvalidArgument("value_size_max_bytes must be at most 67108864");
  }
  if (o.file_size_max_bytes < format::kFileHeaderSizeBytes + format::kCommitRecordSizeBytes) {
    return Status::InvalidArgument("file_size_max_bytes is too small to hold a commit");
  }
  if (o.fold_threshold_bytes > kTransactionBytesMax) {
    return Status::InvalidArgument("fold_threshold_bytes must be at most 1073741824");
  }
  if (o.overlay_merge_keys == 0) return Status::InvalidArgument("overlay_merge_keys must be at least 1");
  if (o.allocate_ahead_bytes > format::kAllocateAheadMaxBytes) {
    return Status::InvalidArgument("allocate_ahead_bytes must be at most 1048576");
  }
  return Status::Ok();
}

// Creates the file atomically: header into "<path>.create", sync, rename, sync the directory.
// A crash leaves either no database or an empty valid one, never a torn header.
Status CreateDatabaseFile(FileSystem& fs, const std::string& path) {
  const std::string temp = path + ".create";
  {
    DBDB_ASSIGN_OR_RETURN(auto file, fs.Open(temp, OpenOptions{.create = true}));
    DBDB_RETURN_IF_ERROR(file->Truncate(0));
    std::string header = format::EncodeFileHeader(format::FileHeader{});
    DBDB_RETURN_IF_ERROR(file->WriteAt(0, header));
    DBDB_RETURN_IF_ERROR(file->Sync());
  }
  DBDB_RETURN_IF_ERROR(fs.Rename(temp, path));
  return fs.SyncDir(DirName(path));
}

class SnapshotImpl final : public Snapshot {
 public:
  explicit SnapshotImpl(View view) : view_(std::move(view)) {}
  uint64_t txn_id() const override { return view_.txn_id(); }
  using Snapshot::Get;
  Result<bool> Get(std::string_view key, std::string* value) override { return view_.Get(key, value); }
  std::unique_ptr<Iterator> NewIterator() override { return NewViewIterator(view_); }
  Result<std::vector<KeyValue>> Scan(const ScanRange& range) override {
    auto it = NewIterator();
    return ScanWith(*it, range);
  }

 private:
  LargeBlocksUser large_blocks_user_;  // first: destroyed last, after the view's blocks are freed
  View view_;
};

}  // namespace

// Outside the unnamed namespace: DBImpl names it as the one friend that reaches its write path.
class WriteTransactionImpl final : public WriteTransaction {
 public:
  WriteTransactionImpl(DBImpl* db, WriterLock lock, View base)
      : db_(db), lock_(std::move(lock)), base_(std::move(base)) {}

  uint64_t base_txn_id() const override { return base_.txn_id(); }

  using WriteTransaction::Get;
  Result<bool> Get(std::string_view key, std::string* value) override {
    DBDB_RETURN_IF_ERROR(CheckOpen());
    auto it = changes_.find(key);
    if (it == changes_.end()) return base_.Get(key, value);
    if (!it->second) return false;  // deleted in this transaction
    value->assign(*it->second);
    return true;
  }
  std::unique_ptr<Iterator> NewIterator() override { return NewChangesIterator(NewViewIterator(base_), &changes_); }
  Result<std::vector<KeyValue>> Scan(const ScanRange& range) override {
    DBDB_RETURN_IF_ERROR(CheckOpen());
    auto it = NewIterator();
    return ScanWith(*it, range);
  }
  Status Put(std::string_view key, std::string_view value) override {
    DBDB_RETURN_IF_ERROR(CheckOpen());
    DBDB_RETURN_IF_ERROR(db_->ValidateKey(key));
    DBDB_RETURN_IF_ERROR(db_->ValidateValue(value));
    return Record(key, std::optional<std::string>(std::string(value)));
  }
  Status Del(std::string_view key) override {
    DBDB_RETURN_IF_ERROR(CheckOpen());
    DBDB_RETURN_IF_ERROR(db_->ValidateKey(key));
    return Record(key, std::nullopt);
  }
  Status Commit() override;
  // Commits `batch` (sorted, one change per key) instead of the changes recorded: DB::Write's
  // path, which has no reads to serve and so builds no map of its changes.
  Status CommitBatch(const std::vector<format::BatchChange>& batch);
  void Abort() override {
    finished_ = true;
    changes_.clear();
    lock_ = WriterLock{};
  }

 private:
  Status CheckOpen() const {
    return finished_ ? Status::Aborted("the transaction has already committed or aborted") : Status::Ok();
  }
  Status Record(std::string_view key, std::optional<std::string> value) {
    uint64_t added = key.size() + (value ? value->size() : 0) + 64;
    if (change_bytes_ + added > kTransactionBytesMax) {
      return Status::LimitExceeded("a transaction may change at most 1 GiB");
    }
    change_bytes_ += added;
    auto it = changes_.find(key);
    if (it == changes_.end()) {
      changes_.emplace(std::string(key), std::move(value));
    } else {
      it->second = std::move(value);
    }
    return Status::Ok();
  }

  DBImpl* db_;
  WriterLock lock_;
  View base_;
  Overlay changes_;
  uint64_t change_bytes_ = 0;
  bool finished_ = false;
  bool committing_ = false;  // CommitBatch got as far as CommitChanges
};

Status WriteTransactionImpl::Commit() {
  std::vector<format::BatchChange> batch;
  batch.reserve(changes_.size());
  for (const auto& [key, value] : changes_) {
    batch.push_back({key, value ? std::optional<std::string_view>(*value) : std::nullopt});
  }
  Status s = CommitBatch(batch);
  if (committing_) changes_.clear();  // only once the commit was tried, as before CommitBatch
  return s;
}

Status WriteTransactionImpl::CommitBatch(const std::vector<format::BatchChange>& batch) {
  DBDB_RETURN_IF_ERROR(CheckOpen());
  finished_ = true;
  WriterLock lock = std::move(lock_);  // released when this returns, whatever happens
  if (batch.empty()) return Status::Ok();
  DBDB_RETURN_IF_ERROR(db_->CheckWritable());
  if (base_.txn_id() == UINT64_MAX) return Status::LimitExceeded("transaction ids are exhausted");
  committing_ = true;
  Status s = db_->CommitChanges(base_, batch);
  if (!s.ok()) db_->HoldWriterLockIfRollbackFailed(&lock);
  return s;
}

DBImpl::DBImpl(std::string path, const Options& options, std::shared_ptr<FileSystem> fs,
               std::shared_ptr<TreeFile> file, bool upgrading)
    : path_(std::move(path)), lock_path_(path_ + ".lock"), options_(options), fs_(std::move(fs)),
      file_(std::move(file)), upgrading_(upgrading) {}

Result<std::unique_ptr<DB>> DB::Open(const std::string& path, const Options& options) {
  DBDB_ASSIGN_OR_RETURN(auto db, DBImpl::OpenImpl(path, options, false));
  return std::unique_ptr<DB>(std::move(db));
}

Status DB::Upgrade(const std::string& path, const Options& options) { return DBImpl::UpgradeImpl(path, options); }

Status DBImpl::UpgradeImpl(const std::string& path, const Options& options) {
  Options o = options;
  o.read_only = false;
  o.create_if_missing = false;
  DBDB_ASSIGN_OR_RETURN(auto db, DBImpl::OpenImpl(path, o, true));
  // Under the compaction lock, then the writer lock (which version-1 writers take too), so that
  // nothing is appended between the verification and the compaction.
  DBDB_ASSIGN_OR_RETURN(auto compaction_lock, db->LockCompaction(options.wait_for_writer));
  DBDB_ASSIGN_OR_RETURN(WriterLock lock, db->AcquireWriter());
  // Verify every record and tree invariant first: compaction rewrites what a scan reads, and a
  // damaged tree (a key outside its node's range, say) would be silently "repaired" into a file
  // that reads differently from the original. A file that does not verify is not converted.
  if (db->file_version() != format::kFormatVersion) {
    auto report = db->Check();
    if (!report.ok()) return report.status().WithContext("verifying " + path + " before upgrading it");
  }
  // Compaction always writes the current version; a current file is left as it is.
  DBDB_ASSIGN_OR_RETURN(View view, db->PrepareWriterView());
  if (view.file->version() == format::kFormatVersion) return Status::Ok();
  // Nothing committed: no tree to compact (compaction's commit restates the newest one).
  if (!view.commit) return db->InstallEmptyUpgrade(view);
  return db->CompactFrom(view, &lock).status();
}

Status DBImpl::InstallEmptyUpgrade(const View& view) {
  const std::string temp = path_ + ".compacting";
  {
    // Opened, cut and rewritten, never removed: the same file as a compaction's (CompactFrom).
    DBDB_ASSIGN_OR_RETURN(auto out, fs_->Open(temp, OpenOptions{.create = true}));
    format::FileHeader header = view.file->header();
    header.version = format::kFormatVersion;
    header.generation++;
    Status s = out->Truncate(0);
    if (s.ok()) s = out->WriteAt(0, format::EncodeFileHeader(header));
    if (s.ok()) s = out->Sync();  // durable before it has the name
    if (!s.ok()) {
      (void)out->Truncate(0);
      return s.WithContext("writing the upgraded empty database " + temp);
    }
  }
  Status s = fs_->Rename(temp, path_);
  if (!s.ok()) return s.WithContext("renaming the upgraded empty database " + temp + " over " + path_);
  s = fs_->SyncDir(DirName(path_));
  if (!s.ok()) return s.WithContext("syncing the directory after upgrading " + path_);
  return Status::Ok();
}

Result<std::unique_ptr<DBImpl>> DBImpl::OpenImpl(const std::string& path, const Options& options, bool upgrading) {
  DBDB_RETURN_IF_ERROR(ValidateOptions(options));
  if (path.empty()) return Status::InvalidArgument("empty database path");
  std::shared_ptr<FileSystem> fs = options.file_system ? options.file_system : NewPosixFileSystem();
  DBDB_ASSIGN_OR_RETURN(bool exists, fs->Exists(path));
  if (!exists) {
    if (options.read_only || !options.create_if_missing) {
      return Status::NotFound("database " + path + " does not exist (create it with create_if_missing)");
    }
    DBDB_ASSIGN_OR_RETURN(auto lock, fs->Lock(path + ".lock", {.wait = options.wait_for_writer}));
    DBDB_ASSIGN_OR_RETURN(exists, fs->Exists(path));  // another process may have created it
    if (!exists) {
      // Marked as any writer marks it: a reader of a file that was removed meanwhile must look.
      auto counter = fs->Open(path + ".lock", OpenOptions{.create = false, .transient = true});
      if (!counter.ok()) return counter.status().WithContext("opening the change counter in " + path + ".lock");
      auto mark = ChangeMark::Take(**counter);
      if (!mark.ok()) return mark.status().WithContext("marking the change counter in " + path + ".lock");
      Status s = CreateDatabaseFile(*fs, path);
      if (!s.ok()) return s.WithContext("creating " + path);
    }
  }
  auto file = TreeFile::Open(*fs, path, options.read_only, options.node_cache_bytes, options.mmap_reads);
  if (!file.ok()) return file.status().WithContext("opening " + path);
  if (!options.read_only && !upgrading) DBDB_RETURN_IF_ERROR(WritableVersion(*file.value()));
  // The newest commit is found as every snapshot finds it (ReaderView): a new handle must not take a
  // commit that is still in flight any more than an old one.
  auto db = std::make_unique<DBImpl>(path, options, fs, file.value(), upgrading);
  auto view = db->ReaderView();
  if (!view.ok()) return view.status().WithContext("opening " + path);
  return db;
}

Result<bool> ReadPoint::Get(TreeFile& file, const LogOverlay* overlay, uint64_t txn_id, const TreeRoot& root,
                            std::string_view key, std::string* value) {
  if (overlay != nullptr) {
    switch (overlay->Get(key, txn_id, value)) {
      case LogOverlay::Found::kValue:
        return true;
      case LogOverlay::Found::kDeleted:
        return false;
      case LogOverlay::Found::kNothing:
        break;
    }
  }
  return TreeGet(file, root, key, value);
}

Result<bool> View::Get(std::string_view key, std::string* value) const {
  return ReadPoint::Get(*file, overlay.get(), txn_id(), root(), key, value);
}

Status DBImpl::CatchUpOverlay() {
  if (!newest_) {
    overlay_.reset();
    return Status::Ok();
  }
  const format::Commit newest = *newest_;
  // An overlay of another fold (or past the newest commit: never expected) is replaced.
  if (overlay_ && (overlay_->fold_offset() != newest.fold_offset || overlay_->through_offset() > newest.offset)) {
    overlay_.reset();
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    if (!overlay_) {
      DBDB_ASSIGN_OR_RETURN(overlay_, OverlayAtFold(newest));
    }
    if (overlay_->through_offset() == newest.offset) return Status::Ok();
    DBDB_ASSIGN_OR_RETURN(ChainToOverlay chain, ReadChainToOverlay(newest));
    if (!chain.reached) {
      // The overlay's newest commit is not on this chain: replay from the fold instead.
      if (chain.from_fold) break;
      overlay_.reset();
      continue;
    }
    if (chain.checkpoint) DBDB_RETURN_IF_ERROR(StartOverlayAtCheckpoint(newest, *chain.checkpoint));
    return ReplayOntoOverlay(chain.commits);
  }
  return Status::Corruption(path_ + ": the commit chain from offset " + std::to_string(newest.offset) +
                            " does not reach its fold at offset " + std::to_string(newest.fold_offset));
}

Result<DBImpl::ChainToOverlay> DBImpl::ReadChainToOverlay(const format::Commit& newest) {
  const bool checkpoints = file_->version() >= format::kCheckpointVersion;
  const uint64_t through = overlay_->through_offset();
  ChainToOverlay chain;
  // An overlay still at its fold starts from the newest checkpoint on the way back, if any.
  chain.from_fold = through == newest.fold_offset;
  chain.commits.push_back(newest);
  while (chain.commits.back().prev_commit_offset != through) {
    const format::Commit& at = chain.commits.back();
    if (at.prev_commit_offset < through || at.prev_commit_offset < newest.fold_offset) {
      chain.reached = false;
      return chain;
    }
    DBDB_ASSIGN_OR_RETURN(format::Commit prev, file_->ReadCommit(at.prev_commit_offset));
    const bool restates = checkpoints && prev.txn_id == at.txn_id;  // `at` is a checkpoint
    if ((prev.txn_id + 1 != at.txn_id && !restates) || prev.fold_offset != newest.fold_offset ||
        !SameTree(prev, newest)) {
      return Status::Corruption(path_ + ": commit at offset " + std::to_string(prev.offset) +
                                " does not belong to the chain of the fold at offset " +
                                std::to_string(newest.fold_offset));
    }
    if (restates && chain.from_fold) {
      chain.checkpoint = at;
      chain.commits.pop_back();
      return chain;
    }
    chain.commits.push_back(prev);
  }
  return chain;
}

Status DBImpl::NotACheckpoint(const format::Commit& c, const Status& why) const {
  return Status::Corruption(path_ + ": commit at offset " + std::to_string(c.offset) + " has txn " +
                            std::to_string(c.txn_id) + " after txn " + std::to_string(c.txn_id) +
                            " and is not a checkpoint: " + why.ToString());
}

Status DBImpl::StartOverlayAtCheckpoint(const format::Commit& newest, const format::Commit& checkpoint) {
  // It restates a txn after the fold's (the overlay's, still at the fold): never one at or below.
  if (checkpoint.txn_id <= overlay_->through_txn_id()) {
    return NotACheckpoint(checkpoint, Status::Corruption("its txn id is not above its fold's"));
  }
  ReadBytes bytes;
  auto changes = file_->ReadCheckpoint(checkpoint, &bytes);
  if (!changes.ok()) {
    return changes.status().IsCorruption() ? NotACheckpoint(checkpoint, changes.status()) : changes.status();
  }
  overlay_ = NewOverlay(newest.fold_offset, checkpoint.offset, checkpoint.txn_id, std::move(bytes),
                        std::move(changes).value(), LogRecordBytes(checkpoint));
  return Status::Ok();
}

Status DBImpl::ReplayOntoOverlay(const std::vector<format::Commit>& newest_first) {
  // Oldest first, each new commit must follow the overlay's newest one: the next txn id, or (a
  // checkpoint) the same. A commit that repeats or goes back in txn ids otherwise is a damaged
  // or foreign file, and applying it would change what snapshots already taken read.
  const bool checkpoints = file_->version() >= format::kCheckpointVersion;
  ReadBytes buffer;
  for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it) {
    const uint64_t through_txn = overlay_->through_txn_id();
    if (checkpoints && it->txn_id == through_txn) {
      // What the overlay holds already: read only to check that it is a checkpoint.
      auto changes = file_->ReadBatch(*it, &buffer, /*checkpoint=*/true);
      if (!changes.ok()) return changes.status().IsCorruption() ? NotACheckpoint(*it, changes.status()) : changes.status();
      overlay_->Restate(it->offset, LogRecordBytes(*it));
      continue;
    }
    if (it->txn_id != through_txn + 1) {
      return Status::Corruption(path_ + ": commit at offset " + std::to_string(it->offset) + " has txn " +
                                std::to_string(it->txn_id) + " after txn " + std::to_string(through_txn));
    }
    DBDB_ASSIGN_OR_RETURN(auto batch, file_->ReadBatch(*it, &buffer));
    overlay_->Apply(it->offset, it->txn_id, batch, LogRecordBytes(*it));
  }
  return Status::Ok();
}

Result<std::shared_ptr<LogOverlay>> DBImpl::OverlayAtFold(const format::Commit& newest) {
  if (newest.folded()) return NewOverlay(newest.offset, newest.txn_id);
  DBDB_ASSIGN_OR_RETURN(format::Commit fold, file_->ReadCommit(newest.fold_offset));
  if (!fold.folded() || !SameTree(fold, newest) || fold.txn_id >= newest.txn_id) {
    return Status::Corruption(path_ + ": the commit at offset " + std::to_string(newest.offset) +
                              " names a fold at offset " + std::to_string(newest.fold_offset) +
                              " that is not its fold");
  }
  return NewOverlay(fold.offset, fold.txn_id);
}

View DBImpl::CurrentView() const { return View{file_, newest_, overlay_}; }

Result<View> DBImpl::NewestView(bool writer, bool* unchanged) {
  DBDB_RETURN_IF_ERROR(CheckNotForked());
  // A file this handle stops reading (and its overlay), let go after the lock: closing its
  // descriptors and mapping must not hold up the handle's other readers.
  Retired retired;
  MutexLock guard(&state_mutex_);
  // No writer has held the lock since this handle last looked with none at work: that view is still
  // the newest, and neither the file nor its name changed (change_counter.h). A writer looks
  // unless no writer has held the lock since this handle's own last commit (AcquireWriter), and
  // that commit is still the handle's newest.
  const std::optional<uint64_t> counter = counter_.Read();
  if (!writer && ViewFreshForReader(counter)) return CurrentView();
  fresh_at_.reset();
  if (unchanged != nullptr) {
    const std::optional<LeftByThisHandle> left = std::exchange(unchanged_since_left_, std::nullopt);
    *unchanged = writer && left && left->In(file_) && newest_ && newest_->end() == left->end;
    if (*unchanged) {
      // One fstat, against what the counter cannot rule out: a lock-file page the kernel dropped
      // and read back with an older value (docs/PERSISTENCE.md). Another writer's commit or
      // compaction since would show in the size or the link count, or, for a commit written into
      // the space this handle allocated ahead (which changes no size), in the bytes after its own
      // commit: a record's first 8 bytes are never all zero (its length is not 0).
      DBDB_ASSIGN_OR_RETURN(FileStat stat, file_->file().Stat());
      *unchanged = !stat.unlinked && stat.size_bytes == left->size;
      if (*unchanged && left->size > left->end) {
        char next[8] = {};
        const size_t want = static_cast<size_t>(std::min<uint64_t>(sizeof next, left->size - left->end));
        auto got = file_->file().ReadAt(left->end, std::span<char>(next, want));  // an error: look instead
        *unchanged = got.ok() && *got == want && std::all_of(next, next + want, [](char c) { return c == 0; });
      }
      if (*unchanged) writer_at_ = left;
    }
    if (*unchanged) {
      DBDB_RETURN_IF_ERROR(CatchUpOverlay());  // Publish may have left it to be replayed
      return CurrentView();
    }
  }
  DBDB_ASSIGN_OR_RETURN(uint64_t size, FollowReplacedFile(writer, &retired));
  uint64_t known_end = newest_ ? newest_->end() : format::kFileHeaderSizeBytes;
  uint64_t known_offset = newest_ ? newest_->offset : 0;
  if (size < known_end) {
    return Status::Corruption(path_ + " shrank to " + std::to_string(size) +
                              " bytes, below its newest commit ending at " + std::to_string(known_end));
  }
  if (size > known_end) {
    // New commits, or a torn or in-progress tail: look for a newer commit above the known one.
    DBDB_ASSIGN_OR_RETURN(auto found, file_->FindNewestCommit(size, known_end, known_offset));
    if (found && !found->sealed && !writer) {
      DBDB_ASSIGN_OR_RETURN(found, SettledForReaderSyncingADeadWriter(known_end, known_offset));
    }
    if (found) newest_ = found;
  }
  DBDB_RETURN_IF_ERROR(CatchUpOverlay());
  // Even: no writer held the lock when the counter was read (before the file was looked at), so
  // this view stays the newest until one takes it. A commit in flight, or one a writer left when
  // it died, means an odd counter: such a view is not kept.
  if (counter && *counter % 2 == 0) fresh_at_ = counter;
  // Map the counter once the file has changed since the last try: a writer marks it before it
  // writes, so a file nobody writes never costs a failed open per read.
  if (!counter_.mapped() && options_.mmap_reads && size != counter_tried_at_size_) {
    counter_tried_at_size_ = size;
    (void)counter_.Map(*fs_, lock_path_);
  }
  return CurrentView();
}

Result<uint64_t> DBImpl::FollowReplacedFile(bool writer, Retired* retired) {
  // Has compaction replaced the file? A writer asks the path itself (it must never write to a
  // replaced file); a reader makes do with its file's link count, in the same fstat as the size.
  DBDB_ASSIGN_OR_RETURN(FileStat stat, file_->file().Stat());
  bool replaced = stat.unlinked;
  if (writer && !replaced) {
    auto identity = fs_->Identity(path_);
    if (!identity.ok()) return identity.status().WithContext("database file " + path_);
    replaced = identity.value() != file_->identity();
  }
  if (!replaced) return stat.size_bytes;
  // Follow the new file. Snapshots on the old file keep it open.
  auto file = TreeFile::Open(*fs_, path_, options_.read_only, options_.node_cache_bytes, options_.mmap_reads);
  if (!file.ok()) return file.status().WithContext("reopening " + path_ + " after compaction");
  SwitchFile(file.value(), nullptr, retired);
  newest_.reset();
  DBDB_ASSIGN_OR_RETURN(stat, file_->file().Stat());
  return stat.size_bytes;
}

void DBImpl::SwitchFile(std::shared_ptr<TreeFile> file, std::shared_ptr<LogOverlay> overlay, Retired* retired) {
  retired->kept_body = file_->DropKeptBody();  // kept for a next writer of the old file: none will come
  retired->file = std::exchange(file_, std::move(file));
  retired->overlay = std::exchange(overlay_, std::move(overlay));
}

Result<std::optional<format::Commit>> DBImpl::SettledForReaderSyncingADeadWriter(uint64_t known_end,
                                                                               uint64_t known_offset) {
  // Not sealed: either its writer is between writing and sealing it (its sync may yet fail and
  // roll it back), or its writer died. The writer holds the in-flight lock over exactly that
  // window, so the lock tells which. Busy: in flight, and nobody can have seen it yet; the newest
  // settled commit is the one before it. Free: its writer died; it is durable once synced, and a
  // dead writer's commit is never rolled back (the next writer seals it), so take it. Any other
  // error says nothing about a writer: report it rather than guess (a guess is a dirty read). A
  // reader never writes and never creates a file.
  auto in_flight = fs_->Lock(path_, {.wait = false, .create = false, .shared = true});
  if (!in_flight.ok() && in_flight.status().code() == StatusCode::kBusy) {
    // Look again: since the first look the unsealed commit may have been sealed and another may
    // be in flight now. The newest one, if sealed; else (it is the one in flight) the one before.
    DBDB_ASSIGN_OR_RETURN(uint64_t size, file_->file().Size());
    DBDB_ASSIGN_OR_RETURN(auto now, file_->FindNewestCommit(size, known_end, known_offset));
    if (!now || now->sealed) return now;
    return file_->FindNewestCommit(now->offset, known_end, known_offset);
  }
  if (!in_flight.ok()) return in_flight.status().WithContext("probing the in-flight lock of " + path_);
  // Look again, now that no writer can change it.
  DBDB_ASSIGN_OR_RETURN(uint64_t size, file_->file().Size());
  DBDB_ASSIGN_OR_RETURN(auto found, file_->FindNewestCommit(size, known_end, known_offset));
  if (found && !found->sealed) {
    // After a failed sync (this one, or any of this handle's) a later sync of the same file may
    // return OK without the dropped pages (fsyncgate): never show the commit on its word.
    DBDB_RETURN_IF_ERROR(CheckNotFailed());
    Status s = file_->file().Sync();
    if (!s.ok()) return Fail(s.WithContext("syncing the commit a dead writer left in " + path_));
  }
  return found;
}

void DBImpl::ForgetLockFile() {
  counter_file_.reset();
  own_counter_ = ChangeCounterView();
  own_counter_tried_ = false;
  last_mark_.reset();
  left_.reset();
}

Result<std::unique_ptr<FileLock>> DBImpl::LockInFlight(File& file) {
  // Through the handle's own open file (the one the commit is written to), not its name.
  auto lock = file.Lock({.wait = true});
  if (!lock.ok()) return lock.status().WithContext("the in-flight lock of " + path_);
  return lock;
}

bool DBImpl::FreshReadPoint(ReadPoint* point) {
  MutexLock guard(&state_mutex_);
  if (!ViewFreshForReader(counter_.Read())) return false;
  point->file = file_;
  point->overlay = overlay_;
  point->txn_id = newest_ ? newest_->txn_id : 0;  // View::txn_id(), as the overlay is read at it
  point->root = newest_ ? RootOf(*newest_) : TreeRoot{};
  CountRead();
  return true;
}

Result<bool> DBImpl::Get(std::string_view key, std::string* value) {
  DBDB_RETURN_IF_ERROR(CheckNotForked());
  if (ReadPoint point; FreshReadPoint(&point)) {
    return ReadPoint::Get(*point.file, point.overlay.get(), point.txn_id, point.root, key, value);
  }
  DBDB_ASSIGN_OR_RETURN(View view, ReaderView());
  CountRead();
  return view.Get(key, value);
}

Status DBImpl::Put(std::string_view key, std::string_view value) {
  WriteBatch batch;
  batch.Put(key, value);
  return Write(batch);
}

Status DBImpl::Del(std::string_view key) {
  WriteBatch batch;
  batch.Del(key);
  return Write(batch);
}

namespace {
// A group takes the Writes queued behind its first up to about this many bytes (LevelDB's bound):
// enough to share a sync among many small writes, without making the first wait for a big one.
constexpr uint64_t kGroupBytesMax = uint64_t{1} << 20;
}  // namespace

Status DBImpl::Write(const WriteBatch& batch) {
  DBDB_RETURN_IF_ERROR(CheckWritable());
  for (const WriteBatch::Change& change : batch.changes()) {
    DBDB_RETURN_IF_ERROR(ValidateKey(change.key));
    if (change.value) DBDB_RETURN_IF_ERROR(ValidateValue(*change.value));
  }
  if (batch.changes().empty()) return Status::Ok();
  PendingWrite self{&batch, Status::Ok(), false, {}};
  MutexLock queue_lock(&write_queue_mutex_);
  if (!options_.wait_for_writer && !write_queue_.empty()) {
    return Status::Busy("another write of this handle is committing");  // never wait
  }
  write_queue_.push_back(&self);
  while (!self.done && write_queue_.front() != &self) self.ready.wait(write_queue_mutex_);
  if (self.done) return self.status;  // committed (or failed) in another thread's group
  // At the front: commit this batch and those queued behind it, in order.
  std::vector<PendingWrite*> group;
  uint64_t bytes = 0;
  for (PendingWrite* pending : write_queue_) {
    if (!group.empty() && bytes + pending->batch->bytes() > kGroupBytesMax) break;
    group.push_back(pending);
    bytes += pending->batch->bytes();
  }
  queue_lock.Unlock();
  Status s = CommitGroup(group);  // Ok: each member's status is its own
  queue_lock.Lock();
  for (PendingWrite* member : group) {
    DBDB_ASSERT(write_queue_.front() == member);
    write_queue_.pop_front();
    if (!s.ok()) member->status = s;
    member->done = true;
    if (member != &self) member->ready.notify_one();
  }
  if (!write_queue_.empty()) write_queue_.front()->ready.notify_one();
  return self.status;
}

Status DBImpl::CommitGroup(const std::vector<PendingWrite*>& group) {
  Status s = CommitBatches(group);
  if (s.code() != StatusCode::kLimitExceeded || group.size() == 1) return s;
  // Together they pass a limit (file_size_max_bytes, say) that each alone might not: one
  // member's batch must not fail the others. Each is committed alone, with its own status.
  for (PendingWrite* member : group) member->status = CommitBatches({member});
  return Status::Ok();
}

Status DBImpl::CommitBatches(const std::vector<PendingWrite*>& group) {
  DBDB_ASSIGN_OR_RETURN(auto txn, BeginWrite());  // first, as the transaction's path: its errors come first
  // The group's changes in order, then sorted by key; of a key changed more than once, the last
  // change (as a transaction's Put and Del would leave it). Views into the batches: no copies.
  std::vector<format::BatchChange> changes;
  uint64_t bytes = 0;
  for (const PendingWrite* member : group) {
    for (const WriteBatch::Change& change : member->batch->changes()) {
      bytes += change.key.size() + (change.value ? change.value->size() : 0) + 64;  // as a transaction counts
      if (bytes > kTransactionBytesMax) return Status::LimitExceeded("a transaction may change at most 1 GiB");
      changes.push_back({change.key, change.value ? std::optional<std::string_view>(*change.value) : std::nullopt});
    }
  }
  // Sorted as (key prefix, position) pairs, most of whose comparisons the prefixes settle
  // (key_prefix.h); a key's changes stay in their order, the last of them taken.
  struct Sorted {
    uint64_t prefix;
    size_t at;
  };
  std::vector<Sorted> order(changes.size());
  for (size_t i = 0; i < changes.size(); i++) order[i] = Sorted{KeyPrefix(changes[i].key), i};
  std::sort(order.begin(), order.end(), [&](const Sorted& a, const Sorted& b) {
    if (a.prefix != b.prefix) return a.prefix < b.prefix;
    const int c = changes[a.at].key.compare(changes[b.at].key);
    return c != 0 ? c < 0 : a.at < b.at;
  });
  std::vector<format::BatchChange> batch;
  batch.reserve(changes.size());
  for (size_t i = 0; i < order.size(); i++) {
    const format::BatchChange& change = changes[order[i].at];
    if (i + 1 < order.size() && changes[order[i + 1].at].key == change.key) continue;  // a later change of the key follows
    batch.push_back(change);
  }
  return static_cast<WriteTransactionImpl*>(txn.get())->CommitBatch(batch);  // BeginWrite makes only these
}

Result<std::unique_ptr<Snapshot>> DBImpl::GetSnapshot() {
  DBDB_ASSIGN_OR_RETURN(View view, ReaderView());
  CountRead();
  return std::unique_ptr<Snapshot>(new SnapshotImpl(std::move(view)));
}

Status DBImpl::ValidateKey(std::string_view key) const {
  if (key.size() > options_.key_size_max_bytes) {
    return Status::LimitExceeded("key of " + std::to_string(key.size()) + " bytes exceeds key_size_max_bytes (" +
                                 std::to_string(options_.key_size_max_bytes) + ")");
  }
  return Status::Ok();
}

Status DBImpl::ValidateValue(std::string_view value) const {
  if (value.size() > options_.value_size_max_bytes) {
    return Status::LimitExceeded("value of " + std::to_string(value.size()) +
                                 " bytes exceeds value_size_max_bytes (" +
                                 std::to_string(options_.value_size_max_bytes) + ")");
  }
  return Status::Ok();
}

Status DBImpl::CheckWritable() {
  DBDB_RETURN_IF_ERROR(CheckNotForked());
  if (options_.read_only) return Status::ReadOnly(path_ + " is open read-only");
  return CheckNotFailed();
}

bool DBImpl::Forked() const noexcept { return opened_generation_ != ForkGeneration(); }

Status DBImpl::CheckNotForked() const {
  if (!Forked()) return Status::Ok();
  return Status::InvalidArgument(path_ + ": this handle was opened before a fork, and a forked child cannot use it "
                                 "(open a handle of its own)");
}

Status DBImpl::CheckNotFailed() {
  DBDB_RETURN_IF_ERROR(CheckNotForked());
  if (failed_.load()) {
    MutexLock guard(&failure_mutex_);
    return Status::Failed("handle refuses writes after an earlier I/O error (reopen to recover): " + failure_);
  }
  return Status::Ok();
}

Status DBImpl::Fail(const Status& cause) {
  {
    MutexLock guard(&failure_mutex_);
    if (!failed_.load()) failure_ = cause.ToString();
  }
  failed_.store(true);
  return cause;
}

Status DBImpl::SettleBase(View& base, bool rollback) {
  // Cut whatever follows the base (a torn tail, a failed commit), re-write the base's seal, and
  // sync. The seal is written after its commit's sync and never synced by itself, and a failed
  // sync since (ours or another process's) may have dropped it while reads still return it
  // (fsyncgate): writing it again (the same bytes) makes the sync below cover it. The file never
  // shrinks below the base's end, which readers may already know. A writer about to build on the
  // base first writes again what nothing proves durable (RewriteUnproven); a rollback claims no
  // durability (it records none), so it does not. REQUIRES: the writer lock; the in-flight lock
  // for a rollback (the commit it cuts is in flight).
  File& file = base.file->file();
  if (base.commit && !base.commit->sealed) {
    // Look again before cutting at the record's end: a misread seal must not be cut and
    // rewritten (with other bytes, which another handle's next body may already cover).
    DBDB_ASSIGN_OR_RETURN(uint64_t size, file.Size());
    DBDB_RETURN_IF_ERROR(base.file->ReadSeal(&*base.commit, size));
  }
  writer_at_.reset();  // set again by PrepareWriterView once settled
  DBDB_RETURN_IF_ERROR(file.Truncate(base.end()));
  if (!rollback) DBDB_RETURN_IF_ERROR(RewriteUnproven(base));
  if (base.commit && base.commit->sealed) {
    std::string seal;
    format::AppendSeal(&seal, *base.commit, base.commit->seal_durable);
    DBDB_RETURN_IF_ERROR(file.WriteAt(base.commit->record_end(), seal));
  }
  DBDB_RETURN_IF_ERROR(file.Sync());
  if (base.commit && !base.commit->sealed) {
    // Its writer died before sealing it; it is durable now, so seal it for the readers.
    std::string seal;
    format::AppendSeal(&seal, *base.commit, true);
    DBDB_RETURN_IF_ERROR(file.WriteAt(base.commit->record_end(), seal));
    base.commit->sealed = true;
    base.commit->seal_durable = true;
  }
  return Status::Ok();
}

Status DBImpl::RewriteUnproven(const View& base) {
  // The bytes up to the base commit's record that nothing proves durable: all of them when its
  // writer died before sealing it (or sealed it in no-sync mode), from the last point its writer
  // (or this handle) knew durable. A sync returning OK proves nothing about them: a failed sync of
  // the process that wrote them (which may have died before rolling back) may have marked their
  // pages clean without writing them, and the kernel reports that error once to each file
  // description open then, never to one opened later, like this handle's may be (fsyncgate).
  // Writing the same bytes again makes their pages dirty, so the sync that follows really writes
  // them, and the durable seal written after it tells the truth (without this, a
  // power cut left a durable seal over a commit the disk never got, and the file refused to open:
  // found by MultiProcess.HistoriesAndPowerCutsKeepEveryInvariant, mutant 59). Each commit is
  // verified before it is written back, so a bad read is never made durable: the rewrite fails
  // instead, and so does the handle (I7). Pages a failed sync dropped from the cache read back as
  // the disk's old bytes, which fail their checksum here as they would in recovery.
  // (An older format's file is only ever settled to be upgraded, and read, never appended to.)
  if (!base.commit || base.commit->seal_durable || base.file->version() != format::kFormatVersion) return Status::Ok();
  // A compacted file's first commit was synced before the file had its name, and recovery does not
  // hash its body (the whole tree): proven, never read back or rewritten here.
  if (base.file->IsCompactedTree(*base.commit)) return Status::Ok();
  File& file = base.file->file();
  const uint64_t end = base.commit->record_end();
  const uint64_t from =
      std::max({base.commit->synced_through, std::min(DurableEndIn(base), end), format::kFileHeaderSizeBytes});
  DBDB_ASSIGN_OR_RETURN(std::vector<format::Commit> commits, ReadUnprovenCommits(base, from));
  // Each commit's bytes are written back only once they verify as recovery verified them
  // (ReadVerifiedCommit).
  constexpr uint64_t kChunkBytes = 1 << 20;  // verified commits are written back up to 1 MiB at a time
  std::string bytes, pending;  // pending: verified bytes not yet written back, from pending_at on
  uint64_t pending_at = commits.back().body_offset;
  auto flush = [&]() -> Status {
    Status s = pending.empty() ? Status::Ok() : file.WriteAt(pending_at, pending);
    pending_at += pending.size();
    pending.clear();
    return s;
  };
  for (auto c = commits.rbegin(); c != commits.rend(); ++c) {
    DBDB_ASSIGN_OR_RETURN(bool verified, ReadVerifiedCommit(base, *c, &bytes));
    if (!verified) {
      return Status::IOError(path_ + ": re-reading commit " + std::to_string(c->txn_id) + " at offset " +
                             std::to_string(c->offset) + " to make it durable, it did not verify" +
                             "; what does not verify is not written back");
    }
    if (pending.size() + bytes.size() > kChunkBytes) DBDB_RETURN_IF_ERROR(flush());
    if (bytes.size() >= kChunkBytes) {
      DBDB_RETURN_IF_ERROR(file.WriteAt(pending_at, bytes));  // pending is empty: a big commit alone
      pending_at += bytes.size();
    } else {
      pending.append(bytes);
    }
  }
  return flush();
}

Result<std::vector<format::Commit>> DBImpl::ReadUnprovenCommits(const View& base, uint64_t from) {
  // The commits whose bodies lie at or above `from`, newest first: never below where recovery
  // stopped verifying (a commit whose own synced_through covers its body start), so that only
  // what recovery verified is read again. (DecodeCommitPayload ties each body to the record
  // before it.)
  std::vector<format::Commit> commits{*base.commit};
  auto stops = [from](const format::Commit& c) {
    return c.body_offset <= from || c.body_offset <= c.synced_through || c.prev_commit_offset == 0;
  };
  while (!stops(commits.back())) {
    auto prev = base.file->ReadCommit(commits.back().prev_commit_offset);
    if (!prev.ok()) prev = base.file->ReadCommit(commits.back().prev_commit_offset);  // one bad read
    if (!prev.ok()) {
      return Status::IOError(path_ + ": re-reading the commit at offset " +
                             std::to_string(commits.back().prev_commit_offset) +
                             " to make it durable: " + prev.status().ToString());
    }
    if (base.file->IsCompactedTree(*prev)) break;  // proven (above): the rewrite starts after it
    commits.push_back(*prev);
  }
  return commits;
}

Result<bool> DBImpl::ReadVerifiedCommit(const View& base, const format::Commit& c, std::string* bytes) {
  // As recovery verified them: the body against the commit's body checksum, the commit record
  // against its own. One bad read is not bad bytes: a commit that does not verify is read once
  // more before giving up.
  for (int attempt = 0; attempt < 2; attempt++) {
    bytes->resize(c.record_end() - c.body_offset);
    DBDB_ASSIGN_OR_RETURN(size_t got, base.file->file().ReadAt(c.body_offset, *bytes));
    if (got != bytes->size()) return false;  // the file is shorter than the commit it was read with
    std::string_view body = std::string_view(*bytes).substr(0, c.offset - c.body_offset);
    auto record = format::VerifyRecord(c.offset, std::string_view(*bytes).substr(body.size()));
    if (format::BodyChecksum(c.body_offset, body) != c.body_checksum || !record.ok() ||
        record->type != format::RecordType::kCommit) {
      continue;
    }
    auto decoded = format::DecodeCommitPayload(c.offset, record->payload, base.file->version());
    if (decoded.ok() && decoded->txn_id == c.txn_id && decoded->body_checksum == c.body_checksum) return true;
  }
  return false;
}

void DBImpl::Publish(const View& view, const std::vector<format::BatchChange>* changes) {
  MutexLock guard(&state_mutex_);
  if (file_ != view.file || !view.commit || (newest_ && newest_->offset > view.commit->offset)) return;
  bool newer = !newest_ || newest_->offset < view.commit->offset;
  newest_ = view.commit;
  if (!newer) return;
  const format::Commit& c = *newest_;
  if (c.folded()) {
    overlay_ = NewOverlay(c.offset, c.txn_id);
  } else if (changes != nullptr && overlay_ && overlay_->fold_offset() == c.fold_offset &&
             overlay_->through_offset() == c.prev_commit_offset) {
    overlay_->Apply(c.offset, c.txn_id, *changes, LogRecordBytes(c));  // this handle's own commit
  } else if (changes == nullptr && overlay_ && overlay_->fold_offset() == c.fold_offset &&
             overlay_->through_offset() == c.prev_commit_offset && overlay_->through_txn_id() == c.txn_id &&
             file_->version() >= format::kCheckpointVersion) {
    overlay_->Restate(c.offset, LogRecordBytes(c));  // this handle's own checkpoint
  } else {
    overlay_.reset();  // the next ReaderView or WriterView replays from the file
  }
}

Status DBImpl::FailCommit(const View& base, const Status& cause, std::unique_ptr<FileLock>* in_flight) {
  // The failed commit may sit complete in the page cache while never reaching the disk (a failed
  // sync may have dropped it). Left there, a later writer could take it for a valid commit and
  // build durable commits on nodes the disk never got: settle the base before failing.
  View settled = base;
  Status rollback = SettleBase(settled, /*rollback=*/true);
  if (!rollback.ok()) {
    // It is still there: keep it in flight for as long as this handle lives, so that no reader
    // takes it for a dead writer's commit (and no writer starts: see HoldWriterLock).
    {
      MutexLock guard(&failure_mutex_);
      held_in_flight_ = std::move(*in_flight);
      rollback_failed_ = true;
    }
    return Fail(Status(cause.code(), cause.message() + "; rolling back the failed commit also failed: " +
                                         rollback.ToString()));
  }
  return Fail(cause);
}

void DBImpl::HoldWriterLockIfRollbackFailed(WriterLock* lock) {
  MutexLock guard(&failure_mutex_);
  if (!rollback_failed_ || held_writer_lock_) return;
  // The cross-process lock only: other writers wait until this handle is closed. The in-process
  // mutex is released (the handle refuses writes before it would take it).
  held_change_mark_ = std::move(lock->mark);
  held_writer_lock_ = std::move(lock->file_lock);
}

Result<WriterLock> DBImpl::AcquireWriter(bool wait, const std::atomic<bool>* give_up) {
  DBDB_RETURN_IF_ERROR(CheckWritable());
  WriterLock lock;
  lock.mutex = std::unique_lock<std::mutex>(writer_mutex_, std::defer_lock);
  if (wait) {
    lock.mutex.lock();
  } else if (!lock.mutex.try_lock()) {
    return Status::Busy("another write transaction of this handle is open");
  }
  // After a failed rollback this handle keeps the writer lock for good (HoldWriterLock): fail
  // here, before locking through the file that lock was taken through.
  DBDB_RETURN_IF_ERROR(CheckWritable());
  DBDB_ASSIGN_OR_RETURN(lock.file_lock, LockCounterFile(wait, give_up));
  DBDB_RETURN_IF_ERROR(CheckWritable());
  DBDB_RETURN_IF_ERROR(MarkChange(&lock));
  return lock;
}

Result<std::unique_ptr<FileLock>> DBImpl::LockCounterFile(bool wait, const std::atomic<bool>* give_up) {
  // The lock file stays open from one writer to the next (its counter is written at every take),
  // so a lock costs a flock, not an open and a close. (Never in a forked child, whose copy of it
  // shares the parent's lock: CheckWritable refuses a handle there.)
  std::unique_ptr<FileLock> file_lock;
  while (true) {
    if (counter_file_ == nullptr) {
      auto opened = fs_->Open(lock_path_, OpenOptions{.create = true, .transient = true});
      if (!opened.ok()) return opened.status().WithContext("opening the lock file " + lock_path_);
      counter_file_ = std::move(opened).value();
    }
    Status failed;  // the lock's error, if it was not taken
    if (wait && give_up != nullptr) {
      // The lock file may be held by another handle or process for as long as it likes (an open
      // transaction in a shell): try it, and give up once asked, rather than wait without end.
      for (auto pause = std::chrono::microseconds(100);; pause = std::min(2 * pause, kGiveUpPollMax)) {
        auto held = counter_file_->Lock({.wait = false});
        if (held.ok()) {
          file_lock = std::move(held).value();
          break;
        }
        if (held.status().code() != StatusCode::kBusy) {
          failed = held.status();
          break;
        }
        if (give_up->load()) return Status::Aborted(path_ + " is being closed; compaction abandoned");
        std::this_thread::sleep_for(pause);
      }
    } else {
      auto held = counter_file_->Lock({.wait = wait});
      if (held.ok()) {
        file_lock = std::move(held).value();
      } else {
        failed = held.status();
      }
    }
    // The lock is the file's, not the name's: had the lock file been removed or renamed over since
    // this handle opened it, another writer would take the lock of the file the name holds now.
    // Asked after a failed lock too: a file whose name is gone may not be lockable at all (the real
    // file system opens it again to lock it, by name where /proc is missing), and the file the name
    // holds now is the one to lock.
    DBDB_ASSIGN_OR_RETURN(FileStat stat, counter_file_->Stat());
    if (!stat.unlinked) {
      if (!failed.ok()) return failed;
      return file_lock;
    }
    file_lock.reset();
    ForgetLockFile();
  }
}

Status DBImpl::MarkChange(WriterLock* lock) {
  // The counter still holds the even value this handle's last lock released (its mark plus one):
  // no writer has taken the lock since, as each writes a fresh value first (a writer whose mark
  // failed removed the counter, which reads as none). Then the file is as this handle left it.
  const bool was_mapped = own_counter_.mapped();
  const std::optional<uint64_t> before = own_counter_.Read();
  if (was_mapped && !own_counter_.mapped()) own_counter_tried_ = false;  // cut: map it again once put back
  const std::optional<LeftByThisHandle> left = std::exchange(left_, std::nullopt);
  unchanged_since_left_.reset();
  writer_at_.reset();
  if (left && before && last_mark_ && *before == *last_mark_ + 1) unchanged_since_left_ = left;
  // Odd before anything of the database may change: no reader trusts a view without a look from
  // now until the mark is released (change_counter.h).
  auto mark = ChangeMark::Take(*counter_file_);
  if (!mark.ok()) {
    unchanged_since_left_.reset();
    return mark.status().WithContext("marking the change counter in " + lock_path_);
  }
  last_mark_.reset();
  if ((*mark)->written()) last_mark_ = (*mark)->value();
  if (!own_counter_tried_ && options_.mmap_reads && (*mark)->written()) {
    own_counter_tried_ = true;
    (void)own_counter_.MapOpen(*counter_file_);
  }
  lock->mark = std::move(mark).value();
  return Status::Ok();
}

void AppendCommitRecord(std::string* bytes, const format::Commit& commit) {
  const std::string payload = format::EncodeCommitPayload(commit);
  DBDB_ASSERT(format::DecodeCommitPayload(commit.offset, payload).ok());
  format::AppendRecord(bytes, commit.offset, format::RecordType::kCommit, payload);
}

Status WritableVersion(const TreeFile& file) {
  if (file.version() == format::kFormatVersion) return Status::Ok();
  return Status::ReadOnly(file.path() + " is a dbdb format " + std::to_string(file.version()) +
                          " file, which this build (format " + std::to_string(format::kFormatVersion) +
                          ") reads but does not write: open it read-only, or convert it with `dbdb upgrade " +
                          file.path() + "`");
}

bool DBImpl::CompactionDue(const View& view, uint64_t size, uint64_t fold_bytes) const {
  if (!options_.auto_compact || !view.commit) return false;
  // After a fold (fold_bytes > 0: the nodes it would write, about as many as it replaces) the log
  // is garbage too.
  uint64_t live = view.live_bytes(fold_bytes > 0);
  uint64_t total = size + fold_bytes;
  uint64_t garbage = total - std::min(total, live);
  return garbage > live + CompactionSlack();
}

uint64_t DBImpl::CompactionSlack() const {
  return std::max(options_.fold_threshold_bytes, options_.auto_compact_slack_bytes);
}

uint64_t DBImpl::PendingLogBound() const {
  const uint64_t slack = CompactionSlack();
  return slack > UINT64_MAX / kPendingLogSlackFactor ? UINT64_MAX : kPendingLogSlackFactor * slack;
}

bool DBImpl::FoldDue(const View& view, uint64_t batch_bytes) const {
  // The log since the fold (not the checkpoints that restate it: docs/FORMAT.md), and the file
  // since the fold, checkpoints included, within kFoldFileBytesFactor thresholds: checkpoints
  // written on demand (DB::Checkpoint) each restate the whole log, and without a bound a handle
  // catching up, or a compaction copying the log, would read them all.
  const uint64_t threshold = options_.fold_threshold_bytes;
  if (!view.commit || threshold == 0) return true;
  if (view.log_bytes_since_fold() + batch_bytes > threshold) return true;
  return threshold <= UINT64_MAX / kFoldFileBytesFactor &&
         view.bytes_since_fold() + batch_bytes > kFoldFileBytesFactor * threshold;
}

uint64_t DBImpl::FoldEstimate(const View& view, uint64_t new_keys) const {
  // Each changed key rewrites at most its leaf and the path above it; never more than the tree
  // and the log hold.
  uint64_t keys = new_keys + (view.overlay ? view.overlay->key_count() : 0);
  uint64_t tree = view.commit ? view.commit->tree_bytes : 0;
  return std::max<uint64_t>(1, std::min(tree + view.log_bytes(), keys * options_.node_size_target_bytes));
}

Result<View> DBImpl::PrepareWriterView() {
  // The writer always starts from the newest commit, read after taking the lock (I4).
  bool unchanged = false;
  DBDB_ASSIGN_OR_RETURN(View view, WriterView(&unchanged));
  if (!upgrading_) DBDB_RETURN_IF_ERROR(WritableVersion(*view.file));
  // A file this handle did not see made durable under its name (created, or renamed into place
  // by a compaction, by another handle that may have died before its directory sync): sync the
  // directory before writing anything to it, or a power cut could bring the old name back and
  // lose what this handle acknowledged (I8).
  if (name_durable_file_.lock() != view.file) {
    Status s = fs_->SyncDir(DirName(path_));
    if (!s.ok()) return Fail(s.WithContext("syncing the directory of " + path_));
    name_durable_file_ = view.file;
  }
  // As this handle's own commit left it: the file ends at that commit's seal, which is on disk
  // as this handle wrote it. Else look: the base's seal as it is on disk now (the next body
  // checksums those bytes; another handle may have written it since this handle last looked).
  uint64_t size = unchanged ? writer_at_->size : view.end();
  bool tail = false;
  if (!unchanged) {
    DBDB_ASSIGN_OR_RETURN(size, view.file->file().Size());
    if (view.commit) DBDB_RETURN_IF_ERROR(view.file->ReadSeal(&*view.commit, size));
    // Zeros after the base are space a writer allocated ahead (AllocateAhead), not a tail: the
    // next commit is written into them. Anything else after it is a tail, and so are more zeros
    // than any writer allocates ahead (a file grown by hand, say): cut.
    if (size > view.end()) {
      DBDB_ASSIGN_OR_RETURN(uint64_t allocated, AllocatedAheadAfter(view.file->file(), view.end(), size));
      tail = allocated == 0;
    }
  }
  // Torn or abandoned bytes after the newest commit are cut off, durably, before appending (I6).
  // A base this handle did not make durable itself is settled too, so that synced_through
  // (docs/FORMAT.md) is true and the base's seal is on disk under the next commit's body. In
  // no-sync mode the base is synced too once unsynced_bytes_max were appended since the last
  // sync, which bounds what opening must verify.
  // A base its writer left unsealed is sealed too, so that only a commit in flight is ever
  // unsealed while a writer holds the in-flight lock (SettledForReaderSyncingADeadWriter relies on it).
  bool unsealed = view.commit && !view.commit->sealed;
  bool unsynced = !KnownDurable(view);
  bool settle = options_.durability == Durability::kSync
                    ? unsynced
                    : unsynced && view.end() - std::min(view.end(), DurableEndIn(view)) > options_.unsynced_bytes_max;
  if (tail || settle || unsealed) {
    Status s = SettleBase(view);
    if (!s.ok()) return Fail(s.WithContext(tail ? "truncating the torn tail of " + path_ : "syncing " + path_));
    SetDurable(view, view.body_start());
    Publish(view);
    size = view.end();
  }
  writer_at_ = LeftByThisHandle{view.file, view.end(), size};
  return view;
}

bool DBImpl::CompactionBackingOff(const View& view) const {
  MutexLock guard(&compaction_state_mutex_);
  return compaction_failed_file_.lock() == view.file && view.end() < compaction_failed_end_ + CompactionSlack();
}

void DBImpl::BackOffCompaction(const std::shared_ptr<TreeFile>& file, uint64_t end) {
  // From the file's end now when that is later: an online compaction (in the background, or
  // inline without the writer lock) lets other writers commit while it runs, and all they wrote
  // would come off the back-off (all of it, if that passed the slack).
  if (auto now = ReaderView(); now.ok() && now->file == file) end = std::max(end, now->end());
  MutexLock guard(&compaction_state_mutex_);
  compaction_failed_file_ = file;
  compaction_failed_end_ = end;
}

bool DBImpl::AutoCompactionDue(const View& view) const {
  // Space reclaims itself: once the garbage passes the live data plus the slack, the transaction
  // compacts before it starts (which also folds the log). So does a log a commit left unfolded
  // because folding it in place would have made compaction due (CommitChanges).
  // After a failed automatic compaction it waits until the file has grown by the slack again,
  // rather than rewriting the whole database at every transaction.
  return !CompactionBackingOff(view) && (CompactionDue(view, view.end(), 0) ||
                          (view.commit && FoldDue(view, 0) && CompactionDue(view, view.end(), FoldEstimate(view, 0))));
}

Result<std::unique_ptr<WriteTransaction>> DBImpl::BeginWrite() {
  while (true) {
    DBDB_ASSIGN_OR_RETURN(WriterLock lock, AcquireWriter());
    {
      MutexLock guard(&background_mutex_);
      if (!background_error_.ok()) return std::exchange(background_error_, Status::Ok());
    }
    DBDB_ASSIGN_OR_RETURN(View view, PrepareWriterView());
    if (CompactsInBackground() && BackgroundCompactionRunning()) {
      // The compaction will fold the log this writer appends meanwhile, unless it falls too far
      // behind: then this writer lets go of the lock (the compaction's last pass needs it), waits
      // for it to install its file (or end), and starts again from the newest commit.
      if (view.log_bytes_since_fold() <= PendingLogBound()) {
        return std::unique_ptr<WriteTransaction>(new WriteTransactionImpl(this, std::move(lock), std::move(view)));
      }
      // The count is read before the lock goes: the compaction's last pass takes the lock and
      // installs, and a writer that read it only after that would wait for the next one.
      const uint64_t installed = BackgroundInstalled();
      lock = WriterLock{};
      const auto stalled_at = std::chrono::steady_clock::now();
      WaitForBackgroundCompaction(installed);
      const auto stalled = std::chrono::steady_clock::now() - stalled_at;
      writer_stalls_.fetch_add(1, std::memory_order_relaxed);
      writer_stall_micros_.fetch_add(
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(stalled).count()),
          std::memory_order_relaxed);
      continue;
    }
    if (AutoCompactionDue(view)) DBDB_RETURN_IF_ERROR(AutoCompact(&lock, &view));
    return std::unique_ptr<WriteTransaction>(new WriteTransactionImpl(this, std::move(lock), std::move(view)));
  }
}

bool DBImpl::CompactsInBackground() const {
  return options_.background_compaction && options_.wait_for_writer && fs_->AllowsBackgroundThreads();
}

bool DBImpl::BackgroundCompactionRunning() {
  MutexLock guard(&background_mutex_);
  return background_running_;
}

uint64_t DBImpl::BackgroundInstalled() {
  MutexLock guard(&background_mutex_);
  return background_installed_;
}

void DBImpl::WaitForBackgroundCompaction(uint64_t installed) {
  MutexLock guard(&background_mutex_);
  while (background_running_ && background_installed_ == installed) background_done_->wait(background_mutex_);
}

bool DBImpl::StartBackgroundCompaction(std::unique_ptr<FileLock> compaction_lock, const View& due) {
  MutexLock guard(&background_mutex_);
  DBDB_ASSERT(!background_running_);
  if (background_thread_ && background_thread_->joinable()) background_thread_->join();  // ended: it cleared running
  try {
    background_thread_ = std::make_unique<std::thread>([this, held = std::move(compaction_lock), file = due.file, end = due.end()]() mutable {
      RunBackgroundCompaction(std::move(held), std::move(file), end);
    });
  } catch (const std::exception&) {
    return false;  // no thread to be had (EAGAIN, or no memory): the lambda and its lock are gone
  }
  background_running_ = true;
  return true;
}

void DBImpl::RunBackgroundCompaction(std::unique_ptr<FileLock> compaction_lock, std::shared_ptr<TreeFile> file,
                                     uint64_t end) {
  in_background_compaction = true;  // its last pass gives the writer lock up when the handle closes
  Status s;
  for (bool again = true; again && s.ok();) {
    again = false;
    auto start = ReaderView();
    if (!start.ok()) {
      s = start.status();
      break;
    }
    if (!start->commit) break;  // nothing committed, nothing to compact
    file = start->file;
    end = start->end();
    s = WritableVersion(*start->file);
    if (!s.ok()) break;
    // Online, as Compact(): its last pass takes the writer lock, let go of here. The commits made
    // meanwhile were copied unfolded after the tree; while they pass the fold threshold the
    // compaction runs again to fold them (a writer that stopped must not leave them unfolded, for
    // every open to replay).
    auto compacted = CompactFrom(*start, nullptr);
    s = compacted.status();
    if (compacted.ok()) {
      again = compacted->view.log_bytes_since_fold() > options_.fold_threshold_bytes && !closing_.load();
      MutexLock guard(&background_mutex_);
      background_installed_++;
      background_done_->notify_all();  // writers waiting for the log to be folded
    }
  }
  compaction_lock.reset();
  // As AutoCompact: a compaction that fails backs off until the file has grown by the slack (so
  // commits fold meanwhile and the log stays bounded); damage is reported (to the next write
  // transaction), never skipped; a failure after the rename has failed the handle.
  const bool skipped = s.IsIOError() || s.code() == StatusCode::kAborted;
  // Not a compaction the close abandoned (Aborted; or Busy, when the close came between the last
  // pass's look at it and its try of the writer lock): the close then compacts in its place if its
  // fold would make compaction due (FoldOrCheckpointOnClose).
  const bool abandoned =
      closing_.load() && (s.code() == StatusCode::kAborted || s.code() == StatusCode::kBusy);
  if (!s.ok() && file != nullptr && !abandoned) BackOffCompaction(file, end);
  MutexLock guard(&background_mutex_);
  if (!s.ok() && !skipped && !closing_.load()) background_error_ = s;
  background_running_ = false;
  background_done_->notify_all();
}

void DBImpl::StopBackgroundCompaction() {
  closing_.store(true);
  if (Forked()) {
    // A parent's handle, destroyed in a forked child. Fork copied only the thread that called it:
    // the parent's compaction thread, and any writer of the parent waiting for it, do not exist
    // here, so nothing would end the wait for the compaction, the join of its thread, or the
    // destruction of the condition variable (glibc waits for the waiters it lists), and a mutex
    // may stay locked by a thread that is gone. Let go of the thread and the condition variable
    // without touching either (never destroyed in this process), and take no lock. The
    // compaction, and its files, are the parent's.
    if (background_thread_ && background_thread_->joinable()) (void)background_thread_.release();
    (void)background_done_.release();
    return;
  }
  MutexLock guard(&background_mutex_);
  while (background_running_) background_done_->wait(background_mutex_);
  if (background_thread_ && background_thread_->joinable()) background_thread_->join();
}

Status DBImpl::CheckNotClosing() const {
  // Only the background compaction gives up: a compaction on the closing thread (the close's own,
  // FoldOrCheckpointOnClose) runs to its end.
  if (in_background_compaction && closing_.load(std::memory_order_relaxed)) {
    return Status::Aborted(path_ + " is being closed; compaction abandoned");
  }
  return Status::Ok();
}

Status DBImpl::AutoCompact(WriterLock* lock, View* view) {
  // Compact as the thread that found it due (SQLite's automatic checkpoint runs in the committing
  // connection too), or hand it to a thread of the handle's own. The compaction lock is only
  // tried, while the writer lock is held: that never waits (so it cannot deadlock with the
  // compaction-then-writer order), and a compaction already running costs this transaction
  // nothing.
  auto compaction_lock = LockCompaction(/*wait=*/false);
  Status s = compaction_lock.status();
  if (s.code() == StatusCode::kBusy) return Status::Ok();
  if (s.ok() && CompactsInBackground()) {
    if (StartBackgroundCompaction(std::move(compaction_lock).value(), *view)) return Status::Ok();
    // Best effort, as a failed compaction: the transaction goes on, commits fold meanwhile, and
    // the next attempt waits until the file has grown by the slack.
    BackOffCompaction(view->file, view->end());
    return Status::Ok();
  }
  if (s.ok()) {
    if (options_.wait_for_writer) {
      // Online: the writer lock is released while the tree is written, so other writers wait only
      // for the compaction's last pass, which takes the lock back for this transaction.
      *lock = WriterLock{};
      auto compacted = CompactOnline();
      if (compacted.ok() && compacted.value()) {
        *lock = std::move(compacted.value()->lock);
        *view = std::move(compacted.value()->view);
        return Status::Ok();
      }
      s = compacted.status();
    } else {
      auto compacted = CompactFrom(*view, lock);
      if (compacted.ok()) {
        *lock = std::move(compacted->lock);
        *view = std::move(compacted->view);
        return Status::Ok();
      }
      s = compacted.status();
    }
  }
  // Best effort: a compaction that fails before its rename (a full disk, say) or gives up (the
  // file replaced, a copied commit rolled back) leaves the database as it was, and the
  // transaction goes on without it rather than every write failing until space is freed; it is
  // not tried again until the file has grown by the slack. Damage (Corruption), or any other
  // error, is reported to this transaction, never skipped, and backs off as well, as a background
  // compaction's does: the next transactions go on without compacting until the file has grown by
  // the slack, rather than each reading the tree again up to the damage and failing. A failure
  // after the rename, or of a sync of the database file, has failed the handle (I7).
  bool skipped = s.ok() || s.IsIOError() || s.code() == StatusCode::kAborted;
  if (!skipped) {
    BackOffCompaction(view->file, view->end());
    return s;
  }
  if (failed_.load()) return s.ok() ? CheckNotFailed() : s;  // never Ok without the lock
  if (!lock->mutex.owns_lock()) {
    DBDB_ASSIGN_OR_RETURN(*lock, AcquireWriter());
    DBDB_ASSIGN_OR_RETURN(*view, PrepareWriterView());
  }
  if (!s.ok()) BackOffCompaction(view->file, view->end());
  DBDB_ASSERT(lock->mutex.owns_lock());
  return Status::Ok();
}

format::Commit DBImpl::CommitAfter(const View& base, uint64_t txn_id, const TreeRoot& root, uint64_t batch_offset,
                                   uint64_t fold_offset) {
  format::Commit commit;
  commit.txn_id = txn_id;
  commit.prev_commit_offset = base.commit ? base.commit->offset : 0;
  commit.commits_in_file = base.commit ? base.commit->commits_in_file + 1 : 1;
  SetRoot(&commit, root);
  commit.fold_offset = fold_offset;
  commit.batch_offset = batch_offset;
  return commit;
}

Result<TreeRoot> DBImpl::FoldLog(const View& base, const std::vector<format::BatchChange>& batch, TreeWriter* writer) {
  Overlay all = base.overlay ? base.overlay->LatestChanges(base.txn_id()) : Overlay();
  for (const format::BatchChange& change : batch) {
    all.insert_or_assign(std::string(change.key), change.value ? std::optional<std::string>(*change.value) : std::nullopt);
  }
  std::vector<Change> tree_changes;
  tree_changes.reserve(all.size());
  for (const auto& [key, value] : all) tree_changes.push_back(Change{key, &value});
  return writer->Apply(base.root(), tree_changes);
}

Status DBImpl::CommitChanges(const View& base, const std::vector<format::BatchChange>& batch) {
  const std::string payload = format::EncodeBatch(batch);
  const uint64_t batch_record_bytes = payload.size() + format::kRecordOverheadBytes;
  // Fold once the unfolded log passes the threshold (the first commit always folds: there is no
  // tree before it). Unless the fold's nodes would make compaction due at once: then the next
  // transaction compacts, which folds everything into the fresh file and writes the tree once.
  // Not while a failed compaction backs off: nothing would fold the log until it is tried again,
  // and if it keeps failing (a full disk) the log, and every open, would grow without bound. Nor
  // once the log has passed PendingLogBound. Behind the handle's own background compaction only
  // the transaction that started it can get here so (BeginWrite waits for a running one at that
  // bound), and its fold is copied as any commit's; otherwise the compaction lock is another
  // handle's or process's, held for as long as its compaction takes, and until it ends this
  // writer's log, each open's replay and each reader's overlay would grow with every commit.
  bool fold = FoldDue(base, batch_record_bytes);
  if (fold && base.commit && !CompactionBackingOff(base) && base.log_bytes_since_fold() <= PendingLogBound() &&
      CompactionDue(base, base.end() + batch_record_bytes, FoldEstimate(base, batch.size()))) {
    fold = false;
  }
  TreeWriter writer(*base.file, base.end(), options_.node_size_target_bytes);
  TreeRoot root = base.root();
  if (fold) {
    DBDB_ASSIGN_OR_RETURN(root, FoldLog(base, batch, &writer));
  }
  std::string& bytes = writer.buffer();
  const uint64_t batch_offset = base.end() + bytes.size();
  format::AppendRecord(&bytes, batch_offset, format::RecordType::kBatch, payload);
  format::Commit commit = CommitAfter(base, base.txn_id() + 1, root, batch_offset,
                                      fold ? base.end() + bytes.size() : base.commit->fold_offset);
  Status s = AppendCommit(base, &bytes, commit, &batch);
  if (s.ok()) wrote_.store(true);
  return s;
}

bool DBImpl::CheckpointDue(const View& view, bool asked) const {
  if (!view.commit || !view.overlay || view.file->version() < format::kCheckpointVersion) return false;
  const uint64_t commits = view.overlay->commits_after_checkpoint();
  if (asked) return commits > 0;
  // On close: once the commits since the last checkpoint (or the fold) are at least two and take
  // at least as many bytes as it, so that a checkpoint is never rewritten for one small commit
  // (each byte of the log is written again in at most a doubling series of checkpoints).
  const uint64_t checkpoint = view.overlay->checkpoint_bytes();
  return commits >= 2 && view.overlay->log_bytes() - checkpoint >= checkpoint;
}

Status DBImpl::Checkpoint() {
  DBDB_ASSIGN_OR_RETURN(WriterLock lock, AcquireWriter());
  Status s = WriteCheckpoint(/*asked=*/true);
  if (!s.ok()) HoldWriterLockIfRollbackFailed(&lock);  // as a commit's failure does
  return s;
}

Status DBImpl::WriteCheckpoint(bool asked) {
  DBDB_ASSIGN_OR_RETURN(View base, PrepareWriterView());
  return WriteCheckpointOn(base, asked);
}

Status DBImpl::WriteCheckpointOn(const View& base, bool asked) {
  if (!CheckpointDue(base, asked)) return Status::Ok();
  // Every key's newest change since the fold, as of the base: replaying this one batch gives the
  // base's state, so the checkpoint restates its txn id (it is not a transaction).
  const LogOverlay::Latest latest = base.overlay->LatestChanges(base.txn_id());
  std::vector<format::BatchChange> batch;
  batch.reserve(latest.size());
  for (const auto& [key, value] : latest) {
    batch.push_back({key, value ? std::optional<std::string_view>(*value) : std::nullopt});
  }
  const std::string payload = format::EncodeBatch(batch);
  if (payload.size() > format::kRecordPayloadSizeMaxBytes) {  // a 1 GiB fold threshold, say
    return Status::LimitExceeded("a checkpoint of " + std::to_string(payload.size()) +
                                 " bytes would pass the largest record (1 GiB)");
  }
  std::string bytes;
  format::AppendRecord(&bytes, base.end(), format::RecordType::kCheckpoint, payload);
  format::Commit commit = CommitAfter(base, base.txn_id(), base.root(), base.end(), base.commit->fold_offset);
  return AppendCommit(base, &bytes, commit, nullptr);
}

bool DBImpl::CloseFoldDue(const View& view) const {
  // Not in no-sync mode: a close fold there is sealed without a sync, so the next open would hash
  // its body (the fold's nodes, up to the tree) and settling would rewrite it: a checkpoint instead.
  return options_.durability == Durability::kSync && view.commit && !view.commit->folded() &&
         view.file->version() >= format::kCloseFoldVersion && view.log_bytes() > options_.fold_on_close_bytes;
}

Status DBImpl::WriteCloseFold(const View& base) {
  // The base's tree with every change since its fold applied, and no batch: it changes nothing,
  // so it restates the base's txn id (docs/FORMAT.md, "Close folds").
  TreeWriter writer(*base.file, base.end(), options_.node_size_target_bytes);
  DBDB_ASSIGN_OR_RETURN(TreeRoot root, FoldLog(base, {}, &writer));
  std::string& bytes = writer.buffer();
  format::Commit commit = CommitAfter(base, base.txn_id(), root, /*batch_offset=*/0, base.end() + bytes.size());
  return AppendCommit(base, &bytes, commit, nullptr);
}

Status DBImpl::FoldOrCheckpointOnClose(WriterLock* lock) {
  DBDB_ASSIGN_OR_RETURN(View base, PrepareWriterView());
  if (CloseFoldDue(base)) {
    // As a commit's fold (CommitChanges): unless the fold's nodes would make compaction due at
    // once, and then a compaction, which folds too. Online, as an automatic one: the writer lock
    // is let go while the tree is written, so other writers wait only for the last pass, whose
    // lock a closing handle only tries (a writer holding it: the compaction is abandoned, and
    // that writer folds or compacts in its turn). The compaction lock is only tried too; a
    // compaction another handle runs (busy) folds the log into its own file, and a checkpoint,
    // when due, bounds the replay meanwhile (so it does when the lock cannot be had at all).
    if (CompactionBackingOff(base) || !CompactionDue(base, base.end(), FoldEstimate(base, 0))) {
      return WriteCloseFold(base);
    }
    auto compaction_lock = LockCompaction(/*wait=*/false);
    if (compaction_lock.ok()) {
      *lock = WriterLock{};
      auto compacted = CompactFrom(base, nullptr);
      if (compacted.ok()) *lock = std::move(compacted->lock);
      return compacted.status();
    }
  }
  if (!options_.checkpoint_on_close) return Status::Ok();
  return WriteCheckpointOn(base, /*asked=*/false);
}

DBImpl::~DBImpl() {
  StopBackgroundCompaction();
  // On close (best effort: nothing is lost without it, and a destructor reports nothing): a log
  // past fold_on_close_bytes is folded, else a checkpoint is written when due; only by a handle
  // that committed, and never waiting for a lock another thread or process holds (that writer
  // does the same when it closes).
  if (options_.read_only || !wrote_.load() || failed_.load()) return;
  if (Forked()) return;  // a parent's handle, destroyed in a forked child
  // The zeros after the newest commit are cut too (those this handle allocated ahead of its last
  // commit, or another writer's since): without a fold or checkpoint to write, only if this
  // handle's last commit allocated ahead and no writer came since, so that a close never takes
  // the lock (and marks the change counter) for nothing.
  bool allocated = false;
  {
    std::lock_guard<std::mutex> guard(writer_mutex_);
    const std::optional<uint64_t> counter = own_counter_.Read();
    allocated = left_ && left_->size > left_->end && last_mark_ && counter && *counter == *last_mark_ + 1;
  }
  bool fold = false;  // as CloseFoldDue will judge it, from the log this handle last saw
  if (options_.durability == Durability::kSync) {
    MutexLock guard(&state_mutex_);
    fold = overlay_ && overlay_->log_bytes() > options_.fold_on_close_bytes;
  }
  if (!options_.checkpoint_on_close && !fold && !allocated) return;
  auto lock = AcquireWriter(/*wait=*/false);
  if (!lock.ok()) return;
  allocated = allocated && unchanged_since_left_;
  if (options_.checkpoint_on_close || fold) {
    if (!FoldOrCheckpointOnClose(&*lock).ok()) {
      HoldWriterLockIfRollbackFailed(&*lock);
      return;
    }
  } else if (!allocated || !PrepareWriterView().ok()) {
    return;
  }
  CutAllocatedAhead();
}

std::string AssembleCommit(const std::optional<format::Commit>& base, std::string_view records,
                           format::Commit* commit) {
  const uint64_t base_end = base ? base->end() : format::kFileHeaderSizeBytes;
  commit->body_offset = base ? base->record_end() : format::kFileHeaderSizeBytes;
  commit->offset = base_end + records.size();
  DBDB_ASSERT(commit->batch_offset == 0 || commit->batch_offset < commit->offset);
  // The base's seal (the same bytes as on the file) is written again, in the commit's own write,
  // so that the commit's sync covers it: it was never synced by itself, and a failed sync of
  // another handle or process since may have dropped its page while reads still return it
  // (fsyncgate). The commit's body checksum covers the seal; without this, the commit could be
  // acknowledged durable over a seal the disk never got, and be lost in a power cut. (Found by
  // `dbdb-crash --processes 3`: a second writer's failed settle dropped the first writer's seal.)
  std::string out;
  if (base && base->sealed) format::AppendSeal(&out, *base, base->seal_durable);
  DBDB_ASSERT(base_end - out.size() == commit->body_offset);
  out.append(records);
  commit->body_checksum = format::BodyChecksum(commit->body_offset, out);
  AppendCommitRecord(&out, *commit);
  return out;
}

Status DBImpl::AppendCommit(const View& base, std::string* bytes, format::Commit commit,
                            const std::vector<format::BatchChange>* batch) {
  left_.reset();  // until this commit is sealed: whatever happens to it, the next writer looks
  // `bytes` holds the fold's nodes and the batch, to be appended after the base commit (and its
  // seal). The body the commit checksums starts at the base commit record's end: the base's seal,
  // then those records. Safe to rewrite the seal: the file ends at it (PrepareWriterView cut any
  // tail), under the locks.
  // Everything before the last point this handle synced in this file is durable too.
  uint64_t carried = base.commit ? base.commit->synced_through : format::kFileHeaderSizeBytes;
  uint64_t synced = std::min(DurableEndIn(base), base.body_start());
  commit.synced_through = KnownDurable(base) ? base.body_start()
                                             : std::max({carried, synced, format::kFileHeaderSizeBytes});
  commit.sealed = true;  // by the time Commit returns
  std::string out = AssembleCommit(base.commit, *bytes, &commit);
  const uint64_t write_at = base.body_start();
  if (commit.end() > options_.file_size_max_bytes) {
    return Status::LimitExceeded("commit would grow " + path_ + " to " + std::to_string(commit.end()) +
                                 " bytes, past file_size_max_bytes (" +
                                 std::to_string(options_.file_size_max_bytes) + "); compact or raise the limit");
  }
  File& file = base.file->file();
  // A transaction's batch (a checkpoint or a close fold has none) without a fold.
  DBDB_RETURN_IF_ERROR(AllocateAhead(base, commit.end(), batch != nullptr && !commit.folded()));
  // Readers that find this commit unsealed wait for this lock instead of guessing.
  DBDB_ASSIGN_OR_RETURN(auto in_flight, LockInFlight(file));
  if (options_.durability == Durability::kNoSync) {
    // Nothing to wait for: nodes, commit and seal in one write; the seal proves nothing durable.
    format::AppendSeal(&out, commit, false);
    commit.seal_durable = false;
    Status s = file.WriteAt(write_at, out);
    if (!s.ok()) return FailCommit(base, s.WithContext("writing commit " + std::to_string(commit.txn_id)), &in_flight);
  } else {
    Status s = file.WriteAt(write_at, out);
    if (!s.ok()) return FailCommit(base, s.WithContext("writing commit " + std::to_string(commit.txn_id)), &in_flight);
    s = file.Sync();
    // Never retried: after a failed sync the written pages may be gone (fsyncgate).
    if (!s.ok()) return FailCommit(base, s.WithContext("syncing commit " + std::to_string(commit.txn_id)), &in_flight);
    // Durable: seal it, so readers take it. The seal needs no sync of its own (docs/FORMAT.md).
    std::string seal;
    format::AppendSeal(&seal, commit, true);
    commit.seal_durable = true;
    s = file.WriteAt(commit.record_end(), seal);
    // The commit is durable (its sync returned): never roll it back, whatever the seal's bytes did
    // (they may have landed, and a reader may have taken them). Fail the handle (I7); the commit
    // is a dead writer's now, which the next writer seals.
    if (!s.ok()) return Fail(s.WithContext("sealing commit " + std::to_string(commit.txn_id)));
    SetDurable(base, commit.record_end());
  }
  in_flight.reset();
  Publish(View{base.file, commit, nullptr}, batch);
  const uint64_t size = writer_at_ && writer_at_->In(base.file) ? std::max(writer_at_->size, commit.end()) : commit.end();
  writer_at_ = LeftByThisHandle{base.file, commit.end(), size};
  left_ = writer_at_;
  return Status::Ok();
}

Status DBImpl::AllocateAhead(const View& base, uint64_t end, bool batch_only) {
  // A commit's sync that must also record a new size (an append) costs a journal commit on most
  // file systems; one that writes into space the file already has does not (docs/FORMAT.md).
  // Readers and recovery skip the zeros where the file system reports them as a hole
  // (File::DataEnd), and read them (at most what was allocated ahead: 1 MiB) where it does not.
  // Not for a close's checkpoint: the close cuts what it would allocate.
  if (options_.allocate_ahead_bytes == 0 || allocate_unsupported_ || closing_.load()) return Status::Ok();
  // Only on the base as PrepareWriterView left it, whose file's size it knows.
  if (!writer_at_ || !writer_at_->In(base.file) || writer_at_->end != base.end()) return Status::Ok();
  const uint64_t size = writer_at_->size;
  if (end <= size) return Status::Ok();
  // As much again as kAllocateAheadCommits commits of this one's size when that is more (batch
  // commits of 100 KB and more), so that their syncs too record a new size only once in that many.
  // Only after a transaction's batch: folds and checkpoints are few, and their size is no measure
  // of the commits after them.
  const uint64_t commit_bytes = batch_only ? end - std::min(end, base.end()) : 0;
  const uint64_t scaled = commit_bytes > format::kAllocateAheadMaxBytes / kAllocateAheadCommits
                              ? format::kAllocateAheadMaxBytes
                              : kAllocateAheadCommits * commit_bytes;
  const uint64_t ahead = std::max(options_.allocate_ahead_bytes, scaled);
  uint64_t target = end + ahead;
  constexpr uint64_t kPage = format::kAllocationPageBytes;
  target = std::min(target + (kPage - target % kPage) % kPage, options_.file_size_max_bytes);
  if (target <= end) return Status::Ok();
  File& file = base.file->file();
  auto allocated = file.Allocate(size, target - size);
  if (allocated.ok()) {
    if (!*allocated) allocate_unsupported_ = true;
    if (*allocated) writer_at_->size = target;
    return Status::Ok();
  }
  // A full disk, say: the commit's own write will tell. The file may have grown by part of the
  // range (zeros after the base, which the commit writes over or the next writer keeps).
  auto now = file.Size();
  if (!now.ok()) return now.status().WithContext("after allocating ahead in " + path_ + " failed");
  writer_at_->size = std::max(size, *now);
  return Status::Ok();
}

void DBImpl::CutAllocatedAhead() {
  // Only the zeros after the newest commit as this writer prepared or left the file, under the
  // writer lock: no commit of another writer lies there. Not synced: zeros that come back after
  // a crash are space allocated ahead, which the next writer keeps.
  if (!writer_at_ || writer_at_->size <= writer_at_->end) return;
  const std::shared_ptr<TreeFile> file = writer_at_->Open();
  if (file == nullptr) return;  // replaced and closed: no zeros of it matter
  if (file->file().Truncate(writer_at_->end).ok()) writer_at_->size = writer_at_->end;
}

}  // namespace dbdb
