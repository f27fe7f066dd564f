// The store's API: reads, writes, transactions, snapshots, iteration, limits, concurrency.
#include "dbdb/db.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "test_util.h"

namespace dbdb {
namespace {

using testing::TempDir;

std::unique_ptr<DB> OpenOrDie(const std::string& path, Options options = {}) {
  options.create_if_missing = true;
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return std::move(db).value();
}

std::string Value(DB& db, std::string_view key) {
  auto v = db.Get(key);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() && v->has_value() ? **v : "<none>";
}

TEST(DB, OpenMissingWithoutCreateIsNotFound) {
  TempDir dir;
  auto db = DB::Open(dir.Path("db"), Options{});
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsNotFound()) << db.status().ToString();
}

TEST(DB, NotADatabaseIsCorruption) {
  TempDir dir;
  auto fs = NewPosixFileSystem();
  {
    auto f = fs->Open(dir.Path("db"), OpenOptions{.create = true});
    ASSERT_TRUE((*f)->WriteAt(0, std::string(600, 'x')).ok());
  }
  auto db = DB::Open(dir.Path("db"), Options{});
  ASSERT_FALSE(db.ok());
  EXPECT_TRUE(db.status().IsCorruption()) << db.status().ToString();
}

TEST(DB, PutGetDelAndPersistAcrossReopen) {
  TempDir dir;
  {
    auto db = OpenOrDie(dir.Path("db"));
    EXPECT_EQ(Value(*db, "k"), "<none>");
    ASSERT_TRUE(db->Put("k", "v1").ok());
    ASSERT_TRUE(db->Put("k", "v2").ok());
    ASSERT_TRUE(db->Put("other", "o").ok());
    ASSERT_TRUE(db->Del("other").ok());
    ASSERT_TRUE(db->Del("never-there").ok());
    EXPECT_EQ(Value(*db, "k"), "v2");
  }
  auto db = OpenOrDie(dir.Path("db"));
  EXPECT_EQ(Value(*db, "k"), "v2");
  EXPECT_EQ(Value(*db, "other"), "<none>");
  auto stats = db->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 1u);
  EXPECT_EQ(stats->txn_id, 5u) << "five auto-commits, even the delete of a missing key";
}

TEST(DB, EmptyKeyAndBinaryKeysAndValues) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  std::string binary("\0\xff\x01", 3);
  ASSERT_TRUE(db->Put("", "empty key").ok());
  ASSERT_TRUE(db->Put(binary, binary).ok());
  EXPECT_EQ(Value(*db, ""), "empty key");
  EXPECT_EQ(Value(*db, binary), binary);
}

TEST(DB, TransactionReadsItsOwnWritesAndCommitsAtomically) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  ASSERT_TRUE(db->Put("a", "0").ok());
  auto txn = db->BeginWrite();
  ASSERT_TRUE(txn.ok());
  ASSERT_TRUE((*txn)->Put("a", "1").ok());
  ASSERT_TRUE((*txn)->Put("b", "2").ok());
  ASSERT_TRUE((*txn)->Del("a").ok());
  EXPECT_FALSE((*txn)->Get("a")->has_value());
  EXPECT_EQ(**(*txn)->Get("b"), "2");
  auto snapshot = db->GetSnapshot();  // readers do not see uncommitted writes
  EXPECT_EQ(**(*snapshot)->Get("a"), "0");
  EXPECT_FALSE((*snapshot)->Get("b")->has_value());
  ASSERT_TRUE((*txn)->Commit().ok());
  EXPECT_EQ(Value(*db, "a"), "<none>");
  EXPECT_EQ(Value(*db, "b"), "2");
  EXPECT_EQ(**(*snapshot)->Get("a"), "0") << "a snapshot stays on its commit (I4)";
  EXPECT_EQ((*txn)->Put("x", "y").code(), StatusCode::kAborted);
}


