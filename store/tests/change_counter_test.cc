// The change counter (store/src/change_counter.h): a reader answers from the view it found last,
// without looking at the database file (no fstat), for as long as no writer has held the writer
// lock; it sees every commit that returned before its read began; and after a writer died holding
// the lock (the counter left odd) it looks every time until the next writer lets go.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>

#include "change_counter.h"
#include "coding.h"
#include "dbdb/db.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WaitForChild;

// Counts Stat calls on the database file (the fstat a reader makes to look for new commits).
class StatCountingFileSystem final : public FileSystemWrapper {
 public:
  StatCountingFileSystem() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::atomic<uint64_t> stats{0};
  std::atomic<uint64_t> names{0};  // Identity(path): a writer's look at what the name holds now
  Result<uint64_t> Identity(const std::string& path) override {
    names++;
    return FileSystemWrapper::Identity(path);
  }
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (path.ends_with(".lock")) return file;
    return std::unique_ptr<File>(new CountingFile(this, std::move(file)));
  }

 private:
  class CountingFile final : public FileWrapper {
   public:
    CountingFile(StatCountingFileSystem* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Result<FileStat> Stat() override {
      fs_->stats++;
      return FileWrapper::Stat();
    }

   private:
    StatCountingFileSystem* fs_;
  };
};

uint64_t ReadCounter(const std::string& lock_path) {
  std::ifstream in(lock_path, std::ios::binary);
  char bytes[8] = {};
  in.read(bytes, 8);
  return in.gcount() == 8 ? coding::DecodeFixed64(bytes) : 0;
}

void WriteCounter(const std::string& lock_path, uint64_t value) {
  std::fstream out(lock_path, std::ios::binary | std::ios::in | std::ios::out);
  char bytes[8];
  coding::EncodeFixed64(bytes, value);
  out.write(bytes, 8);
  ASSERT_TRUE(out.good());
}

struct Handles {
  std::unique_ptr<DB> writer;
  std::unique_ptr<DB> reader;
  std::shared_ptr<StatCountingFileSystem> counting = std::make_shared<StatCountingFileSystem>();
};

Handles OpenBoth(const std::string& path) {
  Handles h;
  Options options;
  options.create_if_missing = true;
  auto writer = DB::Open(path, options);
  EXPECT_TRUE(writer.ok()) << writer.status().ToString();
  h.writer = std::move(writer).value();
  EXPECT_TRUE(h.writer->Put("k", "1").ok());
  Options reading;
  reading.read_only = true;
  reading.file_system = h.counting;
  auto reader = DB::Open(path, reading);
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  h.reader = std::move(reader).value();
  return h;
}

void ExpectValue(DB& db, const std::string& value) {
  auto got = db.Get("k");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, std::optional<std::string>(value));
}

TEST(ChangeCounter, AReaderLooksAtTheFileOnlyAfterAWriterHeldTheLock) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Handles h = OpenBoth(path);
  EXPECT_EQ(ReadCounter(path + ".lock") % 2, 0u) << "a writer left the counter odd";
  ExpectValue(*h.reader, "1");
  h.counting->stats = 0;
  for (int i = 0; i < 100; i++) ExpectValue(*h.reader, "1");
  EXPECT_LE(h.counting->stats.load(), 2u) << "100 reads with no writer at work looked at the file";
  // A commit that returned before the read began is seen by it, and the reader looks again once.
  // Every writer leaves a value the counter never held before.
  std::set<uint64_t> values{ReadCounter(path + ".lock")};
  for (int round = 2; round < 5; round++) {
    ASSERT_TRUE(h.writer->Put("k", std::to_string(round)).ok());
    EXPECT_TRUE(values.insert(ReadCounter(path + ".lock")).second) << "the counter went back to a value it held";
    h.counting->stats = 0;
    ExpectValue(*h.reader, std::to_string(round));
    EXPECT_GE(h.counting->stats.load(), 1u) << "the reader did not look after a commit";
    for (int i = 0; i < 50; i++) ExpectValue(*h.reader, std::to_string(round));
    EXPECT_LE(h.counting->stats.load(), 3u);
  }
}

