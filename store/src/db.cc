// DB: opening and creating, following the newest commit, snapshots and write transactions.
#include <algorithm>

#include "db_impl.h"

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
  Result<std::optional<std::string>> Get(std::string_view key) override {
    return TreeGet(*view_.file, view_.root(), key);
  }
  std::unique_ptr<Iterator> NewIterator() override { return NewTreeIterator(view_.file, view_.root()); }
  Result<std::vector<KeyValue>> Scan(const ScanRange& range) override {
    auto it = NewIterator();
    return ScanWith(*it, range);
  }

 private:
  View view_;
};

class WriteTransactionImpl final : public WriteTransaction {
 public:
  WriteTransactionImpl(DBImpl* db, WriterLock lock, View base)
      : db_(db), lock_(std::move(lock)), base_(std::move(base)) {}

  uint64_t base_txn_id() const override { return base_.txn_id(); }

  Result<std::optional<std::string>> Get(std::string_view key) override {
    DBDB_RETURN_IF_ERROR(CheckOpen());
    auto it = changes_.find(key);
    if (it != changes_.end()) return it->second;
    return TreeGet(*base_.file, base_.root(), key);
  }
  std::unique_ptr<Iterator> NewIterator() override {
    return NewMergedIterator(base_.file, base_.root(), &changes_);
  }
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
};

Status WriteTransactionImpl::Commit() {
  DBDB_RETURN_IF_ERROR(CheckOpen());
  finished_ = true;
  WriterLock lock = std::move(lock_);  // released when Commit returns, whatever happens
  if (changes_.empty()) return Status::Ok();
  DBDB_RETURN_IF_ERROR(db_->CheckWritable());
  std::vector<Change> changes;
  changes.reserve(changes_.size());
  for (const auto& [key, value] : changes_) changes.push_back(Change{key, &value});
  TreeWriter writer(*base_.file, base_.end(), db_->options().node_size_target_bytes);
  DBDB_ASSIGN_OR_RETURN(TreeRoot root, writer.Apply(base_.root(), changes));
  format::Commit commit;
  commit.txn_id = base_.txn_id() + 1;
  commit.prev_commit_offset = base_.commit ? base_.commit->offset : 0;
  commit.commits_in_file = base_.commit ? base_.commit->commits_in_file + 1 : 1;
  commit.root_offset = root.ref.offset;
  commit.root_length = root.ref.length;
  commit.tree_height = root.height;
  commit.key_count = root.key_count;
  commit.tree_bytes = root.tree_bytes;
  Status s = db_->AppendCommit(base_, &writer.buffer(), commit);
  changes_.clear();
  return s;
}

}  // namespace

DBImpl::DBImpl(std::string path, const Options& options, std::shared_ptr<FileSystem> fs,
               std::shared_ptr<TreeFile> file, std::optional<format::Commit> newest)
    : path_(std::move(path)), lock_path_(path_ + ".lock"), options_(options), fs_(std::move(fs)),
      file_(std::move(file)), newest_(newest) {}

Result<std::unique_ptr<DB>> DB::Open(const std::string& path, const Options& options) {
  DBDB_RETURN_IF_ERROR(ValidateOptions(options));
  if (path.empty()) return Status::InvalidArgument("empty database path");
  std::shared_ptr<FileSystem> fs = options.file_system ? options.file_system : NewPosixFileSystem();
  DBDB_ASSIGN_OR_RETURN(bool exists, fs->Exists(path));
  if (!exists) {
    if (options.read_only || !options.create_if_missing) {
      return Status::NotFound("database " + path + " does not exist (create it with create_if_missing)");
    }
    DBDB_ASSIGN_OR_RETURN(auto lock, fs->Lock(path + ".lock", options.wait_for_writer));
    DBDB_ASSIGN_OR_RETURN(exists, fs->Exists(path));  // another process may have created it
    if (!exists) {
      Status s = CreateDatabaseFile(*fs, path);
      if (!s.ok()) return s.WithContext("creating " + path);
    }
  }
  auto file = TreeFile::Open(*fs, path, options.read_only, options.node_cache_bytes);
  if (!file.ok()) return file.status().WithContext("opening " + path);
  DBDB_ASSIGN_OR_RETURN(uint64_t size, file.value()->file().Size());
  auto newest = file.value()->FindNewestCommit(size, 0);
  if (!newest.ok()) return newest.status().WithContext("opening " + path);
  return std::unique_ptr<DB>(new DBImpl(path, options, fs, file.value(), newest.value()));
}