// Get(key, &value) and Get(key) answer what was written, from each place a value can come from
// (the folded tree, the overlay's log, a delete in the log over a key in the tree, a transaction's
// own put and delete), for the handle, a snapshot and a transaction; Get(key, &value) writes the
// buffer only when it finds the key, and assigns it (a longer old value leaves nothing behind; its
// capacity is kept).
TEST(DB, GetIntoABufferAnswersAsWrittenAndWritesItOnlyWhenFound) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  // Longer than a string's own short buffer: a get into a new string sizes it (a lookup that has
  // verified its path copies into a buffer's capacity under its one fault guard, and beyond it
  // sizes the buffer outside the guard first).
  const std::string kTreeValue = "a folded value, longer than 15 bytes";
  ASSERT_TRUE(db->Put("tree", kTreeValue).ok());
  ASSERT_TRUE(db->Put("gone", "folded, then deleted").ok());
  ASSERT_TRUE(db->Compact().ok());  // both now in the tree, nothing in the log
  ASSERT_TRUE(db->Put("log", "a value in the log").ok());
  ASSERT_TRUE(db->Del("gone").ok());
  using Want = std::map<std::string, std::optional<std::string>>;
  const Want committed = {{"tree", kTreeValue}, {"gone", std::nullopt}, {"log", "a value in the log"},
                          {"absent", std::nullopt}, {"", std::nullopt}};
  const std::string kStale(200, '#');  // longer than every value, on the heap
  auto check = [&](auto& reader, const Want& want, const char* what) {
    for (const auto& [key, value_wanted] : want) {
      SCOPED_TRACE(std::string(what) + ", key '" + key + "'");
      std::string value = kStale;
      const char* buffer = value.data();
      auto found = reader.Get(key, &value);
      ASSERT_TRUE(found.ok()) << found.status().ToString();
      ASSERT_EQ(*found, value_wanted.has_value());
      if (*found) {
        EXPECT_EQ(value, *value_wanted);
        EXPECT_EQ(value.data(), buffer) << "the buffer's capacity was not reused";
      } else {
        EXPECT_EQ(value, kStale) << "a key not found wrote the buffer";
      }
      auto got = reader.Get(key);  // into a new string, after the buffer (see below)
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, value_wanted);
    }
  };
  check(*db, committed, "the handle");
  auto snapshot = db->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  check(**snapshot, committed, "a snapshot");
  auto txn = db->BeginWrite();
  ASSERT_TRUE(txn.ok());
  check(**txn, committed, "a transaction's base");
  ASSERT_TRUE((*txn)->Put("absent", "put in the transaction").ok());
  ASSERT_TRUE((*txn)->Del("tree").ok());
  ASSERT_TRUE((*txn)->Put("gone", "back").ok());
  Want own = committed;
  own["absent"] = "put in the transaction";
  own["tree"] = std::nullopt;
  own["gone"] = "back";
  check(**txn, own, "a transaction's own changes");
  check(**snapshot, committed, "the snapshot, while the transaction is open");
  // A handle reading without a mapping verifies and searches one node at a time on every get (the
  // mapped handle above does so only until the path is verified: MappedReads tests both there).
  Options unmapped;
  unmapped.mmap_reads = false;
  auto reader = OpenOrDie(dir.Path("db"), unmapped);
  check(*reader, committed, "a handle reading without a mapping");
  for (const bool roomy : {false, true}) {
    for (std::string key : {"tree", "log"}) {  // the key's own string as the buffer
      if (roomy) key.reserve(64);               // the value fits in it, or the string grows first
      const std::string want = *committed.at(key);
      auto found = db->Get(key, &key);
      ASSERT_TRUE(found.ok() && *found) << key;
      EXPECT_EQ(key, want);
    }
  }
  (*txn)->Abort();
  std::string value = kStale;
  EXPECT_EQ((*txn)->Get("tree", &value).status().code(), StatusCode::kAborted);
}