// A reader that looked while a write transaction was open (before its commit was written) must
// see the commit once Commit returned: the writer's mark, taken with the lock, kept it from
// trusting what it found then.
TEST(ChangeCounter, AReaderThatLookedDuringATransactionSeesItsCommit) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Handles h = OpenBoth(path);
  ExpectValue(*h.reader, "1");
  for (int round = 2; round < 5; round++) {
    auto txn = h.writer->BeginWrite();
    ASSERT_TRUE(txn.ok()) << txn.status().ToString();
    EXPECT_EQ(ReadCounter(path + ".lock") % 2, 1u) << "the counter is not odd during a transaction";
    for (int i = 0; i < 3; i++) ExpectValue(*h.reader, std::to_string(round - 1));
    ASSERT_TRUE((*txn)->Put("k", std::to_string(round)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
    ExpectValue(*h.reader, std::to_string(round));
  }
}

// A writer that died holding the lock leaves the counter odd, and may have left its commit in the
// file, unsealed: readers must look every time (and settle it as before), never trust a view.
TEST(ChangeCounter, AfterAWriterDiedHoldingTheLockReadersLookEveryTime) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Handles h = OpenBoth(path);
  ExpectValue(*h.reader, "1");
  const uint64_t before = ReadCounter(path + ".lock");
  ASSERT_EQ(before % 2, 0u);
  WriteCounter(path + ".lock", before + 1);  // what a writer that died after marking leaves
  h.counting->stats = 0;
  for (int i = 0; i < 20; i++) ExpectValue(*h.reader, "1");
  EXPECT_GE(h.counting->stats.load(), 20u) << "a reader trusted its view while the counter was odd";
  // The next writer marks it with a fresh odd value and makes that even when it lets go: readers
  // see its commit, then stop looking.
  ASSERT_TRUE(h.writer->Put("k", "2").ok());
  const uint64_t after = ReadCounter(path + ".lock");
  EXPECT_EQ(after % 2, 0u);
  EXPECT_NE(after, before);
  ExpectValue(*h.reader, "2");
  h.counting->stats = 0;
  for (int i = 0; i < 20; i++) ExpectValue(*h.reader, "2");
  EXPECT_LE(h.counting->stats.load(), 1u);
}

// A writer also reads the counter, before it marks it: while it holds the even value this
// handle's own last lock left, no writer has held the lock since, and it starts from its own last
// commit without looking at the file. Once another writer has (another handle here, or any value
// the counter took meanwhile), it looks, and builds on that writer's commit.
TEST(ChangeCounter, AWriterLooksAtTheFileOnlyAfterAnotherWriterHeldTheLock) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto counting = std::make_shared<StatCountingFileSystem>();
  Options options;
  options.create_if_missing = true;
  options.file_system = counting;
  auto a = DB::Open(path, options);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE((*a)->Put("k", "1").ok());
  counting->names = 0;
  for (int i = 0; i < 20; i++) ASSERT_TRUE((*a)->Put("a" + std::to_string(i), "x").ok());
  EXPECT_LE(counting->names.load(), 1u) << "20 commits with no other writer looked at the file";
  Options plain;
  auto b = DB::Open(path, plain);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  for (int round = 0; round < 3; round++) {
    ASSERT_TRUE((*b)->Put("k", "b" + std::to_string(round)).ok());
    counting->names = 0;
    ASSERT_TRUE((*a)->Put("j", "a" + std::to_string(round)).ok());
    EXPECT_GE(counting->names.load(), 1u) << "a writer did not look after another writer's commit";
    for (DB* db : {a->get(), b->get()}) {
      EXPECT_EQ(*db->Get("k"), std::optional<std::string>("b" + std::to_string(round))) << "a commit was lost";
      EXPECT_EQ(*db->Get("j"), std::optional<std::string>("a" + std::to_string(round)));
    }
  }
  // Any value the counter takes that is not the one this handle left makes the writer look.
  const uint64_t left = ReadCounter(path + ".lock");
  ASSERT_EQ(left % 2, 0u);
  WriteCounter(path + ".lock", left + 2);
  counting->names = 0;
  ASSERT_TRUE((*a)->Put("j", "last").ok());
  EXPECT_GE(counting->names.load(), 1u) << "a writer trusted a counter another writer changed";
  EXPECT_TRUE((*a)->Check().ok());
  EXPECT_EQ((*b)->GetStats()->keys, 22u);
}

