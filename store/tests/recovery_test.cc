// Recovery on the real filesystem: torn tails are ignored by readers and truncated by the first
// writer (I6); damage inside the committed region is Corruption, never skipped (I5).
#include <filesystem>

#include "dbdb/db.h"
#include "format.h"
#include "test_util.h"

namespace dbdb {
namespace {

using testing::TempDir;

std::unique_ptr<DB> Open(const std::string& path, bool read_only = false) {
  Options options;
  options.create_if_missing = !read_only;
  options.read_only = read_only;
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

void Append(const std::string& path, const std::string& bytes) {
  auto fs = NewPosixFileSystem();
  auto f = fs->Open(path, OpenOptions{});
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(*(*f)->Size(), bytes).ok());
}

void FlipByte(const std::string& path, uint64_t offset) {
  auto fs = NewPosixFileSystem();
  auto f = fs->Open(path, OpenOptions{});
  std::string b(1, '\0');
  ASSERT_EQ(*(*f)->ReadAt(offset, b), 1u);
  b[0] ^= 0x40;
  ASSERT_TRUE((*f)->WriteAt(offset, b).ok());
}

TEST(Recovery, NewDatabaseIsAHeaderOnly) {
  TempDir dir;
  auto db = Open(dir.Path("db"));
  EXPECT_EQ(FileSize(dir.Path("db")), format::kFileHeaderSizeBytes);
  EXPECT_FALSE(std::filesystem::exists(dir.Path("db.create"))) << "the creation temp file is renamed away";
}

// Zeros after the newest commit are space allocated ahead, not a tail: reported apart, kept by
// the next writer (and written over), and not counted in tail_bytes; zeros after a non-zero byte,
// or more zeros than any writer allocates ahead, are a tail like any other. (The writer does not sync each commit: a kSync
// writer settles a base it did not sync itself, which cuts whatever follows it anyway.)
TEST(Recovery, GarbageTailIsIgnoredByReadersAndTruncatedByTheFirstWriter) {
  struct Case {
    std::string tail;
    uint64_t tail_bytes;  // as check() reports it
    bool kept;            // the next writer writes over it instead of cutting it
  };
  const std::string garbage = std::string(3000, '\0') + "x" + std::string(3000, '\0');
  for (const Case& c : {Case{std::string(1, 'x'), 1, false}, Case{std::string(5000, '\0'), 0, true},
                        Case{std::string(70000, 'g'), 70000, false}, Case{garbage, 6001, false},
                        Case{std::string(2 << 20, '\0'), 2 << 20, false}}) {
    SCOPED_TRACE(c.tail.size());
    TempDir dir;
    const std::string path = dir.Path("db");
    { ASSERT_TRUE(Open(path)->Put("a", "1").ok()); }
    uint64_t committed = FileSize(path);
    Append(path, c.tail);
    {
      auto reader = Open(path, /*read_only=*/true);
      EXPECT_EQ(**reader->Get("a"), "1");
      EXPECT_EQ(reader->Check()->tail_bytes, c.tail_bytes);
      EXPECT_EQ(reader->Check()->allocated_bytes, c.tail.size() - c.tail_bytes);
      EXPECT_EQ(FileSize(path), committed + c.tail.size()) << "a reader never modifies the file";
    }
    Options no_sync;
    no_sync.durability = Durability::kNoSync;
    auto opened = DB::Open(path, no_sync);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto& writer = *opened;
    EXPECT_EQ(**writer->Get("a"), "1");
    ASSERT_TRUE(writer->Put("b", "2").ok());
    auto report = writer->Check();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->tail_bytes, 0u);
    EXPECT_EQ(report->commits, 2u);
    const uint64_t data_end = FileSize(path) - report->allocated_bytes;
    EXPECT_LT(data_end, committed + 2000) << "the tail was cut (or, zeros, written over) before appending";
    if (c.kept) {
      EXPECT_EQ(FileSize(path), committed + c.tail.size()) << "zeros allocated ahead were cut";
    } else {
      EXPECT_LT(FileSize(path), committed + 2000 + 128 * 1024) << "the tail was not cut";
    }
  }
  // A file grown by hand past any allocation, as a hole (no byte of it is read): a tail too.
  TempDir dir;
  const std::string path = dir.Path("db");
  { ASSERT_TRUE(Open(path)->Put("a", "1").ok()); }
  const uint64_t committed = FileSize(path);
  std::filesystem::resize_file(path, committed + (64 << 20));
  Options no_sync;
  no_sync.durability = Durability::kNoSync;
  auto writer = DB::Open(path, no_sync);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE((*writer)->Put("b", "2").ok());
  EXPECT_LT(FileSize(path), committed + 2000 + 128 * 1024) << "64 MiB of zeros were kept as space allocated ahead";
}

// One read that hides the newest commit's first bytes (a bit flipped in the read, not on disk):
// a reader's scan finds the commit before it, with bytes above it that are not a candidate.
// Those bytes are read again before the answer is taken; without that (mutant 112), a no-sync
// commit, which no durable seal proves, is missing from a reader that looks after it returned.
TEST(Recovery, OneReadHidingTheNewestCommitDoesNotHideItFromAReader) {
  class FlipOnce final : public FileSystemWrapper {
   public:
    explicit FlipOnce(std::string path) : FileSystemWrapper(NewPosixFileSystem()), path_(std::move(path)) {}
    std::optional<uint64_t> at;  // armed: flip a bit of the next read that covers this offset
    int flipped = 0;
    Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
      DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
      if (path != path_) return file;
      return std::unique_ptr<File>(new Flipping(this, std::move(file)));
    }

   private:
    class Flipping final : public FileWrapper {
     public:
      Flipping(FlipOnce* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
      Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
        auto n = FileWrapper::ReadAt(offset, dst);
        if (n.ok() && fs_->at && offset <= *fs_->at && *fs_->at < offset + *n) {
          dst[*fs_->at - offset] ^= 1;
          fs_->at.reset();
          fs_->flipped++;
        }
        return n;
      }

     private:
      FlipOnce* fs_;
    };
    std::string path_;
  };
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.durability = Durability::kNoSync;  // no durable seal proves the newest commit
  options.allocate_ahead_bytes = 0;          // the file ends at the newest commit's seal
  auto writer = DB::Open(path, options);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Put("a", "1").ok());
  auto fs = std::make_shared<FlipOnce>(path);
  Options reading = options;
  reading.file_system = fs;
  reading.read_only = true;
  auto reader = DB::Open(path, reading);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  for (int i = 0; i < 2; i++) ASSERT_TRUE((*reader)->Get("a")->has_value());  // settled on commit 1
  ASSERT_TRUE((*writer)->Put("b", "2").ok());
  ASSERT_TRUE((*writer)->Put("c", "3").ok());
  fs->at = FileSize(path) - format::kSealRecordSizeBytes - format::kCommitRecordSizeBytes;  // its first byte
  auto got = (*reader)->Get("c");
  EXPECT_EQ(fs->flipped, 1) << "no read covered the newest commit";
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->has_value()) << "one bad read hid a commit that returned before the reader looked";
}

