// Compaction (I8): the newest commit survives, the file shrinks, readers keep reading, other
// handles follow the new file, and stats report the garbage before and after.
#include <cstdlib>
#include <filesystem>

#include "dbdb/db.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::TempDir;

// Every commit folds and nothing compacts by itself: each commit rewrites its leaf-to-root path,
// so garbage builds up for Compact() to reclaim (automatic compaction: log_fold_test.cc).
std::unique_ptr<DB> Open(const std::string& path) {
  Options options;
  options.create_if_missing = true;
  options.fold_threshold_bytes = 0;
  options.auto_compact = false;
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return std::move(db).value();
}

TEST(Compaction, KeepsTheNewestCommitAndShrinksTheFile) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto db = Open(path);
  for (int round = 0; round < 5; round++) {
    auto txn = db->BeginWrite();
    for (int i = 0; i < 2000; i++) {
      ASSERT_TRUE((*txn)->Put("key" + std::to_string(i), std::to_string(round) + std::string(90, 'v')).ok());
    }
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  ASSERT_TRUE(db->Del("key7").ok());
  auto before = db->GetStats();
  ASSERT_TRUE(before.ok());
  EXPECT_GT(before->garbage_ratio, 0.5);
  auto snapshot = db->GetSnapshot();  // taken before compaction, read after it
  ASSERT_TRUE(db->Compact().ok());
  auto after = db->GetStats();
  EXPECT_EQ(after->keys, 1999u);
  EXPECT_EQ(after->txn_id, before->txn_id) << "compaction preserves the commit, not makes one";
  EXPECT_EQ(after->generation, 1u);
  EXPECT_EQ(after->commits_in_file, 1u);
  EXPECT_LT(after->garbage_ratio, 0.01);
  EXPECT_LT(after->file_size_bytes, before->file_size_bytes / 3);
  EXPECT_EQ(std::filesystem::file_size(path), after->file_size_bytes);
  EXPECT_FALSE(std::filesystem::exists(path + ".compact"));
  EXPECT_EQ(**(*snapshot)->Get("key5"), "4" + std::string(90, 'v')) << "old snapshot reads the old file";
  EXPECT_FALSE((*snapshot)->Get("key7")->has_value());
  auto report = db->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->keys, 1999u);
  ASSERT_TRUE(db->Put("new", "1").ok());
  EXPECT_EQ(db->GetStats()->txn_id, before->txn_id + 1);
}

TEST(Compaction, OtherHandlesFollowTheNewFile) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto a = Open(path);
  auto b = Open(path);
  ASSERT_TRUE(a->Put("x", "1").ok());
  ASSERT_EQ(**b->Get("x"), "1");
  ASSERT_TRUE(a->Compact().ok());
  ASSERT_TRUE(b->Put("y", "2").ok()) << "b writes to the new file, not the replaced one";
  EXPECT_EQ(**a->Get("y"), "2");
  EXPECT_EQ(**b->Get("x"), "1");
  auto reopened = Open(path);
  EXPECT_EQ(**reopened->Get("y"), "2");
  EXPECT_TRUE(reopened->Check().ok());
}

// A handle that only reads notices the replacement through its file's link count.
TEST(Compaction, ReaderOnlyHandlesFollowTheNewFile) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto writer = Open(path);
  Options options;
  options.read_only = true;
  ASSERT_TRUE(writer->Put("x", "1").ok());
  auto reader = DB::Open(path, options);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(**(*reader)->Get("x"), "1");
  ASSERT_TRUE(writer->Compact().ok());
  ASSERT_TRUE(writer->Put("x", "2").ok());
  EXPECT_EQ(**(*reader)->Get("x"), "2") << "the reader still reads the replaced file";
  EXPECT_EQ((*reader)->GetStats()->generation, 1u);
}

TEST(Compaction, EmptyDatabaseAndEmptyTree) {
  TempDir dir;
  auto db = Open(dir.Path("db"));
  EXPECT_TRUE(db->Compact().ok());
  ASSERT_TRUE(db->Put("a", "1").ok());
  ASSERT_TRUE(db->Del("a").ok());
  ASSERT_TRUE(db->Compact().ok());
  EXPECT_EQ(db->GetStats()->keys, 0u);
  EXPECT_TRUE(db->Check().ok());
  ASSERT_TRUE(db->Put("b", "2").ok());
  EXPECT_EQ(**db->Get("b"), "2");
}

TEST(Compaction, StaleTempFileFromACrashIsReplaced) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto db = Open(path);
  ASSERT_TRUE(db->Put("a", "1").ok());
  {
    auto fs = NewPosixFileSystem();
    auto f = fs->Open(path + ".compact", OpenOptions{.create = true});
    ASSERT_TRUE((*f)->WriteAt(0, std::string(10000, 'z')).ok());
  }
  ASSERT_TRUE(db->Compact().ok());
  EXPECT_EQ(**db->Get("a"), "1");
  EXPECT_TRUE(db->Check().ok());
}

// Long tier only (DBDB_TEST_TIER=long): compaction of more than 64 MiB of live data, with keys
// of any bytes, then every key read back and check() over the result (I8).
TEST(Compaction, MoreThan64MiBOfLiveData) {
  const char* tier = std::getenv("DBDB_TEST_TIER");
  if (tier == nullptr || std::string(tier) != "long") GTEST_SKIP() << "long tier only";
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.durability = Durability::kNoSync;
  auto opened = DB::Open(path, options);
  ASSERT_TRUE(opened.ok());
  auto& db = *opened;
  const int kKeys = 70 * 1024;  // 70 MiB of 1 KiB values
  auto key = [](int i) {
    std::string k(8, '\0');
    for (int b = 0; b < 4; b++) k[b] = static_cast<char>(0xff - ((i >> (8 * b)) & 0xff));
    return k + std::to_string(i);
  };
  for (int batch = 0; batch < kKeys / 1024; batch++) {
    auto txn = db->BeginWrite();
    ASSERT_TRUE(txn.ok());
    for (int i = batch * 1024; i < (batch + 1) * 1024; i++) {
      ASSERT_TRUE((*txn)->Put(key(i), std::string(1024, static_cast<char>('a' + i % 26))).ok());
    }
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  ASSERT_TRUE(db->Compact().ok());
  auto stats = db->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, static_cast<uint64_t>(kKeys));
  EXPECT_GT(stats->live_bytes, uint64_t{64} << 20);
  auto report = db->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  db.reset();
  auto reopened = DB::Open(path, Options{.read_only = true});
  ASSERT_TRUE(reopened.ok());
  for (int i = 0; i < kKeys; i += 97) {
    auto got = (*reopened)->Get(key(i));
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ(**got, std::string(1024, static_cast<char>('a' + i % 26)));
  }
}

}  // namespace
}  // namespace dbdb
