// Space allocated ahead (Options::allocate_ahead_bytes): a writer grows the file ahead of its
// commits so that their syncs record no new size; the zeros after the newest commit are never a
// tail, and a closing handle cuts them.
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "dbdb/db.h"
#include "dbdb/file_system.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::DataSize;
using testing::TempDir;

// Files whose Allocate answers as `allocate` says, given the real file (null: as the real file
// system does), counting the calls.
class AllocatingFileSystem final : public FileSystemWrapper {
 public:
  AllocatingFileSystem() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::function<Result<bool>(File& real, uint64_t offset, uint64_t length)> allocate;
  int allocations = 0;

  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    return std::unique_ptr<File>(new AllocatingFile(this, std::move(file)));
  }

 private:
  class AllocatingFile final : public FileWrapper {
   public:
    AllocatingFile(AllocatingFileSystem* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Result<bool> Allocate(uint64_t offset, uint64_t length) override {
      fs_->allocations++;
      if (fs_->allocate) return fs_->allocate(base(), offset, length);
      return FileWrapper::Allocate(offset, length);
    }

   private:
    AllocatingFileSystem* fs_;
  };
};

std::unique_ptr<DB> OpenOrDie(const std::string& path, std::shared_ptr<FileSystem> fs, uint64_t allocate_ahead = 64 * 1024) {
  Options options;
  options.create_if_missing = true;
  options.file_system = std::move(fs);
  options.allocate_ahead_bytes = allocate_ahead;
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return std::move(db).value();
}

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

// Commits write into the space allocated ahead of them: the file's size moves once per
// allocation, not with each commit, and what follows the newest commit reads as zeros. Closing
// cuts them; the next open finds every commit.
TEST(Allocate, CommitsWriteIntoSpaceAllocatedAheadAndClosingCutsWhatIsLeft) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<AllocatingFileSystem>();
  {
    auto db = OpenOrDie(path, fs);
    ASSERT_TRUE(db->Put("k0", "v").ok());
    const uint64_t size = FileSize(path);
    for (int i = 1; i < 100; i++) ASSERT_TRUE(db->Put("k" + std::to_string(i), std::string(100, 'v')).ok());
    EXPECT_EQ(FileSize(path), size) << "100 small commits did not fit in 64 KiB allocated ahead";
    EXPECT_EQ(fs->allocations, 1);
    auto stats = db->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_GT(stats->allocated_bytes, 32u * 1024);
    EXPECT_EQ(stats->file_size_bytes, size);
    const uint64_t data_end = DataSize(*db);
    const std::string bytes = testing::ReadFile(path);
    EXPECT_EQ(bytes.find_first_not_of('\0', data_end), std::string::npos) << "not zeros after the newest commit";
    auto report = db->Check();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->tail_bytes, 0u);
    EXPECT_EQ(report->allocated_bytes, size - data_end);
    // Past the space allocated: one more allocation.
    for (int i = 0; i < 10; i++) ASSERT_TRUE(db->Put("big" + std::to_string(i), std::string(10000, 'b')).ok());
    EXPECT_EQ(fs->allocations, 2);
  }
  auto db = OpenOrDie(path, fs);
  auto stats = db->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 110u);
  EXPECT_EQ(stats->allocated_bytes, 0u) << "closing did not cut the zeros allocated ahead";
  EXPECT_EQ(stats->file_size_bytes, FileSize(path));
}

// A large commit allocates ahead eight times its own size (more than allocate_ahead_bytes), at
// most 1 MiB, so that batch commits too grow the file, and record a new size in their sync, only
// once in several commits; never more zeros than any writer keeps (1 MiB and a page).
TEST(Allocate, LargeCommitsAllocateAheadEightTimesTheirSizeUpTo1MiB) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<AllocatingFileSystem>();
  auto db = OpenOrDie(path, fs);
  auto commit = [&](int n, int puts, size_t value_bytes) {
    WriteBatch batch;
    for (int i = 0; i < puts; i++) batch.Put("k" + std::to_string(n * 10000 + i), std::string(value_bytes, 'v'));
    ASSERT_TRUE(db->Write(batch).ok());
    auto stats = db->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_LE(stats->allocated_bytes, (uint64_t{1} << 20) + 4096) << "commit " << n;
  };
  commit(0, 1000, 100);  // about 110 KB: allocates eight of it ahead
  int before = fs->allocations;
  for (int n = 1; n <= 16; n++) commit(n, 1000, 100);
  EXPECT_GE(fs->allocations - before, 1);
  EXPECT_LE(fs->allocations - before, 3) << "16 commits of 110 KB, each of which 64 KiB would not hold";
  before = fs->allocations;
  for (int n = 17; n <= 28; n++) commit(n, 1000, 400);  // about 420 KB: 1 MiB holds two
  EXPECT_GE(fs->allocations - before, 4) << "more than 1 MiB allocated at once";
  EXPECT_LE(fs->allocations - before, 6);
  auto report = db->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->tail_bytes, 0u);
}

