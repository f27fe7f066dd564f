// PosixFileSystem: the real filesystem behind the I/O seam.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

#include "dbdb/file_system.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::TempDir;
using testing::WaitForChild;

TEST(PosixFileSystem, WriteReadSizeTruncateSync) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  auto file = fs->Open(dir.Path("f"), OpenOptions{.create = true});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_TRUE((*file)->WriteAt(0, std::string("hello world")).ok());
  ASSERT_TRUE((*file)->WriteAt(20, std::string("x")).ok());  // a gap reads as zeros
  EXPECT_EQ(*(*file)->Size(), 21u);
  std::string buffer(32, '?');
  auto n = (*file)->ReadAt(0, buffer);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 21u);  // short read at end of file
  EXPECT_EQ(buffer.substr(0, 11), "hello world");
  EXPECT_EQ(buffer.substr(11, 9), std::string(9, '\0'));
  ASSERT_TRUE((*file)->Truncate(5).ok());
  EXPECT_EQ(*(*file)->Size(), 5u);
  EXPECT_TRUE((*file)->Sync().ok());
  EXPECT_EQ(*(*file)->ReadAt(100, buffer), 0u);
}

// DataEnd(from) is where the last data at or above `from` ends: past a hole inside the data (a
// page of zeros a crash left unwritten, say, under a commit that still verifies) to the data
// after it, and before space allocated ahead, which reads as zeros.
TEST(PosixFileSystem, DataEndFindsTheLastDataPastHolesAndStopsAtSpaceAllocatedAhead) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  auto file = fs->Open(dir.Path("f"), OpenOptions{.create = true});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  constexpr uint64_t kMiB = 1 << 20;
  ASSERT_TRUE((*file)->WriteAt(0, std::string(4096, 'a')).ok());
  ASSERT_TRUE((*file)->WriteAt(kMiB, std::string(100, 'b')).ok());  // a hole of a MiB below it
  auto allocated = (*file)->Allocate(kMiB + 100, 2 * kMiB);
  ASSERT_TRUE(allocated.ok()) << allocated.status().ToString();
  ASSERT_TRUE(*allocated) << "this file system cannot allocate ahead";
  EXPECT_EQ(*(*file)->Size(), 3 * kMiB + 100) << "Allocate grows the file";
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (uint64_t from : {uint64_t{0}, uint64_t{100}, uint64_t{5000}, kMiB + 50}) {
    auto end = (*file)->DataEnd(from);
    ASSERT_TRUE(end.ok()) << end.status().ToString();
    // Page granular: the data's last page, not past it (no more than a page of zeros to read).
    EXPECT_GE(*end, kMiB + 100) << "from " << from;
    EXPECT_LE(*end, kMiB + page) << "from " << from;
  }
  EXPECT_EQ(*(*file)->DataEnd(2 * kMiB), 2 * kMiB) << "only a hole above `from`";
  EXPECT_EQ(*(*file)->DataEnd(4 * kMiB), 3 * kMiB + 100) << "`from` past the end";
  // Read, it is zeros; and a page read into the cache may count as data from then on (ext4 and
  // tmpfs do so): DataEnd is an upper bound of the data, never below it.
  std::string zeros(4096, '?');
  ASSERT_EQ(*(*file)->ReadAt(2 * kMiB, zeros), 4096u);
  EXPECT_EQ(zeros, std::string(4096, '\0')) << "space allocated ahead reads as zeros";
  auto after_read = (*file)->DataEnd(0);
  ASSERT_TRUE(after_read.ok());
  EXPECT_GE(*after_read, kMiB + 100) << "never below the data";
  // Many holes (a sparse file): the binary search finds the same end.
  for (uint64_t i = 0; i < 12; i++) ASSERT_TRUE((*file)->WriteAt(4 * kMiB + i * 64 * 1024, std::string(10, 'c')).ok());
  auto sparse = (*file)->DataEnd(0);
  ASSERT_TRUE(sparse.ok());
  EXPECT_GE(*sparse, 4 * kMiB + 11 * 64 * 1024 + 10);
  EXPECT_LE(*sparse, 4 * kMiB + 11 * 64 * 1024 + page);
}