TEST(DB, AbortDropsEverything) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  {
    auto txn = db->BeginWrite();
    ASSERT_TRUE((*txn)->Put("a", "1").ok());
    (*txn)->Abort();
  }
  {
    auto txn = db->BeginWrite();
    ASSERT_TRUE((*txn)->Put("b", "1").ok());
  }  // destroyed without commit: aborted
  EXPECT_EQ(Value(*db, "a"), "<none>");
  EXPECT_EQ(Value(*db, "b"), "<none>");
  EXPECT_EQ(db->GetStats()->txn_id, 0u);
}

TEST(DB, IterationAndScansAreOrdered) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  auto txn = db->BeginWrite();
  for (std::string k : {"b1", "a", "b2", "b\xff", "c", "b"}) ASSERT_TRUE((*txn)->Put(k, "v" + k).ok());
  ASSERT_TRUE((*txn)->Commit().ok());
  auto snapshot = db->GetSnapshot();
  auto it = (*snapshot)->NewIterator();
  std::vector<std::string> keys;
  ASSERT_TRUE(it->SeekToFirst().ok());
  while (it->Valid()) {
    keys.emplace_back(it->key());
    ASSERT_TRUE(it->Next().ok());
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "b", "b1", "b2", "b\xff", "c"}));
  auto prefix = (*snapshot)->Scan(ScanRange::Prefix("b"));
  ASSERT_TRUE(prefix.ok());
  ASSERT_EQ(prefix->size(), 4u);
  EXPECT_EQ(prefix->front().key, "b");
  EXPECT_EQ(prefix->back().key, "b\xff");
  auto range = (*snapshot)->Scan(ScanRange{"a", std::string("b2"), 100});
  ASSERT_EQ(range->size(), 3u);
  EXPECT_EQ((*snapshot)->Scan(ScanRange{"b", std::nullopt, 2})->size(), 2u);
  EXPECT_TRUE((*snapshot)->Scan(ScanRange{"d", std::nullopt, 100})->empty());
}

