// The seal rule (docs/FORMAT.md, "Seals"): readers never take a commit whose sync may still fail
// (I1, I4), and a commit its writer left unsealed is taken once no writer holds the lock, and
// sealed by the first read-write handle that takes it.
#include <filesystem>
#include <functional>

#include "dbdb/db.h"
#include "format.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::TempDir;

// The real filesystem, with two test hooks on the files it opens: a function run at each Sync
// (its error fails the sync), and dropping writes of exactly a seal record's size (they "succeed").
class HookedFileSystem final : public FileSystemWrapper {
 public:
  HookedFileSystem() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::function<Status()> before_sync;
  bool drop_seals = false;
  Status lock_error;  // returned by Lock when not OK

  Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockOptions options) override {
    if (!lock_error.ok()) return lock_error;
    return FileSystemWrapper::Lock(path, options);
  }

  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    return std::unique_ptr<File>(new HookedFile(this, std::move(file)));
  }

 private:
  class HookedFile final : public FileWrapper {
   public:
    HookedFile(HookedFileSystem* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Status WriteAt(uint64_t o, std::span<const char> d) override {
      if (fs_->drop_seals && d.size() == format::kSealRecordSizeBytes) return Status::Ok();
      return FileWrapper::WriteAt(o, d);
    }
    Status Sync() override {
      if (fs_->before_sync) DBDB_RETURN_IF_ERROR(fs_->before_sync());
      return FileWrapper::Sync();
    }

   private:
    HookedFileSystem* fs_;
  };
};

struct Fixture {
  TempDir dir;
  std::string path = dir.Path("db");
  std::shared_ptr<HookedFileSystem> hooked = std::make_shared<HookedFileSystem>();
  std::unique_ptr<DB> writer;

  Fixture() {
    Options options;
    options.allocate_ahead_bytes = 0;  // FileSize() is where the last record ends
    options.create_if_missing = true;
    options.file_system = hooked;
    writer = std::move(DB::Open(path, options)).value();
    EXPECT_TRUE(writer->Put("k", "1").ok());  // commit 1, sealed
  }
  std::unique_ptr<DB> Reader(bool read_only = false) {
    Options options;
    options.allocate_ahead_bytes = 0;
    options.read_only = read_only;
    options.file_system = hooked;
    auto db = DB::Open(path, options);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    return std::move(db).value();
  }
  uint64_t FileSize() { return std::filesystem::file_size(path); }
};

TEST(Seal, ReadersDoNotTakeACommitBeforeItsSyncReturns) {
  Fixture f;
  auto reader = f.Reader();
  uint64_t before = f.FileSize();
  bool checked = false;
  f.hooked->before_sync = [&] {
    // Commit 2 is in the file, complete, and its writer holds the lock while it syncs.
    EXPECT_GT(f.FileSize(), before + format::kCommitRecordSizeBytes);
    auto snapshot = reader->GetSnapshot();
    EXPECT_TRUE(snapshot.ok());
    EXPECT_EQ((*snapshot)->txn_id(), 1u);
    EXPECT_EQ(**(*snapshot)->Get("k"), "1");
    EXPECT_EQ(f.Reader()->GetStats()->txn_id, 1u) << "a handle opened now must not take it either";
    checked = true;
    return Status::Ok();
  };
  ASSERT_TRUE(f.writer->Put("k", "2").ok());
  f.hooked->before_sync = nullptr;
  EXPECT_TRUE(checked);
  EXPECT_EQ(**reader->Get("k"), "2") << "sealed after the sync: taken";
}

TEST(Seal, AFailedSyncRollsTheCommitBackAndNoReaderEverTookIt) {
  Fixture f;
  auto reader = f.Reader();
  f.hooked->before_sync = [&] {
    EXPECT_EQ(**reader->Get("k"), "1");
    return Status::IOError("injected: sync failed");
  };
  Status s = f.writer->Put("k", "2");
  f.hooked->before_sync = nullptr;
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(f.writer->Put("k", "3").code(), StatusCode::kFailed) << "I7";
  EXPECT_EQ(**reader->Get("k"), "1");
  auto fresh = f.Reader();
  EXPECT_EQ(fresh->GetStats()->txn_id, 1u);
  EXPECT_TRUE(fresh->Check().ok());
  EXPECT_EQ(fresh->Check()->tail_bytes, 0u) << "the failed commit was cut off";
}

