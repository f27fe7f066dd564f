// Compaction (I8): the newest commit survives, the file shrinks, readers keep reading, other
// handles follow the new file, and stats report the garbage before and after.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "dbdb/db.h"
#include "format.h"
#include "node.h"
#include "test_util.h"
#include "tree.h"
#include "tree_file.h"

namespace dbdb {
namespace {

Options ReadOnlyOptions() {
  Options options;
  options.read_only = true;
  return options;
}

using testing::ReadFile;
using testing::TempDir;
using testing::WaitForChild;

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

// A compacted tree's separators are the shortest prefixes of each leaf's first key that lie above
// every key of the leaf before it (bulk_loader.cc), and route every key where it lies.
TEST(Compaction, SeparatorsAreTheShortestPrefixesThatSplitTheLeaves) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.node_size_target_bytes = 512;  // many leaves, a tree of height 3 or more
  options.key_size_max_bytes = 64;
  std::map<std::string, std::string> expected;
  {
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto txn = (*db)->BeginWrite();
    ASSERT_TRUE(txn.ok());
    std::mt19937_64 rng(5);
    for (int i = 0; i < 3000; i++) {
      // Neighbours share prefixes of many lengths: a separator may be 5 bytes or 20.
      std::string key = "user/" + std::to_string(rng() % 1000) + "/" + std::to_string(rng() % 100000000);
      expected[key] = std::string(1 + rng() % 60, 'a' + i % 26);
      ASSERT_TRUE((*txn)->Put(key, expected[key]).ok());
    }
    ASSERT_TRUE((*txn)->Commit().ok());
    ASSERT_TRUE((*db)->Compact().ok());
    auto report = (*db)->Check();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    for (const auto& [key, value] : expected) {
      auto got = (*db)->Get(key);
      ASSERT_TRUE(got.ok() && got->has_value() && **got == value) << key;
    }
  }
  auto fs = NewPosixFileSystem();
  auto tree = TreeFile::Open(*fs, path, true, 0, false);
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  auto newest = (*tree)->FindNewestCommit((*tree)->file().Size().value(), format::kFileHeaderSizeBytes);
  ASSERT_TRUE(newest.ok() && newest->has_value());
  const TreeRoot root = RootOf(**newest);
  ASSERT_GE(root.height, 3u);
  struct Leaf {
    std::optional<std::string> separator;  // the one that routes to it (none for the first leaf)
    std::string first, last;
  };
  std::vector<Leaf> leaves;
  std::function<void(NodeRef, uint32_t, std::optional<std::string>)> walk = [&](NodeRef ref, uint32_t height,
                                                                             std::optional<std::string> separator) {
    auto node = (*tree)->ReadNodeUncached(ref);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    if (height == 1) {
      leaves.push_back(Leaf{separator, std::string((*node)->keys.front()), std::string((*node)->keys.back())});
      return;
    }
    for (size_t i = 0; i < (*node)->children.size(); i++) {
      walk((*node)->children[i], height - 1, i == 0 ? separator : std::string((*node)->keys[i]));
    }
  };
  walk(root.ref, root.height, std::nullopt);
  ASSERT_GT(leaves.size(), 100u);
  size_t shorter = 0;
  for (size_t i = 1; i < leaves.size(); i++) {
    ASSERT_TRUE(leaves[i].separator.has_value());
    const std::string& separator = *leaves[i].separator;
    EXPECT_LT(leaves[i - 1].last, separator);
    EXPECT_EQ(leaves[i].first.substr(0, separator.size()), separator);  // a prefix: at most the first key
    EXPECT_LE(separator.substr(0, separator.size() - 1), leaves[i - 1].last);  // no shorter one splits them
    if (separator.size() < leaves[i].first.size()) shorter++;
  }
  EXPECT_GT(shorter, leaves.size() / 2);

  // Commits folded into that tree put keys in both gaps a short separator opens around itself:
  // above the left leaf's last key and below the separator, and from the separator up to the
  // right leaf's first key (which leaves split and merge over), and delete the keys around them.
  options.fold_threshold_bytes = 0;  // every commit folds into the tree
  options.auto_compact = false;      // into the compacted one
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  size_t below = 0, above = 0;
  for (size_t i = 1; i < leaves.size(); i++) {
    auto txn = (*db)->BeginWrite();
    ASSERT_TRUE(txn.ok()) << txn.status().ToString();
    const std::string& separator = *leaves[i].separator;
    const std::string after_last = leaves[i - 1].last + '\0';  // the least key above the left leaf's
    for (const std::string& key : {after_last, separator}) {
      if (key <= leaves[i - 1].last || key >= leaves[i].first) continue;
      (key < separator ? below : above)++;
      expected[key] = "gap" + std::to_string(i);
      ASSERT_TRUE((*txn)->Put(key, expected[key]).ok());
    }
    if (i % 3 == 0) {
      for (const std::string& key : {leaves[i - 1].last, leaves[i].first}) {
        expected.erase(key);
        ASSERT_TRUE((*txn)->Del(key).ok());
      }
    }
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  EXPECT_GT(below, leaves.size() / 4);
  EXPECT_GT(above, leaves.size() / 4);
  auto report = (*db)->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->keys, expected.size());
  auto snapshot = (*db)->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  auto it = (*snapshot)->NewIterator();
  auto want = expected.begin();
  ASSERT_TRUE(it->SeekToFirst().ok());
  for (; it->Valid(); ++want) {
    ASSERT_NE(want, expected.end());
    ASSERT_EQ(it->key(), want->first);
    ASSERT_EQ(it->value(), want->second);
    ASSERT_TRUE(it->Next().ok());
  }
  ASSERT_TRUE(it->status().ok());
  EXPECT_EQ(want, expected.end());
  for (const auto& [key, value] : expected) {
    auto got = (*db)->Get(key);
    ASSERT_TRUE(got.ok() && got->has_value() && **got == value) << key;
  }
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
  EXPECT_FALSE(std::filesystem::exists(path + ".compacting"));
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
    auto f = fs->Open(path + ".compacting", OpenOptions{.create = true});
    ASSERT_TRUE((*f)->WriteAt(0, std::string(10000, 'z')).ok());
  }
  ASSERT_TRUE(db->Compact().ok());
  EXPECT_EQ(**db->Get("a"), "1");
  EXPECT_TRUE(db->Check().ok());
}