// A transaction cut short at every byte: recovery lands on the previous commit, until the cut
// falls inside the seal that follows a complete commit record, which is then the newest commit.
TEST(Recovery, TornLastTransactionAtEveryLengthFallsBackToThePreviousCommit) {
  TempDir dir;
  const std::string path = dir.Path("db");
  { ASSERT_TRUE(Open(path)->Put("a", "1").ok()); }
  uint64_t first_end = FileSize(path);
  { ASSERT_TRUE(Open(path)->Put("a", "2").ok()); }
  uint64_t second_end = FileSize(path);
  std::string full(second_end, '\0');
  {
    auto fs = NewPosixFileSystem();
    auto f = fs->Open(path, OpenOptions{});
    ASSERT_EQ(*(*f)->ReadAt(0, full), second_end);
  }
  for (uint64_t cut = first_end; cut < second_end; cut++) {
    auto fs = NewPosixFileSystem();
    {
      auto f = fs->Open(path, OpenOptions{});
      ASSERT_TRUE((*f)->Truncate(0).ok());
      ASSERT_TRUE((*f)->WriteAt(0, std::string_view(full).substr(0, cut)).ok());
    }
    auto db = Open(path);
    auto v = db->Get("a");
    ASSERT_TRUE(v.ok()) << "cut at " << cut << ": " << v.status().ToString();
    bool record_complete = cut >= second_end - format::kSealRecordSizeBytes;
    EXPECT_EQ(**v, record_complete ? "2" : "1") << "cut at " << cut;
  }
}