// The counter is never synced: a lock-file page the kernel dropped and read back could show the
// value a writer's own last lock left after another writer's commit. The writer's fstat of the
// database file (it must still end where that writer's commit ended) keeps it from building on
// the view it left.
TEST(ChangeCounter, AWriterLooksWhenTheFileMovedThoughTheCounterSaysNoWriterCame) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  auto a = DB::Open(path, options);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE((*a)->Put("k", "a").ok());
  const uint64_t left_by_a = ReadCounter(path + ".lock");
  auto b = DB::Open(path, options);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE((*b)->Put("k", "b").ok());
  WriteCounter(path + ".lock", left_by_a);  // the page read back as it was before b's lock
  ASSERT_TRUE((*a)->Put("j", "a").ok());
  for (DB* db : {a->get(), b->get()}) {
    EXPECT_EQ(*db->Get("k"), std::optional<std::string>("b")) << "b's acknowledged commit was lost";
    EXPECT_EQ(*db->Get("j"), std::optional<std::string>("a"));
  }
  b->reset();
  a->reset();
  auto reopened = DB::Open(path, options);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ(*(*reopened)->Get("k"), std::optional<std::string>("b"));
  EXPECT_TRUE((*reopened)->Check().ok());
}

// The writer lock is the lock file's, which a handle keeps open: if its name was removed (and a
// new lock file made in its place by another handle), the handle must lock the new one, or two
// writers would each hold "the" lock.
TEST(ChangeCounter, AWriterWhoseLockFileWasRemovedLocksTheOneInItsPlace) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.wait_for_writer = false;
  auto a = DB::Open(path, options);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE((*a)->Put("k", "1").ok());
  std::filesystem::remove(path + ".lock");
  auto b = DB::Open(path, options);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto txn = (*b)->BeginWrite();
  ASSERT_TRUE(txn.ok()) << txn.status().ToString();
  ASSERT_TRUE(std::filesystem::exists(path + ".lock"));
  Status busy = (*a)->Put("k", "2");
  EXPECT_EQ(busy.code(), StatusCode::kBusy) << "two writers at once: " << busy.ToString();
  ASSERT_TRUE((*txn)->Put("k", "3").ok());
  ASSERT_TRUE((*txn)->Commit().ok());
  ASSERT_TRUE((*a)->Put("j", "4").ok());
  EXPECT_EQ(*(*a)->Get("k"), std::optional<std::string>("3"));
  EXPECT_EQ(*(*b)->Get("j"), std::optional<std::string>("4"));
  EXPECT_TRUE((*b)->Check().ok());
}

// Marks are made from a key drawn once per process: a forked child draws its own, or it would
// mark with the very values its parent marks with next (a reader that kept one could then trust
// a view across the child's commit).
TEST(ChangeCounter, AForkedChildMarksWithValuesOfItsOwn) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  auto mark_once = [&](const std::string& name) {
    auto file = fs->Open(dir.Path(name), OpenOptions{.create = true});
    if (!file.ok()) return false;
    auto mark = ChangeMark::Take(**file);
    return mark.ok() && (*mark)->written();
  };
  ASSERT_TRUE(mark_once("parent"));
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(mark_once("child") ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(mark_once("parent"));
  EXPECT_NE(ReadCounter(dir.Path("parent")), ReadCounter(dir.Path("child"))) << "the child repeated its parent's mark";
}

// A child forked from a process with a handle open shares the handle's open file descriptions,
// and flock locks belong to those: had the child locked through them, it would hold the parent's
// lock with it (and its unlock would release the parent's). A parent's handle refuses every
// operation in the child, with an error that says why.
TEST(ChangeCounter, AHandleInAForkedChildDoesNotShareItsParentsLock) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.wait_for_writer = false;
  options.background_compaction = false;
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Put("k", "1").ok());  // the handle keeps PATH.lock open from here on
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    char byte;
    if (::read(go[0], &byte, 1) != 1) ::_exit(3);
    Status s = (*db)->Put("child", "1");  // the parent holds the writer lock now
    auto got = (*db)->Get("k");
    const bool refused = s.code() == StatusCode::kInvalidArgument && s.ToString().find("fork") != std::string::npos &&
                         got.status().code() == StatusCode::kInvalidArgument;
    ::_exit(refused ? 0 : s.ok() ? 1 : 2);
  }
  auto txn = (*db)->BeginWrite();
  ASSERT_TRUE(txn.ok()) << txn.status().ToString();
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(go[0]);
  ::close(go[1]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the parent's handle was not refused in the child (1: it wrote beside the parent)";
  ASSERT_TRUE((*txn)->Put("k", "2").ok());
  ASSERT_TRUE((*txn)->Commit().ok());
  EXPECT_EQ(*(*db)->Get("k"), std::optional<std::string>("2"));
  EXPECT_EQ(*(*db)->Get("child"), std::nullopt);
  EXPECT_TRUE((*db)->Check().ok());
}

