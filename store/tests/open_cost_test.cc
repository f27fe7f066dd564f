// What opening and refreshing read: recovery costs O(the unsynced tail), never O(the file).
// A counting FileSystemWrapper measures the bytes the store reads (not time: these are not timed
// tests). Found two defects of version 1: no-sync mode walked the whole commit chain on every
// open and every reader refresh, and a database followed by a sparse tail read the hole byte by
// byte on every open.
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "dbdb/db.h"
#include "test_util.h"
#include "tree_file.h"

namespace dbdb {
namespace {

using testing::TempDir;

class CountingFileSystem final : public FileSystemWrapper {
 public:
  CountingFileSystem() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::atomic<uint64_t> bytes_read{0};

  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    return std::unique_ptr<File>(new CountingFile(this, std::move(file)));
  }

 private:
  class CountingFile final : public FileWrapper {
   public:
    CountingFile(CountingFileSystem* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
      auto n = FileWrapper::ReadAt(offset, dst);
      if (n.ok()) fs_->bytes_read += *n;
      return n;
    }

   private:
    CountingFileSystem* fs_;
  };
};

constexpr uint64_t kMiB = 1024 * 1024;

// Opens `path` with `options` (read-only or not) through a CountingFileSystem: the handle, and
// the bytes opening read.
struct CountedOpen {
  std::unique_ptr<DB> db;
  uint64_t bytes_read = 0;
};
CountedOpen OpenCounting(const std::string& path, Options options, bool read_only) {
  auto counting = std::make_shared<CountingFileSystem>();
  options.file_system = counting;
  options.read_only = read_only;
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  if (!db.ok()) return {};
  return CountedOpen{std::move(db).value(), counting->bytes_read.load()};
}

// About 12 MiB: keys key0..key2999, each with a 4,000-byte value, in 30 batches of 100.
const std::string kBigValue(4000, 'v');
void WriteTwelveMiB(DB& db) {
  for (int batch = 0; batch < 30; batch++) {
    WriteBatch changes;
    for (int i = 0; i < 100; i++) changes.Put("key" + std::to_string(batch * 100 + i), kBigValue);
    ASSERT_TRUE(db.Write(changes).ok());
  }
}

// 12 MiB of no-sync commits; then a new handle opens, and a long-lived reader follows 200 more.
TEST(OpenCost, NoSyncOpenAndRefreshReadTheUnsyncedTailNotTheFile) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.durability = Durability::kNoSync;
  options.auto_compact = false;  // the file must grow past the bounds
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    std::string value(4000, 'v');
    for (int i = 0; std::filesystem::file_size(path) < 12 * kMiB; i++) {
      ASSERT_TRUE((*db)->Put("key" + std::to_string(i % 500), value).ok());
    }
  }
  auto counting = std::make_shared<CountingFileSystem>();
  Options reading = options;
  reading.file_system = counting;
  auto reader = DB::Open(path, reading);
  ASSERT_TRUE(reader.ok());
  uint64_t open_bytes = counting->bytes_read.load();
  // The bound: the tail since the last sync (at most unsynced_bytes_max), the batches since the
  // last fold (at most fold_threshold_bytes) plus one commit and the scan window, whatever the
  // file's size.
  EXPECT_LE(open_bytes, options.unsynced_bytes_max + options.fold_threshold_bytes + 2 * kMiB)
      << "opening a " << std::filesystem::file_size(path) << "-byte no-sync file read " << open_bytes << " bytes";

  auto writer = DB::Open(path, options);
  ASSERT_TRUE(writer.ok());
  counting->bytes_read = 0;
  uint64_t written_before = std::filesystem::file_size(path);
  for (int i = 0; i < 200; i++) {
    ASSERT_TRUE((*writer)->Put("new" + std::to_string(i), "x").ok());
    auto got = (*reader)->Get("new" + std::to_string(i));
    ASSERT_TRUE(got.ok() && got->has_value());
  }
  uint64_t appended = std::filesystem::file_size(path) - written_before;
  // Each refresh verifies only the commits it has not seen, plus a lookup: linear in what was
  // appended, not in the file times the refreshes.
  EXPECT_LE(counting->bytes_read.load(), 4 * appended + 200 * 64 * 1024)
      << "200 refreshes over " << appended << " appended bytes read " << counting->bytes_read.load() << " bytes";
}

// A valid database followed by a 2 GiB hole: opening must not read the hole.
TEST(OpenCost, ASparseTailIsNotReadByteByByte) {
  TempDir dir;
  const std::string path = dir.Path("db");
  {
    Options options;
    options.create_if_missing = true;
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Put("k", "v").ok());
  }
  uint64_t size = std::filesystem::file_size(path);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(size + 2048 * kMiB)), 0);
  for (bool read_only : {true, false}) {
    auto counting = std::make_shared<CountingFileSystem>();
    auto db = DB::Open(path, Options{.file_system = counting, .read_only = read_only});
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto got = (*db)->Get("k");
    ASSERT_TRUE(got.ok() && *got == std::optional<std::string>("v"));
    EXPECT_LE(counting->bytes_read.load(), 1 * kMiB) << "read_only=" << read_only;
  }
}