// A file system that calls `after_sync(n, bytes)` after the n-th sync of a compaction's file
// (the tree, then each pass of the log), with the bytes written to it since the sync before, so a
// test can act while a compaction runs.
class WatchedCompactionFs final : public FileSystemWrapper {
 public:
  WatchedCompactionFs() : FileSystemWrapper(NewPosixFileSystem()) {}
  std::function<void(int, uint64_t)> after_sync;
  // Per StartWriteback of a compaction's file: its range, the bytes written to the file by then
  // (the end of the furthest write), and the syncs before it.
  struct Hint {
    uint64_t offset, length, written_end;
    int syncs;
  };
  std::vector<Hint> hints;  // only the compacting thread writes it
  std::atomic<int> flipped_reads{0};  // the next reads of other files return one flipped bit
  // Lock calls on the writer's lock file ("<path>.lock"), which a writer takes through the file
  // it keeps open.
  std::atomic<int> writer_lock_tries{0};
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (!testing::IsCompactionFile(path)) {
      const std::string lock = ".lock";
      const bool writer_lock = path.size() > lock.size() && path.ends_with(lock) && !path.ends_with(".compacting.lock");
      return std::unique_ptr<File>(new FlippingFile(this, std::move(file), writer_lock));
    }
    return std::unique_ptr<File>(new WatchedFile(this, std::move(file)));
  }

 private:
  class FlippingFile final : public FileWrapper {
   public:
    FlippingFile(WatchedCompactionFs* fs, std::unique_ptr<File> base, bool writer_lock)
        : FileWrapper(std::move(base)), fs_(fs), writer_lock_(writer_lock) {}
    Result<std::unique_ptr<FileLock>> Lock(LockOptions options) override {
      if (writer_lock_) fs_->writer_lock_tries++;
      return FileWrapper::Lock(options);
    }
    Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
      DBDB_ASSIGN_OR_RETURN(size_t n, FileWrapper::ReadAt(offset, dst));
      if (n > 0 && fs_->flipped_reads.load() > 0) {
        fs_->flipped_reads--;
        dst[n / 2] ^= 0x10;
      }
      return n;
    }

   private:
    WatchedCompactionFs* fs_;
    const bool writer_lock_;
  };

  class WatchedFile final : public FileWrapper {
   public:
    WatchedFile(WatchedCompactionFs* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Status WriteAt(uint64_t offset, std::span<const char> data) override {
      written_ += data.size();
      written_end_ = std::max(written_end_, offset + data.size());
      return FileWrapper::WriteAt(offset, data);
    }
    void StartWriteback(uint64_t offset, uint64_t length) override {
      fs_->hints.push_back({offset, length, written_end_, syncs_});
      FileWrapper::StartWriteback(offset, length);
    }
    Status Sync() override {
      DBDB_RETURN_IF_ERROR(FileWrapper::Sync());
      uint64_t written = written_;
      written_ = 0;
      if (fs_->after_sync) fs_->after_sync(++syncs_, written);
      return Status::Ok();
    }

   private:
    WatchedCompactionFs* fs_;
    uint64_t written_ = 0;
    uint64_t written_end_ = 0;
    int syncs_ = 0;
  };
};

// Online compaction (I8 with a bounded writer pause): the tree is written without the writer
// lock, so another handle commits meanwhile (its BeginWrite would be Busy otherwise); its commits
// are copied after the tree in passes, the last one under the writer lock, which copies only what
// was committed during the pass before; nothing committed meanwhile is lost.
TEST(Compaction, WritersCommitWhileTheTreeIsWrittenAndPauseOnlyForTheLastPass) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<WatchedCompactionFs>();
  Options options;
  options.create_if_missing = true;
  options.fold_threshold_bytes = 0;
  options.auto_compact = false;
  options.file_system = fs;
  auto a = DB::Open(path, options);
  ASSERT_TRUE(a.ok());
  Options other = options;
  other.file_system = nullptr;
  other.wait_for_writer = false;  // Busy, never a wait, while someone holds the writer lock
  auto b = DB::Open(path, other);
  ASSERT_TRUE(b.ok());
  for (int round = 0; round < 3; round++) {
    auto txn = (*a)->BeginWrite();
    for (int i = 0; i < 2000; i++) ASSERT_TRUE((*txn)->Put("key" + std::to_string(i), std::to_string(round)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  auto before = (*a)->GetStats();
  std::vector<std::pair<int, uint64_t>> syncs;
  std::vector<Status> during;
  fs->after_sync = [&](int n, uint64_t bytes) {
    syncs.push_back({n, bytes});
    if (n == 1) {
      // The tree is written: more than a pass's worth of commits, so a second pass runs.
      for (int i = 0; i < 12; i++) during.push_back((*b)->Put("big" + std::to_string(i), std::string(100000, 'b')));
      during.push_back((*b)->Del("key1"));
    } else if (n == 2) {
      during.push_back((*b)->Put("late", "1"));  // the second pass (still without the lock) copies it
    } else if (n == 3) {
      during.push_back((*b)->Put("last", "1"));  // the pass under the lock copies it
    } else if (n == 4) {
      Status s = (*b)->Put("locked", "1");
      EXPECT_EQ(s.code(), StatusCode::kBusy) << "the last pass holds the writer lock: " << s.ToString();
    }
  };
  auto snapshot = (*a)->GetSnapshot();
  ASSERT_TRUE((*a)->Compact().ok());
  fs->after_sync = nullptr;
  for (const Status& s : during) EXPECT_TRUE(s.ok()) << "a commit while the tree was written: " << s.ToString();
  ASSERT_EQ(syncs.size(), 4u) << "the tree, two passes without the lock, the last pass under it";
  EXPECT_GT(syncs[0].second, 10000u) << "the tree";
  EXPECT_LT(syncs[0].second, before->file_size_bytes / 4) << "the tree, packed";
  EXPECT_GT(syncs[1].second, 1000000u) << "the first pass copies the twelve big commits";
  EXPECT_LT(syncs[2].second, 1000u) << "the second copies the one commit made during the first";
  EXPECT_LT(syncs[3].second, 1000u) << "the pass under the lock copies only the one commit made since";
  auto after = (*a)->GetStats();
  EXPECT_EQ(after->generation, 1u);
  EXPECT_EQ(after->txn_id, before->txn_id + 15) << "every commit made meanwhile, with its own txn id";
  EXPECT_EQ(after->commits_in_file, 16u) << "the compacted tree's commit, then the 15 copied";
  EXPECT_EQ(after->keys, 2000u + 12u + 2u - 1u);
  EXPECT_EQ(**(*snapshot)->Get("key1"), "2") << "a snapshot taken before reads the old file";
  EXPECT_FALSE((*snapshot)->Get("late")->has_value());
  auto report = (*a)->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  a->reset();
  b->reset();
  auto reopened = DB::Open(path, ReadOnlyOptions());
  ASSERT_TRUE(reopened.ok());
  EXPECT_FALSE((*reopened)->Get("key1")->has_value());
  EXPECT_EQ(**(*reopened)->Get("key2"), "2");
  EXPECT_EQ(**(*reopened)->Get("late"), "1");
  EXPECT_EQ(**(*reopened)->Get("last"), "1");
  EXPECT_FALSE((*reopened)->Get("locked")->has_value());
  EXPECT_EQ((*(*reopened)->Get("big11"))->size(), 100000u);
  EXPECT_EQ((*reopened)->GetStats()->txn_id, before->txn_id + 15);
}

// Two handles on one database for automatic compaction: `a`, whose compactions are watched (every
// commit folds, so garbage grows; compaction after 64 KiB of slack), and `b`, which never
// compacts by itself and never waits for the writer lock (Busy instead).
struct AutoCompactionPair {
  TempDir dir;
  const std::string path = dir.Path("db");
  std::shared_ptr<WatchedCompactionFs> fs = std::make_shared<WatchedCompactionFs>();
  std::unique_ptr<DB> a, b;

  explicit AutoCompactionPair(bool a_waits_for_writer) {
    Options options;
    options.create_if_missing = true;
    options.fold_threshold_bytes = 0;
    options.auto_compact_slack_bytes = 64 * 1024;
    options.wait_for_writer = a_waits_for_writer;
    options.background_compaction = false;  // in the committing thread, where the hooks can watch it
    options.file_system = fs;
    a = std::move(DB::Open(path, options)).value();
    Options other = options;
    other.file_system = nullptr;
    other.auto_compact = false;
    other.wait_for_writer = false;
    b = std::move(DB::Open(path, other)).value();
  }
  // Overwrites 40 keys 400 times through `a`, which compacts by itself along the way.
  void Churn() {
    for (int t = 0; t < 400; t++) {
      ASSERT_TRUE(a->Put("key" + std::to_string(t % 40), std::string(200, static_cast<char>('a' + t % 26))).ok());
    }
    fs->after_sync = nullptr;
  }
};

// The compacted tree is on its way to the disk before the sync that makes it durable: its
// writeback is started every few MiB as it is written (a hint, File::StartWriteback), in order and
// never past what was written, so that the sync waits for the last few MiB only.
TEST(Compaction, StartsTheTreesWritebackAsItWritesIt) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<WatchedCompactionFs>();
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.file_system = fs;
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok());
  for (int batch = 0; batch < 6; batch++) {  // 12 MB of values
    auto txn = (*db)->BeginWrite();
    ASSERT_TRUE(txn.ok());
    for (int i = 0; i < 400; i++) {
      ASSERT_TRUE((*txn)->Put("key" + std::to_string(batch * 400 + i), std::string(5000, static_cast<char>('a' + i % 26))).ok());
    }
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  ASSERT_TRUE((*db)->Compact().ok());
  auto stats = (*db)->GetStats();
  ASSERT_TRUE(stats.ok());
  ASSERT_GT(stats->live_bytes, uint64_t{11} << 20);
  // Each hint starts where the last ended, covers only bytes written, and comes before the sync.
  uint64_t covered = 0;
  for (const auto& hint : fs->hints) {
    EXPECT_EQ(hint.offset, covered);
    EXPECT_LE(hint.offset + hint.length, hint.written_end);
    EXPECT_EQ(hint.syncs, 0) << "after the tree's sync";
    covered = hint.offset + hint.length;
  }
  EXPECT_GE(fs->hints.size(), 2u);
  EXPECT_GE(covered + (uint64_t{4} << 20), stats->live_bytes) << "the sync is left more than the last 4 MiB";
  EXPECT_TRUE((*db)->Check().ok());
}

// One compaction at a time, across handles and processes: they would share "<path>.compacting".
// Automatic compaction starts from BeginWrite, and lets other writers commit while it runs.
TEST(Compaction, OneAtATimeAndAutomaticOnesLetOthersCommit) {
  AutoCompactionPair f(/*a_waits_for_writer=*/true);
  int compactions = 0;
  f.fs->after_sync = [&](int n, uint64_t) {
    if (n != 1) return;
    compactions++;
    EXPECT_EQ(f.b->Compact().code(), StatusCode::kBusy) << "a second compaction while one runs";
    Status s = f.b->Put("from-b-" + std::to_string(compactions), "1");
    EXPECT_TRUE(s.ok()) << "a commit while an automatic compaction writes its tree: " << s.ToString();
  };
  f.Churn();
  EXPECT_GT(compactions, 0) << "automatic compaction ran";
  EXPECT_EQ(f.a->GetStats()->generation, static_cast<uint64_t>(compactions));
  for (int c = 1; c <= compactions; c++) {
    EXPECT_EQ(**f.a->Get("from-b-" + std::to_string(c)), "1") << "commit " << c << " of b";
  }
  EXPECT_TRUE(f.a->Check().ok());
}

// A compaction recognizes the commit it copied last by its bytes, not its offset: here a no-sync
// commit it copied is rolled back (simulated: the file cut back to before it) and another of the
// same size takes its offset and txn id. The compaction must give up rather than install the
// rolled-back commit in place of the acknowledged one.
TEST(Compaction, ACopiedCommitRolledBackAndReplacedIsNotTakenForTheOneCopied) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<WatchedCompactionFs>();
  Options options;
  options.create_if_missing = true;
  options.durability = Durability::kNoSync;
  options.fold_threshold_bytes = 0;
  options.auto_compact = false;
  options.allocate_ahead_bytes = 0;  // the file's size is where the last commit ends
  Options watched = options;
  watched.file_system = fs;
  auto compactor = DB::Open(path, watched);
  ASSERT_TRUE(compactor.ok());
  for (int i = 0; i < 50; i++) ASSERT_TRUE((*compactor)->Put("k" + std::to_string(i), "v").ok());
  uint64_t rolled_back_at = 0;
  fs->after_sync = [&](int n, uint64_t) {
    if (n == 1) {
      rolled_back_at = std::filesystem::file_size(path);
      auto a = DB::Open(path, options);
      ASSERT_TRUE((*a)->Put("x", "old-value").ok());  // copied by the first pass
    } else if (n == 2) {
      std::filesystem::resize_file(path, rolled_back_at);  // rolled back...
      auto b = DB::Open(path, options);
      ASSERT_TRUE((*b)->Put("x", "new-value").ok());  // ...and replaced, at the same offset and size
      ASSERT_EQ(std::filesystem::file_size(path), (*b)->GetStats()->file_size_bytes);
    }
  };
  Status s = (*compactor)->Compact();
  fs->after_sync = nullptr;
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
  compactor->reset();
  auto reopened = DB::Open(path, options);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(**(*reopened)->Get("x"), "new-value");
  EXPECT_EQ((*reopened)->GetStats()->generation, 0u);
}

