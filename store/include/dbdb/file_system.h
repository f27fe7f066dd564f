// The I/O seam: every byte dbdb reads or writes goes through a FileSystem and its Files.
//
// Only PosixFileSystem (posix_file_system.cc) makes system calls. Tests substitute the simulated
// power-loss filesystem of faultfs/, which enforces exactly the contract stated here and spelled
// out, with its reasoning, in docs/PERSISTENCE.md.
//
// DURABILITY CONTRACT (what a caller may rely on, and nothing more):
//  1. File::Write is volatile until File::Sync on that file returns OK. A successful Sync makes
//     every earlier successful write and truncate of that file durable.
//  2. Creating, renaming or removing a name is volatile until FileSystem::SyncDir on the directory
//     holding the name returns OK.
//  3. A crash (power loss) may persist any subset of the volatile writes, in any order, and a
//     volatile write may persist only some of its 512-byte sectors (kSectorSizeBytes). Bytes added
//     by a volatile extension of a file may read back as zeros or garbage.
//  4. A failed Sync may have dropped the volatile data: those writes may never become durable,
//     even if a later Sync returns OK (fsyncgate). Never retry a failed Sync as if nothing
//     happened; treat the handle as failed.
//  5. A File keeps referring to the file it opened even after its name is renamed over or
//     removed (POSIX inode semantics).
//  6. Reads see every earlier write through any handle of the same file in any process, synced
//     or not (a shared page cache), until a crash.
//
// Thread safety: a FileSystem may be used from many threads. A File may be used from many threads
// for ReadAt; writes to one File must be serialized by the caller.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dbdb/status.h"

namespace dbdb {

// The granularity at which a crash may tear a write (docs/PERSISTENCE.md).
inline constexpr uint64_t kSectorSizeBytes = 512;

// What one fstat tells: the size, and whether any name still refers to the file.
struct FileStat {
  uint64_t size_bytes = 0;
  bool unlinked = false;  // renamed over or removed: the path, if any, names another file now
};

// A read-only view of a file's bytes in memory (mmap(PROT_READ, MAP_SHARED)): it shows every
// write to the file through any handle, as reads do (contract item 6), and stays valid after the
// file is renamed over or removed (item 5) until the mapping is destroyed. Reading a byte at or
// past the file's current end, or one the disk cannot deliver, raises SIGBUS: dbdb reads mappings
// only under its fault guard (store/src/map_guard.h), which turns that into an IOError.
class FileMapping {
 public:
  virtual ~FileMapping() = default;
  const char* data() const { return data_; }
  uint64_t size() const { return size_; }  // may exceed the file's size (see above)

 protected:
  FileMapping(const char* data, uint64_t size) : data_(data), size_(size) {}

 private:
  const char* data_;
  uint64_t size_;
};

// An advisory, whole-file, exclusive lock that excludes other holders in this and in other
// processes. Released when destroyed (and by the OS when the process dies).
class FileLock {
 public:
  virtual ~FileLock() = default;
};

struct LockOptions {
  bool wait = true;     // block until the lock is free; false: Busy at once if another holder has it
  bool create = true;   // create the lock file if it is missing; false: NotFound if it is missing
  bool shared = false;  // a shared lock: excludes exclusive holders only (flock LOCK_SH)
};

class File {
 public:
  virtual ~File() = default;

  // Reads up to dst.size() bytes at `offset` into dst. Returns the number of bytes read, which is
  // less than dst.size() only when the file ends first (0 at or past the end).
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) = 0;

  // Writes all of `data` at `offset`, extending the file if needed (a gap reads as zeros).
  // Volatile until Sync. On error, any prefix of the data may have been written.
  virtual Status WriteAt(uint64_t offset, std::span<const char> data) = 0;

  // The current size in bytes, synced or not.
  virtual Result<uint64_t> Size() = 0;

  // The size and whether the file still has a name, in one call (readers use it to notice both a
  // new commit and a compaction that replaced the file).
  virtual Result<FileStat> Stat() = 0;