// An iterator sought to its own key(), or to a key its value() names in another leaf, finds that
// key, when key() and value() view a leaf the iterator holds in memory: read without a mapping,
// through a node cache too small to keep it (the leaf lives until the new descent is done; under
// AddressSanitizer a read of the freed leaf fails), or mapped: the copy of a mapped entry (after
// a Seek), or of a whole leaf (a scan's, from SeekToFirst on).
TEST(DB, AnIteratorSoughtToItsOwnKeyFindsIt) {
  for (bool mapped : {false, true}) {
    SCOPED_TRACE(mapped ? "mapped" : "read into memory");
    TempDir dir;
    Options options;
    options.create_if_missing = true;
    options.mmap_reads = mapped;
    options.node_cache_bytes = 0;
    options.node_size_target_bytes = 512;
    options.key_size_max_bytes = 128;
    options.fold_threshold_bytes = 0;
    auto opened = DB::Open(dir.Path("db"), options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto& db = *opened;
    auto txn = db->BeginWrite();
    // Each value names the key 500 on (in another leaf), or past the last.
    for (int i = 0; i < 2000; i++) ASSERT_TRUE((*txn)->Put("key" + std::to_string(10000 + i), "key" + std::to_string(10500 + i)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
    auto snapshot = db->GetSnapshot();
    ASSERT_TRUE(snapshot.ok());
    auto it = (*snapshot)->NewIterator();
    ASSERT_TRUE(it->SeekToFirst().ok());
    for (int i = 0; i < 2000; i += 7) {
      ASSERT_TRUE(it->Valid());
      const std::string want(it->key());
      ASSERT_TRUE(it->Seek(it->key()).ok());
      ASSERT_TRUE(it->Valid());
      EXPECT_EQ(it->key(), want);
      for (int step = 0; step < 7 && it->Valid(); step++) ASSERT_TRUE(it->Next().ok());
    }
    auto other = (*snapshot)->NewIterator();
    for (int i = 0; i < 1500; i += 101) {
      // Reached by a Seek, then by a scan from the first key.
      for (bool scanned : {false, true}) {
        if (scanned) {
          ASSERT_TRUE(other->SeekToFirst().ok());
          for (int step = 0; step < i; step++) ASSERT_TRUE(other->Next().ok());
        } else {
          ASSERT_TRUE(other->Seek("key" + std::to_string(10000 + i)).ok());
        }
        ASSERT_TRUE(other->Valid());
        ASSERT_EQ(other->key(), "key" + std::to_string(10000 + i));
        const std::string want(other->value());
        ASSERT_TRUE(other->Seek(other->value()).ok());
        ASSERT_TRUE(other->Valid());
        EXPECT_EQ(other->key(), want);
        EXPECT_EQ(other->value(), "key" + std::to_string(11000 + i));
      }
    }
  }
}

// An iterator that hits a damaged node stops, and says why in status(): the end of a loop that
// checks only Valid() is told apart from a failure.
TEST(DB, IteratorStatusTellsAFailureFromTheEnd) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.node_size_target_bytes = 512;
  options.key_size_max_bytes = 64;
  options.fold_threshold_bytes = 0;  // commits write their nodes: the first leaf lies at 512
  {
    auto db = OpenOrDie(path, options);
    auto txn = db->BeginWrite();
    for (int i = 0; i < 100; i++) ASSERT_TRUE((*txn)->Put("key" + std::to_string(1000 + i), "value").ok());
    ASSERT_TRUE((*txn)->Commit().ok());
    ASSERT_TRUE(db->Put("key1099", "changed").ok());  // rewrites the last leaf only
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(512 + 12);
    f.put('\x7f');
  }
  auto db = OpenOrDie(path, options);
  auto snapshot = db->GetSnapshot();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status().ToString();
  auto it = (*snapshot)->NewIterator();
  size_t seen = 0;
  Status step = it->SeekToFirst();
  for (; it->Valid(); step = it->Next()) seen++;
  EXPECT_EQ(seen, 0u);
  EXPECT_TRUE(step.IsCorruption()) << step.ToString();
  EXPECT_TRUE(it->status().IsCorruption()) << it->status().ToString();
  auto clean = (*snapshot)->NewIterator();
  EXPECT_TRUE(clean->status().ok()) << "a new iterator has no error";
  ASSERT_TRUE(clean->Seek("key1099").ok());
  ASSERT_TRUE(clean->Valid());
  EXPECT_EQ(clean->value(), "changed");
  EXPECT_TRUE(clean->status().ok());
}

TEST(DB, TransactionIteratorMergesItsChanges) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  ASSERT_TRUE(db->Put("a", "1").ok());
  ASSERT_TRUE(db->Put("c", "3").ok());
  auto txn = db->BeginWrite();
  ASSERT_TRUE((*txn)->Put("b", "2").ok());
  ASSERT_TRUE((*txn)->Del("c").ok());
  ASSERT_TRUE((*txn)->Put("a", "1'").ok());
  auto all = (*txn)->Scan(ScanRange{});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].value, "1'");
  EXPECT_EQ((*all)[1].key, "b");
}