// A pass reads the old file without the writer lock, where a no-sync commit may be rolled back
// under it: one bad read there abandons the compaction (Aborted), never reports the undamaged
// database Corrupt; the database is as it was, and the next compaction succeeds.
TEST(Compaction, OneBadReadDuringAPassAbandonsTheCompactionNotTheDatabase) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<WatchedCompactionFs>();
  Options options;
  options.create_if_missing = true;
  options.fold_threshold_bytes = 0;
  options.auto_compact = false;
  options.file_system = fs;
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok());
  for (int i = 0; i < 50; i++) ASSERT_TRUE((*db)->Put("k" + std::to_string(i), "v").ok());
  fs->after_sync = [&](int n, uint64_t) {
    if (n == 1) fs->flipped_reads = 1;  // the first pass reads back the commit the tree is of
  };
  Status s = (*db)->Compact();
  fs->after_sync = nullptr;
  EXPECT_EQ(fs->flipped_reads.load(), 0) << "the flipped read happened";
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
  EXPECT_EQ((*db)->GetStats()->generation, 0u);
  EXPECT_TRUE((*db)->Check().ok());
  ASSERT_TRUE((*db)->Compact().ok());
  EXPECT_EQ((*db)->GetStats()->generation, 1u);
  EXPECT_EQ(**(*db)->Get("k49"), "v");
}

// Compaction reads every node of the tree once and verifies each as it reads it, even one this
// process verified before (TreeFile::NodeUse::kOnePass): a leaf whose bytes changed on the disk
// since a read verified it fails the compaction as Corruption, and is not copied into a new file
// under fresh checksums. Through the mapping (the verified-node table) and without it (the node
// cache).
class CompactionReads : public ::testing::TestWithParam<bool> {};