// A commit record that arrived without its nodes (reordered writes) must not be accepted.
TEST(Recovery, CommitWhoseBodyIsDamagedIsNotAccepted) {
  TempDir dir;
  const std::string path = dir.Path("db");
  { ASSERT_TRUE(Open(path)->Put("a", "1").ok()); }
  uint64_t first_end = FileSize(path);
  { ASSERT_TRUE(Open(path)->Put("a", "2").ok()); }
  uint64_t sealed_end = FileSize(path);
  FlipByte(path, first_end + 3);  // inside the second transaction's first node
  // Its durable seal proves commit 2 was synced: damage, not a torn write. Falling back to commit
  // 1 would lose an acknowledged commit (and a writer would cut it away for good): Corruption.
  Options options;
  options.read_only = true;
  auto refused = DB::Open(path, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(refused.status().IsCorruption()) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("seal proves"), std::string::npos) << refused.status().ToString();
  // Without the seal (a commit whose writer died before its sync returned) the damaged commit is
  // a torn write: recovery takes commit 1.
  std::filesystem::resize_file(path, sealed_end - format::kSealRecordSizeBytes);
  auto db = Open(path, true);
  EXPECT_EQ(**db->Get("a"), "1");
  EXPECT_EQ(db->GetStats()->txn_id, 1u);
}

TEST(Recovery, DamageInsideTheCommittedRegionIsCorruption) {
  TempDir dir;
  const std::string path = dir.Path("db");
  {
    auto db = Open(path);
    for (int i = 0; i < 50; i++) ASSERT_TRUE(db->Put("key" + std::to_string(i), std::string(50, 'v')).ok());
  }
  // Flip a byte in the first transaction's leaf, long before the newest commit: the newest tree
  // still reaches it only if that leaf is still live; check() reads every record regardless.
  FlipByte(path, format::kFileHeaderSizeBytes + 10);
  auto db = Open(path, true);
  auto report = db->Check();
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(report.status().IsCorruption()) << report.status().ToString();
  EXPECT_NE(report.status().message().find("offset 512"), std::string::npos) << report.status().ToString();
}

// A live node written by an older transaction is damaged: the newest commit still verifies (its
// own body is intact) and reading the damaged node is Corruption, never wrong data.
// Small nodes, so that 100 keys span several leaves; the first leaf holds "a1000".
Options SmallNodes() {
  Options options;
  options.create_if_missing = true;
  options.node_size_target_bytes = 512;
  options.key_size_max_bytes = 64;
  return options;
}

// One transaction of keys a1000..a1099, 20-byte values.
void CommitHundredKeys(DB& db) {
  auto txn = db.BeginWrite();
  ASSERT_TRUE(txn.ok());
  for (int i = 0; i < 100; i++) ASSERT_TRUE((*txn)->Put("a" + std::to_string(1000 + i), std::string(20, 'v')).ok());
  ASSERT_TRUE((*txn)->Commit().ok());
}

TEST(Recovery, DamagedLiveNodeIsCorruptionOnRead) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options = SmallNodes();
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    CommitHundredKeys(**db);
    ASSERT_TRUE((*db)->Put("z", "last").ok());  // rewrites the last leaf and the root only
  }
  FlipByte(path, format::kFileHeaderSizeBytes + 20);  // inside the first leaf, holding "a1000"
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->GetStats()->txn_id, 2u);
  EXPECT_EQ(**(*db)->Get("z"), "last");
  auto damaged = (*db)->Get("a1000");
  ASSERT_FALSE(damaged.ok());
  EXPECT_TRUE(damaged.status().IsCorruption()) << damaged.status().ToString();
  auto report = (*db)->Check();
  EXPECT_TRUE(report.status().IsCorruption());
  auto snapshot = (*db)->GetSnapshot();
  auto scan = (*snapshot)->Scan(ScanRange{});
  EXPECT_TRUE(scan.status().IsCorruption()) << "a scan reaching the damaged leaf fails";
}