// A randomized comparison against std::map across many transactions, with enough keys to make
// the tree several levels deep and exercise splits and merges.
// Folds every ~4 KiB of batches, so lookups and scans mix the tree and the overlay, and both
// splits and merges happen at folds.
TEST(DB, ManyTransactionsMatchAMap) {
  TempDir dir;
  Options options;
  options.node_size_target_bytes = 512;
  options.key_size_max_bytes = 64;
  options.durability = Durability::kNoSync;
  options.fold_threshold_bytes = 4096;
  options.auto_compact = false;  // every fold is done in place (a compaction would replace the merges)
  auto db = OpenOrDie(dir.Path("db"), options);
  std::map<std::string, std::string> model;
  std::mt19937_64 rng(12345);
  for (int t = 0; t < 300; t++) {
    auto txn = db->BeginWrite();
    ASSERT_TRUE(txn.ok());
    int ops = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < ops; i++) {
      std::string key = "k" + std::to_string(rng() % 2000);
      if (rng() % 3 == 0) {
        ASSERT_TRUE((*txn)->Del(key).ok());
        model.erase(key);
      } else {
        std::string value(rng() % 40, static_cast<char>('a' + rng() % 26));
        ASSERT_TRUE((*txn)->Put(key, value).ok());
        model[key] = value;
      }
    }
    ASSERT_TRUE((*txn)->Commit().ok());
    if (t % 50 == 49) {
      auto report = db->Check();
      ASSERT_TRUE(report.ok()) << report.status().ToString();
      EXPECT_EQ(report->keys, model.size());
    }
  }
  auto snapshot = db->GetSnapshot();
  auto all = (*snapshot)->Scan(ScanRange{});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), model.size());
  size_t i = 0;
  for (const auto& [k, v] : model) {
    EXPECT_EQ((*all)[i].key, k);
    EXPECT_EQ((*all)[i].value, v);
    i++;
  }
  EXPECT_GE(db->GetStats()->tree_height, 3u);
  // Delete everything: the tree shrinks back to empty (at the fold this many deletes cause).
  auto txn = db->BeginWrite();
  for (const auto& [k, v] : model) ASSERT_TRUE((*txn)->Del(k).ok());
  ASSERT_TRUE((*txn)->Commit().ok());
  EXPECT_EQ(db->GetStats()->keys, 0u);
  EXPECT_EQ(db->GetStats()->tree_height, 0u);
  EXPECT_EQ(db->GetStats()->unfolded_bytes, 0u);
  EXPECT_TRUE(db->Check().ok());
}

TEST(DB, LimitsAreEnforcedWithClearErrors) {
  TempDir dir;
  Options options;
  options.key_size_max_bytes = 16;
  options.value_size_max_bytes = 32;
  options.file_size_max_bytes = 4096;
  auto db = OpenOrDie(dir.Path("db"), options);
  Status s = db->Put(std::string(17, 'k'), "v");
  EXPECT_EQ(s.code(), StatusCode::kLimitExceeded);
  EXPECT_NE(s.message().find("key_size_max_bytes"), std::string::npos) << s.ToString();
  EXPECT_EQ(db->Put("k", std::string(33, 'v')).code(), StatusCode::kLimitExceeded);
  Status full;
  int i = 0;
  while ((full = db->Put("key" + std::to_string(i), std::string(32, 'v'))).ok()) i++;
  EXPECT_EQ(full.code(), StatusCode::kLimitExceeded) << full.ToString();
  EXPECT_NE(full.message().find("file_size_max_bytes"), std::string::npos);
  EXPECT_GT(i, 5);
  // Nothing was lost and the handle still works for reads and for smaller changes.
  EXPECT_EQ(Value(*db, "key0"), std::string(32, 'v'));
  EXPECT_TRUE(db->Check().ok());
}

TEST(DB, BadOptionsAreRejected) {
  TempDir dir;
  Options options;
  options.create_if_missing = true;
  options.key_size_max_bytes = 4096;  // more than node_size_target_bytes / 4
  EXPECT_EQ(DB::Open(dir.Path("db"), options).status().code(), StatusCode::kInvalidArgument);
  options = Options{};
  options.node_size_target_bytes = 100;
  EXPECT_EQ(DB::Open(dir.Path("db"), options).status().code(), StatusCode::kInvalidArgument);
}