TEST_P(CompactionReads, ALeafChangedSinceAReadVerifiedItFailsTheCompaction) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.mmap_reads = GetParam();
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok());
  {
    auto txn = (*db)->BeginWrite();
    ASSERT_TRUE(txn.ok());
    for (int i = 0; i < 2000; i++) ASSERT_TRUE((*txn)->Put("k" + std::to_string(10000 + i), "value").ok());
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  ASSERT_TRUE((*db)->Compact().ok());  // the keys now lie in the tree
  for (int i = 0; i < 2000; i++) ASSERT_TRUE((*db)->Get("k" + std::to_string(10000 + i)).ok());  // every leaf verified
  // The first leaf's last byte: its last value's.
  uint64_t flip_at = 0;
  {
    auto fs = NewPosixFileSystem();
    auto tree = TreeFile::Open(*fs, path, true, 0, false);
    ASSERT_TRUE(tree.ok());
    auto newest = (*tree)->FindNewestCommit((*tree)->file().Size().value(), format::kFileHeaderSizeBytes);
    ASSERT_TRUE(newest.ok() && newest->has_value());
    TreeRoot root = RootOf(**newest);
    NodeRef ref = root.ref;
    for (uint32_t height = root.height; height > 1; height--) {
      auto node = (*tree)->ReadNodeUncached(ref);
      ASSERT_TRUE(node.ok());
      ref = (*node)->children.front();
    }
    flip_at = ref.offset + ref.length - format::kRecordTrailerSizeBytes - 1;
  }
  std::string file = testing::ReadFile(path);
  ASSERT_EQ(file[flip_at], 'e');
  {
    std::ofstream out(path, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(flip_at));
    out.put('E');
  }
  ASSERT_TRUE((*db)->Put("k0", "new").ok());  // something for the compaction to do
  Status s = (*db)->Compact();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.ToString().find("checksum"), std::string::npos) << s.ToString();
  EXPECT_EQ((*db)->GetStats()->generation, 1u);  // no new file installed
}