TEST(PosixFileSystem, MissingFileIsNotFound) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  auto file = fs->Open(dir.Path("missing"), OpenOptions{});
  ASSERT_FALSE(file.ok());
  EXPECT_TRUE(file.status().IsNotFound()) << file.status().ToString();
  EXPECT_FALSE(*fs->Exists(dir.Path("missing")));
  EXPECT_TRUE(fs->Remove(dir.Path("missing")).IsNotFound());
}

TEST(PosixFileSystem, ReadOnlyFileRefusesWrites) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  { ASSERT_TRUE(fs->Open(dir.Path("f"), OpenOptions{.create = true}).ok()); }
  auto file = fs->Open(dir.Path("f"), OpenOptions{.read_only = true});
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->WriteAt(0, std::string("x")).code(), StatusCode::kInvalidArgument);
}

TEST(PosixFileSystem, RenameListRemoveAndIdentity) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  auto a = fs->Open(dir.Path("a"), OpenOptions{.create = true});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->WriteAt(0, std::string("A")).ok());
  uint64_t id_a = *(*a)->Identity();
  EXPECT_EQ(*fs->Identity(dir.Path("a")), id_a);
  { ASSERT_TRUE(fs->Open(dir.Path("b"), OpenOptions{.create = true}).ok()); }
  EXPECT_NE(*fs->Identity(dir.Path("b")), id_a);
  ASSERT_TRUE(fs->Rename(dir.Path("a"), dir.Path("b")).ok());  // replaces b
  EXPECT_EQ(*fs->Identity(dir.Path("b")), id_a);
  EXPECT_FALSE((*a)->Stat()->unlinked);
  EXPECT_EQ((*a)->Stat()->size_bytes, 1u);
  EXPECT_EQ(*fs->List(dir.path()), std::vector<std::string>{"b"});
  // The open handle still reads its file after the rename.
  std::string byte(1, '?');
  EXPECT_EQ(*(*a)->ReadAt(0, byte), 1u);
  EXPECT_EQ(byte, "A");
  EXPECT_TRUE(fs->SyncDir(dir.path()).ok());
  EXPECT_TRUE(fs->Remove(dir.Path("b")).ok());
  EXPECT_TRUE((*a)->Stat()->unlinked) << "no name refers to it any more";
  EXPECT_TRUE(fs->List(dir.path())->empty());
}

TEST(PosixFileSystem, CreateDirMakesParents) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  ASSERT_TRUE(fs->CreateDir(dir.Path("x/y/z")).ok());
  EXPECT_TRUE(fs->Open(dir.Path("x/y/z/f"), OpenOptions{.create = true}).ok());
}

TEST(PosixFileSystem, LockExcludesASecondHolderInTheSameProcess) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  auto first = fs->Lock(dir.Path("lock"), {.wait = false});
  ASSERT_TRUE(first.ok());
  auto second = fs->Lock(dir.Path("lock"), {.wait = false});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kBusy);
  first.value().reset();
  EXPECT_TRUE(fs->Lock(dir.Path("lock"), {.wait = false}).ok());
}

// A forked child must not get the lock while the parent holds it, and must get it once the
// parent lets go.
TEST(PosixFileSystem, LockExcludesAnotherProcess) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  const std::string path = dir.Path("lock");
  auto held = fs->Lock(path, {.wait = false});
  ASSERT_TRUE(held.ok());
  auto child_try_lock = [&]() -> int {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto child_fs = NewPosixFileSystem();
      auto lock = child_fs->Lock(path, {.wait = false});
      ::_exit(lock.ok() ? 0 : (lock.status().code() == StatusCode::kBusy ? 1 : 2));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(child_try_lock(), 1) << "the child got the lock the parent holds";
  held.value().reset();
  EXPECT_EQ(child_try_lock(), 0) << "the child could not take a free lock";
}

