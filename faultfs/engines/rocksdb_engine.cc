// RocksDB as an engine under test (engine.h): a rocksdb::FileSystem onto dbdb::FileSystem, written
// to do what RocksDB 7.8's own PosixFileSystem (env/fs_posix.cc, env/io_posix.cc at v7.8.3) does
// on ext4 where it matters for power loss:
//  - a writable file is opened O_CREAT|O_TRUNC, a reopened one O_CREAT|O_APPEND; Append writes at
//    once (RocksDB's WritableFileWriter does the buffering), Flush does nothing;
//  - Sync is fdatasync and Fsync fsync, both dbdb's File::Sync; RangeSync (sync_file_range) makes
//    nothing durable and does nothing; Close after preallocation ftruncates to the bytes written;
//  - a directory's Fsync syncs the directory whatever the reason given (posix skips it, or syncs
//    the renamed file instead, only on btrfs);
//  - creating, renaming and removing a name syncs nothing: RocksDB syncs the directory itself
//    (after a new table, after CURRENT, IDENTITY or OPTIONS is renamed into place, at the first
//    synced write to a new WAL), never after removing a file;
//  - sequential reads advance an offset and Skip moves it; random reads are pread: short at the end;
//  - LockFile does not wait: a lock held elsewhere is an IOError.
// Where it is not faithful (docs/ENGINES.md): Allocate (fallocate) does nothing, as posix's
// FALLOC_FL_KEEP_SIZE changes no byte either; CreateDir also creates missing parents, DeleteDir
// does nothing, GetChildren lists what dbdb lists; GetFileModificationTime is 0; GetFreeSpace,
// hard links and mapped buffers are NotSupported; GetAbsolutePath returns the path as given; the
// info LOG is discarded; background work and time are Env::Default()'s, real threads and the real
// clock (the handle waits for every background job before it returns).
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/io_status.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/version.h>
#include <rocksdb/write_batch.h>

#include <cstdarg>
#include <span>

#include "faultfs/engine.h"

namespace faultfs {
namespace {

using rocksdb::FileOptions;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

// A dbdb error as io_posix.cc's IOError() reports the errno behind it: a missing file is
// PathNotFound (ENOENT), a full device a retryable NoSpace (ENOSPC), anything else an IOError.
// `context` and `path` make the message as there ("While fdatasync: db/000004.log").
IOStatus ToIOStatus(const dbdb::Status& s, const std::string& context, const std::string& path) {
  const std::string message = context + ": " + path;
  switch (s.code()) {
    case dbdb::StatusCode::kNotFound:
      return IOStatus::PathNotFound(message, s.message());
    case dbdb::StatusCode::kNoSpace: {
      IOStatus no_space = IOStatus::NoSpace(message, s.message());
      no_space.SetRetryable(true);
      return no_space;
    }
    default:
      return IOStatus::IOError(message, s.message());
  }
}

// PosixSequentialFile: fread from the descriptor's position; a short read at the end is no error.
class SequentialFile final : public rocksdb::FSSequentialFile {
 public:
  SequentialFile(std::string path, std::unique_ptr<dbdb::File> file)
      : path_(std::move(path)), file_(std::move(file)) {}

  IOStatus Read(size_t n, const IOOptions&, Slice* result, char* scratch, IODebugContext*) override {
    auto read = file_->ReadAt(position_, std::span<char>(scratch, n));
    if (!read.ok()) {
      *result = Slice(scratch, 0);
      return ToIOStatus(read.status(), "While reading file sequentially", path_);
    }
    *result = Slice(scratch, *read);
    position_ += *read;
    return IOStatus::OK();
  }

  // fseek(SEEK_CUR), which may move past the end.
  IOStatus Skip(uint64_t n) override {
    position_ += n;
    return IOStatus::OK();
  }

  // posix_fadvise(DONTNEED) advises the page cache, which holds nothing durable.
  IOStatus InvalidateCache(size_t, size_t) override { return IOStatus::OK(); }