INSTANTIATE_TEST_SUITE_P(Compaction, CompactionReads, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Mapped" : "Cached"; });

// With wait_for_writer=false an automatic compaction never gives the writer lock up (taking it
// back would mean waiting, or failing the transaction with Busy after rewriting the database):
// it runs under the lock, and another writer is Busy meanwhile, as always while the lock is held.
TEST(Compaction, WithoutWaitingForTheWriterAnAutomaticCompactionKeepsTheLock) {
  AutoCompactionPair f(/*a_waits_for_writer=*/false);
  int compactions = 0;
  f.fs->after_sync = [&](int n, uint64_t) {
    if (n != 1) return;
    compactions++;
    EXPECT_EQ(f.b->Put("from-b", "1").code(), StatusCode::kBusy) << "the compaction holds the writer lock";
  };
  f.Churn();
  EXPECT_GT(compactions, 0);
  EXPECT_EQ(f.a->GetStats()->generation, static_cast<uint64_t>(compactions)) << "each one finished";
  EXPECT_TRUE(f.a->Check().ok());
}

// Background compaction (Options::background_compaction): a compaction held at a gate right
// after it wrote its tree (the first sync of "<path>.compacting"), in whichever thread runs it.
// The gate, and everything the hook touches, outlive the handle (declared before it).
struct HeldCompaction {
  std::mutex mutex;
  std::condition_variable changed;
  bool started = false;
  bool released = false;
  std::thread::id thread;
  std::atomic<int> syncs{0};

  // Holds the first compaction of `path` at its first sync (its tree's), while "<path>.compacting"
  // still has its name. A compaction that breaks the rules may be held where it holds what the
  // test's thread needs (the writer lock): the hold is bounded (30 s), and such a test fails.
  std::function<void(int, uint64_t)> Hook(const std::string& path) {
    return [this, path](int n, uint64_t) {
      syncs++;
      if (n != 1 || !std::filesystem::exists(path + ".compacting")) return;
      Hold();
    };
  }
  // Holds the calling thread, the first time only, until Release (at most 30 s).
  void Hold() {
    std::unique_lock<std::mutex> lock(mutex);
    if (started) return;
    started = true;
    thread = std::this_thread::get_id();
    changed.notify_all();
    changed.wait_for(lock, std::chrono::seconds(30), [&] { return released; });
  }
  bool WaitStarted() {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(30), [&] { return started; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mutex);
    released = true;
    changed.notify_all();
  }
};

struct BackgroundCompactionFixture {
  TempDir dir;
  const std::string path = dir.Path("db");
  std::shared_ptr<WatchedCompactionFs> fs = std::make_shared<WatchedCompactionFs>();
  HeldCompaction held;
  std::unique_ptr<DB> db;  // last: closed before the gate goes

  BackgroundCompactionFixture() {
    fs->after_sync = held.Hook(path);
    db = std::move(DB::Open(path, DbOptions())).value();
  }
  // A test that stopped early (a failed ASSERT) may have left a compaction held: open the gate
  // before the close waits for it.
  ~BackgroundCompactionFixture() {
    held.Release();
    db.reset();
  }
  Options DbOptions() const {
    dbdb::Options options;
    options.create_if_missing = true;
    options.fold_threshold_bytes = 4096;
    options.auto_compact_slack_bytes = 64 * 1024;  // the slack: compaction after about 64 KiB of garbage
    options.file_system = fs;
    return options;
  }
  // Puts keys "key<i>" (2 KiB values) until a compaction is held at the gate; returns how many.
  int FillUntilHeld() {
    int i = 0;
    for (; i < 5000; i++) {
      EXPECT_TRUE(db->Put("key" + std::to_string(i), std::string(2048, static_cast<char>('a' + i % 26))).ok());
      std::lock_guard<std::mutex> lock(held.mutex);
      if (held.started) return i + 1;
    }
    ADD_FAILURE() << "no automatic compaction started";
    return i;
  }
  uint64_t Generation(DB& handle) {
    auto stats = handle.GetStats();
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    return stats.ok() ? stats->generation : 0;
  }
  // The value of `key`, "<none>" when absent, "<error>" on an error.
  static std::string Read(DB& handle, const std::string& key) {
    auto value = handle.Get(key);
    return value.ok() ? value->value_or("<none>") : "<error>";
  }
  // Starts a writer thread putting kLatePuts values "late<j>" of 2 KiB (800 KiB: past the eight
  // 64 KiB slacks a writer may run ahead of a held compaction), counting them in `done`.
  static constexpr int kLatePuts = 400;
  std::thread StartLateWriter(std::atomic<int>* done) {
    return std::thread([this, done] {
      for (int j = 0; j < kLatePuts; j++) {
        Status s = db->Put("late" + std::to_string(j), std::string(2048, 'x'));
        EXPECT_TRUE(s.ok()) << s.ToString();
        (*done)++;
      }
    });
  }
  // Waits (bounded) until that writer stops while the log since the fold is past the bound: no
  // progress for a second with the log past it (a slow sync alone is not taken for a stall).
  // The log's size then, or nothing if it never stopped.
  std::optional<uint64_t> WaitForLateWriterToStall(const std::atomic<int>& done) {
    for (int i = 0, last = -1; i < 600 && done.load() < kLatePuts; i++) {
      const int now = done.load();
      const uint64_t unfolded = db->GetStats()->unfolded_bytes;
      if (now == last && unfolded > 8u * 64 * 1024) return unfolded;
      last = now;
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    return std::nullopt;
  }
  // Waits (bounded) for the handle's file to have been compacted at least once.
  bool WaitCompacted() {
    for (int i = 0; i < 3000; i++) {
      if (Generation(*db) > 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

// The real filesystem, counting the opens of one path, with a gate that holds the next directory
// sync after Arm (a compaction's, right after its rename) until released.
class HeldDirSyncFs final : public FileSystemWrapper {
 public:
  explicit HeldDirSyncFs(std::string path) : FileSystemWrapper(NewPosixFileSystem()), path_(std::move(path)) {}
  std::atomic<int> opens{0};
  HeldCompaction gate;
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    if (path == path_) opens++;
    return FileSystemWrapper::Open(path, options);
  }
  Status SyncDir(const std::string& dir) override {
    if (armed_.exchange(false)) gate.Hold();
    return FileSystemWrapper::SyncDir(dir);
  }
  void Arm() { armed_ = true; }

 private:
  const std::string path_;
  std::atomic<bool> armed_{false};
};

// The compacting handle switches to the new file as it renames it: its readers never find the
// file renamed under a handle that has not switched yet, each of which would open the new file
// itself and replay its log (thrown away at the switch, under the handle's state lock).
TEST(Compaction, TheCompactingHandlesReadersDoNotFollowItsOwnRename) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto fs = std::make_shared<HeldDirSyncFs>(path);
  Options options;
  options.create_if_missing = true;
  options.auto_compact = false;
  options.file_system = fs;
  auto db = std::move(DB::Open(path, options)).value();
  for (int i = 0; i < 2000; i++) ASSERT_TRUE(db->Put("key" + std::to_string(i), std::string(90, 'v')).ok());
  auto first = db->Get("key1");
  ASSERT_TRUE(first.ok() && first->has_value() && **first == std::string(90, 'v'));
  fs->Arm();
  std::thread compaction([&] { EXPECT_TRUE(db->Compact().ok()); });
  struct Joined {
    HeldDirSyncFs* fs;
    std::thread* thread;
    ~Joined() {
      fs->gate.Release();
      thread->join();
    }
  } joined{fs.get(), &compaction};
  ASSERT_TRUE(fs->gate.WaitStarted()) << "the compaction never synced the directory";
  // Renamed, its directory not yet synced: the handle reads the new file, opened by its
  // compaction, with no open of its own.
  ASSERT_TRUE(std::filesystem::exists(path) && !std::filesystem::exists(path + ".compacting"));
  const int opens = fs->opens.load();
  for (int i = 0; i < 2000; i += 100) {
    auto got = db->Get("key" + std::to_string(i));
    ASSERT_TRUE(got.ok() && got->has_value()) << i << ": " << got.status().ToString();
    EXPECT_EQ(**got, std::string(90, 'v')) << i;
  }
  auto stats = db->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->generation, 1u);
  EXPECT_EQ(fs->opens.load(), opens) << "a read opened the renamed file itself";
}

// An automatic compaction runs on a thread of the handle's own: the transaction that found it due,
// and those after it, commit while it writes the tree; it then copies them after the tree, and
// the handle reads them from the new file's overlay, built as they were copied.
TEST(Compaction, InTheBackgroundTheCommittingThreadGoesOn) {
  BackgroundCompactionFixture f;
  const int before = f.FillUntilHeld();
  ASSERT_TRUE(f.held.WaitStarted());
  EXPECT_NE(f.held.thread, std::this_thread::get_id()) << "the compaction ran in the committing thread";
  for (int j = 0; j < 20; j++) {
    Status s = f.db->Put("during" + std::to_string(j), std::to_string(j));
    EXPECT_TRUE(s.ok()) << "a commit while the compaction is held: " << s.ToString();
  }
  ASSERT_TRUE(f.db->Del("key0").ok());
  EXPECT_EQ(f.Generation(*f.db), 0u) << "held: not installed yet";
  f.held.Release();
  ASSERT_TRUE(f.WaitCompacted()) << "the background compaction never installed its file";
  for (int j = 0; j < 20; j++) EXPECT_EQ(f.Read(*f.db, "during" + std::to_string(j)), std::to_string(j));
  EXPECT_EQ(f.Read(*f.db, "key0"), "<none>");
  EXPECT_EQ(f.Read(*f.db, "key1").size(), 2048u);
  EXPECT_EQ(f.db->GetStats()->keys, static_cast<uint64_t>(before - 1 + 20));
  EXPECT_TRUE(f.db->Check().ok());
  f.db.reset();
  auto reopened = DB::Open(f.path, ReadOnlyOptions());
  ASSERT_TRUE(reopened.ok());
  EXPECT_GE(f.Generation(**reopened), 1u);
  EXPECT_EQ((*reopened)->GetStats()->keys, static_cast<uint64_t>(before - 1 + 20));
  EXPECT_EQ(f.Read(**reopened, "during19"), "19");
}

// Writers append without folding while the compaction runs, but not without bound: once the log
// since the fold passes eight slacks they wait for it to end.
TEST(Compaction, InTheBackgroundWritersWaitOnceTheLogIsTooFarBehind) {
  BackgroundCompactionFixture f;
  f.FillUntilHeld();
  ASSERT_TRUE(f.held.WaitStarted());
  auto before = f.db->GetStats();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->writer_stalls, 0u) << "a stall before any background compaction installed a file";
  EXPECT_EQ(before->writer_stall_micros, 0u);
  EXPECT_EQ(before->background_compactions, 0u) << "the first one is held";
  std::atomic<int> done{0};
  std::thread writer = f.StartLateWriter(&done);
  // The writer stops once the log since the fold passes the bound, while the gate is closed.
  const uint64_t unfolded = f.WaitForLateWriterToStall(done).value_or(0);
  const int stalled_at = done.load();
  f.held.Release();
  writer.join();
  EXPECT_LT(stalled_at, f.kLatePuts) << "every write committed while the compaction was held";
  EXPECT_GT(unfolded, 8u * 64 * 1024) << "stalled before the log passed the bound";
  EXPECT_LE(unfolded, 8u * 64 * 1024 + 4096) << "not stalled once the log passed the bound (one put more)";
  EXPECT_EQ(f.Read(*f.db, "late" + std::to_string(f.kLatePuts - 1)).size(), 2048u);
  EXPECT_TRUE(f.db->Check().ok());
  // The stall is counted, with its time: at least the second without progress seen above (less
  // a margin for when in that second it began).
  auto after = f.db->GetStats();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->writer_stalls, 1u);
  EXPECT_GE(after->writer_stall_micros, 500'000u) << after->writer_stalls << " stalls";
  EXPECT_GE(after->background_compactions, 1u) << "the stalled writer went on before a file was installed";
  // The counters are the handle's: a new one starts from nothing.
  f.db.reset();
  auto reopened = DB::Open(f.path, f.DbOptions());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto fresh = (*reopened)->GetStats();
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->writer_stalls, 0u);
  EXPECT_EQ(fresh->writer_stall_micros, 0u);
  EXPECT_EQ(fresh->background_compactions, 0u);
}

// Closing the handle asks a running background compaction to give up, and waits for it: the
// database is left as it was (no new file), the partial file emptied, nothing lost.
TEST(Compaction, ClosingAHandleAbandonsItsBackgroundCompaction) {
  BackgroundCompactionFixture f;
  const int before = f.FillUntilHeld();
  ASSERT_TRUE(f.held.WaitStarted());
  std::thread closer([&] { f.db.reset(); });
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the closer is waiting by now
  f.held.Release();
  closer.join();
  auto reopened = DB::Open(f.path, ReadOnlyOptions());
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(f.Generation(**reopened), 0u) << "the compaction was not abandoned";
  EXPECT_EQ((*reopened)->GetStats()->keys, static_cast<uint64_t>(before));
  EXPECT_TRUE((*reopened)->Check().ok());
  EXPECT_EQ(std::filesystem::file_size(f.path + ".compacting"), 0u) << "the partial file keeps its space";
}

// A parent's handle destroyed in a forked child (a child that unwinds, or frees what it inherited)
// must not wait for the parent's threads, which fork did not copy: here the parent's background
// compaction is held at its gate and one of the parent's writers waits for it (the log is past
// the bound) when the child is forked. The child's destruction returns at once and touches no
// file; the parent goes on as if there had been no child.
TEST(Compaction, AParentsHandleDestroyedInAForkedChildWaitsForNoneOfTheParentsThreads) {
  BackgroundCompactionFixture f;
  const int before = f.FillUntilHeld();
  ASSERT_TRUE(f.held.WaitStarted());
  std::atomic<int> done{0};
  std::thread writer = f.StartLateWriter(&done);
  const bool stalled = f.WaitForLateWriterToStall(done).has_value();
  // The files as they are while the parent is still (its writer waits, its compaction is held):
  // the child must leave every byte as it found it.
  auto files = [&] {
    std::map<std::string, std::string> bytes;
    for (const std::string& name : {f.path, f.path + ".lock", f.path + ".compacting"}) bytes[name] = ReadFile(name);
    return bytes;
  };
  int status = -1;
  pid_t pid = -1;
  std::map<std::string, std::string> before_fork, after_child;
  if (stalled) {
    before_fork = files();
    pid = ::fork();
    if (pid == 0) {
      ::alarm(20);  // a hang is this test's failure: SIGALRM ends the child
      f.db.reset();
      ::_exit(0);
    }
    status = WaitForChild(pid);
    after_child = files();
  }
  f.held.Release();
  writer.join();
  ASSERT_TRUE(stalled) << "the writer never waited for the held compaction";
  ASSERT_GT(pid, 0) << "fork failed";
  EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child's destruction of its parent's handle did not return (killed by signal "
      << (WIFSIGNALED(status) ? WTERMSIG(status) : 0) << "; 14 is the alarm: it hung)";
  for (const auto& [name, bytes] : before_fork) {
    EXPECT_TRUE(after_child[name] == bytes) << name << " changed while only the child ran: " << bytes.size()
                                            << " bytes before, " << after_child[name].size() << " after";
  }
  ASSERT_TRUE(f.WaitCompacted()) << "the parent's compaction never installed its file";
  EXPECT_EQ(f.db->GetStats()->keys, static_cast<uint64_t>(before + f.kLatePuts));
  EXPECT_EQ(f.Read(*f.db, "late" + std::to_string(f.kLatePuts - 1)).size(), 2048u);
  EXPECT_TRUE(f.db->Check().ok());
}

// A close does not wait for a lock someone else holds: here another handle keeps a write
// transaction open (its lock file held) while the background compaction's last pass wants it.
// The close makes the compaction give up; the other handle's transaction then commits.
TEST(Compaction, ClosingDoesNotWaitForAWriterLockAnotherHandleHolds) {
  BackgroundCompactionFixture f;
  const int before = f.FillUntilHeld();
  ASSERT_TRUE(f.held.WaitStarted());
  Options other;
  other.auto_compact = false;
  auto b = DB::Open(f.path, other);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto txn = (*b)->BeginWrite();
  ASSERT_TRUE(txn.ok()) << txn.status().ToString();
  ASSERT_TRUE((*txn)->Put("from-b", "1").ok());
  const int tries = f.fs->writer_lock_tries.load();
  f.held.Release();  // its passes run; the last one waits for b's lock
  for (int i = 0; i < 300 && f.fs->writer_lock_tries.load() == tries; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(f.fs->writer_lock_tries.load(), tries) << "the last pass never tried the writer's lock";
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    f.db.reset();
    closed = true;
  });
  for (int i = 0; i < 300 && !closed.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(closed.load()) << "the close waited for the other handle's transaction";
  EXPECT_TRUE((*txn)->Commit().ok());  // lets a waiting close go on, if it waited
  closer.join();
  txn->reset();
  EXPECT_EQ(f.Generation(**b), 0u) << "the compaction gave up before its rename";
  EXPECT_EQ(f.Read(**b, "from-b"), "1");
  EXPECT_EQ((*b)->GetStats()->keys, static_cast<uint64_t>(before + 1));
  EXPECT_TRUE((*b)->Check().ok());
}

// The ways an automatic compaction runs: on a thread of the handle's own, inline and online, and
// inline under the writer lock its transaction holds (wait_for_writer off: CompactFrom keeps it).
enum class AutoCompaction { kBackground, kInline, kInlineUnderTheWriterLock };
constexpr AutoCompaction kEveryAutoCompaction[] = {AutoCompaction::kBackground, AutoCompaction::kInline,
                                                   AutoCompaction::kInlineUnderTheWriterLock};
const char* NameOf(AutoCompaction how) {
  switch (how) {
    case AutoCompaction::kBackground:
      return "background";
    case AutoCompaction::kInline:
      return "inline";
    case AutoCompaction::kInlineUnderTheWriterLock:
      return "inline, wait_for_writer off";
  }
  return "?";
}

// Options whose automatic compactions come due within a few hundred 500-byte commits (a 16 KiB
// fold threshold and slack), run `how`, and write through `fs`.
Options SmallSlackOptions(std::shared_ptr<FileSystem> fs, AutoCompaction how) {
  Options options;
  options.create_if_missing = true;
  options.file_system = std::move(fs);
  options.fold_threshold_bytes = 16 * 1024;
  options.auto_compact_slack_bytes = 16 * 1024;
  options.background_compaction = how == AutoCompaction::kBackground;
  options.wait_for_writer = how != AutoCompaction::kInlineUnderTheWriterLock;
  return options;
}

// An automatic compaction that fails with an error that is not an I/O error (damage: Corruption)
// hands it to a write transaction, once, and backs off as a failed one does: the writes after it
// succeed, commits fold meanwhile (the log stays bounded), and it is not retried at every commit.
// On the handle's own thread (the error goes to its next write transaction) and inline, online or
// under the writer lock (to the transaction whose BeginWrite ran it: before stop 48 an inline one
// backed off only after an I/O error or a give-up, so every later transaction compacted again, all
// of the tree it could read, and failed).
TEST(Compaction, AnAutomaticCompactionsErrorIsReportedOnceAndBacksOff) {
  for (AutoCompaction how : kEveryAutoCompaction) {
    const bool background = how == AutoCompaction::kBackground;
    SCOPED_TRACE(NameOf(how));
    TempDir dir;
    const std::string path = dir.Path("db");
    auto fs = std::make_shared<testing::RefusingCompactionFs>(Status::Corruption("injected by the test"));
    auto db = DB::Open(path, SmallSlackOptions(fs, how));
    ASSERT_TRUE(db.ok());
    std::map<std::string, std::string> model;
    int reported = 0;
    uint64_t max_unfolded = 0;
    for (int t = 0; t < 400; t++) {
      std::string key = "key" + std::to_string(t % 50), value(500, static_cast<char>('a' + t % 26));
      Status s = (*db)->Put(key, value);
      if (s.IsCorruption()) {
        reported++;  // the compaction's, handed to this write, which did not commit
        continue;
      }
      ASSERT_TRUE(s.ok()) << "commit " << t << ": " << s.ToString();
      model[key] = value;
      max_unfolded = std::max(max_unfolded, (*db)->GetStats()->unfolded_bytes);
    }
    const int attempts = fs->refused.load();
    EXPECT_GT(reported, 0) << "the compaction's error reached a write";
    EXPECT_LE(reported, attempts) << "one report per failed attempt";
    if (!background) {
      EXPECT_EQ(reported, attempts) << "inline, each attempt's error goes to the transaction that ran it";
    }
    EXPECT_LT(attempts, 40) << "it backs off instead of trying again at every commit";
    EXPECT_GE(attempts, 2) << "the back-off never ended (the file grows by about 200 KB, the slack is 16 KiB)";
    EXPECT_LE(max_unfolded, 8u * 16 * 1024 + 4096) << "the log was left unfolded";
    auto rows = (*(*db)->GetSnapshot())->Scan(ScanRange{});
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), model.size());
    for (const auto& row : *rows) EXPECT_EQ(model[row.key], row.value);
    EXPECT_EQ((*db)->GetStats()->generation, 0u);
  }
}