// A handle closing after another writer committed into its space cuts only what follows the
// newest commit, never that commit.
TEST(Allocate, AClosingHandleCutsOnlyTheZerosAfterTheNewestCommit) {
  for (Durability durability : {Durability::kSync, Durability::kNoSync}) {
    TempDir dir;
    const std::string path = dir.Path("db");
    Options options;
    options.create_if_missing = true;
    options.durability = durability;
    auto first = DB::Open(path, options);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE((*first)->Put("a", "1").ok());
    {
      auto second = DB::Open(path, options);
      ASSERT_TRUE(second.ok());
      ASSERT_TRUE((*second)->Put("b", "2").ok());
      ASSERT_TRUE((*first)->Put("c", "3").ok());  // the first writer comes back
      ASSERT_TRUE((*second)->Put("d", "4").ok());
    }
    first->reset();  // closes after the second wrote last
    auto reopened = DB::Open(path, options);
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    for (const char* key : {"a", "b", "c", "d"}) {
      auto got = (*reopened)->Get(key);
      ASSERT_TRUE(got.ok() && got->has_value()) << key << " was lost when a handle closed";
    }
    auto report = (*reopened)->Check();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->tail_bytes, 0u);
  }
}

// Without a checkpoint to write on close, a handle whose last commit allocated ahead cuts the
// zeros when no writer came since, and leaves the file alone when one did.
TEST(Allocate, AClosingHandleWithoutACheckpointCutsOnlyWhatItLeft) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.checkpoint_on_close = false;
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Put("a", "1").ok());
    EXPECT_GT((*db)->GetStats()->allocated_bytes, 0u);
  }
  auto reopened = DB::Open(path, options);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->GetStats()->allocated_bytes, 0u) << "the close did not cut what it allocated";
  EXPECT_EQ((*reopened)->GetStats()->file_size_bytes, FileSize(path));
  // Another writer since: the first one's close must not cut, and nothing is lost.
  ASSERT_TRUE((*reopened)->Put("b", "2").ok());
  {
    auto other = DB::Open(path, options);
    ASSERT_TRUE(other.ok());
    ASSERT_TRUE((*other)->Put("c", "3").ok());
    reopened->reset();  // after the other's commit
    ASSERT_TRUE((*other)->Put("d", "4").ok());
  }
  auto last = DB::Open(path, options);
  ASSERT_TRUE(last.ok());
  for (const char* key : {"a", "b", "c", "d"}) EXPECT_TRUE((*last)->Get(key)->has_value()) << key;
  EXPECT_EQ((*last)->GetStats()->allocated_bytes, 0u);
}

// A file system that cannot allocate: the file grows with each commit, as before.
TEST(Allocate, AFileSystemThatCannotAllocateGrowsTheFileWithEachCommit) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<AllocatingFileSystem>();
  fs->allocate = [](File&, uint64_t, uint64_t) { return Result<bool>(false); };
  auto db = OpenOrDie(path, fs);
  for (int i = 0; i < 20; i++) {
    ASSERT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
    EXPECT_EQ(FileSize(path), DataSize(*db));
  }
  EXPECT_EQ(fs->allocations, 1) << "asked again after it said it cannot";
}

// An allocation that fails (a full disk) is not the commit's failure: the commit's own write
// decides, and nothing is lost, whether the failed allocation grew the file by nothing or by part
// of its range (zeros, which the next commit writes into).
TEST(Allocate, AFailedAllocationIsNotTheCommitsFailure) {
  for (uint64_t grown : {uint64_t{0}, uint64_t{1000}, uint64_t{5000}}) {
    SCOPED_TRACE(grown);
    TempDir dir;
    const std::string path = dir.Path("db");
    auto fs = std::make_shared<AllocatingFileSystem>();
    fs->allocate = [grown](File& real, uint64_t offset, uint64_t) -> Result<bool> {
      if (grown > 0) DBDB_RETURN_IF_ERROR(real.Truncate(offset + grown));
      return Status::NoSpace("injected: fallocate: No space left on device");
    };
    {
      auto db = OpenOrDie(path, fs);
      for (int i = 0; i < 20; i++) ASSERT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
      EXPECT_GE(fs->allocations, grown == 0 ? 20 : 1) << "a commit past the file's end does not try again";
      EXPECT_LE(FileSize(path) - DataSize(*db), grown);
      auto report = db->Check();
      ASSERT_TRUE(report.ok()) << report.status().ToString();
      EXPECT_EQ(report->tail_bytes, 0u);
      EXPECT_EQ(report->commits, 20u);
    }
    fs->allocate = nullptr;
    auto db = OpenOrDie(path, fs);
    EXPECT_EQ(db->GetStats()->keys, 20u);
  }
}

// 0 turns it off.
TEST(Allocate, ZeroAllocatesNothing) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<AllocatingFileSystem>();
  auto db = OpenOrDie(path, fs, /*allocate_ahead=*/0);
  for (int i = 0; i < 5; i++) ASSERT_TRUE(db->Put("k" + std::to_string(i), "v").ok());
  EXPECT_EQ(fs->allocations, 0);
  EXPECT_EQ(FileSize(path), DataSize(*db));
  Options too_much;
  too_much.allocate_ahead_bytes = (uint64_t{1} << 20) + 1;
  EXPECT_EQ(DB::Open(path, too_much).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dbdb