TEST(DB, ReadOnlyHandleRefusesWrites) {
  TempDir dir;
  { ASSERT_TRUE(OpenOrDie(dir.Path("db"))->Put("a", "1").ok()); }
  Options options;
  options.read_only = true;
  auto db = DB::Open(dir.Path("db"), options);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ((*db)->Put("b", "2").code(), StatusCode::kReadOnly);
  EXPECT_EQ((*db)->Compact().code(), StatusCode::kReadOnly);
  EXPECT_EQ(Value(**db, "a"), "1");
}

TEST(DB, SecondHandleSeesCommitsOfTheFirst) {
  TempDir dir;
  auto writer = OpenOrDie(dir.Path("db"));
  auto reader = OpenOrDie(dir.Path("db"));
  ASSERT_TRUE(writer->Put("a", "1").ok());
  EXPECT_EQ(Value(*reader, "a"), "1");
  ASSERT_TRUE(reader->Put("a", "2").ok());
  EXPECT_EQ(Value(*writer, "a"), "2");
}

// DBDB's bug: a writer that keeps its stale root clobbers updates. Two handles increment one
// counter from several threads; no increment may be lost (I4).
TEST(DB, WritersAreSerializedAndNoUpdateIsLost) {
  TempDir dir;
  auto a = OpenOrDie(dir.Path("db"));
  auto b = OpenOrDie(dir.Path("db"));
  constexpr int kThreads = 4, kIncrements = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      DB& db = t % 2 == 0 ? *a : *b;
      for (int i = 0; i < kIncrements; i++) {
        auto txn = db.BeginWrite();
        ASSERT_TRUE(txn.ok());
        auto current = (*txn)->Get("counter");
        int value = current->has_value() ? std::stoi(**current) : 0;
        ASSERT_TRUE((*txn)->Put("counter", std::to_string(value + 1)).ok());
        ASSERT_TRUE((*txn)->Commit().ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Value(*a, "counter"), std::to_string(kThreads * kIncrements));
}

TEST(DB, BusyWhenNotWaitingForTheWriter) {
  TempDir dir;
  auto a = OpenOrDie(dir.Path("db"));
  Options options;
  options.wait_for_writer = false;
  auto b = OpenOrDie(dir.Path("db"), options);
  ASSERT_TRUE(a->Put("k", "v").ok());
  auto txn = a->BeginWrite();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(b->BeginWrite().status().code(), StatusCode::kBusy);
  // Compaction writes the tree without the writer lock; its last pass needs it.
  EXPECT_EQ(b->Compact().code(), StatusCode::kBusy);
  (*txn)->Abort();
  EXPECT_TRUE(b->BeginWrite().ok());
}

// A file system whose database file's next sync, once armed, waits until the test releases it.
class GatedSyncFs final : public FileSystemWrapper {
 public:
  explicit GatedSyncFs(std::string path) : FileSystemWrapper(NewPosixFileSystem()), path_(std::move(path)) {}
  std::atomic<bool> armed{false};
  std::atomic<bool> waiting{false};
  void Release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    cv_.notify_all();
  }
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (path != path_) return file;
    return std::unique_ptr<File>(new GatedFile(this, std::move(file)));
  }

 private:
  class GatedFile final : public FileWrapper {
   public:
    GatedFile(GatedSyncFs* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Status Sync() override {
      if (fs_->armed.exchange(false)) {
        fs_->waiting = true;
        std::unique_lock<std::mutex> lock(fs_->mutex_);
        fs_->cv_.wait(lock, [&] { return fs_->released_; });
      }
      return FileWrapper::Sync();
    }

   private:
    GatedSyncFs* fs_;
  };
  const std::string path_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool released_ = false;
};

// A database on a GatedSyncFs with one commit (txn 1), its next sync gated.
struct GatedDb {
  TempDir dir;
  const std::string path = dir.Path("db");
  std::shared_ptr<GatedSyncFs> fs = std::make_shared<GatedSyncFs>(path);
  std::unique_ptr<DB> db;

