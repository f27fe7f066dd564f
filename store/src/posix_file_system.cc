// PosixFileSystem: the FileSystem of the real disk, and the only code in dbdb that makes file
// system calls. See file_system.h for the contract it provides.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>

#include "dbdb/file_system.h"

namespace dbdb {
namespace {

Status ErrnoStatus(int error_number, const std::string& what) {
  std::string message = what + ": " + std::strerror(error_number);
  if (error_number == ENOENT) return Status::NotFound(message);
  if (error_number == ENOSPC || error_number == EDQUOT) return Status::NoSpace(message);
  if (error_number == EFBIG) return Status::LimitExceeded(message);
  return Status::IOError(message);
}

uint64_t IdentityOf(const struct stat& st) {
  // Distinct for two files existing at once: (device, inode) mixed into 64 bits.
  return (static_cast<uint64_t>(st.st_dev) * 0x9E3779B97F4A7C15ULL) ^ static_cast<uint64_t>(st.st_ino);
}

class PosixMapping final : public FileMapping {
 public:
  PosixMapping(void* address, uint64_t length) : FileMapping(static_cast<const char*>(address), length) {}
  ~PosixMapping() override { ::munmap(const_cast<char*>(data()), size()); }
};

// Descriptors of locked files: every File's own descriptor for locking (File::Lock opens it at the
// first lock and keeps it) and, from then on, its data descriptor; and every FileSystem::Lock's. A
// child forked without exec inherits them, and with them the open file descriptions their flocks
// belong to: a parent that dies holding such a lock would leave it held for as long as the child
// lives (every writer of the database would wait for a dead one). So the child's copies are pointed
// at /dev/null as it starts (a pthread_atfork child handler, async-signal-safe: open, dup2, fcntl,
// close), and only the parent's refer to the lock files. A slot holds the descriptor plus one (0:
// free, which is how static storage starts). A child forked between a File's open and its first
// lock keeps a working data descriptor but not the lock, which is taken through a description
// opened after.
constexpr int kLockedDescriptorSlots = 1024;
std::atomic<int> locked_descriptors[kLockedDescriptorSlots];
// A slot whose descriptor the child handler closed (it could not open /dev/null): the number may
// be another descriptor's in the child by now, so the descriptor's owner must not close it again.
constexpr int kClosedInChild = -1;

void ForgetLockedDescriptorsInChild() {
  int null_fd = -1;
  for (auto& slot : locked_descriptors) {
    const int fd = slot.load(std::memory_order_relaxed) - 1;
    if (fd < 0) continue;
    if (null_fd < 0) null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    // If /dev/null cannot be opened, close the copy: the number may then be reused in the child,
    // but the parent's lock is released when the parent dies, which is what matters. dup2 clears
    // close-on-exec on its target: set it again, or a child that execs passes the copy on.
    if (null_fd < 0 || ::dup2(null_fd, fd) < 0) {
      ::close(fd);
      slot.store(kClosedInChild, std::memory_order_relaxed);
    } else {
      (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
      slot.store(0, std::memory_order_relaxed);
    }
  }
  if (null_fd >= 0) ::close(null_fd);
}

// Registered when the library is loaded (a function-local static could race a fork).
const bool locked_descriptors_ready = ::pthread_atfork(nullptr, nullptr, ForgetLockedDescriptorsInChild) == 0;

// An open file descriptor, shared by the PosixFile that opened it and the lock taken through it:
// closed when both are gone, so a lock never unlocks a descriptor number reused by another open.
struct OpenFd {
  explicit OpenFd(int fd) : fd(fd) {}
  ~OpenFd() {
    // The slot is freed only if it is still ours: in a forked child the handler freed it, and
    // another descriptor may hold it since. A descriptor the handler closed is not closed again.
    const bool closed = ClosedInChild();
    int ours = fd + 1;
    if (slot >= 0) {
      locked_descriptors[slot].compare_exchange_strong(ours, 0, std::memory_order_relaxed);
      if (closed) locked_descriptors[slot].store(0, std::memory_order_relaxed);
    }
    if (!closed) ::close(fd);
  }
  // True in a forked child whose handler closed this descriptor (no /dev/null to point it at):
  // the number may be another descriptor's there, to be neither unlocked nor closed.
  bool ClosedInChild() const {
    return slot >= 0 && locked_descriptors[slot].load(std::memory_order_relaxed) == kClosedInChild;
  }
  // Lists the descriptor among those the child handler redirects, once, before any flock through
  // it. False if every slot is taken (the caller then refuses the lock).
  bool Register() {
    if (slot >= 0) return true;
    for (int i = 0; i < kLockedDescriptorSlots; i++) {
      int expected = 0;
      if (locked_descriptors[i].compare_exchange_strong(expected, fd + 1, std::memory_order_relaxed)) {
        slot = i;
        return true;
      }
    }
    return false;
  }
  OpenFd(const OpenFd&) = delete;
  OpenFd& operator=(const OpenFd&) = delete;
  const int fd;
  std::atomic<bool> locked{false};  // a lock taken through it is alive
  int slot = -1;                    // in locked_descriptors, once registered (before it is shared)
};

// flock on `open`: the lock belongs to the open file description (two descriptions of one file
// exclude each other, even in one process), and the kernel drops it when the holder dies.
Result<std::unique_ptr<FileLock>> FlockOpen(std::shared_ptr<OpenFd> open, const std::string& path, LockOptions options);

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path, bool read_only)
      : open_(std::make_shared<OpenFd>(fd)), fd_(fd), path_(std::move(path)), read_only_(read_only) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
    size_t done = 0;
    while (done < dst.size()) {
      ssize_t n = ::pread(fd_, dst.data() + done, dst.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "pread " + path_ + " at offset " + std::to_string(offset + done));
      }
      if (n == 0) break;  // end of file
      done += static_cast<size_t>(n);
    }
    return done;
  }

  Status WriteAt(uint64_t offset, std::span<const char> data) override {
    if (read_only_) return Status::InvalidArgument("write to read-only file " + path_);
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "pwrite " + path_ + " at offset " + std::to_string(offset + done));
      }
      if (n == 0) return Status::IOError("pwrite " + path_ + " wrote nothing");
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Result<uint64_t> Size() override {
    DBDB_ASSIGN_OR_RETURN(FileStat stat, Stat());
    return stat.size_bytes;
  }

  Result<FileStat> Stat() override {
    // statx for the size and the link count only. A plain fstat asks for every attribute, and on
    // Linux 6.x ext4 that includes the change cookie (i_version): asking for it makes the next
    // write bump it, which dirties the inode in a way the next fdatasync must journal. With a
    // writer's commits landing in space allocated ahead (no size to record), that journal commit
    // was the whole gain: a bare loop of durable 272-byte commits with an fstat each ran at
    // 4,470-5,557 a second, with this statx 6,631-7,131, with neither 5,644-7,064 (same runs).
    struct statx st {};
    const int got = ::statx(fd_, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, STATX_SIZE | STATX_NLINK, &st);
    if (got == 0 && (st.stx_mask & (STATX_SIZE | STATX_NLINK)) == (STATX_SIZE | STATX_NLINK)) {
      return FileStat{static_cast<uint64_t>(st.stx_size), st.stx_nlink == 0};
    }
    if (got != 0 && errno != ENOSYS && errno != EINVAL && errno != EPERM) return ErrnoStatus(errno, "statx " + path_);
    struct stat old;  // a kernel or sandbox without statx
    if (::fstat(fd_, &old) != 0) return ErrnoStatus(errno, "fstat " + path_);
    return FileStat{static_cast<uint64_t>(old.st_size), old.st_nlink == 0};
  }

  Status Truncate(uint64_t size_bytes) override {
    if (read_only_) return Status::InvalidArgument("truncate of read-only file " + path_);
    if (::ftruncate(fd_, static_cast<off_t>(size_bytes)) != 0) {
      return ErrnoStatus(errno, "ftruncate " + path_ + " to " + std::to_string(size_bytes));
    }
    return Status::Ok();
  }

  Status Sync() override {
    // fdatasync suffices: the size is metadata fdatasync flushes when it changed.
    if (::fdatasync(fd_) != 0) return ErrnoStatus(errno, "fdatasync " + path_);
    return Status::Ok();
  }

  void StartWriteback(uint64_t offset, uint64_t length) override {
    // SYNC_FILE_RANGE_WRITE alone: queue the dirty pages for writing and return. An error here
    // (a bad range, EIO) is dropped: the Sync that follows reports any failed write.
    if (offset > static_cast<uint64_t>(INT64_MAX) || length > static_cast<uint64_t>(INT64_MAX) - offset) return;
    (void)::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);
  }

  Result<uint64_t> Identity() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return ErrnoStatus(errno, "fstat " + path_);
    return IdentityOf(st);
  }

  Result<std::shared_ptr<const FileMapping>> Map(uint64_t length) override {
    if (length == 0 || length > static_cast<uint64_t>(SIZE_MAX)) {
      return Status::InvalidArgument("mmap " + path_ + ": length " + std::to_string(length));
    }
    void* address = ::mmap(nullptr, static_cast<size_t>(length), PROT_READ, MAP_SHARED, fd_, 0);
    if (address == MAP_FAILED) return ErrnoStatus(errno, "mmap " + path_ + " (" + std::to_string(length) + " bytes)");
    return std::shared_ptr<const FileMapping>(std::make_shared<PosixMapping>(address, length));
  }

  Result<uint64_t> DataEnd(uint64_t from) override {
    // Where the last data at or above `from` ends, found run by run upward (SEEK_DATA, then
    // SEEK_HOLE): a file's own data followed by space allocated ahead of it costs three lseeks.
    // Past a few runs (a sparse file), a binary search for the last data in O(log size) calls.
    DBDB_ASSIGN_OR_RETURN(uint64_t size, Size());
    if (from >= size) return size;
    auto data_from = [&](uint64_t offset) -> Result<std::optional<uint64_t>> {
      off_t data = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
      if (data >= 0) return std::optional<uint64_t>(static_cast<uint64_t>(data));
      if (errno == ENXIO) return std::optional<uint64_t>();
      return ErrnoStatus(errno, "lseek SEEK_DATA " + path_);
    };
    auto first = data_from(from);
    if (!first.ok()) return size;  // no SEEK_DATA here (EINVAL): scan everything
    if (!*first) return from;      // only a hole above `from`
    uint64_t data = **first;
    constexpr int kRunsMax = 8;
    // A writer may cut the file between two lseeks (a rollback): from data past the new end,
    // SEEK_HOLE fails with ENXIO, and nothing lies there any more.
    auto hole_from = [&](uint64_t offset) -> Result<uint64_t> {
      off_t hole = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
      if (hole >= 0) return static_cast<uint64_t>(hole);
      if (errno == ENXIO) return offset;
      return ErrnoStatus(errno, "lseek SEEK_HOLE " + path_);
    };
    for (int run = 0; run < kRunsMax; run++) {
      DBDB_ASSIGN_OR_RETURN(uint64_t hole, hole_from(data));
      if (hole >= size) return size;
      DBDB_ASSIGN_OR_RETURN(auto next, data_from(hole));
      if (!next) return hole;
      data = *next;
    }
    if (data >= size) return size;     // grown meanwhile: past the size read first
    uint64_t low = data, high = size;  // data from `low` on; none from `high`
    while (high - low > 1) {
      uint64_t middle = low + (high - low) / 2;
      DBDB_ASSIGN_OR_RETURN(auto found, data_from(middle));
      (found ? low : high) = middle;
    }
    DBDB_ASSIGN_OR_RETURN(auto last, data_from(low));
    if (!last) return low;  // cut short meanwhile
    DBDB_ASSIGN_OR_RETURN(uint64_t hole, hole_from(*last));
    return std::min(hole, size);
  }

  Result<bool> Allocate(uint64_t offset, uint64_t length) override {
    while (::fallocate(fd_, 0, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
      if (errno == EINTR) continue;
      if (errno == EOPNOTSUPP || errno == ENOSYS) return false;
      return ErrnoStatus(errno, "fallocate " + path_ + " at offset " + std::to_string(offset) + " (" +
                                    std::to_string(length) + " bytes)");
    }
    return true;
  }

  Result<std::unique_ptr<FileLock>> Lock(LockOptions options) override {
    DBDB_ASSIGN_OR_RETURN(std::shared_ptr<OpenFd> lock_open, LockDescriptor());
    // A second flock through one description would convert the lock, not exclude: refuse it.
    // (Callers lock through one File one at a time: just after a lock's release the flag may still
    // read as held for a moment.)
    if (lock_open->locked.exchange(true)) return Status::InvalidArgument("lock " + path_ + ": this handle holds a lock already");
    auto lock = FlockOpen(lock_open, path_, options);
    if (!lock.ok()) lock_open->locked.store(false);
    return lock;
  }

 private:
  // The descriptor this File locks through: an open file description of its own, opened at the
  // first lock and kept, and listed for the fork handler before any flock. Not the data
  // descriptor's: a child forked between the open and the first lock shares that one, and would
  // keep a lock taken through it after its parent died. The data descriptor is listed at the first
  // lock too, so that a child forked later cannot write the locked file (the change counter's
  // marks, a commit's bytes) through its copy: that copy points at /dev/null there. Reopened with
  // the data descriptor's access mode (NFS emulates flock with POSIX locks, which need it), through
  // /proc/thread-self/fd or /proc/self/fd, else by name; whichever opens it, it must be the same
  // file (device and inode) as the data descriptor's.
  Result<std::shared_ptr<OpenFd>> LockDescriptor() {
    std::lock_guard<std::mutex> guard(lock_open_mutex_);
    if (lock_open_) return lock_open_;
    const int mode = ::fcntl(fd_, F_GETFL);
    if (mode < 0) return ErrnoStatus(errno, "fcntl " + path_ + " to lock it");
    struct stat mine;
    if (::fstat(fd_, &mine) != 0) return ErrnoStatus(errno, "fstat " + path_ + " to lock it");
    std::string tried;
    int fd = -1;
    for (const std::string& name : {"/proc/thread-self/fd/" + std::to_string(fd_), "/proc/self/fd/" + std::to_string(fd_),
                                    path_}) {
      do {
        fd = ::open(name.c_str(), (mode & O_ACCMODE) | O_CLOEXEC | O_NONBLOCK);
      } while (fd < 0 && errno == EINTR);
      if (fd < 0) {
        tried += (tried.empty() ? "" : "; ") + name + ": " + std::strerror(errno);
        continue;
      }
      struct stat opened;
      if (::fstat(fd, &opened) == 0 && opened.st_dev == mine.st_dev && opened.st_ino == mine.st_ino) break;
      tried += (tried.empty() ? "" : "; ") + name + ": another file";
      ::close(fd);
      fd = -1;
    }
    if (fd < 0) return Status::IOError("lock " + path_ + ": cannot open the file again to lock it (" + tried + ")");
    auto open = std::make_shared<OpenFd>(fd);  // closed here on an error, else with the File and its locks
    if (!locked_descriptors_ready || !open->Register() || !open_->Register()) {
      return Status::LimitExceeded("lock " + path_ + ": more than " + std::to_string(kLockedDescriptorSlots) +
                                   " files kept open for locking in this process");
    }
    lock_open_ = open;
    return open;
  }

  const std::shared_ptr<OpenFd> open_;
  std::mutex lock_open_mutex_;
  std::shared_ptr<OpenFd> lock_open_;  // guarded by lock_open_mutex_; null until the first lock
  const int fd_;  // open_->fd
  std::string path_;
  bool read_only_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(std::shared_ptr<OpenFd> open) : open_(std::move(open)) {}
  ~PosixFileLock() override {
    if (!open_->ClosedInChild()) ::flock(open_->fd, LOCK_UN);
    open_->locked.store(false);
  }

 private:
  std::shared_ptr<OpenFd> open_;
};