Result<View> DBImpl::Refresh() {
  std::lock_guard<std::mutex> guard(state_mutex_);
  auto identity = fs_->Identity(path_);
  if (!identity.ok()) return identity.status().WithContext("database file " + path_);
  if (identity.value() != file_->identity()) {
    // Compaction replaced the file: follow it. Snapshots on the old file keep it open.
    auto file = TreeFile::Open(*fs_, path_, options_.read_only, options_.node_cache_bytes);
    if (!file.ok()) return file.status().WithContext("reopening " + path_ + " after compaction");
    file_ = file.value();
    newest_.reset();
  }
  DBDB_ASSIGN_OR_RETURN(uint64_t size, file_->file().Size());
  uint64_t known_end = newest_ ? newest_->end() : format::kFileHeaderSizeBytes;
  if (size < known_end) {
    return Status::Corruption(path_ + " shrank to " + std::to_string(size) +
                              " bytes, below its newest commit ending at " + std::to_string(known_end));
  }
  if (size > known_end) {
    // New commits, or a torn or in-progress tail: look for a newer commit above the known one.
    DBDB_ASSIGN_OR_RETURN(auto found, file_->FindNewestCommit(size, known_end));
    if (found) newest_ = found;
  }
  return View{file_, newest_};
}

Result<std::optional<std::string>> DBImpl::Get(std::string_view key) {
  DBDB_ASSIGN_OR_RETURN(View view, Refresh());
  return TreeGet(*view.file, view.root(), key);
}

Status DBImpl::Put(std::string_view key, std::string_view value) {
  DBDB_ASSIGN_OR_RETURN(auto txn, BeginWrite());
  DBDB_RETURN_IF_ERROR(txn->Put(key, value));
  return txn->Commit();
}

Status DBImpl::Del(std::string_view key) {
  DBDB_ASSIGN_OR_RETURN(auto txn, BeginWrite());
  DBDB_RETURN_IF_ERROR(txn->Del(key));
  return txn->Commit();
}

Result<std::unique_ptr<Snapshot>> DBImpl::GetSnapshot() {
  DBDB_ASSIGN_OR_RETURN(View view, Refresh());
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
  if (options_.read_only) return Status::ReadOnly(path_ + " is open read-only");
  if (failed_.load()) {
    std::lock_guard<std::mutex> guard(failure_mutex_);
    return Status::Failed("handle refuses writes after an earlier I/O error (reopen to recover): " + failure_);
  }
  return Status::Ok();
}

Status DBImpl::Fail(const Status& cause) {
  {
    std::lock_guard<std::mutex> guard(failure_mutex_);
    if (!failed_.load()) failure_ = cause.ToString();
  }
  failed_.store(true);
  return cause;
}

Status DBImpl::FailCommit(const View& base, const Status& cause) {
  // The failed commit may sit complete in the page cache while never reaching the disk (a failed
  // sync may have dropped it). Left there, a later writer could take it for a valid commit and
  // build durable commits on nodes the disk never got. Cut it off, durably, before failing; if
  // even that fails, the error says so.
  File& file = base.file->file();
  Status rollback = file.Truncate(base.end());
  if (rollback.ok()) rollback = file.Sync();
  if (!rollback.ok()) {
    return Fail(Status(cause.code(), cause.message() + "; rolling back the failed commit also failed: " +
                                         rollback.ToString()));
  }
  return Fail(cause);
}