// The same refusal where a get would otherwise read the handle's view without looking at the file:
// no writer at work, the parent's view fresh when it forks (a get's fast path, DBImpl::Get).
TEST(ChangeCounter, AParentsHandleRefusesAGetInAForkedChildThoughItsViewIsFresh) {
  TempDir dir;
  Options options;
  options.create_if_missing = true;
  options.background_compaction = false;
  auto db = DB::Open(dir.Path("db"), options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Put("k", "1").ok());
  ASSERT_EQ(*(*db)->Get("k"), std::optional<std::string>("1"));  // the view is the newest now
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string value;
    auto into = (*db)->Get("k", &value);
    auto got = (*db)->Get("k");
    const bool refused = into.status().code() == StatusCode::kInvalidArgument &&
                         into.status().ToString().find("fork") != std::string::npos &&
                         got.status().code() == StatusCode::kInvalidArgument;
    ::_exit(refused ? 0 : into.ok() ? 1 : 2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the parent's handle answered a get in the child (1: it read)";
  EXPECT_EQ(*(*db)->Get("k"), std::optional<std::string>("1"));
}

// A child forked while its parent holds the writer lock (a write transaction open), which then
// destroys the transaction and the handle (a child that unwinds), must leave the parent's files
// alone: giving the lock up there would write the counter's next even value, which a reader could
// keep while the parent's commit writes the same value again (change_counter.h: the counter never
// returns to a value a reader kept). The child's copies of the lock file's descriptors point at
// /dev/null once the file was first locked through.
TEST(ChangeCounter, AForkedChildDroppingItsParentsTransactionWritesNothing) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.background_compaction = false;
  options.checkpoint_on_close = true;
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Put("k", "1").ok());
  auto txn = (*db)->BeginWrite();
  ASSERT_TRUE(txn.ok()) << txn.status().ToString();
  ASSERT_TRUE((*txn)->Put("k", "2").ok());
  const std::string lock_before = ReadFile(path + ".lock"), db_before = ReadFile(path);
  const uint64_t counter_before = ReadCounter(path + ".lock");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << "fork failed";
  if (pid == 0) {
    ::alarm(20);  // a hang fails the test
    txn->reset();
    db->reset();
    ::_exit(0);
  }
  const int status = WaitForChild(pid);
  EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child failed or hung: " << status;
  EXPECT_EQ(ReadCounter(path + ".lock"), counter_before)
      << "the child wrote the parent's change counter";
  EXPECT_TRUE(ReadFile(path + ".lock") == lock_before);
  EXPECT_TRUE(ReadFile(path) == db_before) << "the child wrote the database file";
  ASSERT_TRUE((*txn)->Commit().ok());
  EXPECT_EQ(*(*db)->Get("k"), std::optional<std::string>("2"));
  EXPECT_TRUE((*db)->Check().ok());
}

// The real file system locks a File through a descriptor it opens again at the first lock, by
// name where /proc is missing; a lock file whose name was removed (or renamed over) before that
// can then not be locked at all. A writer whose lock fails on a lock file that lost its name opens
// the file the name holds now, as it does when the lock succeeds, rather than failing for good.
class LockFailsOnceUnlinkedFs final : public FileSystemWrapper {
 public:
  LockFailsOnceUnlinkedFs() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::atomic<int> refused{0};
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (path.size() < 5 || path.compare(path.size() - 5, 5, ".lock") != 0) return file;
    return std::unique_ptr<File>(new Refusing(this, std::move(file)));
  }

 private:
  class Refusing final : public FileWrapper {
   public:
    Refusing(LockFailsOnceUnlinkedFs* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Result<std::unique_ptr<FileLock>> Lock(LockOptions options) override {
      DBDB_ASSIGN_OR_RETURN(FileStat stat, Stat());
      if (stat.unlinked) {
        fs_->refused++;
        return Status::IOError("lock: cannot open the file again to lock it (its name is gone)");
      }
      return FileWrapper::Lock(options);
    }

   private:
    LockFailsOnceUnlinkedFs* fs_;
  };
};

TEST(ChangeCounter, AWriterWhoseLockFileCannotBeLockedOnceItsNameIsGoneOpensItAgain) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<LockFailsOnceUnlinkedFs>();
  Options options;
  options.create_if_missing = true;
  options.file_system = fs;
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Put("k", "1").ok());  // the handle keeps PATH.lock open from here on
  ASSERT_TRUE(std::filesystem::remove(path + ".lock"));
  Status s = (*db)->Put("k", "2");
  EXPECT_TRUE(s.ok()) << "a lock file that lost its name failed the writer: " << s.ToString();
  EXPECT_GE(fs->refused.load(), 1) << "the old lock file was not tried (the test no longer tests anything)";
  EXPECT_TRUE(std::filesystem::exists(path + ".lock"));
  EXPECT_EQ(*(*db)->Get("k"), std::optional<std::string>("2"));
}