// A compacted file's first commit is the tree itself, and opening does not hash that body (it
// would be a pass over the whole file; docs/PERSISTENCE.md, "Opening a compacted file"). Damage
// in one of its nodes is therefore found when the node is first used, and only there: opening
// succeeds, the damaged leaf's keys are Corruption, never wrong data, and check() finds it.
TEST(Recovery, DamageInACompactedTreeIsCorruptionAtFirstUseNotAtOpen) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options = SmallNodes();
  options.checkpoint_on_close = false;  // the compaction's commit stays the newest
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    CommitHundredKeys(**db);
    ASSERT_TRUE((*db)->Compact().ok());
  }
  FlipByte(path, format::kFileHeaderSizeBytes + 20);  // inside the compacted tree's first leaf ("a1000")
  for (bool read_only : {true, false}) {
    Options reopen = options;
    reopen.read_only = read_only;
    auto db = DB::Open(path, reopen);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ((*db)->GetStats()->txn_id, 1u);
    EXPECT_EQ((*db)->GetStats()->generation, 1u);
    auto intact = (*db)->Get("a1099");  // another leaf
    ASSERT_TRUE(intact.ok()) << intact.status().ToString();
    EXPECT_EQ(*intact, std::optional<std::string>(std::string(20, 'v')));
    auto damaged = (*db)->Get("a1000");
    ASSERT_FALSE(damaged.ok()) << "a damaged leaf of a compacted tree was read";
    EXPECT_TRUE(damaged.status().IsCorruption()) << damaged.status().ToString();
    auto report = (*db)->Check();  // reads every record
    EXPECT_TRUE(report.status().IsCorruption()) << "check() passed a compacted tree with a damaged leaf";
  }
}

// The exemption is for the commit compaction wrote, not for any first commit of a file whose
// generation is 1 or more: a writer's first commit there (in an upgraded empty file, a header of
// generation 1 or more and no commit, like this one; or after the compacted commit was lost) is
// hashed like any other, so a torn one is not taken.
TEST(Recovery, AWritersFirstCommitInACompactedFileIsHashed) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.checkpoint_on_close = false;
  options.allocate_ahead_bytes = 0;  // the file's size is where the last commit ends
  options.fold_threshold_bytes = 0;  // every commit folds: the first commit is a tree, as compaction's is
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Put("a", "1").ok());
    ASSERT_TRUE((*db)->Compact().ok());
  }
  std::filesystem::resize_file(path, format::kFileHeaderSizeBytes);  // generation 1, no commit
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    ASSERT_TRUE((*db)->Put("b", "2").ok());
    EXPECT_EQ((*db)->GetStats()->generation, 1u);
  }
  // Torn: the seal never came, and the leaf did not arrive whole.
  std::filesystem::resize_file(path, FileSize(path) - format::kSealRecordSizeBytes);
  FlipByte(path, format::kFileHeaderSizeBytes + 10);
  Options reading = options;
  reading.read_only = true;
  auto db = DB::Open(path, reading);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ((*db)->GetStats()->txn_id, 0u) << "a torn first commit was taken";
  auto got = (*db)->Get("b");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, std::nullopt);
}

TEST(Recovery, TruncatedHeaderIsCorruptionNotANewDatabase) {
  TempDir dir;
  const std::string path = dir.Path("db");
  { ASSERT_TRUE(Open(path)->Put("a", "1").ok()); }
  std::filesystem::resize_file(path, 100);
  Options options;
  options.create_if_missing = true;
  auto db = DB::Open(path, options);
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsCorruption()) << db.status().ToString();
}

}  // namespace
}  // namespace dbdb