Result<std::unique_ptr<FileLock>> FlockOpen(std::shared_ptr<OpenFd> open, const std::string& path, LockOptions options) {
  int rc;
  do {
    rc = ::flock(open->fd, (options.shared ? LOCK_SH : LOCK_EX) | (options.wait ? 0 : LOCK_NB));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno == EWOULDBLOCK) return Status::Busy("lock " + path + " is held by another writer");
    return ErrnoStatus(errno, "flock " + path);
  }
  return std::unique_ptr<FileLock>(new PosixFileLock(std::move(open)));
}

// Ok if fd is a regular file, which then reads and writes blocking (O_NONBLOCK cleared).
Status RefuseUnlessRegular(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat " + path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) return ErrnoStatus(errno, "fcntl " + path);
  return Status::Ok();
}

class PosixFileSystem final : public FileSystem {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    // O_NONBLOCK: opening a FIFO or a device must not block before it is refused below.
    int flags = O_CLOEXEC | O_NONBLOCK | (options.read_only ? O_RDONLY : O_RDWR);
    if (options.create) flags |= O_CREAT;
    int fd;
    do {
      fd = ::open(path.c_str(), flags, 0644);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return ErrnoStatus(errno, "open " + path);
    Status refused = RefuseUnlessRegular(fd, path);
    if (!refused.ok()) {
      ::close(fd);
      return refused;
    }
    return std::unique_ptr<File>(new PosixFile(fd, path, options.read_only));
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus(errno, "rename " + from + " to " + to);
    return Status::Ok();
  }

  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoStatus(errno, "unlink " + path);
    return Status::Ok();
  }

  Result<bool> Exists(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return true;
    if (errno == ENOENT) return false;
    return ErrnoStatus(errno, "stat " + path);
  }

  Result<uint64_t> Identity(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
    return IdentityOf(st);
  }

  Result<std::vector<std::string>> List(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return ErrnoStatus(errno, "opendir " + dir);
    std::vector<std::string> names;
    while (struct dirent* entry = ::readdir(d)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  Status CreateDir(const std::string& dir) override {
    if (dir.empty() || dir == "." || dir == "/") return Status::Ok();
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0) {
      return S_ISDIR(st.st_mode) ? Status::Ok() : Status::InvalidArgument(dir + " is not a directory");
    }
    DBDB_RETURN_IF_ERROR(CreateDir(DirName(dir)));
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus(errno, "mkdir " + dir);
    return Status::Ok();
  }

  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, "open directory " + dir);
    int rc = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus(saved, "fsync directory " + dir);
    return Status::Ok();
  }

  Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockOptions options) override {
    // A description of its own, so two Lock calls in one process exclude each other just as two
    // processes do (FlockOpen). flock needs no write access: a lock file that is not created is
    // opened read-only.
    int flags = O_CLOEXEC | O_NONBLOCK | (options.create ? O_RDWR | O_CREAT : O_RDONLY);
    int fd = ::open(path.c_str(), flags, 0644);
    if (fd < 0) return ErrnoStatus(errno, "open lock file " + path);
    auto open = std::make_shared<OpenFd>(fd);  // closed with the lock, or at once on an error
    // Listed before the flock, as File::Lock does: a child forked while this lock is held must not
    // keep it after the parent dies (the compaction lock, for one, is held for seconds).
    if (!locked_descriptors_ready || !open->Register()) {
      return Status::LimitExceeded("lock " + path + ": more than " + std::to_string(kLockedDescriptorSlots) +
                                   " files kept open for locking in this process");
    }
    DBDB_RETURN_IF_ERROR(RefuseUnlessRegular(fd, path));
    return FlockOpen(std::move(open), path, options);
  }
};

}  // namespace

std::shared_ptr<FileSystem> NewPosixFileSystem() { return std::make_shared<PosixFileSystem>(); }

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace dbdb