// An empty lock file (made by a writer of an older build, or before any writer marked it) holds no
// counter: a read-only handle never writes it, and reads without it as before until a writer
// marks it.
TEST(ChangeCounter, AnEmptyLockFileHoldsNoCounterAndReadersNeverWriteIt) {
  TempDir dir;
  const std::string path = dir.Path("db");
  {
    Options options;
    options.create_if_missing = true;
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Put("k", "1").ok());
  }
  std::ofstream(path + ".lock", std::ios::trunc).close();  // empty again
  Options reading;
  reading.read_only = true;
  auto reader = DB::Open(path, reading);
  ASSERT_TRUE(reader.ok());
  for (int i = 0; i < 5; i++) ExpectValue(**reader, "1");
  EXPECT_EQ(std::filesystem::file_size(path + ".lock"), 0u) << "a reader wrote the lock file";
  Options writing;
  auto writer = DB::Open(path, writing);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Put("k", "2").ok());
  EXPECT_EQ(std::filesystem::file_size(path + ".lock"), 8u);
  EXPECT_EQ(ReadCounter(path + ".lock") % 2, 0u) << "a writer left the counter odd";
  ExpectValue(**reader, "2");
}

// Creating the database marks the counter as a writer does: a reader of a file that was removed
// (its lock file left, as it always is) sees the database created in its place, not the old one.
TEST(ChangeCounter, AReaderOfARemovedDatabaseSeesTheOneCreatedInItsPlace) {
  TempDir dir;
  const std::string path = dir.Path("db");
  {
    Handles h = OpenBoth(path);
    h.writer.reset();  // (closing marks the counter too: it may write a checkpoint)
    ExpectValue(*h.reader, "1");
    ExpectValue(*h.reader, "1");  // the reader keeps its view now
    std::filesystem::remove(path);
    Options options;
    options.create_if_missing = true;
    auto created = DB::Open(path, options);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    auto got = h.reader->Get("k");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, std::nullopt) << "the reader kept reading the removed file";
  }
}

// A lock file that cannot be written (a full disk) must not stop writers: the counter is removed
// instead (cut to nothing, which needs no space), and readers, even one that mapped it and kept a
// value, look at the file every time and see every commit.
class FullLockFileSystem final : public FileSystemWrapper {
 public:
  FullLockFileSystem() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::atomic<bool> full{false};
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (!path.ends_with(".lock")) return file;
    return std::unique_ptr<File>(new FullFile(this, std::move(file)));
  }

 private:
  class FullFile final : public FileWrapper {
   public:
    FullFile(FullLockFileSystem* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Status WriteAt(uint64_t offset, std::span<const char> data) override {
      if (fs_->full) return Status::NoSpace("write: No space left on device");
      return FileWrapper::WriteAt(offset, data);
    }

   private:
    FullLockFileSystem* fs_;
  };
};

TEST(ChangeCounter, AWriterThatCannotWriteTheCounterRemovesItAndReadersLook) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto full = std::make_shared<FullLockFileSystem>();
  Options options;
  options.create_if_missing = true;
  options.file_system = full;
  auto writer = DB::Open(path, options);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE((*writer)->Put("k", "1").ok());
  Options reading;
  reading.read_only = true;
  auto reader = DB::Open(path, reading);
  ASSERT_TRUE(reader.ok());
  for (int i = 0; i < 3; i++) ExpectValue(**reader, "1");  // it keeps the counter's value now
  full->full = true;
  for (int round = 2; round < 5; round++) {
    ASSERT_TRUE((*writer)->Put("k", std::to_string(round)).ok()) << "a full lock file stopped a writer";
    EXPECT_EQ(std::filesystem::file_size(path + ".lock"), 0u) << "the counter was not removed";
    ExpectValue(**reader, std::to_string(round));
  }
  full->full = false;
  ASSERT_TRUE((*writer)->Put("k", "5").ok());
  EXPECT_EQ(std::filesystem::file_size(path + ".lock"), 8u) << "the next writer did not put the counter back";
  ExpectValue(**reader, "5");
}

}  // namespace
}  // namespace dbdb