 private:
  const std::string path_;
  std::unique_ptr<dbdb::File> file_;
  uint64_t position_ = 0;
};

// PosixRandomAccessFile: pread, from many threads at once (dbdb's ReadAt allows that).
class RandomAccessFile final : public rocksdb::FSRandomAccessFile {
 public:
  RandomAccessFile(std::string path, std::unique_ptr<dbdb::File> file)
      : path_(std::move(path)), file_(std::move(file)) {}

  IOStatus Read(uint64_t offset, size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) const override {
    auto read = file_->ReadAt(offset, std::span<char>(scratch, n));
    if (!read.ok()) {
      *result = Slice(scratch, 0);
      return ToIOStatus(read.status(),
                        "While pread offset " + std::to_string(offset) + " len " + std::to_string(n), path_);
    }
    *result = Slice(scratch, *read);
    return IOStatus::OK();
  }

  // readahead(2) only advises the page cache, and posix reports success: RocksDB reads
  // differently when Prefetch fails (it buffers the table's tail itself).
  IOStatus Prefetch(uint64_t, size_t, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

  IOStatus InvalidateCache(size_t, size_t) override { return IOStatus::OK(); }

 private:
  const std::string path_;
  std::unique_ptr<dbdb::File> file_;
};

// PosixWritableFile: write(2) at the descriptor's position (at the end with O_APPEND), pwrite for
// PositionedAppend, fdatasync for Sync and fsync for Fsync. Both syncs are dbdb's one File::Sync,
// which makes the data and the size durable: all fdatasync promises, and all of fsync's extra
// metadata that RocksDB reads back. Allocate keeps the base class's no-op: posix fallocates with
// FALLOC_FL_KEEP_SIZE (RocksDB's default), which reserves blocks without changing a byte or the size.
class WritableFile final : public rocksdb::FSWritableFile {
 public:
  WritableFile(std::string path, std::unique_ptr<dbdb::File> file, bool append, const FileOptions& options)
      : FSWritableFile(options), path_(std::move(path)), file_(std::move(file)), append_(append) {}

  ~WritableFile() override {
    if (file_) Close(IOOptions(), nullptr).PermitUncheckedError();
  }

  IOStatus Append(const Slice& data, const IOOptions&, IODebugContext*) override {
    uint64_t offset = position_;
    if (append_) {
      auto size = file_->Size();
      if (!size.ok()) return ToIOStatus(size.status(), "While appending to file", path_);
      offset = *size;
    }
    dbdb::Status s = file_->WriteAt(offset, std::span<const char>(data.data(), data.size()));
    if (!s.ok()) return ToIOStatus(s, "While appending to file", path_);
    position_ = offset + data.size();
    filesize_ += data.size();
    return IOStatus::OK();
  }

  // Only with direct I/O, which this filesystem never offers.
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->WriteAt(offset, std::span<const char>(data.data(), data.size()));
    if (!s.ok()) return ToIOStatus(s, "While pwrite to file at offset " + std::to_string(offset), path_);
    filesize_ = offset + data.size();
    return IOStatus::OK();
  }

  // ftruncate, which leaves the descriptor's position where it was. Recovery truncates the last
  // WAL to its size this way (DBImpl::GetLogSizeAndMaybeTruncate), without a sync.
  IOStatus Truncate(uint64_t size, const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->Truncate(size);
    if (!s.ok()) return ToIOStatus(s, "While ftruncate file to size " + std::to_string(size), path_);
    filesize_ = size;
    return IOStatus::OK();
  }