  // Sets the size to `size_bytes`, dropping or zero-extending. Volatile until Sync.
  virtual Status Truncate(uint64_t size_bytes) = 0;

  // Makes every earlier write and truncate of this file durable. On error, see contract item 4.
  virtual Status Sync() = 0;

  // A hint: start writing [offset, offset + length) to the disk now, without waiting for it, so
  // that a later Sync finds that much already on its way. Makes nothing durable and reports
  // nothing (a failed write comes back from the Sync). Default: nothing.
  virtual void StartWriteback(uint64_t offset, uint64_t length) {
    (void)offset;
    (void)length;
  }

  // An identity of the underlying file (not the name) that differs between two files existing at
  // the same time: used to notice that a path now names another file (after compaction).
  virtual Result<uint64_t> Identity() = 0;

  // An offset at or below Size(), and at or above `from` (or Size() if `from` is past it), past
  // which the file holds only a hole (reads as zeros without being stored: never written, or
  // allocated ahead by Allocate and not written since), so a backward scan for records above
  // `from` may start there instead of at the end. A file system that cannot tell returns Size(),
  // which is always correct.
  virtual Result<uint64_t> DataEnd(uint64_t from) {
    (void)from;
    return Size();
  }

  // Allocates [offset, offset + length) and grows the file to at least its end, the new bytes
  // reading as zeros, as posix_fallocate's mode 0 does: later writes there need no more space and
  // do not change the size. Volatile until Sync, as a truncate that grows the file is (the size a
  // crash leaves may be the old one). False if this file system cannot allocate (then nothing
  // changed); on an error the file may have grown by any part of the range.
  virtual Result<bool> Allocate(uint64_t offset, uint64_t length) {
    (void)offset;
    (void)length;
    return false;
  }

  // Maps the first `length` bytes of the file (which may run past its end) read-only and shared.
  // A null mapping if this file system does not map files: the caller then reads with ReadAt.
  virtual Result<std::shared_ptr<const FileMapping>> Map(uint64_t length) {
    (void)length;
    return std::shared_ptr<const FileMapping>();
  }

  // Takes the advisory lock of this file (FileSystem::Lock; options.create is ignored) through this
  // open handle: the same lock that FileSystem::Lock on a name of the file takes, so the two
  // exclude each other, without opening the file again after the first lock (a handle that locks at
  // every commit keeps the file open instead; the real file system opens it once more, by itself,
  // at the first lock, and keeps that open too). A File holds at most one lock at a time:
  // InvalidArgument while a lock it gave is alive. The lock stays held, and valid, after the File
  // is destroyed, until the lock is. A forked child never holds a lock taken through a File of its
  // parent's: the real file system locks through a descriptor of the File's own, opened at its
  // first lock (a child forked before then does not have it) and pointed at /dev/null in a child
  // forked later, so that the lock dies with the holder; from the first lock on, the File's data
  // descriptor is pointed at /dev/null in such a child too (reads there see an empty file and
  // writes vanish: a child must not use its parent's locked Files).
  virtual Result<std::unique_ptr<FileLock>> Lock(LockOptions options) = 0;
};

