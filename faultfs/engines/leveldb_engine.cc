// LevelDB as an engine under test (engine.h): a leveldb::Env onto dbdb::FileSystem, written to do
// what LevelDB 1.23's own util/env_posix.cc does where it matters for power loss:
//  - a writable file is opened O_CREAT|O_TRUNC, an appendable one O_CREAT|O_APPEND;
//  - a writable file keeps a 64 KiB buffer: Append fills it and writes it out only when it
//    overflows (the rest of a large append goes out directly), Flush and Close write it out;
//  - Sync of a file whose name starts with "MANIFEST" first syncs its directory, so that the files
//    the manifest is about to name are there (SyncDirIfManifest), then writes the buffer out and
//    syncs the file; any other file's Sync syncs that file only (fdatasync);
//  - creating, renaming and removing a name never syncs the directory: a new log, CURRENT renamed
//    into place and the removal of obsolete files stay volatile until the next manifest Sync;
//  - sequential reads advance an offset (read) and Skip moves it (lseek); random reads are pread:
//    short at the end of the file;
//  - LockFile does not wait: a lock held elsewhere is an IOError.
// Where it is not faithful (docs/ENGINES.md): random reads never go through mmap (env_posix maps
// the first 1000 tables it opens, and there a read past the size seen at open is an IOError, not a
// short read); RemoveDir does nothing; the info LOG is discarded; GetChildren omits "." and "..";
// CreateDir of an existing directory succeeds (mkdir fails with EEXIST, which LevelDB ignores);
// the clock is Env::Default()'s; the memtable is the smallest LevelDB accepts (64 KiB, so that long
// workloads fill it); background jobs a write or a read schedules wait until it returns (FsEnv).
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/status.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <condition_variable>
#include <cstdarg>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "faultfs/engine.h"

namespace faultfs {
namespace {

constexpr size_t kWritableFileBufferSize = 65536;  // env_posix's

// env_posix's PosixError: a missing file is NotFound, anything else an IOError naming `context`.
leveldb::Status ToLevelDb(const dbdb::Status& s, const std::string& context) {
  if (s.ok()) return leveldb::Status::OK();
  if (s.IsNotFound()) return leveldb::Status::NotFound(context, s.message());
  return leveldb::Status::IOError(context, s.message());
}

dbdb::Status FromLevelDb(const leveldb::Status& s, const std::string& what) {
  if (s.ok()) return dbdb::Status::Ok();
  std::string message = "leveldb: " + what + ": " + s.ToString();
  if (s.IsCorruption()) return dbdb::Status::Corruption(message);
  if (s.IsNotFound()) return dbdb::Status::NotFound(message);
  if (s.IsInvalidArgument()) return dbdb::Status::InvalidArgument(message);
  return dbdb::Status::IOError(message);  // IsIOError, and NotSupported
}

// The last path component: env_posix's Basename.
std::string BaseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

class FsSequentialFile final : public leveldb::SequentialFile {
 public:
  FsSequentialFile(std::string filename, std::unique_ptr<dbdb::File> file)
      : filename_(std::move(filename)), file_(std::move(file)) {}

  leveldb::Status Read(size_t n, leveldb::Slice* result, char* scratch) override {
    auto read = file_->ReadAt(offset_, {scratch, n});
    if (!read.ok()) return ToLevelDb(read.status(), filename_);
    *result = leveldb::Slice(scratch, *read);
    offset_ += *read;
    return leveldb::Status::OK();
  }

  // lseek(SEEK_CUR) may move past the end: the next Read then returns nothing.
  leveldb::Status Skip(uint64_t n) override {
    offset_ += n;
    return leveldb::Status::OK();
  }

 private:
  const std::string filename_;
  const std::unique_ptr<dbdb::File> file_;
  uint64_t offset_ = 0;  // the file descriptor's position
};

// PosixRandomAccessFile (pread); thread-safe because dbdb::File::ReadAt is.
class FsRandomAccessFile final : public leveldb::RandomAccessFile {
 public:
  FsRandomAccessFile(std::string filename, std::unique_ptr<dbdb::File> file)
      : filename_(std::move(filename)), file_(std::move(file)) {}