// An online compaction (inline, or on the handle's own thread) lets other writers commit while it
// writes the tree without the writer lock. When it fails with damage, its back-off starts from the
// file as they left it, not from the view it compacted: else all they committed meanwhile (here
// more than the slack) would come off the back-off, and the next transaction would compact, and
// fail, again at once.
TEST(Compaction, AFailedCompactionsBackOffStartsAfterWhatWasCommittedMeanwhile) {
  for (AutoCompaction how : {AutoCompaction::kInline, AutoCompaction::kBackground}) {
    const bool background = how == AutoCompaction::kBackground;
    SCOPED_TRACE(NameOf(how));
    TempDir dir;
    const std::string path = dir.Path("db");
    auto fs = std::make_shared<testing::RefusingCompactionFs>(Status::Corruption("injected by the test"));
    fs->hold = true;
    auto db = DB::Open(path, SmallSlackOptions(fs, how));
    ASSERT_TRUE(db.ok());
    auto put = [&](const std::string& key) -> Status {
      auto txn = (*db)->BeginWrite();  // a transaction, not DB::Write: not queued behind the compacting one
      if (!txn.ok()) return txn.status();
      DBDB_RETURN_IF_ERROR((*txn)->Put(key, std::string(500, 'v')));
      return (*txn)->Commit();
    };
    // Commits until one finds compaction due, on a thread of the test's own; its compaction (inline:
    // in that commit's BeginWrite) waits in its first write of the tree. Whatever fails below, the
    // write is let go and the thread joined.
    Status compacting_txn;
    std::thread committing([&] {
      for (int t = 0; t < 1000 && fs->held.load() == 0; t++) {
        compacting_txn = put("a" + std::to_string(t % 50));
        if (!compacting_txn.ok()) return;
      }
    });
    struct Release {
      testing::RefusingCompactionFs& fs;
      std::thread& thread;
      ~Release() {
        fs.hold = false;
        if (thread.joinable()) thread.join();
      }
    } release{*fs, committing};
    for (int i = 0; i < 30000 && fs->held.load() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_EQ(fs->held.load(), 1) << "no compaction came to its first write: " << compacting_txn.ToString();
    if (background) committing.join();  // its commits went on while the compaction waits
    // Meanwhile this thread commits 50 KB, more than the slack (16 KiB).
    for (int t = 0; t < 100; t++) ASSERT_TRUE(put("b" + std::to_string(t)).ok()) << t;
    fs->hold = false;
    if (background) {
      // Its error goes to a write transaction after it, once: commit until one reports it.
      Status reported;
      for (int t = 0; t < 2000 && reported.ok(); t++) {
        reported = put("r" + std::to_string(t % 10));
        if (reported.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ASSERT_TRUE(reported.IsCorruption()) << reported.ToString();
    } else {
      committing.join();
      ASSERT_TRUE(compacting_txn.IsCorruption()) << compacting_txn.ToString();
    }
    ASSERT_EQ(fs->refused.load(), 1);
    // The next transaction does not try again: the file has not grown by the slack since the
    // attempt (it had, counted from the view the compaction started from). A background attempt it
    // started would refuse its first write within a few milliseconds.
    Status next = put("c0");
    ASSERT_TRUE(next.ok()) << next.ToString() << " after " << fs->refused.load() << " attempts";
    if (background) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(fs->refused.load(), 1) << "the back-off began before the commits made during the attempt";
    // It ends once the file has grown by the slack (that commit folds the log, 66 KB, into the
    // tree), and the damage is reported again.
    for (int t = 1; t < 2000 && fs->refused.load() == 1; t++) {
      (void)put("c" + std::to_string(t % 20));
      if (background) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(fs->refused.load(), 2) << "the back-off never ended";
    auto stats = (*db)->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->generation, 0u);
  }
}

// A compaction another handle or process runs holds the compaction lock for as long as it takes
// (`dbdb compact` of a large file; a process stopped in it). A writer that finds compaction due
// meanwhile cannot run one, and a commit does not fold when its fold would make compaction due
// (the compaction folds the log): until stop 49 its log, each open's replay and each reader's
// overlay grew with every commit until the other compaction ended (here to 727 KB, the whole
// log). The bound is the one writers keep behind the handle's own background compaction, eight
// slacks: past it, a commit folds.
TEST(Compaction, WhileAnotherHandleHoldsTheCompactionLockTheLogStaysBounded) {
  for (AutoCompaction how : kEveryAutoCompaction) {
    SCOPED_TRACE(NameOf(how));
    TempDir dir;
    const std::string path = dir.Path("db");
    auto db = DB::Open(path, SmallSlackOptions(NewPosixFileSystem(), how));
    ASSERT_TRUE(db.ok());
    auto locked = NewPosixFileSystem()->Lock(path + ".compacting.lock", {.wait = false});
    ASSERT_TRUE(locked.ok()) << locked.status().ToString();
    std::unique_ptr<FileLock> compacting = std::move(locked).value();
    const std::string value(500, 'v');
    for (int t = 0; t < 100; t++) ASSERT_TRUE((*db)->Put("key" + std::to_string(t), value).ok());
    // 1,000 commits of 500 bytes, over the same 100 keys: soon each fold would make compaction
    // due, and it cannot run.
    const uint64_t bound = 8u * 16 * 1024;
    uint64_t max_unfolded = 0;
    for (int t = 0; t < 1000; t++) {
      ASSERT_TRUE((*db)->Put("key" + std::to_string(t % 100), std::string(500, static_cast<char>('a' + t % 26))).ok()) << t;
      auto stats = (*db)->GetStats();
      ASSERT_TRUE(stats.ok());
      max_unfolded = std::max(max_unfolded, stats->unfolded_bytes);
    }
    EXPECT_GT(max_unfolded, bound - 4096) << "folded before the log passed the bound";
    EXPECT_LE(max_unfolded, bound + 4096) << "the log grew past eight slacks while another handle held the lock";
    auto stats = (*db)->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->generation, 0u) << "compacted while another handle held the lock";
    EXPECT_EQ(stats->background_compactions, 0u);
    EXPECT_TRUE((*db)->Check().ok());
    compacting.reset();  // let go: the next transaction compacts
    ASSERT_TRUE((*db)->Put("after", value).ok());
    for (int i = 0; i < 3000 && (*db)->GetStats()->generation == 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_GE((*db)->GetStats()->generation, 1u) << "no compaction within 30 s of the lock let go";
    for (int i = 0; i < 100; i++) {
      std::string read;
      auto found = (*db)->Get("key" + std::to_string(i), &read);
      ASSERT_TRUE(found.ok() && *found) << i << ": " << found.status().ToString();
      EXPECT_EQ(read, std::string(500, static_cast<char>('a' + (900 + i) % 26))) << i;
    }
    EXPECT_TRUE((*db)->Check().ok());
  }
}

// What this process holds open or mapped of a file that was named `path` and has been replaced
// (the kernel shows its last name with " (deleted)"): one line each. Such a file's blocks stay
// allocated until the last descriptor and mapping go, whatever its directory says.
std::vector<std::string> ReplacedFilesHeld(const std::string& path) {
  const std::string gone = std::filesystem::canonical(std::filesystem::path(path).parent_path()).string() + "/" +
                           std::filesystem::path(path).filename().string() + " (deleted)";
  std::vector<std::string> held;
  std::error_code ec;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code link_error;
    const auto target = std::filesystem::read_symlink(fd.path(), link_error);
    if (!link_error && target.string() == gone) held.push_back("descriptor " + fd.path().filename().string());
  }
  EXPECT_FALSE(ec) << "listing /proc/self/fd: " << ec.message();
  std::ifstream maps("/proc/self/maps");
  EXPECT_TRUE(maps.good()) << "reading /proc/self/maps";
  for (std::string line; std::getline(maps, line);) {
    if (line.ends_with(gone)) held.push_back("mapping " + line);
  }
  return held;
}

// A compaction's handle lets the file it replaced go: its descriptors and mappings, so the
// replaced file's space comes back once no snapshot reads it, not at the handle's next write.
TEST(Compaction, TheCompactingHandleLetsTheReplacedFileGo) {
  TempDir dir;
  const std::string path = dir.Path("db");
  auto db = Open(path);
  for (int round = 0; round < 3; round++) {
    auto txn = db->BeginWrite();
    for (int i = 0; i < 2000; i++) ASSERT_TRUE((*txn)->Put("key" + std::to_string(i), std::string(90, 'a' + round)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  ASSERT_EQ(**db->Get("key1"), std::string(90, 'c'));  // read through the file's mapping
  auto other = Open(path);  // another handle, idle after one read
  ASSERT_EQ(**other->Get("key1"), std::string(90, 'c'));
  auto snapshot = db->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  ASSERT_TRUE(db->Compact().ok());
  // The snapshot reads the replaced file: it is held while the snapshot lives (which shows this
  // test sees a held file), and let go with it.
  EXPECT_EQ(**(*snapshot)->Get("key2"), std::string(90, 'c'));
  EXPECT_FALSE(ReplacedFilesHeld(path).empty()) << "a snapshot of the replaced file, yet nothing of it is held";
  snapshot->reset();
  // The other handle holds it until it looks again (FORMAT.md).
  EXPECT_FALSE(ReplacedFilesHeld(path).empty()) << "the idle handle let the replaced file go";
  EXPECT_EQ(**other->Get("key4"), std::string(90, 'c'));
  EXPECT_EQ(ReplacedFilesHeld(path), std::vector<std::string>{}) << "after the compaction, its snapshot, and a read by the other handle";
  EXPECT_EQ(**db->Get("key3"), std::string(90, 'c'));
  EXPECT_EQ(ReplacedFilesHeld(path), std::vector<std::string>{}) << "after a read of the new file";
  ASSERT_TRUE(db->Put("after", "1").ok());
  EXPECT_EQ(ReplacedFilesHeld(path), std::vector<std::string>{}) << "after a commit to the new file";
}

// So does a background compaction: the handle reads and writes on, holding nothing of the file
// it replaced.
TEST(Compaction, InTheBackgroundTheHandleLetsTheReplacedFileGo) {
  BackgroundCompactionFixture f;
  const int puts = f.FillUntilHeld();
  ASSERT_TRUE(f.held.WaitStarted());
  EXPECT_EQ(f.Read(*f.db, "key0").size(), 2048u);
  f.held.Release();
  ASSERT_TRUE(f.WaitCompacted()) << "the background compaction never installed its file";
  EXPECT_EQ(f.Read(*f.db, "key" + std::to_string(puts - 1)).size(), 2048u);
  // The compaction's thread holds the file it replaced until its pass ends, just after the new
  // file is installed (and another pass may follow, folding what was committed meanwhile): wait
  // for it, bounded. With the handle holding the file, it stays held until the next write.
  std::vector<std::string> held = ReplacedFilesHeld(f.path);
  for (int i = 0; i < 3000 && !held.empty(); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    held = ReplacedFilesHeld(f.path);
  }
  EXPECT_EQ(held, std::vector<std::string>{}) << "30 s after the install and a read";
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
  auto reopened = DB::Open(path, ReadOnlyOptions());
  ASSERT_TRUE(reopened.ok());
  for (int i = 0; i < kKeys; i += 97) {
    auto got = (*reopened)->Get(key(i));
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ(**got, std::string(1024, static_cast<char>('a' + i % 26)));
  }
}

// Found by review (stop 53): a tree whose nodes each verify can still hold its keys out of order
// across leaves, here a leaf {x, y} where the root's separator "m" says its keys are below "m"
// and a leaf {n} after it. check() walks the bounds and says Corruption; a compaction, which
// reads the tree as it lies, fed x, y, n to the bulk loader, which wrote a leaf out of order (a
// database that reads differently) or, with its order assertion on, aborted. It is Corruption,
// and the file stays as it was.
TEST(Compaction, ATreeWhoseKeysAreOutOfOrderAcrossLeavesIsCorruptionAndStaysAsItWas) {
  TempDir dir;
  const std::string path = dir.Path("db");
  std::string file = format::EncodeFileHeader(format::FileHeader{format::kFormatVersion, 0});
  auto append_node = [&](format::RecordType type, const std::string& payload) {
    NodeRef ref{file.size(), static_cast<uint32_t>(payload.size() + format::kRecordOverheadBytes)};
    format::AppendRecord(&file, ref.offset, type, payload);
    return ref;
  };
  const std::vector<LeafEntry> first = {{"x", "1"}, {"y", "2"}}, second = {{"n", "3"}};
  const NodeRef left = append_node(format::RecordType::kLeaf, EncodeLeaf(first, 0, first.size()));
  const NodeRef right = append_node(format::RecordType::kLeaf, EncodeLeaf(second, 0, second.size()));
  const std::vector<ChildEntry> children = {{std::string_view(), left}, {"m", right}};
  const NodeRef root = append_node(format::RecordType::kInternal, EncodeInternal(children, 0, children.size()));
  format::Commit c;
  c.offset = file.size();
  c.txn_id = 1;
  c.body_offset = format::kFileHeaderSizeBytes;
  c.body_checksum = format::BodyChecksum(c.body_offset, std::string_view(file).substr(c.body_offset));
  c.synced_through = format::kFileHeaderSizeBytes;
  SetRoot(&c, TreeRoot{root, 2, 3, file.size() - format::kFileHeaderSizeBytes});
  c.commits_in_file = 1;
  c.fold_offset = c.offset;  // a fold, as a compaction writes it: nothing to replay
  format::AppendRecord(&file, c.offset, format::RecordType::kCommit, format::EncodeCommitPayload(c));
  format::AppendSeal(&file, c, true);
  std::ofstream(path, std::ios::binary) << file;

  Options options;
  options.auto_compact = false;
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  const auto checked = (*db)->Check();
  EXPECT_TRUE(checked.status().IsCorruption()) << checked.status().ToString();
  const Status compacted = (*db)->Compact();
  EXPECT_TRUE(compacted.IsCorruption()) << compacted.ToString();
  EXPECT_NE(compacted.message().find("the tree's keys are out of order"), std::string::npos) << compacted.ToString();
  db->reset();
  EXPECT_EQ(ReadFile(path), file);
  // The partial file keeps its name, and gives its space back (CompactFrom).
  EXPECT_EQ(std::filesystem::file_size(path + ".compacting"), 0u);
}

}  // namespace
}  // namespace dbdb