Result<WriterLock> DBImpl::AcquireWriter() {
  DBDB_RETURN_IF_ERROR(CheckWritable());
  WriterLock lock;
  lock.mutex = std::unique_lock<std::mutex>(writer_mutex_, std::defer_lock);
  if (options_.wait_for_writer) {
    lock.mutex.lock();
  } else if (!lock.mutex.try_lock()) {
    return Status::Busy("another write transaction of this handle is open");
  }
  DBDB_ASSIGN_OR_RETURN(lock.file_lock, fs_->Lock(lock_path_, options_.wait_for_writer));
  DBDB_RETURN_IF_ERROR(CheckWritable());
  return lock;
}

Result<View> DBImpl::PrepareWriterView() {
  // The writer always starts from the newest commit, read after taking the lock (I4).
  DBDB_ASSIGN_OR_RETURN(View view, Refresh());
  File& file = view.file->file();
  DBDB_ASSIGN_OR_RETURN(uint64_t size, file.Size());
  if (size > view.end()) {
    // Torn or abandoned bytes after the newest commit: cut them off, durably, before appending (I6).
    Status s = file.Truncate(view.end());
    if (s.ok()) s = file.Sync();
    if (!s.ok()) return Fail(s.WithContext("truncating the torn tail of " + path_));
    SetDurable(view, view.end());
  }
  if (!KnownDurable(view)) {
    // The base was written by someone else, maybe not synced: make it durable before building
    // on it, so that synced_through (docs/FORMAT.md) is true.
    if (options_.durability == Durability::kSync) {
      Status s = file.Sync();
      if (!s.ok()) return Fail(s.WithContext("syncing " + path_));
      SetDurable(view, view.end());
    }
  }
  return view;
}

Result<std::unique_ptr<WriteTransaction>> DBImpl::BeginWrite() {
  DBDB_ASSIGN_OR_RETURN(WriterLock lock, AcquireWriter());
  DBDB_ASSIGN_OR_RETURN(View view, PrepareWriterView());
  return std::unique_ptr<WriteTransaction>(new WriteTransactionImpl(this, std::move(lock), std::move(view)));
}

Status DBImpl::AppendCommit(const View& base, std::string* bytes, format::Commit commit) {
  commit.body_offset = base.end();
  commit.offset = base.end() + bytes->size();
  commit.body_checksum = format::BodyChecksum(commit.body_offset, *bytes);
  uint64_t carried = base.commit ? base.commit->synced_through : format::kFileHeaderSizeBytes;
  commit.synced_through = KnownDurable(base) ? base.end() : std::max(carried, format::kFileHeaderSizeBytes);
  if (commit.end() > options_.file_size_max_bytes) {
    return Status::LimitExceeded("commit would grow " + path_ + " to " + std::to_string(commit.end()) +
                                 " bytes, past file_size_max_bytes (" +
                                 std::to_string(options_.file_size_max_bytes) + "); compact or raise the limit");
  }
  format::AppendRecord(bytes, commit.offset, format::RecordType::kCommit, format::EncodeCommitPayload(commit));
  File& file = base.file->file();
  Status s = file.WriteAt(commit.body_offset, *bytes);
  if (!s.ok()) return FailCommit(base, s.WithContext("writing commit " + std::to_string(commit.txn_id)));
  if (options_.durability == Durability::kSync) {
    s = file.Sync();
    // Never retried: after a failed sync the written pages may be gone (fsyncgate).
    if (!s.ok()) return FailCommit(base, s.WithContext("syncing commit " + std::to_string(commit.txn_id)));
    SetDurable(base, commit.end());
  }
  std::lock_guard<std::mutex> guard(state_mutex_);
  if (file_ == base.file) newest_ = commit;
  return Status::Ok();
}

}  // namespace dbdb