  leveldb::Status Read(uint64_t offset, size_t n, leveldb::Slice* result, char* scratch) const override {
    auto read = file_->ReadAt(offset, {scratch, n});
    *result = leveldb::Slice(scratch, read.ok() ? *read : 0);
    return ToLevelDb(read.status(), filename_);
  }

 private:
  const std::string filename_;
  const std::unique_ptr<dbdb::File> file_;
};

// PosixWritableFile, buffer and all: what reaches the filesystem, and when, is what LevelDB writes
// on Linux.
class FsWritableFile final : public leveldb::WritableFile {
 public:
  FsWritableFile(dbdb::FileSystem& fs, std::string filename, std::unique_ptr<dbdb::File> file, uint64_t end)
      : fs_(fs),
        filename_(std::move(filename)),
        is_manifest_(BaseName(filename_).starts_with("MANIFEST")),
        file_(std::move(file)),
        end_(end) {}

  ~FsWritableFile() override {
    if (file_) Close();  // errors ignored, as env_posix does
  }

  leveldb::Status Append(const leveldb::Slice& data) override {
    size_t write_size = data.size();
    const char* write_data = data.data();
    size_t copy_size = std::min(write_size, kWritableFileBufferSize - pos_);
    std::memcpy(buf_ + pos_, write_data, copy_size);
    write_data += copy_size;
    write_size -= copy_size;
    pos_ += copy_size;
    if (write_size == 0) return leveldb::Status::OK();
    // The buffer is full: write it out, then buffer a small rest or write a large one directly.
    leveldb::Status s = FlushBuffer();
    if (!s.ok()) return s;
    if (write_size < kWritableFileBufferSize) {
      std::memcpy(buf_, write_data, write_size);
      pos_ = write_size;
      return leveldb::Status::OK();
    }
    return WriteUnbuffered(write_data, write_size);
  }

  leveldb::Status Close() override {
    leveldb::Status s = FlushBuffer();
    file_.reset();
    return s;
  }

  leveldb::Status Flush() override { return FlushBuffer(); }

  leveldb::Status Sync() override {
    // The directory before the manifest's bytes: a synced manifest must not name a table or log
    // whose name a crash can still take away.
    if (is_manifest_) {
      std::string dir = dbdb::DirName(filename_);
      leveldb::Status s = ToLevelDb(fs_.SyncDir(dir), dir);
      if (!s.ok()) return s;
    }
    leveldb::Status s = FlushBuffer();
    if (!s.ok()) return s;
    if (!file_) return leveldb::Status::IOError(filename_, "file is closed");
    return ToLevelDb(file_->Sync(), filename_);
  }

 private:
  // The buffer is emptied even if the write fails, as env_posix does.
  leveldb::Status FlushBuffer() {
    leveldb::Status s = WriteUnbuffered(buf_, pos_);
    pos_ = 0;
    return s;
  }

  // A failed write leaves the position where it was (write(2) returning -1 wrote nothing).
  leveldb::Status WriteUnbuffered(const char* data, size_t size) {
    if (size == 0) return leveldb::Status::OK();
    if (!file_) return leveldb::Status::IOError(filename_, "file is closed");
    leveldb::Status s = ToLevelDb(file_->WriteAt(end_, {data, size}), filename_);
    if (s.ok()) end_ += size;
    return s;
  }

  dbdb::FileSystem& fs_;
  const std::string filename_;
  const bool is_manifest_;
  std::unique_ptr<dbdb::File> file_;  // null once closed
  // Where the next write goes: the file descriptor's position. LevelDB has one writer per file,
  // so for an appendable file this stays the end of the file, as O_APPEND would keep it.
  uint64_t end_;
  size_t pos_ = 0;  // buf_[0, pos_) is yet to be written
  char buf_[kWritableFileBufferSize];
};

class FsFileLock final : public leveldb::FileLock {
 public:
  explicit FsFileLock(std::unique_ptr<dbdb::FileLock> lock) : lock_(std::move(lock)) {}