// A lock taken through an open File is the file's flock: it excludes a lock by name (and the
// other way round), one File holds one lock at a time, and it stays held after the File is
// gone, until the lock is (its descriptor stays open until then).
TEST(PosixFileSystem, ALockThroughAnOpenFileIsTheFilesLock) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  const std::string path = dir.Path("lock");
  auto file = fs->Open(path, OpenOptions{.create = true});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto held = (*file)->Lock({.wait = false});
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_EQ(fs->Lock(path, {.wait = false}).status().code(), StatusCode::kBusy);
  EXPECT_EQ(fs->Lock(path, {.wait = false, .shared = true}).status().code(), StatusCode::kBusy);
  auto again = (*file)->Lock({.wait = false});
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument) << again.status().ToString();
  held.value().reset();
  auto by_name = fs->Lock(path, {.wait = false});
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ((*file)->Lock({.wait = false}).status().code(), StatusCode::kBusy);
  EXPECT_EQ((*file)->Lock({.wait = false, .shared = true}).status().code(), StatusCode::kBusy);
  by_name.value().reset();
  held = (*file)->Lock({.wait = false});
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  file.value().reset();  // the lock outlives its File
  auto other = fs->Open(dir.Path("other"), OpenOptions{.create = true});  // may reuse a closed descriptor
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(fs->Lock(path, {.wait = false}).status().code(), StatusCode::kBusy);
  held.value().reset();
  EXPECT_TRUE(fs->Lock(path, {.wait = false}).ok());
  EXPECT_TRUE((*other)->Lock({.wait = false}).ok());
}

// How a holder takes the lock it then dies holding, with a child forked from it living on.
enum class HolderLock {
  kThroughAFileThenFork,       // File::Lock, then the fork
  kOpenForkThenLockThroughIt,  // the File opened, the fork, then File::Lock (a handle that commits after a fork)
  kFileSystemLockThenFork,     // FileSystem::Lock (the compaction lock's way), then the fork
};

// Runs a holder process that takes the lock on `path` as `how` says, forks a child that lives on
// until the returned pipe end is closed, and dies holding the lock. Returns that pipe end (the
// caller closes it to let the child go), or -1 if the holder failed.
int HolderDiesWithAChildAlive(const std::string& path, HolderLock how) {
  int hold[2], started[2];
  if (::pipe(hold) != 0 || ::pipe(started) != 0) return -1;
  pid_t holder = ::fork();
  if (holder < 0) return -1;
  if (holder == 0) {
    auto fs = NewPosixFileSystem();
    ::alarm(20);  // the holder never outlives a stuck step by much
    auto spawn = [&] {
      const pid_t child = ::fork();
      if (child == 0) {  // lives on after the holder, until the test closes the pipe
        // Code here runs after the fork's child handlers: the copies are redirected by now.
        ::close(hold[1]);
        if (::write(started[1], "s", 1) != 1) ::_exit(1);
        char byte;
        (void)!::read(hold[0], &byte, 1);
        ::_exit(0);
      }
      ::close(started[1]);  // a child that dies before its byte then reads as the end
      char byte;
      return child > 0 && ::read(started[0], &byte, 1) == 1;
    };
    std::unique_ptr<FileLock> lock;
    if (how == HolderLock::kFileSystemLockThenFork) {
      auto taken = fs->Lock(path, {.wait = false});
      if (!taken.ok()) ::_exit(3);
      lock = std::move(taken).value();
      if (!spawn()) ::_exit(4);
      ::_exit(0);  // dies holding the lock
    }
    auto file = fs->Open(path, OpenOptions{.create = true});
    if (!file.ok()) ::_exit(2);
    if (how == HolderLock::kOpenForkThenLockThroughIt && !spawn()) ::_exit(4);
    auto taken = (*file)->Lock({.wait = false});
    if (!taken.ok()) ::_exit(3);
    lock = std::move(taken).value();
    if (how == HolderLock::kThroughAFileThenFork && !spawn()) ::_exit(4);
    ::_exit(0);  // dies holding the lock
  }
  ::close(started[0]);
  ::close(started[1]);
  ::close(hold[0]);
  const int status = WaitForChild(holder);
  if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    ::close(hold[1]);
    return -1;
  }
  return hold[1];
}