TEST(Seal, AnUnsealedCommitIsInFlightWhileAWriterHoldsTheLockAndTakenWhenNoneDoes) {
  Fixture f;
  f.hooked->drop_seals = true;  // the writer "dies" between its sync and its seal
  ASSERT_TRUE(f.writer->Put("k", "2").ok());
  f.hooked->drop_seals = false;
  uint64_t unsealed_size = f.FileSize();
  {
    // A writer in the middle of a commit holds the in-flight lock (the database file's own flock):
    // commit 2 could be in flight.
    auto lock = NewPosixFileSystem()->Lock(f.path, {.wait = false, .create = false});
    ASSERT_TRUE(lock.ok());
    EXPECT_EQ(f.Reader(/*read_only=*/true)->GetStats()->txn_id, 1u);
    EXPECT_EQ(**f.Reader()->Get("k"), "1");
    EXPECT_EQ(f.FileSize(), unsealed_size) << "nobody sealed it meanwhile";
  }
  // No writer: commit 2 is settled. A read-only handle takes it without writing...
  auto read_only = f.Reader(/*read_only=*/true);
  EXPECT_EQ(**read_only->Get("k"), "2");
  EXPECT_EQ(f.FileSize(), unsealed_size);
  // ...and so does a read-write handle: readers never write (I9: a reader that wrote a seal
  // without first cutting the tail could resurrect a commit after it). The next writer seals it.
  auto reader = f.Reader();
  EXPECT_EQ(**reader->Get("k"), "2");
  EXPECT_EQ(f.FileSize(), unsealed_size);
  auto report = reader->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->tail_bytes, 0u);
  ASSERT_TRUE(reader->Put("other", "x").ok());
  EXPECT_EQ(f.Reader(/*read_only=*/true)->GetStats()->txn_id, 3u);
}

// A reader syncs a dead writer's unsealed commit before showing it. If that sync fails, the
// commit's pages may be gone while a later sync of the same file returns OK (fsyncgate): the
// handle fails (I7) and never shows the commit on the word of a second sync; a new handle, whose
// own sync succeeds, shows it.
TEST(Seal, AReaderWhoseSyncOfADeadWritersCommitFailedNeverShowsIt) {
  Fixture f;
  auto reader = f.Reader();
  EXPECT_EQ(**reader->Get("k"), "1");
  f.hooked->drop_seals = true;  // the writer "dies" between its sync and its seal
  ASSERT_TRUE(f.writer->Put("k", "2").ok());
  f.hooked->drop_seals = false;
  f.writer.reset();
  int failures = 1;
  f.hooked->before_sync = [&] { return failures-- > 0 ? Status::IOError("injected: fsync: EIO") : Status::Ok(); };
  auto first = reader->Get("k");
  EXPECT_TRUE(!first.ok() && first.status().IsIOError()) << (first.ok() ? "no error" : first.status().ToString());
  auto second = reader->Get("k");
  ASSERT_FALSE(second.ok()) << "showed the commit after its sync failed: " << (second->has_value() ? **second : "");
  EXPECT_EQ(second.status().code(), StatusCode::kFailed) << second.status().ToString();
  EXPECT_EQ(reader->Put("x", "1").code(), StatusCode::kFailed);
  f.hooked->before_sync = nullptr;
  EXPECT_EQ(**f.Reader()->Get("k"), "2");
}

// A lock probe that fails for another reason than Busy (EACCES, EMFILE) says nothing about a
// writer: the reader must neither take the unsealed commit (its writer may still be syncing it)
// nor fall back to an older one (another reader may have shown it): it reports the error.
TEST(Seal, ALockProbeThatFailsIsNotTakenAsNoWriter) {
  Fixture f;
  f.hooked->drop_seals = true;
  ASSERT_TRUE(f.writer->Put("k", "2").ok());
  f.hooked->drop_seals = false;
  f.hooked->lock_error = Status::IOError("injected: open lock file: Permission denied");
  for (bool read_only : {true, false}) {
    Options options;
    options.read_only = read_only;
    options.file_system = f.hooked;
    auto db = DB::Open(f.path, options);
    ASSERT_FALSE(db.ok()) << "took a commit it cannot know is not in flight";
    EXPECT_TRUE(db.status().IsIOError()) << db.status().ToString();
    EXPECT_NE(db.status().message().find("in-flight lock"), std::string::npos) << db.status().ToString();
  }
  f.hooked->lock_error = Status::Ok();
  EXPECT_EQ(**f.Reader(/*read_only=*/true)->Get("k"), "2");
}

// A read-only handle takes no lock it would have to create: with no lock file, no writer runs.
TEST(Seal, AReadOnlyHandleNeverCreatesTheLockFile) {
  Fixture f;
  f.hooked->drop_seals = true;
  ASSERT_TRUE(f.writer->Put("k", "2").ok());  // unsealed: a reader must ask the lock
  f.hooked->drop_seals = false;
  f.writer.reset();
  std::filesystem::remove(f.path + ".lock");
  auto read_only = f.Reader(/*read_only=*/true);
  EXPECT_EQ(**read_only->Get("k"), "2");
  EXPECT_FALSE(std::filesystem::exists(f.path + ".lock"));
}

// A writer that starts on a commit its writer left unsealed settles it (sync, then seal) first.
TEST(Seal, AWriterSealsTheUnsealedCommitItBuildsOn) {
  Fixture f;
  f.hooked->drop_seals = true;
  ASSERT_TRUE(f.writer->Put("k", "2").ok());
  f.hooked->drop_seals = false;
  uint64_t unsealed_size = f.FileSize();
  auto other = f.Reader();
  auto txn = other->BeginWrite();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ((*txn)->base_txn_id(), 2u);
  EXPECT_EQ(f.FileSize(), unsealed_size + format::kSealRecordSizeBytes);
  EXPECT_EQ(f.Reader(/*read_only=*/true)->GetStats()->txn_id, 2u) << "sealed: taken even while the lock is held";
  (*txn)->Abort();
}

}  // namespace
}  // namespace dbdb