  IOStatus Close(const IOOptions&, IODebugContext*) override {
    if (!file_) return IOStatus::IOError("While closing file after writing: " + path_, "Bad file descriptor");
    size_t block_size;
    size_t last_allocated_block;
    GetPreallocationStatus(&block_size, &last_allocated_block);
    if (last_allocated_block > 0) {
      // Posix trims the space fallocate reserved past the end with ftruncate to the bytes this
      // handle wrote, unsynced and ignoring the result. That is the file's size, except after
      // ReopenWritableFile, where filesize_ counts from 0 as posix's does.
      (void)file_->Truncate(filesize_);
    }
    file_.reset();
    return IOStatus::OK();
  }

  // Posix buffers nothing in user space: Flush is already done.
  IOStatus Flush(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

  IOStatus Sync(const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->Sync();
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While fdatasync", path_);
  }

  IOStatus Fsync(const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->Sync();
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While fsync", path_);
  }

  // As posix's. RocksDB relies on it only to sync a WAL while other threads append to it (SyncWAL:
  // FlushWAL(true), two_write_queues), which this engine never does.
  bool IsSyncThreadSafe() const override { return true; }

  uint64_t GetFileSize(const IOOptions&, IODebugContext*) override { return filesize_; }

  IOStatus InvalidateCache(size_t, size_t) override { return IOStatus::OK(); }

  // sync_file_range(SYNC_FILE_RANGE_WRITE) only starts writeback: it makes nothing durable (no
  // metadata, no device cache flush), so in the crash model it changes nothing. RocksDB calls it
  // only with bytes_per_sync or wal_bytes_per_sync set (both 0 by default).
  IOStatus RangeSync(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

 private:
  const std::string path_;
  std::unique_ptr<dbdb::File> file_;  // null once closed
  const bool append_;                 // O_APPEND
  uint64_t position_ = 0;             // the descriptor's file offset, which write(2) advances
  uint64_t filesize_ = 0;             // posix's filesize_: the bytes written through this handle
};

// PosixRandomRWFile: pwrite, pread, fdatasync and fsync.
class RandomRWFile final : public rocksdb::FSRandomRWFile {
 public:
  RandomRWFile(std::string path, std::unique_ptr<dbdb::File> file) : path_(std::move(path)), file_(std::move(file)) {}

  IOStatus Write(uint64_t offset, const Slice& data, const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->WriteAt(offset, std::span<const char>(data.data(), data.size()));
    if (!s.ok()) {
      return ToIOStatus(s, "While write random read/write file at offset " + std::to_string(offset), path_);
    }
    return IOStatus::OK();
  }

  IOStatus Read(uint64_t offset, size_t n, const IOOptions&, Slice* result, char* scratch,
                IODebugContext*) const override {
    auto read = file_->ReadAt(offset, std::span<char>(scratch, n));
    if (!read.ok()) {
      return ToIOStatus(read.status(),
                        "While reading random read/write file offset " + std::to_string(offset) + " len " +
                            std::to_string(n),
                        path_);
    }
    *result = Slice(scratch, *read);
    return IOStatus::OK();
  }

  IOStatus Flush(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

  IOStatus Sync(const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->Sync();
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While fdatasync random read/write file", path_);
  }

  IOStatus Fsync(const IOOptions&, IODebugContext*) override {
    dbdb::Status s = file_->Sync();
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While fsync random read/write file", path_);
  }

  IOStatus Close(const IOOptions&, IODebugContext*) override {
    file_.reset();
    return IOStatus::OK();
  }

 private:
  const std::string path_;
  std::unique_ptr<dbdb::File> file_;
};

// PosixDirectory as on ext4: every Fsync, whatever its reason, fsyncs the directory. (Only on
// btrfs does posix skip it for kNewFileSynced and fsync the renamed file instead for kFileRenamed.)
class Directory final : public rocksdb::FSDirectory {
 public:
  Directory(std::shared_ptr<dbdb::FileSystem> fs, std::string name) : fs_(std::move(fs)), name_(std::move(name)) {}

  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    return FsyncWithDirOptions(options, dbg, rocksdb::DirFsyncOptions());
  }

  IOStatus FsyncWithDirOptions(const IOOptions&, IODebugContext*, const rocksdb::DirFsyncOptions&) override {
    dbdb::Status s = fs_->SyncDir(name_);
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While fsync", "a directory");
  }

  // close(2) of the directory's descriptor: nothing to sync.
  IOStatus Close(const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

 private:
  const std::shared_ptr<dbdb::FileSystem> fs_;
  const std::string name_;
};

class HeldLock final : public rocksdb::FileLock {
 public:
  explicit HeldLock(std::unique_ptr<dbdb::FileLock> lock) : lock_(std::move(lock)) {}

 private:
  std::unique_ptr<dbdb::FileLock> lock_;
};

// The info LOG is diagnostics RocksDB never reads back: writing it would only add writes (and at
// every open a rename of the old LOG) to the trace, so every message is dropped.
class DiscardLogger final : public rocksdb::Logger {
 public:
  void Logv(const char*, va_list) override {}
  void Logv(const rocksdb::InfoLogLevel, const char*, va_list) override {}
};

// rocksdb::FileSystem onto dbdb::FileSystem. Derived from rocksdb::FileSystem itself, not wrapping
// the default one, so no call can reach the real disk. Kept as inherited, since posix does no more
// in the crash model or RocksDB's DB does not call them: Truncate by name (posix has none either),
// NewMemoryMappedFileBuffer (NotSupported; posix mmaps), LinkFile, NumFileLinks and AreFilesSame
// (NotSupported: dbdb has no hard links; RocksDB falls back), GetFreeSpace (NotSupported: no
// statvfs; the error handler then gives up recovering from a full disk on its own), the
// OptimizeFor* defaults (posix also turns off mmap and direct I/O, off already), Poll and AbortIO.
// A directory's path as dbdb::FileSystem names it: RocksDB sometimes asks for "db/" (the kernel
// takes a trailing slash on a directory's path; the simulator's names have none).
std::string DirPath(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

class DbdbFileSystem final : public rocksdb::FileSystem {
 public:
  explicit DbdbFileSystem(std::shared_ptr<dbdb::FileSystem> fs) : fs_(std::move(fs)) {}

  const char* Name() const override { return "DbdbFileSystem"; }

  IOStatus NewSequentialFile(const std::string& fname, const FileOptions&,
                             std::unique_ptr<rocksdb::FSSequentialFile>* result, IODebugContext*) override {
    result->reset();
    auto file = fs_->Open(fname, {.read_only = true});
    if (!file.ok()) return ToIOStatus(file.status(), "While opening a file for sequentially reading", fname);
    result->reset(new SequentialFile(fname, std::move(*file)));
    return IOStatus::OK();
  }

  IOStatus NewRandomAccessFile(const std::string& fname, const FileOptions&,
                               std::unique_ptr<rocksdb::FSRandomAccessFile>* result, IODebugContext*) override {
    result->reset();
    auto file = fs_->Open(fname, {.read_only = true});
    if (!file.ok()) return ToIOStatus(file.status(), "While open a file for random read", fname);
    result->reset(new RandomAccessFile(fname, std::move(*file)));
    return IOStatus::OK();
  }

  // O_CREAT | O_TRUNC.
  IOStatus NewWritableFile(const std::string& fname, const FileOptions& options,
                           std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext*) override {
    return OpenWritableFile(fname, options, /*reopen=*/false, result);
  }

  // O_CREAT | O_APPEND.
  IOStatus ReopenWritableFile(const std::string& fname, const FileOptions& options,
                              std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext*) override {
    return OpenWritableFile(fname, options, /*reopen=*/true, result);
  }

  // Posix opens the old file (neither created nor truncated), renames it into place and writes it
  // over from offset 0, where FileSystem's default would truncate it. Only for
  // recycle_log_file_num > 0 (0 by default).
  IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname, const FileOptions& options,
                             std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext*) override {
    result->reset();
    auto file = fs_->Open(old_fname, {});
    if (!file.ok()) return ToIOStatus(file.status(), "while reopen file for write", fname);
    dbdb::Status s = fs_->Rename(old_fname, fname);
    if (!s.ok()) return ToIOStatus(s, "while rename file to " + fname, old_fname);
    result->reset(new WritableFile(fname, std::move(*file), /*append=*/false, options));
    return IOStatus::OK();
  }

  // O_RDWR without O_CREAT: posix does not create the file, whatever file_system.h says.
  IOStatus NewRandomRWFile(const std::string& fname, const FileOptions&,
                           std::unique_ptr<rocksdb::FSRandomRWFile>* result, IODebugContext*) override {
    result->reset();
    auto file = fs_->Open(fname, {});
    if (!file.ok()) return ToIOStatus(file.status(), "While open file for random read/write", fname);
    result->reset(new RandomRWFile(fname, std::move(*file)));
    return IOStatus::OK();
  }

  // open(2) of the directory, which must exist.
  IOStatus NewDirectory(const std::string& name, const IOOptions&, std::unique_ptr<rocksdb::FSDirectory>* result,
                        IODebugContext*) override {
    result->reset();
    auto listed = fs_->List(DirPath(name));
    if (!listed.ok()) return ToIOStatus(listed.status(), "While open directory", name);
    result->reset(new Directory(fs_, DirPath(name)));
    return IOStatus::OK();
  }

  // access(F_OK), which a directory passes too.
  IOStatus FileExists(const std::string& fname, const IOOptions&, IODebugContext*) override {
    auto exists = fs_->Exists(fname);
    if (!exists.ok()) return ToIOStatus(exists.status(), "Unexpected error accessing file", fname);
    return *exists || IsDir(fname) ? IOStatus::OK() : IOStatus::NotFound();
  }

  IOStatus GetChildren(const std::string& dir, const IOOptions&, std::vector<std::string>* result,
                       IODebugContext*) override {
    result->clear();
    auto names = fs_->List(DirPath(dir));
    if (!names.ok()) {
      return names.status().IsNotFound() ? IOStatus::NotFound() : ToIOStatus(names.status(), "While opendir", dir);
    }
    *result = std::move(*names);
    return IOStatus::OK();
  }

  IOStatus DeleteFile(const std::string& fname, const IOOptions&, IODebugContext*) override {
    dbdb::Status s = fs_->Remove(fname);
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "while unlink() file", fname);
  }

  // mkdir(2), which fails if the name exists. dbdb's CreateDir also creates missing parents,
  // where mkdir fails.
  IOStatus CreateDir(const std::string& dirname, const IOOptions&, IODebugContext*) override {
    auto exists = fs_->Exists(dirname);
    if (!exists.ok()) return ToIOStatus(exists.status(), "While mkdir", dirname);
    if (*exists || IsDir(dirname)) return IOStatus::IOError("While mkdir: " + dirname, "File exists");
    dbdb::Status s = fs_->CreateDir(DirPath(dirname));
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While mkdir", dirname);
  }

  IOStatus CreateDirIfMissing(const std::string& dirname, const IOOptions&, IODebugContext*) override {
    if (IsDir(dirname)) return IOStatus::OK();
    auto exists = fs_->Exists(dirname);
    if (!exists.ok()) return ToIOStatus(exists.status(), "While mkdir if missing", dirname);
    if (*exists) return IOStatus::IOError("`" + dirname + "' exists but is not a directory");
    dbdb::Status s = fs_->CreateDir(DirPath(dirname));
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While mkdir if missing", dirname);
  }

  // dbdb::FileSystem cannot remove a directory: the directory stays. RocksDB removes directories
  // only in DestroyDB, which the harness never calls.
  IOStatus DeleteDir(const std::string&, const IOOptions&, IODebugContext*) override { return IOStatus::OK(); }

  // stat(2): the current size, synced or not.
  IOStatus GetFileSize(const std::string& fname, const IOOptions&, uint64_t* file_size, IODebugContext*) override {
    *file_size = 0;
    auto file = fs_->Open(fname, {.read_only = true});
    if (!file.ok()) return ToIOStatus(file.status(), "while stat a file for size", fname);
    auto size = (*file)->Size();
    if (!size.ok()) return ToIOStatus(size.status(), "while stat a file for size", fname);
    *file_size = *size;
    return IOStatus::OK();
  }

  // dbdb keeps no times, and a fixed one keeps runs deterministic. RocksDB reads it only for TTL
  // and periodic compaction of tables without a creation time and for the archived WALs' TTL.
  IOStatus GetFileModificationTime(const std::string& fname, const IOOptions&, uint64_t* file_mtime,
                                   IODebugContext*) override {
    auto exists = fs_->Exists(fname);
    if (!exists.ok()) return ToIOStatus(exists.status(), "while stat a file for modification time", fname);
    if (!*exists && !IsDir(fname)) {
      return IOStatus::PathNotFound("while stat a file for modification time: " + fname, "No such file or directory");
    }
    *file_mtime = 0;
    return IOStatus::OK();
  }

  IOStatus RenameFile(const std::string& src, const std::string& target, const IOOptions&,
                      IODebugContext*) override {
    dbdb::Status s = fs_->Rename(src, target);
    return s.ok() ? IOStatus::OK() : ToIOStatus(s, "While renaming a file to " + target, src);
  }

  // Posix takes an fcntl lock, created if missing, without waiting, and also refuses a second lock
  // of the name within the process ("lock hold by current process"). dbdb's lock excludes every
  // other holder, in this process or another, so either refusal comes back as Busy.
  IOStatus LockFile(const std::string& fname, const IOOptions&, rocksdb::FileLock** lock, IODebugContext*) override {
    *lock = nullptr;
    auto held = fs_->Lock(fname, {.wait = false});
    if (!held.ok()) {
      if (held.status().code() == dbdb::StatusCode::kBusy) {
        return IOStatus::IOError("While lock file: " + fname, "Resource temporarily unavailable");
      }
      return ToIOStatus(held.status(), "while open a file for lock", fname);
    }
    *lock = new HeldLock(std::move(*held));
    return IOStatus::OK();
  }

  IOStatus UnlockFile(rocksdb::FileLock* lock, const IOOptions&, IODebugContext*) override {
    delete static_cast<HeldLock*>(lock);
    return IOStatus::OK();
  }

  // Posix names /tmp/rocksdbtest-<uid> and creates it if missing; here a directory of dbdb's.
  IOStatus GetTestDirectory(const IOOptions& options, std::string* path, IODebugContext* dbg) override {
    *path = "rocksdbtest";
    return CreateDirIfMissing(*path, options, dbg);
  }

  IOStatus NewLogger(const std::string&, const IOOptions&, std::shared_ptr<rocksdb::Logger>* result,
                     IODebugContext*) override {
    *result = std::make_shared<DiscardLogger>();
    return IOStatus::OK();
  }

  // Posix returns an absolute path as is (and, for a relative one, the working directory): dbdb's
  // paths are used as given.
  IOStatus GetAbsolutePath(const std::string& db_path, const IOOptions&, std::string* output_path,
                           IODebugContext*) override {
    *output_path = db_path;
    return IOStatus::OK();
  }

  IOStatus IsDirectory(const std::string& path, const IOOptions&, bool* is_dir, IODebugContext*) override {
    if (IsDir(path)) {
      *is_dir = true;
      return IOStatus::OK();
    }
    auto exists = fs_->Exists(path);
    if (!exists.ok()) return ToIOStatus(exists.status(), "While doing stat for IsDirectory()", path);
    if (!*exists) return IOStatus::PathNotFound("While open for IsDirectory(): " + path, "No such file or directory");
    *is_dir = false;
    return IOStatus::OK();
  }

 private:
  IOStatus OpenWritableFile(const std::string& fname, const FileOptions& options, bool reopen,
                            std::unique_ptr<rocksdb::FSWritableFile>* result) {
    result->reset();
    auto file = fs_->Open(fname, {.create = true});
    if (!file.ok()) return ToIOStatus(file.status(), "While open a file for appending", fname);
    if (!reopen) {  // O_TRUNC: a volatile truncate, as any other
      auto size = (*file)->Size();
      if (!size.ok()) return ToIOStatus(size.status(), "While open a file for appending", fname);
      if (*size > 0) {
        dbdb::Status s = (*file)->Truncate(0);
        if (!s.ok()) return ToIOStatus(s, "While open a file for appending", fname);
      }
    }
    result->reset(new WritableFile(fname, std::move(*file), reopen, options));
    return IOStatus::OK();
  }

  // dbdb::FileSystem has no stat, but List succeeds on a directory only.
  bool IsDir(const std::string& path) { return fs_->List(DirPath(path)).ok(); }

  const std::shared_ptr<dbdb::FileSystem> fs_;
};

dbdb::Status FromRocksDb(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return dbdb::Status::Ok();
  std::string message = "rocksdb: " + what + ": " + s.ToString();
  if (s.IsCorruption()) return dbdb::Status::Corruption(std::move(message));
  if (s.IsNotFound()) return dbdb::Status::NotFound(std::move(message));
  if (s.IsInvalidArgument()) return dbdb::Status::InvalidArgument(std::move(message));
  return dbdb::Status::IOError(std::move(message));  // IsIOError() and anything else
}

class RocksDbHandle final : public EngineHandle {
  // OpenRocksDb settles the background work that DB::Open scheduled.
  friend dbdb::Result<std::unique_ptr<EngineHandle>> OpenRocksDb(const rocksdb::WriteOptions&,
                                                                 std::shared_ptr<dbdb::FileSystem>, const std::string&);

 public:
  RocksDbHandle(std::unique_ptr<rocksdb::Env> env, std::unique_ptr<rocksdb::DB> db,
                const rocksdb::WriteOptions& write_options)
      : env_(std::move(env)), db_(std::move(db)), write_options_(write_options) {}

  // Close waits for background work, flushes the memtable if writes skipped the WAL, and releases
  // the lock; its status is not needed, since the harness judges by what a reopen recovers. The DB
  // goes before the Env it runs on (members are destroyed in reverse order).
  ~RocksDbHandle() override { db_->Close().PermitUncheckedError(); }

  dbdb::Status Commit(const EngineBatch& batch) override {
    rocksdb::WriteBatch write_batch;
    for (const auto& [key, value] : batch) {
      DBDB_RETURN_IF_ERROR(FromRocksDb(value ? write_batch.Put(key, *value) : write_batch.Delete(key), "batch"));
    }
    DBDB_RETURN_IF_ERROR(FromRocksDb(db_->Write(write_options_, &write_batch), "write"));
    return Settle();
  }

  dbdb::Result<std::optional<std::string>> Get(const std::string& key) override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromRocksDb(s, "get");
    return std::optional<std::string>(std::move(value));
  }

  dbdb::Result<std::map<std::string, std::string>> ScanAll() override {
    std::map<std::string, std::string> all;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) all.emplace(it->key().ToString(), it->value().ToString());
    // Valid() turns false at the end and on an error alike.
    DBDB_RETURN_IF_ERROR(FromRocksDb(it->status(), "scan"));
    return all;
  }