struct OpenOptions {
  bool create = false;     // create the file if it does not exist (a volatile directory entry)
  bool read_only = false;  // open for reading only; WriteAt/Truncate fail with InvalidArgument
  // What this handle writes matters only while the machine is up (the change counter in a lock
  // file): never synced, and a crash may lose any of it. The real file system ignores it; a
  // simulated one may leave such writes out of its crash states (faultfs drops them all).
  bool transient = false;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Opens `path`. NotFound if it does not exist and !options.create.
  virtual Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) = 0;

  // Atomically makes `to` name the file named `from` (replacing any file named `to`).
  // Volatile until SyncDir of the directory.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;

  // Removes the name `path`. NotFound if it does not exist. Volatile until SyncDir.
  virtual Status Remove(const std::string& path) = 0;

  // True if `path` names an existing file.
  virtual Result<bool> Exists(const std::string& path) = 0;

  // The identity (see File::Identity) of the file `path` names now.
  virtual Result<uint64_t> Identity(const std::string& path) = 0;

  // The names (not paths) of the entries of directory `dir`, sorted.
  virtual Result<std::vector<std::string>> List(const std::string& dir) = 0;

  // Creates directory `dir` if it does not exist (and its parents). Volatile until the parent's
  // SyncDir.
  virtual Status CreateDir(const std::string& dir) = 0;

  // Makes every earlier create, rename and remove of names in `dir` durable.
  virtual Status SyncDir(const std::string& dir) = 0;

  // Takes the advisory lock on the file `path` names, exclusive unless options.shared (flock
  // semantics: the lock belongs to the file, not the name, and two Lock calls conflict even in
  // one process). The file is created if missing unless !options.create (then NotFound). With
  // !options.wait returns Busy at once if a conflicting holder has it; else blocks until it is
  // free. Any other error (EACCES, EMFILE, ...) says nothing about whether another holder exists.
  // A child forked while the lock is held does not hold it (as File::Lock).
  virtual Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockOptions options) = 0;

  // False for a filesystem that must see every call from one thread per process (a simulation
  // that schedules processes one operation at a time): the store then starts no thread of its own
  // (Options::background_compaction).
  virtual bool AllowsBackgroundThreads() const { return true; }
};

// Forwards every call to another File: a test double derives from it and overrides only what it
// changes (LevelDB's EnvWrapper).
class FileWrapper : public File {
 public:
  explicit FileWrapper(std::unique_ptr<File> base) : base_(std::move(base)) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override { return base_->ReadAt(offset, dst); }
  Status WriteAt(uint64_t offset, std::span<const char> data) override { return base_->WriteAt(offset, data); }
  Result<uint64_t> Size() override { return base_->Size(); }
  Result<FileStat> Stat() override { return base_->Stat(); }
  Status Truncate(uint64_t size_bytes) override { return base_->Truncate(size_bytes); }
  Status Sync() override { return base_->Sync(); }
  void StartWriteback(uint64_t offset, uint64_t length) override { base_->StartWriteback(offset, length); }
  Result<uint64_t> Identity() override { return base_->Identity(); }
  Result<uint64_t> DataEnd(uint64_t from) override { return base_->DataEnd(from); }
  Result<bool> Allocate(uint64_t offset, uint64_t length) override { return base_->Allocate(offset, length); }
  Result<std::shared_ptr<const FileMapping>> Map(uint64_t length) override { return base_->Map(length); }
  Result<std::unique_ptr<FileLock>> Lock(LockOptions options) override { return base_->Lock(options); }
  File& base() { return *base_; }

 private:
  std::unique_ptr<File> base_;
};

// Forwards every call to another FileSystem (see FileWrapper).
class FileSystemWrapper : public FileSystem {
 public:
  explicit FileSystemWrapper(std::shared_ptr<FileSystem> base) : base_(std::move(base)) {}
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    return base_->Open(path, options);
  }
  Status Rename(const std::string& from, const std::string& to) override { return base_->Rename(from, to); }
  Status Remove(const std::string& path) override { return base_->Remove(path); }
  Result<bool> Exists(const std::string& path) override { return base_->Exists(path); }
  Result<uint64_t> Identity(const std::string& path) override { return base_->Identity(path); }
  Result<std::vector<std::string>> List(const std::string& dir) override { return base_->List(dir); }
  Status CreateDir(const std::string& dir) override { return base_->CreateDir(dir); }
  Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }
  Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockOptions options) override {
    return base_->Lock(path, options);
  }
  bool AllowsBackgroundThreads() const override { return base_->AllowsBackgroundThreads(); }
  const std::shared_ptr<FileSystem>& base() const { return base_; }

 private:
  std::shared_ptr<FileSystem> base_;
};

// The real filesystem. The only code in dbdb that makes file system calls.
std::shared_ptr<FileSystem> NewPosixFileSystem();

// "dir/name" -> "dir"; "name" -> "."; "/name" -> "/".
std::string DirName(const std::string& path);

}  // namespace dbdb