// A compacted file's first commit is its whole tree (its body is every node). Opening that file,
// or a reader following a compaction to it, must not hash that body: the nodes are verified
// when first used (I5), and opening stays O(the log after the tree), not O(the file).
TEST(OpenCost, OpeningACompactedFileDoesNotReadItsTree) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.checkpoint_on_close = false;  // the compaction's commit stays the newest
  auto writer = DB::Open(path, options);
  ASSERT_TRUE(writer.ok());
  WriteTwelveMiB(**writer);
  const std::string& value = kBigValue;
  // A reader of the file before the compaction, in this process (it follows the new file by the
  // old one's link count) and one opened afterwards.
  auto counting = std::make_shared<CountingFileSystem>();
  Options reading;
  reading.file_system = counting;
  reading.read_only = true;
  auto reader = DB::Open(path, reading);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  ASSERT_TRUE((*reader)->Get("key17").ok());
  ASSERT_TRUE((*writer)->Compact().ok());
  const uint64_t compacted = std::filesystem::file_size(path);
  ASSERT_GT(compacted, 8 * kMiB);
  counting->bytes_read = 0;
  auto got = (*reader)->Get("key2917");
  ASSERT_TRUE(got.ok() && *got == std::optional<std::string>(value)) << got.status().ToString();
  EXPECT_EQ((*reader)->GetStats()->generation, 1u) << "the reader did not follow the compaction";
  EXPECT_LE(counting->bytes_read.load(), 1 * kMiB)
      << "a reader following a compaction to a " << compacted << "-byte file read " << counting->bytes_read.load() << " bytes";
  writer->reset();
  ASSERT_EQ(std::filesystem::file_size(path), compacted) << "closing wrote after the compaction";
  for (bool read_only : {true, false}) {
    CountedOpen opened = OpenCounting(path, options, read_only);
    ASSERT_NE(opened.db, nullptr);
    EXPECT_LE(opened.bytes_read, 1 * kMiB)
        << "read_only=" << read_only << ": opening a " << compacted << "-byte compacted file read "
        << opened.bytes_read << " bytes";
    auto again = opened.db->Get("key1234");
    ASSERT_TRUE(again.ok() && *again == std::optional<std::string>(value)) << again.status().ToString();
  }
}

// Settling reads back and rewrites the commits no durable seal proves, back to the last point
// known durable. No-sync commits on a compacted file, by a handle that opened it after the
// compaction, name the file's start as that point: the settling writer after them must stop at
// the compacted commit (synced before the rename), not read and rewrite the whole tree.
TEST(OpenCost, SettlingNoSyncCommitsOnACompactedFileDoesNotRewriteTheTree) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.checkpoint_on_close = false;
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    WriteTwelveMiB(**db);
    ASSERT_TRUE((*db)->Compact().ok());
  }
  const uint64_t compacted = std::filesystem::file_size(path);
  ASSERT_GT(compacted, 8 * kMiB);
  {
    Options no_sync = options;
    no_sync.durability = Durability::kNoSync;
    // Above the file's size: this handle never syncs, so it never learns that the file is durable
    // (with the default 4 MiB it would settle the compacted commit at once, and know).
    no_sync.unsynced_bytes_max = 64 * kMiB;
    auto db = DB::Open(path, no_sync);
    ASSERT_TRUE(db.ok());
    for (int i = 0; i < 3; i++) ASSERT_TRUE((*db)->Put("nosync" + std::to_string(i), "x").ok());
  }
  auto counting = std::make_shared<CountingFileSystem>();
  Options settling = options;
  settling.file_system = counting;
  auto db = DB::Open(path, settling);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Put("synced", "y").ok());
  EXPECT_LE(counting->bytes_read.load(), 1 * kMiB)
      << "opening and one durable commit after no-sync commits on a " << compacted << "-byte compacted file read "
      << counting->bytes_read.load() << " bytes";
  auto got = (*db)->Get("nosync2");
  ASSERT_TRUE(got.ok() && *got == std::optional<std::string>("x")) << got.status().ToString();
}