  dbdb::Status Compact() override {
    rocksdb::FlushOptions flush;
    flush.wait = true;
    DBDB_RETURN_IF_ERROR(FromRocksDb(db_->Flush(flush), "flush"));
    DBDB_RETURN_IF_ERROR(Settle());
    DBDB_RETURN_IF_ERROR(FromRocksDb(db_->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr), "compact"));
    return Settle();
  }

  dbdb::Status Check() override { return FromRocksDb(db_->VerifyChecksum(), "check"); }

 private:
  // Returns once no flush or compaction is scheduled or running, so that one run's order of file
  // operations never depends on thread timing: Flush(wait) returns once the new table is installed,
  // while its background thread goes on to delete the obsolete WAL, and a write that fills the
  // memtable schedules a flush nobody waits for. PauseBackgroundWork waits for both (a job's purge
  // ends before DBImpl::BackgroundCallFlush counts it done).
  dbdb::Status Settle() {
    DBDB_RETURN_IF_ERROR(FromRocksDb(db_->PauseBackgroundWork(), "waiting for background work"));
    return FromRocksDb(db_->ContinueBackgroundWork(), "waiting for background work");
  }

  const std::unique_ptr<rocksdb::Env> env_;
  const std::unique_ptr<rocksdb::DB> db_;
  const rocksdb::WriteOptions write_options_;
};

dbdb::Result<std::unique_ptr<EngineHandle>> OpenRocksDb(const rocksdb::WriteOptions& write_options,
                                                        std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir) {
    std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(std::make_shared<DbdbFileSystem>(std::move(fs)));
    rocksdb::Options options;  // RocksDB's defaults (paranoid_checks, kPointInTimeRecovery) but:
    options.env = env.get();
    options.create_if_missing = true;
    options.info_log = std::make_shared<DiscardLogger>();
    // No background job the foreground does not wait for (Settle waits for the others): no
    // automatic compaction and no statistics dumps. The default write buffer (64 MiB) is kept;
    // the harness's workloads never fill it.
    options.disable_auto_compactions = true;
    options.stats_dump_period_sec = 0;
    options.stats_persist_period_sec = 0;
    // After a retryable background error (a full disk: NoSpace is retryable, as posix reports
    // ENOSPC) RocksDB would resume from a thread of its own; with 0 the DB stays stopped instead.
    options.max_bgerror_resume_count = 0;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
    if (!s.ok()) return FromRocksDb(s, "open " + dir);
    auto handle = std::unique_ptr<RocksDbHandle>(
        new RocksDbHandle(std::move(env), std::unique_ptr<rocksdb::DB>(db), write_options));
    if (dbdb::Status settled = handle->Settle(); !settled.ok()) return settled;  // work Open scheduled
    return std::unique_ptr<EngineHandle>(std::move(handle));
}

}  // namespace