 private:
  std::unique_ptr<dbdb::FileLock> lock_;  // released when destroyed
};

// The info LOG is diagnostics LevelDB never reads back; writing it would only add operations to
// the trace the explorer crashes in.
class DiscardLogger final : public leveldb::Logger {
 public:
  void Logv(const char*, std::va_list) override {}
};

// Every file and directory operation goes to the dbdb::FileSystem; Env::Default() only lends
// StartThread, the clock and sleep. Background work (memtable flushes, compactions) runs on this
// Env's own thread, one job at a time in the order scheduled, as env_posix's single background
// thread does. So that a run's order of file operations never depends on thread timing (it
// replays), a call that does not wait for background work (a write, a read) holds it back with
// Defer() — a write that fills the memtable schedules the flush and goes on to write the new log,
// which must not race the flush — and Settle() then lets it run and waits until none is queued or
// running. A call that waits for background work itself (Open, CompactRange) runs undeferred.
// Deferring cannot deadlock a write: the flush a full memtable schedules has run (in Settle) before
// the next write, so no write waits for an immutable memtable, and level-0 compactions run there
// too, long before level 0 has the 8 files that would slow writes down.
// DeleteFile and DeleteDir are left to Env's defaults, which call RemoveFile and RemoveDir.
class FsEnv final : public leveldb::EnvWrapper {
 public:
  explicit FsEnv(std::shared_ptr<dbdb::FileSystem> fs) : EnvWrapper(leveldb::Env::Default()), fs_(std::move(fs)) {}
  ~FsEnv() override {
    {
      std::lock_guard<std::mutex> guard(mu_);
      stop_ = true;
    }
    work_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  void Schedule(void (*function)(void*), void* arg) override {
    std::lock_guard<std::mutex> guard(mu_);
    if (!worker_.joinable()) worker_ = std::thread([this] { Work(); });
    queue_.emplace_back(function, arg);
    pending_++;
    work_.notify_all();
  }

  // Holds background jobs back (queued, not run) until Settle.
  void Defer() {
    std::lock_guard<std::mutex> guard(mu_);
    deferred_ = true;
  }

  // Lets held jobs run and waits until no background job is queued or running (a job may schedule
  // another: that one too).
  void Settle() {
    std::unique_lock<std::mutex> lock(mu_);
    deferred_ = false;
    work_.notify_all();
    idle_.wait(lock, [this] { return pending_ == 0; });
  }

  leveldb::Status NewSequentialFile(const std::string& fname, leveldb::SequentialFile** result) override {
    *result = nullptr;
    auto file = fs_->Open(fname, dbdb::OpenOptions{.read_only = true});
    if (!file.ok()) return ToLevelDb(file.status(), fname);
    *result = new FsSequentialFile(fname, std::move(file).value());
    return leveldb::Status::OK();
  }

  leveldb::Status NewRandomAccessFile(const std::string& fname, leveldb::RandomAccessFile** result) override {
    *result = nullptr;
    auto file = fs_->Open(fname, dbdb::OpenOptions{.read_only = true});
    if (!file.ok()) return ToLevelDb(file.status(), fname);
    *result = new FsRandomAccessFile(fname, std::move(file).value());
    return leveldb::Status::OK();
  }

  leveldb::Status NewWritableFile(const std::string& fname, leveldb::WritableFile** result) override {
    return NewWritable(fname, /*truncate=*/true, result);
  }

  leveldb::Status NewAppendableFile(const std::string& fname, leveldb::WritableFile** result) override {
    return NewWritable(fname, /*truncate=*/false, result);
  }

  bool FileExists(const std::string& fname) override {
    auto exists = fs_->Exists(fname);
    return exists.ok() && *exists;
  }

  leveldb::Status GetChildren(const std::string& dir, std::vector<std::string>* result) override {
    result->clear();
    auto names = fs_->List(dir);
    if (!names.ok()) return ToLevelDb(names.status(), dir);
    *result = std::move(names).value();
    return leveldb::Status::OK();
  }

  leveldb::Status RemoveFile(const std::string& fname) override { return ToLevelDb(fs_->Remove(fname), fname); }

  leveldb::Status CreateDir(const std::string& dirname) override {
    return ToLevelDb(fs_->CreateDir(dirname), dirname);
  }

  // dbdb::FileSystem cannot remove a directory. Only DestroyDB removes one, after its files, and
  // directories are not part of the crash model (docs/PERSISTENCE.md).
  leveldb::Status RemoveDir(const std::string&) override { return leveldb::Status::OK(); }

  leveldb::Status GetFileSize(const std::string& fname, uint64_t* size) override {
    *size = 0;
    auto file = fs_->Open(fname, dbdb::OpenOptions{.read_only = true});
    if (!file.ok()) return ToLevelDb(file.status(), fname);
    auto n = (*file)->Size();
    if (!n.ok()) return ToLevelDb(n.status(), fname);
    *size = *n;
    return leveldb::Status::OK();
  }

  leveldb::Status RenameFile(const std::string& from, const std::string& to) override {
    return ToLevelDb(fs_->Rename(from, to), from);
  }

  // fcntl(F_SETLK) does not wait: a lock held by another handle fails at once (env_posix reports
  // EAGAIN, or "already held by process" for a second lock in one process).
  leveldb::Status LockFile(const std::string& fname, leveldb::FileLock** lock) override {
    *lock = nullptr;
    auto held = fs_->Lock(fname, dbdb::LockOptions{.wait = false});
    if (!held.ok() && held.status().code() == dbdb::StatusCode::kBusy) {
      return leveldb::Status::IOError("lock " + fname, "lock held: " + held.status().message());
    }
    if (!held.ok()) return ToLevelDb(held.status(), "lock " + fname);
    *lock = new FsFileLock(std::move(held).value());
    return leveldb::Status::OK();
  }

  leveldb::Status UnlockFile(leveldb::FileLock* lock) override {
    delete lock;
    return leveldb::Status::OK();
  }

  leveldb::Status GetTestDirectory(std::string* path) override {
    *path = "leveldbtest";
    CreateDir(*path);  // ignored, as env_posix does: it may exist already
    return leveldb::Status::OK();
  }

  leveldb::Status NewLogger(const std::string&, leveldb::Logger** result) override {
    *result = new DiscardLogger;
    return leveldb::Status::OK();
  }

 private:
  leveldb::Status NewWritable(const std::string& fname, bool truncate, leveldb::WritableFile** result) {
    *result = nullptr;
    auto file = fs_->Open(fname, dbdb::OpenOptions{.create = true});
    if (!file.ok()) return ToLevelDb(file.status(), fname);
    auto size = (*file)->Size();
    if (!size.ok()) return ToLevelDb(size.status(), fname);
    uint64_t end = *size;
    // O_TRUNC: Linux truncates only a file that already existed and is not empty.
    if (truncate && end > 0) {
      if (dbdb::Status s = (*file)->Truncate(0); !s.ok()) return ToLevelDb(s, fname);
      end = 0;
    }
    *result = new FsWritableFile(*fs_, fname, std::move(file).value(), end);
    return leveldb::Status::OK();
  }

  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      work_.wait(lock, [this] { return stop_ || (!queue_.empty() && !deferred_); });
      if (queue_.empty()) return;  // stopping, nothing left
      auto [function, arg] = queue_.front();
      queue_.pop_front();
      lock.unlock();
      function(arg);
      lock.lock();
      if (--pending_ == 0) idle_.notify_all();
    }
  }