  explicit GatedDb(bool wait_for_writer) {
    Options options;
    options.file_system = fs;
    options.wait_for_writer = wait_for_writer;
    db = OpenOrDie(path, options);
    EXPECT_TRUE(db->Put("warm", "1").ok());  // txn 1
    fs->armed = true;
  }
};

// Group commit: Writes from other threads that arrive while one commits (here: while its sync
// waits) are committed together by the next, as one commit with one sync; each returns only once
// its own batch is committed (readable), and each batch is applied whole.
TEST(DB, WritesArrivingDuringACommitShareTheNextOne) {
  GatedDb f(/*wait_for_writer=*/true);
  auto& db = f.db;
  auto& fs = f.fs;
  std::atomic<int> failures{0};
  auto write = [&](int id) {
    WriteBatch batch;
    batch.Put("k" + std::to_string(id) + "a", std::to_string(id));
    batch.Put("k" + std::to_string(id) + "b", std::to_string(id));
    batch.Del("warm");
    Status s = db->Write(batch);
    if (!s.ok()) {
      ADD_FAILURE() << "write " << id << ": " << s.ToString();
      failures++;
      return;
    }
    // Acknowledged: its own batch is committed and visible, whole.
    auto snapshot = db->GetSnapshot();
    for (const char* suffix : {"a", "b"}) {
      auto got = (*snapshot)->Get("k" + std::to_string(id) + suffix);
      if (!got.ok() || !got->has_value() || **got != std::to_string(id)) {
        ADD_FAILURE() << "write " << id << " returned OK before its batch was committed";
        failures++;
      }
    }
  };
  std::thread first(write, 0);  // txn 2: its sync waits at the gate
  while (!fs->waiting.load()) std::this_thread::yield();
  std::vector<std::thread> others;
  for (int id = 1; id <= 3; id++) others.emplace_back(write, id);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let them queue behind it
  fs->Release();
  first.join();
  for (auto& t : others) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(db->GetStats()->txn_id, 3u) << "the three writes that queued share one commit (txn 3)";
  EXPECT_FALSE(db->Get("warm")->has_value());
  auto rows = (*db->GetSnapshot())->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 8u);
  EXPECT_TRUE(db->Check().ok());
}

// With wait_for_writer=false a Write never waits: while another thread's Write commits, Busy.
TEST(DB, AWriteThatWouldWaitIsBusyWhenNotWaitingForTheWriter) {
  GatedDb f(/*wait_for_writer=*/false);
  auto& db = f.db;
  auto& fs = f.fs;
  std::thread first([&] { EXPECT_TRUE(db->Put("first", "1").ok()); });
  while (!fs->waiting.load()) std::this_thread::yield();
  // Released later in any case, so that a Write that does wait fails this test, not hangs it.
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    fs->Release();
  });
  EXPECT_EQ(db->Put("second", "1").code(), StatusCode::kBusy);
  releaser.join();
  first.join();
  EXPECT_TRUE(db->Put("second", "1").ok());
  EXPECT_EQ(db->GetStats()->txn_id, 3u);
}

// Many threads writing at once through group commit (run under TSan too): every write lands
// once, whole, and the commits number no more than the writes.
TEST(DB, ManyThreadsWritingAtOnce) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  constexpr int kThreads = 4, kWrites = 50;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; i++) {
        WriteBatch batch;
        batch.Put("t" + std::to_string(t) + "/" + std::to_string(i), std::to_string(i));
        batch.Put("last/" + std::to_string(t), std::to_string(i));
        if (!db->Write(batch).ok()) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto rows = (*db->GetSnapshot())->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), static_cast<size_t>(kThreads * kWrites + kThreads));
  for (int t = 0; t < kThreads; t++) EXPECT_EQ(Value(*db, "last/" + std::to_string(t)), std::to_string(kWrites - 1));
  EXPECT_LE(db->GetStats()->txn_id, static_cast<uint64_t>(kThreads * kWrites));
  EXPECT_TRUE(db->Check().ok());
}