std::unique_ptr<Engine> NewRocksDbEngine(const std::string& config) {
  EngineInfo info;
  info.engine = "rocksdb";
  info.config = config;
  info.version = rocksdb::GetRocksVersionAsString();  // the library's, as ROCKSDB_MAJOR.MINOR.PATCH
  rocksdb::WriteOptions write_options;
  if (config == "sync") {
    write_options.sync = true;
    info.durable = true;
    info.promise =
        "WriteOptions::sync (rocksdb/options.h): \"A DB write with sync==true has similar crash semantics to a "
        "\"write()\" system call followed by \"fdatasync()\"\": every acknowledged write survives power loss";
  } else if (config == "nowal") {
    write_options.disableWAL = true;
    write_options.sync = false;
    info.durable = false;
    info.promise =
        "WriteOptions::disableWAL (rocksdb/options.h): \"writes will not first go to the write ahead log, and the "
        "write may get lost after a crash\"; \"RocksDB only offers the prefix-recovery guarantee to WAL-disabled "
        "use cases that use atomic flush\" (facebook/rocksdb#9338; with a single column family every flush is "
        "atomic): a suffix of writes may be lost, a consistent prefix recovers without a corruption error";
  } else {
    return nullptr;
  }
  return MakeEngine(std::move(info), [write_options](std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                                     const EngineOpenOptions&) {
    return OpenRocksDb(write_options, std::move(fs), dir);
  });
}

}  // namespace faultfs