  const std::shared_ptr<dbdb::FileSystem> fs_;
  std::mutex mu_;
  std::condition_variable work_, idle_;
  std::deque<std::pair<void (*)(void*), void*>> queue_;
  size_t pending_ = 0;
  bool deferred_ = false;
  bool stop_ = false;
  std::thread worker_;
};

class LevelDbHandle final : public EngineHandle {
 public:
  static dbdb::Result<std::unique_ptr<EngineHandle>> Open(std::shared_ptr<dbdb::FileSystem> fs,
                                                          const std::string& dir, bool sync) {
    auto h = std::unique_ptr<LevelDbHandle>(new LevelDbHandle(std::move(fs), sync));
    leveldb::Options options;  // LevelDB's defaults (paranoid_checks off, ...) but for these
    options.create_if_missing = true;
    options.env = &h->env_;
    options.info_log = &h->logger_;  // else LevelDB would rotate and write dir/LOG
    // The smallest memtable LevelDB accepts (it clips to 64 KiB), so that long workloads fill it (a
    // generated step writes about 170 bytes: several hundred steps): a full memtable switches to a
    // new log and flushes in the background.
    options.write_buffer_size = 64 << 10;
    leveldb::DB* db = nullptr;
    leveldb::Status opened = leveldb::DB::Open(options, dir, &db);
    h->env_.Settle();
    if (dbdb::Status s = FromLevelDb(opened, "open " + dir); !s.ok()) return s;
    h->db_.reset(db);
    return std::unique_ptr<EngineHandle>(std::move(h));
  }