// A child forked from a lock's holder must not share that lock's open file description: a holder
// that dies with the lock held would leave it held for as long as the child lived. A File locks
// through a description of its own, opened at its first lock, so a child forked before then does
// not have it; a child forked after has its copy, and FileSystem::Lock's, pointed at /dev/null.
// (The holder's fork failing makes the case fail, not pass.)
TEST(PosixFileSystem, AForkedChildDoesNotKeepALockItsParentDiesHolding) {
  for (HolderLock how : {HolderLock::kThroughAFileThenFork, HolderLock::kOpenForkThenLockThroughIt,
                         HolderLock::kFileSystemLockThenFork}) {
    SCOPED_TRACE(static_cast<int>(how));
    TempDir dir;
    const std::string path = dir.Path("lock");
    const int child_alive = HolderDiesWithAChildAlive(path, how);
    ASSERT_GE(child_alive, 0) << "the holder failed";
    auto fs = NewPosixFileSystem();
    auto lock = fs->Lock(path, {.wait = false});
    EXPECT_TRUE(lock.ok()) << "a dead holder's lock is still held (by its child's copy): " << lock.status().ToString();
    ::close(child_alive);  // lets the grandchild go
  }
}

// When the child handler cannot open /dev/null (no descriptor number free in the child), it closes
// the copy instead, and the number may become another descriptor's in the child. Destroying the
// parent's File and lock there must then neither unlock nor close that number.
TEST(PosixFileSystem, AForkedChildNeverClosesOrUnlocksANumberItsHandlerFreed) {
  TempDir dir;
  const std::string a = dir.Path("a"), b = dir.Path("b");
  pid_t holder = ::fork();
  ASSERT_GE(holder, 0) << "fork failed";
  if (holder == 0) {
    ::alarm(20);
    auto fs = NewPosixFileSystem();
    auto file = fs->Open(a, OpenOptions{.create = true});
    if (!file.ok()) ::_exit(2);
    auto lock = (*file)->Lock({.wait = false});
    if (!lock.ok()) ::_exit(3);
    // Every descriptor number below a low limit taken, so that the child's handler finds none.
    struct rlimit limit;
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(4);
    limit.rlim_cur = 256;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(4);
    const int seed = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (seed < 0) ::_exit(5);
    std::vector<int> fillers;
    fillers.reserve(256);
    for (int fd; (fd = ::fcntl(seed, F_DUPFD_CLOEXEC, 0)) >= 0;) fillers.push_back(fd);
    const pid_t child = ::fork();
    if (child == 0) {
      // The handler closed one listed copy (the number is free again), pointed the rest at /dev/null.
      const int mine = ::open(b.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (mine < 0) ::_exit(10);  // no number freed: the handler did not have to close one
      if (::flock(mine, LOCK_EX | LOCK_NB) != 0) ::_exit(11);
      // Numbers for what runs next (a sanitizer's runtime opens pipes to check memory).
      for (size_t i = 0; i < 16 && i < fillers.size(); i++) ::close(fillers[i]);
      (*lock).reset();  // the parent's lock and File, destroyed in the child
      (*file).reset();
      if (::fcntl(mine, F_GETFD) < 0) ::_exit(12);  // closed by their destructors
      const int other = ::open(b.c_str(), O_RDONLY | O_CLOEXEC);
      if (other < 0) ::_exit(13);
      if (::flock(other, LOCK_EX | LOCK_NB) == 0) ::_exit(14);  // the child's own lock was dropped
      ::_exit(0);
    }
    const int status = WaitForChild(child);
    ::_exit(status >= 0 && WIFEXITED(status) ? 20 + WEXITSTATUS(status) : 99);
  }
  const int status = WaitForChild(holder);
  ASSERT_TRUE(status >= 0 && WIFEXITED(status)) << "the holder did not exit: " << status;
  EXPECT_EQ(WEXITSTATUS(status), 20) << "2-5: the holder's set-up failed; 30: the handler closed nothing; "
                                     << "32: a destructor closed the child's descriptor; 34: it unlocked it";
}

TEST(PosixFileSystem, DirName) {
  EXPECT_EQ(DirName("a/b/c"), "a/b");
  EXPECT_EQ(DirName("c"), ".");
  EXPECT_EQ(DirName("/c"), "/");
}

}  // namespace
}  // namespace dbdb