// A batch that changes a key more than once leaves its last change, as a transaction's Puts and
// Dels would, in one commit.
TEST(DB, ABatchThatChangesAKeyTwiceLeavesItsLastChange) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  ASSERT_TRUE(db->Put("c", "0").ok());
  ASSERT_TRUE(db->Put("d", "0").ok());
  WriteBatch batch;
  batch.Put("a", "1");
  batch.Put("b", "1");
  batch.Del("a");
  batch.Put("b", "2");
  batch.Del("c");
  batch.Put("c", "3");
  batch.Put("d", "4");
  batch.Del("d");
  // More changes than a small sort keeps in order by accident (insertion sort below 16).
  for (int i = 0; i < 40; i++) {
    batch.Put("e", std::to_string(i));
    batch.Put("b", std::to_string(i));
  }
  batch.Put("b", "5");
  batch.Del("e");
  ASSERT_TRUE(db->Write(batch).ok());
  EXPECT_FALSE(db->Get("a")->has_value());
  EXPECT_FALSE(db->Get("e")->has_value());
  EXPECT_EQ(Value(*db, "b"), "5");
  EXPECT_EQ(Value(*db, "c"), "3");
  EXPECT_FALSE(db->Get("d")->has_value());
  EXPECT_EQ(db->GetStats()->txn_id, 3u) << "one commit";
  auto rows = (*db->GetSnapshot())->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 2u);
  EXPECT_TRUE(db->Check().ok());
}

// A batch with a key past the limit is refused whole, before it reaches a commit.
TEST(DB, AWriteBreakingALimitIsRefusedWhole) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  WriteBatch batch;
  batch.Put("fine", "1");
  batch.Put(std::string(5000, 'k'), "1");
  EXPECT_EQ(db->Write(batch).code(), StatusCode::kLimitExceeded);
  EXPECT_FALSE(db->Get("fine")->has_value());
  EXPECT_EQ(db->GetStats()->txn_id, 0u);
  EXPECT_TRUE(db->Write(WriteBatch()).ok());
  EXPECT_EQ(db->GetStats()->txn_id, 0u) << "an empty batch commits nothing";
}

TEST(DB, SnapshotsFromManyThreadsWhileWriting) {
  TempDir dir;
  Options options;
  options.durability = Durability::kNoSync;
  auto db = OpenOrDie(dir.Path("db"), options);
  ASSERT_TRUE(db->Put("x", "0").ok());
  ASSERT_TRUE(db->Put("y", "0").ok());
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; r++) {
    readers.emplace_back([&] {
      while (!done.load()) {
        auto snapshot = db->GetSnapshot();
        if (!snapshot.ok()) { bad++; continue; }
        auto x = (*snapshot)->Get("x");
        auto y = (*snapshot)->Get("y");
        if (!x.ok() || !y.ok() || **x != **y) bad++;  // x and y always change together
      }
    });
  }
  for (int i = 1; i <= 200; i++) {
    auto txn = db->BeginWrite();
    ASSERT_TRUE((*txn)->Put("x", std::to_string(i)).ok());
    ASSERT_TRUE((*txn)->Put("y", std::to_string(i)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(DB, LargeValuesAndBigTransactions) {
  TempDir dir;
  auto db = OpenOrDie(dir.Path("db"));
  std::string big(1024 * 1024, 'b');
  ASSERT_TRUE(db->Put("big", big).ok());
  auto txn = db->BeginWrite();
  for (int i = 0; i < 20000; i++) ASSERT_TRUE((*txn)->Put("k" + std::to_string(i), std::string(100, 'v')).ok());
  ASSERT_TRUE((*txn)->Commit().ok());
  EXPECT_EQ(Value(*db, "big"), big);
  EXPECT_EQ(db->GetStats()->keys, 20001u);
  auto report = db->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->keys, 20001u);
  EXPECT_EQ(report->commits, 2u);
}

}  // namespace
}  // namespace dbdb