// A handle opening at a checkpoint reads it once: the scan that finds the newest commit hashes its
// body (the checkpoint record, after the base's seal) and keeps it, and the overlay is built from
// those bytes. Before, the overlay read the record again and hashed it again: twice the bytes.
TEST(OpenCost, OpeningAtACheckpointReadsItOnce) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.fold_threshold_bytes = 64 * kMiB;  // the 12 MiB stay log, and the close's checkpoint restates them
  options.fold_on_close_bytes = UINT64_MAX;    // (a close fold would fold them instead: the test below)
  uint64_t before_close = 0;
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    WriteTwelveMiB(**db);
    before_close = testing::DataSize(**db);
  }
  const uint64_t checkpoint = std::filesystem::file_size(path) - before_close;
  ASSERT_GT(checkpoint, 8 * kMiB) << "closing wrote no checkpoint";
  for (bool read_only : {true, false}) {
    CountedOpen opened = OpenCounting(path, options, read_only);
    ASSERT_NE(opened.db, nullptr);
    EXPECT_LE(opened.bytes_read, checkpoint + 1 * kMiB)
        << "read_only=" << read_only << ": opening at a " << checkpoint << "-byte checkpoint read "
        << opened.bytes_read << " bytes";
    EXPECT_EQ(opened.db->GetStats()->unfolded_bytes, checkpoint) << "the handle is not at the checkpoint";
    for (const char* key : {"key0", "key1234", "key2999"}) {
      auto got = opened.db->Get(key);
      ASSERT_TRUE(got.ok() && *got == std::optional<std::string>(kBigValue)) << key << ": " << got.status().ToString();
    }
  }
}

// A close folds a log past fold_on_close_bytes, and the next open reads neither the log nor the
// fold's nodes: the fold is the newest commit, its body (every node it wrote, megabytes here) is
// not hashed when its seal says durable (TreeFile::IsDurableCloseFold), and nothing after it is
// left to replay. The fold restates the txn id; check() hashes its body and passes.
TEST(OpenCost, AfterACloseFoldOpeningReadsNeitherTheLogNorTheFold) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.fold_threshold_bytes = 64 * kMiB;  // the 12 MiB stay log until the close folds them
  uint64_t txn = 0, before_close = 0;
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    WriteTwelveMiB(**db);
    txn = (*db)->GetStats()->txn_id;
    ASSERT_GT((*db)->GetStats()->unfolded_bytes, 8 * kMiB);
    before_close = testing::DataSize(**db);
  }
  const uint64_t fold = std::filesystem::file_size(path) - before_close;
  ASSERT_GT(fold, 8 * kMiB) << "closing folded nothing";
  for (bool read_only : {true, false}) {
    CountedOpen opened = OpenCounting(path, options, read_only);
    ASSERT_NE(opened.db, nullptr);
    EXPECT_LE(opened.bytes_read, 1 * kMiB) << "read_only=" << read_only << ": opening after a " << fold
                                           << "-byte close fold read " << opened.bytes_read << " bytes";
    auto stats = opened.db->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->unfolded_bytes, 0u) << "the close did not fold the log";
    EXPECT_EQ(stats->txn_id, txn) << "a close fold restates the newest txn id";
    for (const char* key : {"key0", "key1234", "key2999"}) {
      auto got = opened.db->Get(key);
      ASSERT_TRUE(got.ok() && *got == std::optional<std::string>(kBigValue)) << key << ": " << got.status().ToString();
    }
    auto check = opened.db->Check();
    EXPECT_TRUE(check.ok()) << check.status().ToString();
  }
}

// The body a scan verified is kept for the commit it verified, named by its offset and its body
// checksum: a no-sync commit rolled back and replaced at the same offset by another commit of
// the same size is read from the file, never taken from the bytes kept for the first.
TEST(OpenCost, AKeptBodyIsNotTakenForAnotherCommitAtItsOffset) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.durability = Durability::kNoSync;
  options.auto_compact = false;
  options.checkpoint_on_close = false;
  options.allocate_ahead_bytes = 0;  // the file's size is where the last commit ends
  uint64_t base_end = 0;
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Put("a", "1").ok());
    base_end = std::filesystem::file_size(path);
    ASSERT_TRUE((*db)->Put("k", "old-value").ok());
  }
  auto fs = NewPosixFileSystem();
  auto tree = TreeFile::Open(*fs, path, /*read_only=*/true, 0, false);
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  auto found = (*tree)->FindNewestCommit((*tree)->file().Size().value(), format::kFileHeaderSizeBytes);
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status().ToString();
  ASSERT_TRUE(TreeFile::BodyIsBatch(**found)) << "its body is not kept";
  // Roll it back, and let another writer commit a change of the same size in its place.
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(base_end)), 0);
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Put("k", "new-value").ok());
  }
  auto replaced = (*tree)->ReadCommit((*found)->offset);
  ASSERT_TRUE(replaced.ok()) << "the new commit is not at the old one's offset: " << replaced.status().ToString();
  ASSERT_NE(replaced->body_checksum, (*found)->body_checksum);
  ReadBytes buffer;
  auto batch = (*tree)->ReadBatch(*replaced, &buffer);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  ASSERT_EQ(batch->size(), 1u);
  EXPECT_EQ((*batch)[0].value, std::optional<std::string_view>("new-value"));
}

}  // namespace
}  // namespace dbdb