  dbdb::Status Commit(const EngineBatch& batch) override {
    leveldb::WriteBatch b;
    for (const auto& [key, value] : batch) {
      if (value) {
        b.Put(key, *value);
      } else {
        b.Delete(key);
      }
    }
    env_.Defer();
    leveldb::Status s = db_->Write(write_options_, &b);
    env_.Settle();
    return FromLevelDb(s, "write");
  }

  dbdb::Result<std::optional<std::string>> Get(const std::string& key) override {
    std::string value;
    env_.Defer();
    leveldb::Status s = db_->Get(leveldb::ReadOptions(), key, &value);
    env_.Settle();  // a read may schedule a seek-triggered compaction
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromLevelDb(s, "get");
    return std::optional<std::string>(std::move(value));
  }

  dbdb::Result<std::map<std::string, std::string>> ScanAll() override {
    env_.Defer();
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(leveldb::ReadOptions()));
    std::map<std::string, std::string> all;
    for (it->SeekToFirst(); it->Valid(); it->Next()) all.emplace(it->key().ToString(), it->value().ToString());
    env_.Settle();
    if (dbdb::Status s = FromLevelDb(it->status(), "scan"); !s.ok()) return s;
    return all;
  }

  // Flushes the memtable and compacts every level. CompactRange returns nothing: a background
  // error it meets surfaces at the next write.
  dbdb::Status Compact() override {
    db_->CompactRange(nullptr, nullptr);
    env_.Settle();
    return dbdb::Status::Ok();
  }

  // LevelDB has no check of its own: read everything, verifying every block's checksum.
  dbdb::Status Check() override {
    leveldb::ReadOptions options;
    options.verify_checksums = true;
    env_.Defer();
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(options));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
    }
    env_.Settle();
    return FromLevelDb(it->status(), "check");
  }

 private:
  LevelDbHandle(std::shared_ptr<dbdb::FileSystem> fs, bool sync) : env_(std::move(fs)) {
    write_options_.sync = sync;
  }

  // Declared before db_, so destroyed after it: the DB uses both until it is gone.
  FsEnv env_;
  DiscardLogger logger_;
  std::unique_ptr<leveldb::DB> db_;
  leveldb::WriteOptions write_options_;
};

}  // namespace

std::unique_ptr<Engine> NewLevelDbEngine(const std::string& config) {
  if (config != "sync" && config != "nosync") return nullptr;
  EngineInfo info;
  info.engine = "leveldb";
  info.config = config;
  info.version = std::to_string(leveldb::kMajorVersion) + "." + std::to_string(leveldb::kMinorVersion);
  bool sync = config == "sync";
  info.durable = sync;
  info.promise = sync ? "WriteOptions::sync=true: Write does \"not return until the data being written has been "
                        "pushed all the way to persistent storage\" (doc/index.md, Synchronous Writes; options.h: "
                        "like write() followed by fsync())"
                      : "WriteOptions::sync=false: \"if the machine crashes, some recent writes may be lost\" "
                        "(options.h; doc/index.md: \"the last few updates\"): a suffix may be lost, a consistent "
                        "prefix recovers without a corruption error";
  return MakeEngine(std::move(info), [sync](std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                            const EngineOpenOptions&) {
    return LevelDbHandle::Open(std::move(fs), dir, sync);
  });
}

}  // namespace faultfs
