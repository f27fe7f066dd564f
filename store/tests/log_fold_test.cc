// Version 2's write path: commits append batches, folds write the tree lazily, other handles replay
// the batches since the fold, automatic compaction keeps the file bounded, and version-1 files
// open read-only until `DB::Upgrade` converts them.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "coding.h"
#include "dbdb/db.h"
#include "format.h"
#include "node.h"
#include "test_util.h"
#include "change_counter.h"
#include "tree_file.h"

namespace dbdb {
namespace {

using testing::TempDir;

std::unique_ptr<DB> OpenOrDie(const std::string& path, Options options) {
  options.create_if_missing = true;
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return std::move(db).value();
}

std::string Key(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "key%06d", i);
  return buf;
}

// Commits without a fold append a batch and a commit, nothing else; another handle (opened
// before or after) replays them; a snapshot keeps its commit while the overlay grows past it.
TEST(LogFold, BatchesAreReplayedByOtherHandlesAndSnapshotsStayPut) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  auto writer = OpenOrDie(path, options);
  ASSERT_TRUE(writer->Put(Key(0), "first").ok());  // the first commit folds (there is no tree)
  auto reader = OpenOrDie(path, options);
  auto early = reader->GetSnapshot();
  ASSERT_TRUE(early.ok());
  uint64_t size_before = testing::DataSize(*writer);
  ASSERT_TRUE(writer->Put(Key(1), "one").ok());
  // A batch record (16 bytes of framing; count, type, key length, key, value length, value:
  // 1 + 1 + 1 + 9 + 1 + 3), a commit and a seal: no nodes.
  EXPECT_EQ(testing::DataSize(*writer) - size_before,
            16 + 16 + format::kCommitRecordSizeBytes + format::kSealRecordSizeBytes);
  for (int i = 2; i < 100; i++) ASSERT_TRUE(writer->Put(Key(i), "v" + std::to_string(i)).ok());
  ASSERT_TRUE(writer->Del(Key(0)).ok());
  ASSERT_TRUE(writer->Put(Key(1), "changed").ok());
  auto mid = reader->GetSnapshot();  // the reader catches up
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ((*mid)->txn_id(), 102u);
  ASSERT_TRUE(writer->Put(Key(1), "later").ok());
  ASSERT_TRUE(writer->Put(Key(200), "later").ok());
  EXPECT_EQ(**(*early)->Get(Key(0)), "first");
  EXPECT_FALSE((*early)->Get(Key(1))->has_value());
  EXPECT_FALSE((*mid)->Get(Key(0))->has_value());
  EXPECT_EQ(**(*mid)->Get(Key(1)), "changed");
  EXPECT_FALSE((*mid)->Get(Key(200))->has_value());
  auto rows = (*mid)->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 99u);
  EXPECT_EQ((*rows)[0].key, Key(1));
  EXPECT_EQ((*rows)[0].value, "changed");
  auto fresh = OpenOrDie(path, options);
  EXPECT_EQ(**fresh->Get(Key(1)), "later");
  auto stats = fresh->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->keys, 100u);
  EXPECT_GT(stats->unfolded_bytes, 0u);
  auto report = fresh->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->keys, 100u);
}

// Passing the threshold folds: the log resets, the tree holds everything, and a snapshot of the
// old fold epoch still reads its own commit.
TEST(LogFold, PassingTheThresholdFoldsAndOldSnapshotsStillRead) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 64 * 1024;
  options.auto_compact = false;
  auto db = OpenOrDie(path, options);
  auto other = OpenOrDie(path, options);
  std::map<std::string, std::string> model;
  std::unique_ptr<Snapshot> old;
  uint64_t old_txn = 0;
  std::map<std::string, std::string> old_model;
  int folds = 0;
  uint64_t last_unfolded = 0;
  for (int t = 0; t < 400; t++) {
    auto txn = db->BeginWrite();
    ASSERT_TRUE(txn.ok());
    for (int i = 0; i < 5; i++) {
      std::string key = Key((t * 7 + i * 131) % 900);
      std::string value(200, static_cast<char>('a' + t % 26));
      ASSERT_TRUE((*txn)->Put(key, value).ok());
      model[key] = value;
    }
    ASSERT_TRUE((*txn)->Commit().ok());
    auto stats = db->GetStats();
    ASSERT_TRUE(stats.ok());
    if (stats->unfolded_bytes < last_unfolded) folds++;
    last_unfolded = stats->unfolded_bytes;
    EXPECT_LE(stats->unfolded_bytes, options.fold_threshold_bytes);
    if (t == 100) {
      auto snap = other->GetSnapshot();
      ASSERT_TRUE(snap.ok());
      old = std::move(snap).value();
      old_txn = old->txn_id();
      old_model = model;
    }
  }
  EXPECT_GE(folds, 5);
  EXPECT_EQ(old->txn_id(), old_txn);
  auto rows = old->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), old_model.size());
  for (const auto& row : *rows) EXPECT_EQ(old_model[row.key], row.value);
  auto snap = other->GetSnapshot();
  rows = (*snap)->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), model.size());
  for (const auto& row : *rows) EXPECT_EQ(model[row.key], row.value);
  EXPECT_TRUE(db->Check().ok());
}

// Automatic compaction: overwriting the same keys forever keeps the file within twice the live
// data plus the slack, without anyone calling Compact(). Here in the committing thread, where the
// bound holds after every transaction; in the background (below) it allows for the log a running
// compaction has not folded yet.
TEST(LogFold, AutomaticCompactionBoundsTheFile) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.background_compaction = false;
  options.fold_threshold_bytes = 256 * 1024;
  options.node_size_target_bytes = 1024;
  options.key_size_max_bytes = 256;
  auto db = OpenOrDie(path, options);
  uint64_t largest = 0;
  uint64_t bound_exceeded = 0;
  std::mt19937_64 rng(7);
  for (int t = 0; t < 800; t++) {
    auto txn = db->BeginWrite();
    ASSERT_TRUE(txn.ok());
    for (int i = 0; i < 50; i++) {
      ASSERT_TRUE((*txn)->Put(Key(static_cast<int>(rng() % 2000)), std::string(100, 'x')).ok());
    }
    ASSERT_TRUE((*txn)->Commit().ok());
    auto stats = db->GetStats();
    ASSERT_TRUE(stats.ok());
    uint64_t size = std::filesystem::file_size(path);
    largest = std::max(largest, size);
    // The bound FORMAT.md states: twice the live bytes plus the slack, plus one transaction.
    uint64_t bound = 2 * stats->live_bytes + std::max<uint64_t>(options.fold_threshold_bytes, 1 << 20) + 64 * 1024;
    if (size > bound) bound_exceeded++;
    EXPECT_LE(stats->unfolded_bytes, options.fold_threshold_bytes + 64 * 1024) << "the log is folded or compacted";
  }
  auto stats = db->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(bound_exceeded, 0u) << "largest file " << largest << " bytes";
  EXPECT_GE(stats->generation, 1u) << "it compacted by itself";
  EXPECT_TRUE(db->Check().ok());
  // Turned off, nothing compacts.
  Options manual = options;
  manual.auto_compact = false;
  auto db2 = OpenOrDie(dir.Path("db2"), manual);
  for (int t = 0; t < 300; t++) {
    ASSERT_TRUE(db2->Put(Key(t % 10), std::string(4000, 'y')).ok());
  }
  EXPECT_EQ(db2->GetStats()->generation, 0u);
}

// The log since the fold a writer appends to while a background compaction runs: eight slacks
// (Options::background_compaction).
constexpr uint64_t kBackgroundLogBound(uint64_t slack) { return 8 * slack; }

// With background compaction (the default) commits go on unfolded while it runs: the log since
// the fold stays within eight slacks (then writers wait), and the file within twice its live
// data plus the slack plus that log.
TEST(LogFold, BackgroundCompactionBoundsTheFileAndTheLog) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 16 * 1024;
  options.auto_compact_slack_bytes = 16 * 1024;
  options.node_size_target_bytes = 1024;
  options.key_size_max_bytes = 256;
  const uint64_t slack = 16 * 1024, txn = 64 * 1024;
  auto db = OpenOrDie(path, options);
  std::map<std::string, std::string> model;
  uint64_t largest = 0, bound_exceeded = 0, max_unfolded = 0;
  std::mt19937_64 rng(11);
  for (int t = 0; t < 400; t++) {
    auto txn_or = db->BeginWrite();
    ASSERT_TRUE(txn_or.ok()) << txn_or.status().ToString();
    for (int i = 0; i < 50; i++) {
      std::string key = Key(static_cast<int>(rng() % 2000)), value(100, static_cast<char>('a' + t % 26));
      ASSERT_TRUE((*txn_or)->Put(key, value).ok());
      model[key] = value;
    }
    ASSERT_TRUE((*txn_or)->Commit().ok());
    auto stats = db->GetStats();
    ASSERT_TRUE(stats.ok());
    const uint64_t size = std::filesystem::file_size(path);
    largest = std::max(largest, size);
    if (size > 2 * stats->live_bytes + slack + kBackgroundLogBound(slack) + txn) bound_exceeded++;
    max_unfolded = std::max(max_unfolded, stats->unfolded_bytes);
  }
  EXPECT_EQ(bound_exceeded, 0u) << "largest file " << largest << " bytes";
  EXPECT_LE(max_unfolded, kBackgroundLogBound(slack) + txn) << "the log outran the compaction";
  EXPECT_GE(db->GetStats()->generation, 1u) << "it compacted by itself";
  db.reset();  // waits for a running compaction (or makes it give up)
  auto reopened = OpenOrDie(path, options);
  auto rows = (*reopened->GetSnapshot())->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), model.size());
  for (const auto& row : *rows) EXPECT_EQ(model[row.key], row.value);
  EXPECT_TRUE(reopened->Check().ok());
}

// Automatic compaction is best effort: when it cannot write its file, writes go on, the partial
// file gives its space back (it is emptied, not removed: see mutant 35), the next attempt waits
// until the file has grown by the slack, folds go on meanwhile (the log stays within the
// threshold), and the database stays correct.
TEST(LogFold, AFailingAutomaticCompactionDoesNotStopWrites) {
  TempDir dir;
  const std::string path = dir.Path("db");
  // The compaction's file fills the disk: its header is written, every later write fails.
  auto fs = std::make_shared<testing::RefusingCompactionFs>(Status::NoSpace("no space left on device (test)"));
  Options options;
  options.file_system = fs;
  options.fold_threshold_bytes = 16 * 1024;
  options.auto_compact_slack_bytes = 16 * 1024;
  options.background_compaction = false;  // the bound below holds after every commit
  auto db = OpenOrDie(path, options);
  std::map<std::string, std::string> model;
  uint64_t max_unfolded = 0;  // folds go on while the compaction backs off
  for (int t = 0; t < 300; t++) {
    std::string key = Key(t % 50), value(500, static_cast<char>('a' + t % 26));
    ASSERT_TRUE(db->Put(key, value).ok()) << "commit " << t;
    model[key] = value;
    max_unfolded = std::max(max_unfolded, db->GetStats().value().unfolded_bytes);
  }
  EXPECT_GT(fs->refused.load(), 0) << "compaction was due and tried";
  EXPECT_LT(fs->refused.load(), 100) << "it backs off instead of trying at every commit";
  EXPECT_EQ(db->GetStats()->generation, 0u);
  EXPECT_EQ(std::filesystem::file_size(path + ".compacting"), 0u) << "the partial file gives its space back";
  auto rows = (*db->GetSnapshot())->Scan(ScanRange{});
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), model.size());
  for (const auto& row : *rows) EXPECT_EQ(model[row.key], row.value);
  EXPECT_LE(max_unfolded, 16 * 1024 + 1024) << "the log was left unfolded while the compaction backed off";
  EXPECT_TRUE(db->Check().ok());
  // Manual compaction reports the error.
  EXPECT_EQ(db->Compact().code(), StatusCode::kNoSpace);
}

// A version-1 file, as the version-1 writer left it: a leaf, an 80-byte commit, a durable seal.
// `damaged_garbage`: a record no commit reaches (an old leaf) lies before the live one, and its
// checksum does not match: check() reads it, reads and compaction never do.
std::string VersionOneFile(bool damaged_garbage = false) {
  std::string file = format::EncodeFileHeader(format::FileHeader{1, 0});
  // The sequential leaf of versions 1 and 2: count, then key length, value length, key, value.
  std::string leaf = "\x02\x05\x03" "apple" "red" "\x06\x06" "banana" "yellow";
  if (damaged_garbage) {
    format::AppendRecord(&file, file.size(), format::RecordType::kLeaf, leaf);
    file.back() ^= 1;
  }
  const uint64_t leaf_offset = file.size();
  format::AppendRecord(&file, leaf_offset, format::RecordType::kLeaf, leaf);
  format::Commit c;
  c.version = 1;
  c.offset = file.size();
  c.txn_id = 1;
  c.body_offset = format::kFileHeaderSizeBytes;
  c.body_checksum = format::BodyChecksum(c.body_offset, std::string_view(file).substr(c.body_offset));
  c.synced_through = format::kFileHeaderSizeBytes;
  c.root_offset = leaf_offset;
  c.root_length = static_cast<uint32_t>(c.offset - leaf_offset);
  c.tree_height = 1;
  c.key_count = 2;
  c.tree_bytes = c.root_length;
  c.commits_in_file = 1;
  c.fold_offset = c.offset;
  format::AppendRecord(&file, c.offset, format::RecordType::kCommit, format::EncodeCommitPayload(c));
  format::AppendSeal(&file, c, true);
  return file;
}

// An older-version file that holds no commit (a header only) has no tree to compact: Upgrade
// writes an empty database of the current version in its place. (It dereferenced the missing
// commit: found by the fuzzers' replay of the empty version-2 and version-3 seeds once the fuzz
// and ASan builds turned on _GLIBCXX_ASSERTIONS.)
TEST(LogFold, AnEmptyOlderVersionFileUpgradesToAnEmptyDatabase) {
  for (uint32_t version = format::kFormatVersionMin; version < format::kFormatVersion; version++) {
    TempDir dir;
    const std::string path = dir.Path("old.dbdb");
    std::ofstream(path, std::ios::binary) << format::EncodeFileHeader(format::FileHeader{.version = version, .generation = 3});
    Options options;
    ASSERT_EQ(DB::Open(path, options).status().code(), StatusCode::kReadOnly) << "version " << version;
    ASSERT_TRUE(DB::Upgrade(path, options).ok()) << "version " << version;
    EXPECT_EQ(std::filesystem::file_size(path), format::kFileHeaderSizeBytes);
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok()) << "version " << version << ": " << db.status().ToString();
    auto stats = (*db)->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->txn_id, 0u);
    EXPECT_EQ(stats->generation, 4u);
    auto got = (*db)->Get("a");
    ASSERT_TRUE(got.ok() && !got->has_value());
    ASSERT_TRUE((*db)->Put("a", "1").ok());
    EXPECT_TRUE((*db)->Check().ok());
    db->reset();
    EXPECT_TRUE(DB::Upgrade(path, options).ok()) << "a current file is left as it is";
  }
}

TEST(LogFold, VersionOneFilesOpenReadOnlyUntilUpgraded) {
  TempDir dir;
  const std::string path = dir.Path("old.dbdb");
  std::ofstream(path, std::ios::binary) << VersionOneFile();
  Options options;
  auto rw = DB::Open(path, options);
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().code(), StatusCode::kReadOnly);
  EXPECT_NE(rw.status().message().find("dbdb upgrade"), std::string::npos) << rw.status().ToString();
  Options ro = options;
  ro.read_only = true;
  {
    auto db = DB::Open(path, ro);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ(**(*db)->Get("banana"), "yellow");
    auto report = (*db)->Check();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->keys, 2u);
  }
  ASSERT_TRUE(DB::Upgrade(path, options).ok());
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ(**(*db)->Get("apple"), "red");
  auto stats = (*db)->GetStats();
  EXPECT_EQ(stats->txn_id, 1u) << "the same commit, in the new format";
  EXPECT_EQ(stats->generation, 1u);
  ASSERT_TRUE((*db)->Put("cherry", "dark").ok());
  EXPECT_TRUE((*db)->Check().ok());
  EXPECT_TRUE(DB::Upgrade(path, options).ok()) << "a current file is left as it is";
  EXPECT_EQ((*db)->GetStats()->generation, 1u);
}

// A version-1 file that does not verify (a damaged record no read reaches) is not converted: compaction would turn a damaged file into one that reads differently
// (the fuzzer's finding was a key outside its leaf's range: Get missed it, a scan found it).
TEST(LogFold, UpgradeRefusesAFileThatDoesNotVerify) {
  TempDir dir;
  const std::string path = dir.Path("damaged.dbdb");
  const std::string bytes = VersionOneFile(true);
  std::ofstream(path, std::ios::binary) << bytes;
  Options ro;
  ro.read_only = true;
  {
    auto db = DB::Open(path, ro);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    EXPECT_EQ(**(*db)->Get("apple"), "red") << "reads do not notice";
    EXPECT_TRUE((*db)->Check().status().IsCorruption());
  }
  Status s = DB::Upgrade(path, Options{});
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), bytes)
      << "the file is left as it was";
}

// Appends, after the newest commit of the file at `path` (which must be sealed), a forged commit
// that names it as its previous commit, in its fold, with txn id `txn_id` and one put of
// `key` = `value`: every checksum holds, so only the chain's rules can refuse it. Written as a
// buggy writer would, under the writer lock and the change counter's mark, so that open handles
// look at the file again (change_counter.h).
void ForgeNextCommit(const std::string& path, uint64_t txn_id, std::string_view key, std::string_view value,
                     format::RecordType batch_type = format::RecordType::kBatch) {
  auto fs = NewPosixFileSystem();
  auto writer_lock = fs->Lock(path + ".lock", {});
  ASSERT_TRUE(writer_lock.ok()) << writer_lock.status().ToString();
  auto lock_file = fs->Open(path + ".lock", {});
  ASSERT_TRUE(lock_file.ok()) << lock_file.status().ToString();
  auto mark = ChangeMark::Take(**lock_file);
  ASSERT_TRUE(mark.ok()) << mark.status().ToString();
  auto tree = TreeFile::Open(*fs, path, false, 0, false);
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  uint64_t size = (*tree)->file().Size().value();
  auto found = (*tree)->FindNewestCommit(size, format::kFileHeaderSizeBytes);
  ASSERT_TRUE(found.ok() && found->has_value() && (*found)->sealed);
  const format::Commit base = **found;
  std::string records;
  format::Commit forged = base;  // the same tree and fold (a folded base is the fold)
  forged.txn_id = txn_id;
  forged.batch_offset = base.end();
  format::AppendRecord(&records, forged.batch_offset, batch_type,
                       format::EncodeBatch({{key, std::optional<std::string_view>(value)}}));
  forged.offset = base.end() + records.size();
  forged.prev_commit_offset = base.offset;
  forged.commits_in_file = base.commits_in_file + 1;
  forged.body_offset = base.record_end();
  forged.synced_through = forged.body_offset;
  std::string body(base.end() - base.record_end(), '\0');  // the base's seal, as on the file
  ASSERT_EQ((*tree)->file().ReadAt(base.record_end(), body).value(), body.size());
  body += records;
  forged.body_checksum = format::BodyChecksum(forged.body_offset, body);
  format::AppendRecord(&records, forged.offset, format::RecordType::kCommit, format::EncodeCommitPayload(forged));
  forged.sealed = true;
  format::AppendSeal(&records, forged, true);
  ASSERT_TRUE((*tree)->file().WriteAt(base.end(), records).ok());
}

// A commit that repeats the txn id of the commit before it (prev names it, every checksum holds: a
// buggy writer or a crafted file) is Corruption for a handle that already replayed that commit,
// as it is for a fresh open; never a failed assertion (found by review: the link from a handle's
// overlay to the first new commit was not checked).
TEST(LogFold, ACommitRepeatingATxnIdIsCorruptionForAnOpenHandle) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;  // the first commit folds, the second does not
  auto writer = OpenOrDie(path, options);
  ASSERT_TRUE(writer->Put("a", "1").ok());
  ASSERT_TRUE(writer->Put("k", "2").ok());
  writer.reset();
  auto reader = OpenOrDie(path, options);
  ASSERT_EQ(reader->Get("k").value(), std::optional<std::string>("2"));  // replayed: txn 2 put k
  ForgeNextCommit(path, 2, "k", "3");  // txn 2 again, after txn 2

  auto got = reader->Get("k");
  ASSERT_FALSE(got.ok()) << "read " << got->value_or("(none)");
  EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
  EXPECT_NE(got.status().ToString().find("has txn 2 after txn 2"), std::string::npos) << got.status().ToString();
  Options read_only;
  read_only.read_only = true;
  auto fresh = DB::Open(path, read_only);
  ASSERT_FALSE(fresh.ok());
  EXPECT_TRUE(fresh.status().IsCorruption()) << fresh.status().ToString();
}

// A commit that skips a txn id (txn 4 after txn 2) is Corruption too, for an open handle and a new
// one: only the next id, or the same for a checkpoint naming a checkpoint record, may follow (mutant 36).
TEST(LogFold, ACommitSkippingATxnIdIsCorruptionForAnOpenHandle) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  auto writer = OpenOrDie(path, options);
  ASSERT_TRUE(writer->Put("a", "1").ok());
  ASSERT_TRUE(writer->Put("k", "2").ok());
  writer.reset();
  auto reader = OpenOrDie(path, options);
  ASSERT_EQ(reader->Get("k").value(), std::optional<std::string>("2"));
  ForgeNextCommit(path, 4, "k", "4");
  auto got = reader->Get("k");
  ASSERT_FALSE(got.ok()) << "read " << got->value_or("(none)");
  EXPECT_NE(got.status().ToString().find("has txn 4 after txn 2"), std::string::npos) << got.status().ToString();
  Options read_only;
  read_only.read_only = true;
  auto fresh = DB::Open(path, read_only);
  ASSERT_FALSE(fresh.ok());
  EXPECT_TRUE(fresh.status().IsCorruption()) << fresh.status().ToString();
}

// The same right after a fold: the first commit after it must be the fold's txn id + 1. A handle
// whose overlay holds nothing yet took a repeated id, and a snapshot taken at the fold then read
// the forged put (found by a second review: the link to the fold commit was not checked).
TEST(LogFold, ACommitRepeatingTheFoldsTxnIdIsCorruptionAndSnapshotsStayPut) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  auto writer = OpenOrDie(path, options);
  ASSERT_TRUE(writer->Put("a", "1").ok());  // txn 1, a fold
  writer.reset();
  auto reader = OpenOrDie(path, options);
  auto snapshot = reader->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  ASSERT_EQ((*snapshot)->Get("k").value(), std::nullopt);
  ForgeNextCommit(path, 1, "k", "forged");  // txn 1 again, after the fold at txn 1

  auto got = reader->Get("k");
  ASSERT_FALSE(got.ok()) << "read " << got->value_or("(none)");
  EXPECT_NE(got.status().ToString().find("has txn 1 after txn 1"), std::string::npos) << got.status().ToString();
  EXPECT_EQ((*snapshot)->Get("k").value(), std::nullopt) << "the snapshot at the fold changed";
  Options read_only;
  read_only.read_only = true;
  auto fresh = DB::Open(path, read_only);
  ASSERT_FALSE(fresh.ok());
  EXPECT_TRUE(fresh.status().IsCorruption()) << fresh.status().ToString();
}


// Checkpoints (docs/FORMAT.md, "Checkpoints"): a commit restating the newest txn id whose record
// holds every change since the fold. A new handle starts from it; a handle that replayed the log
// steps over it; both read the same, and check() agrees.
std::map<std::string, std::string> All(DB& db) {
  auto snapshot = db.GetSnapshot();
  EXPECT_TRUE(snapshot.ok());
  auto scanned = (*snapshot)->Scan(ScanRange{});
  EXPECT_TRUE(scanned.ok()) << scanned.status().ToString();
  std::map<std::string, std::string> out;
  for (auto& kv : scanned.value()) out[kv.key] = kv.value;
  return out;
}

TEST(Checkpoint, ANewHandleStartsFromItAndAnOldOneStepsOverIt) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;  // only the first commit folds
  options.auto_compact = false;
  auto writer = OpenOrDie(path, options);
  ASSERT_TRUE(writer->Put("a", "1").ok());
  ASSERT_TRUE(writer->Put("b", "2").ok());
  ASSERT_TRUE(writer->Put("c", "3").ok());
  ASSERT_TRUE(writer->Del("b").ok());
  ASSERT_TRUE(writer->Put("a", "4").ok());
  auto old_reader = OpenOrDie(path, options);  // replays the four batches since the fold
  auto before = old_reader->GetSnapshot().value();
  const Stats replayed = writer->GetStats().value();
  ASSERT_TRUE(writer->Checkpoint().ok());
  const Stats checkpointed = writer->GetStats().value();
  EXPECT_EQ(checkpointed.txn_id, replayed.txn_id) << "a checkpoint is not a transaction";
  EXPECT_EQ(checkpointed.commits_in_file, replayed.commits_in_file + 1);
  EXPECT_LT(checkpointed.unfolded_bytes, replayed.unfolded_bytes) << "one record of three changes replaces four";
  ASSERT_TRUE(writer->Checkpoint().ok());  // nothing since: nothing written
  EXPECT_EQ(writer->GetStats().value().commits_in_file, checkpointed.commits_in_file);
  const std::map<std::string, std::string> expected{{"a", "4"}, {"c", "3"}};
  Options read_only;
  read_only.read_only = true;
  auto fresh = DB::Open(path, read_only);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(All(**fresh), expected);
  EXPECT_EQ((*fresh)->GetStats().value().unfolded_bytes, checkpointed.unfolded_bytes);
  ASSERT_TRUE(writer->Put("d", "5").ok());
  ASSERT_TRUE(writer->Del("a").ok());
  const std::map<std::string, std::string> now{{"c", "3"}, {"d", "5"}};
  EXPECT_EQ(All(*old_reader), now) << "the handle that replayed the log, across the checkpoint";
  EXPECT_EQ(All(**fresh), now) << "the handle that started from the checkpoint";
  EXPECT_EQ(old_reader->GetStats().value().unfolded_bytes, (*fresh)->GetStats().value().unfolded_bytes);
  EXPECT_EQ(before->Get("b").value(), std::nullopt);
  EXPECT_EQ(before->Get("a").value(), std::optional<std::string>("4")) << "a snapshot from before stays put";
  auto report = (*fresh)->Check();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->keys, 2u);
  // A fold after a checkpoint folds what it holds; compaction copies no checkpoint.
  ASSERT_TRUE(writer->Compact().ok());
  EXPECT_EQ(All(*writer), now);
  ASSERT_TRUE(writer->Check().ok());
}

TEST(Checkpoint, ClosingAWriterCheckpointsOnlyWhenDue) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  options.auto_compact = false;
  auto commits = [&] {
    Options read_only;
    read_only.read_only = true;
    return DB::Open(path, read_only).value()->GetStats().value().commits_in_file;
  };
  auto session = [&](const std::string& key, const Options& o) {
    auto db = OpenOrDie(path, o);
    ASSERT_TRUE(db->Put(key, "v").ok());
  };
  session("a", options);  // the first commit folds
  session("b", options);
  EXPECT_EQ(commits(), 2u) << "one commit since the fold: not worth a checkpoint";
  session("c", options);
  EXPECT_EQ(commits(), 4u) << "two commits since the fold: a checkpoint on close";
  session("d", options);
  EXPECT_EQ(commits(), 5u) << "one commit since the checkpoint";
  session("e", options);
  EXPECT_EQ(commits(), 7u) << "two commits, as many bytes as the checkpoint";
  Options off = options;
  off.checkpoint_on_close = false;
  session("f", off);
  session("g", off);
  EXPECT_EQ(commits(), 9u) << "checkpoint_on_close = false";
  {
    auto reader = OpenOrDie(path, options);  // read-write, but commits nothing
    EXPECT_EQ(reader->Get("g").value(), std::optional<std::string>("v"));
  }
  EXPECT_EQ(commits(), 9u) << "a handle that did not commit never checkpoints";
  Options read_only;
  read_only.read_only = true;
  auto db = DB::Open(path, read_only);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(All(**db).size(), 7u);
  ASSERT_TRUE((*db)->Check().ok());
}

// A close folds the log once its unfolded bytes pass fold_on_close_bytes (a commit that restates
// the newest txn id, folded, with no batch: the next open replays nothing), and below that
// checkpoints as before; UINT64_MAX turns it off, and so does no-sync mode. check() accepts the fold.
TEST(CloseFold, ClosingFoldsALogPastTheBoundAndOnlyThen) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  options.auto_compact = false;
  options.fold_on_close_bytes = 2000;
  auto stats = [&] {
    Options read_only;
    read_only.read_only = true;
    return DB::Open(path, read_only).value()->GetStats().value();
  };
  const std::string big(1000, 'x');
  auto session = [&](const std::string& key, int puts, const Options& o) {
    auto db = OpenOrDie(path, o);
    for (int i = 0; i < puts; i++) ASSERT_TRUE(db->Put(key + std::to_string(i), big).ok());
  };
  session("a", 1, options);  // the first commit folds
  session("b", 1, options);
  EXPECT_EQ(stats().commits_in_file, 2u) << "a log of one small commit: neither a fold nor a checkpoint";
  EXPECT_GT(stats().unfolded_bytes, 0u);
  session("c", 3, options);
  Stats after = stats();
  EXPECT_EQ(after.commits_in_file, 6u) << "three commits, then the close fold";
  EXPECT_EQ(after.unfolded_bytes, 0u) << "the close folded the log";
  EXPECT_EQ(after.txn_id, 5u) << "the close fold restates the newest txn id";
  EXPECT_EQ(after.keys, 5u);
  Options off = options;
  off.fold_on_close_bytes = UINT64_MAX;
  session("d", 3, off);
  after = stats();
  EXPECT_EQ(after.commits_in_file, 10u) << "three commits, then a checkpoint (no fold)";
  EXPECT_GT(after.unfolded_bytes, 3000u);
  EXPECT_EQ(after.txn_id, 8u);
  Options nosync = options;  // a close fold would not be synced: every open would hash it
  nosync.durability = Durability::kNoSync;
  session("e", 3, nosync);
  after = stats();
  EXPECT_EQ(after.commits_in_file, 14u) << "no-sync: three commits, then a checkpoint (no close fold)";
  EXPECT_GT(after.unfolded_bytes, 6000u);
  Options read_only;
  read_only.read_only = true;
  auto db = DB::Open(path, read_only);
  ASSERT_TRUE(db.ok());
  auto all = All(**db);
  EXPECT_EQ(all.size(), 11u);
  for (const auto& [key, value] : all) EXPECT_EQ(value, big) << key;
  auto check = (*db)->Check();
  EXPECT_TRUE(check.ok()) << check.status().ToString();
}

// Six puts of Key(i) = "value<i>", each its own commit after the first (which folds), and a
// close that folds them (fold_on_close_bytes 0, nothing allocated ahead): the file ends with the
// close fold's leaf, commit record and seal. `*before_close`: the file's end before the close.
std::string SixPutsAndACloseFold(const std::string& path, uint64_t* before_close) {
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  options.auto_compact = false;
  options.fold_on_close_bytes = 0;
  options.allocate_ahead_bytes = 0;
  {
    auto db = OpenOrDie(path, options);
    for (int i = 0; i < 6; i++) EXPECT_TRUE(db->Put(Key(i), "value" + std::to_string(i)).ok());
    *before_close = testing::DataSize(*db);
  }
  return testing::ReadFile(path);
}

// A close fold's body is hashed when found unless its seal says durable. Cut the seal and damage
// a byte of the fold's leaf: the fold is torn, and opening falls back to the commit before it (the
// same state, the same txn id). Keep the seal and damage the byte: opening takes the fold without
// hashing it (its sync returned before the seal was written), and the damage is Corruption when
// the leaf is read, and in check(), never wrong data.
TEST(CloseFold, AnUnsealedCloseFoldIsHashedADurablySealedOneIsNot) {
  TempDir dir;
  const std::string path = dir.Path("db");
  uint64_t before_close = 0;
  const std::string folded = SixPutsAndACloseFold(path, &before_close);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // The fold's body: the base's seal written again, then its one leaf; then its commit and seal.
  ASSERT_GT(folded.size(), before_close + format::kSealRecordSizeBytes + 112);
  const uint64_t leaf_byte = before_close + 20;
  Options read_only;
  read_only.read_only = true;
  auto write = [&](const std::string& bytes) { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; };
  {
    std::string torn = folded.substr(0, folded.size() - format::kSealRecordSizeBytes);
    torn[leaf_byte] ^= 0x40;
    write(torn);
    auto db = DB::Open(path, read_only);
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    auto stats = (*db)->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->txn_id, 6u);
    EXPECT_GT(stats->unfolded_bytes, 0u) << "the torn fold was taken";
    auto all = All(**db);
    ASSERT_EQ(all.size(), 6u);
    for (int i = 0; i < 6; i++) EXPECT_EQ(all[Key(i)], "value" + std::to_string(i));
  }
  {
    std::string damaged = folded;
    damaged[leaf_byte] ^= 0x40;
    write(damaged);
    auto db = DB::Open(path, read_only);
    ASSERT_TRUE(db.ok()) << "a durably sealed close fold is not hashed at open: " << db.status().ToString();
    EXPECT_EQ((*db)->GetStats()->unfolded_bytes, 0u) << "the fold was not taken";
    auto got = (*db)->Get(Key(3));
    EXPECT_TRUE(!got.ok() && got.status().IsCorruption()) << (got.ok() ? "a value" : got.status().ToString());
    auto check = (*db)->Check();
    EXPECT_TRUE(!check.ok() && check.status().IsCorruption()) << check.status().ToString();
  }
}

// check() holds a close fold to its rules: in a version-5 file a batch-less fold after the first
// commit must restate its predecessor's txn id, and no version-4 file may hold one (there the same
// commit is a fold that does not follow the txn id before it). Opening takes either (the open
// path checks a chain only down to its sync point); check() reports both as Corruption.
TEST(CloseFold, CheckRefusesACloseFoldOutsideItsRules) {
  TempDir dir;
  const std::string path = dir.Path("db");
  uint64_t before_close = 0;
  const std::string folded = SixPutsAndACloseFold(path, &before_close);
  ASSERT_FALSE(::testing::Test::HasFailure());
  const uint64_t commit_at = folded.size() - format::kSealRecordSizeBytes - format::CommitRecordSize(format::kFormatVersion);
  const std::string_view payload =
      std::string_view(folded).substr(commit_at + 8, format::CommitRecordSize(format::kFormatVersion) - 16);
  auto fold = format::DecodeCommitPayload(commit_at, payload);
  ASSERT_TRUE(fold.ok()) << fold.status().ToString();
  ASSERT_TRUE(fold->folded() && fold->batch_offset == 0 && fold->txn_id == 6u) << "the newest commit is not the close fold";
  Options read_only;
  read_only.read_only = true;
  auto check = [&](const std::string& bytes, const std::string& what, bool ok) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    auto db = DB::Open(path, read_only);
    ASSERT_TRUE(db.ok()) << what << ": " << db.status().ToString();
    auto report = (*db)->Check();
    if (ok) {
      EXPECT_TRUE(report.ok()) << what << ": " << report.status().ToString();
    } else {
      EXPECT_TRUE(!report.ok() && report.status().IsCorruption()) << what << ": "
                                                                 << (report.ok() ? "passed" : report.status().ToString());
    }
  };
  check(folded, "the close fold as written", true);
  std::string version4 = folded;
  version4.replace(0, format::kFileHeaderSizeBytes, format::EncodeFileHeader(format::FileHeader{.version = 4, .generation = 0}));
  check(version4, "a version-4 file holding a close fold", false);
  format::Commit next = *fold;
  next.txn_id = 7;  // a batch-less fold that takes the next txn id
  std::string record;
  format::AppendRecord(&record, commit_at, format::RecordType::kCommit, format::EncodeCommitPayload(next));
  std::string renumbered = folded;
  renumbered.replace(commit_at, record.size(), record);
  check(renumbered, "a close fold that does not restate", false);
}

// When folding the log at close would make automatic compaction due (the fold's nodes about
// double the garbage), the close compacts instead, under the writer lock it holds: the file is
// rewritten once, not grown by a fold and then rewritten by the next writer.
// Options and a handle's commits after which closing it finds its close fold due, and that the
// fold would make compaction due: 5,000 keys folded by the first commit, then every key changed in
// 50 commits of 100, unfolded (under 1 MiB).
Options CloseCompactionOptions() {
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  options.auto_compact_slack_bytes = 4096;
  options.background_compaction = false;
  options.fold_on_close_bytes = 2000;
  return options;
}
constexpr int kCloseCompactionKeys = 5000;

void CommitUntilTheCloseWouldCompact(DB& db) {
  const std::string value(100, 'v'), newer(100, 'w');
  WriteBatch first;
  for (int i = 0; i < kCloseCompactionKeys; i++) first.Put(Key(i), value);
  ASSERT_TRUE(db.Write(first).ok());  // the first commit folds: a tree of 5,000 keys
  for (int batch = 0; batch < kCloseCompactionKeys / 100; batch++) {
    WriteBatch changes;
    for (int i = batch * 100; i < batch * 100 + 100; i++) changes.Put(Key(i), newer);
    ASSERT_TRUE(db.Write(changes).ok());
  }
  auto stats = db.GetStats();
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->generation, 0u) << "compacted before the close";
  ASSERT_GT(stats->unfolded_bytes, 500u * 1000);
}

// The file at `path` after the close: every key's newer value, and Check passes; its Stats.
Stats ReopenedAfterTheClose(const std::string& path) {
  Options read_only;
  read_only.read_only = true;
  auto db = DB::Open(path, read_only);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  if (!db.ok()) return Stats{};
  auto all = All(**db);
  EXPECT_EQ(all.size(), size_t{kCloseCompactionKeys});
  for (const auto& [key, v] : all) EXPECT_EQ(v, std::string(100, 'w')) << key;
  auto check = (*db)->Check();
  EXPECT_TRUE(check.ok()) << check.status().ToString();
  auto stats = (*db)->GetStats();
  EXPECT_TRUE(stats.ok());
  return stats.ok() ? *stats : Stats{};
}

TEST(CloseFold, WhenTheFoldWouldMakeCompactionDueTheCloseCompacts) {
  TempDir dir;
  const std::string path = dir.Path("db");
  // More keys than a compaction copies between two looks at whether its handle is closing (4,096):
  // the close's own compaction must not give up as its background one does.
  static_assert(kCloseCompactionKeys > 4096);
  {
    auto db = OpenOrDie(path, CloseCompactionOptions());
    CommitUntilTheCloseWouldCompact(*db);
    if (HasFatalFailure()) return;
  }
  const Stats stats = ReopenedAfterTheClose(path);
  EXPECT_EQ(stats.generation, 1u) << "the close did not compact";
  EXPECT_EQ(stats.commits_in_file, 1u);
  EXPECT_EQ(stats.unfolded_bytes, 0u);
  EXPECT_EQ(stats.txn_id, 51u);
}

// The close's compaction only tries the compaction lock. Held elsewhere (another handle's or
// process's compaction, which folds the log into its own file), the close neither waits, folds nor
// compacts: it checkpoints (checkpoint_on_close), so the next open replays one checkpoint, not 50
// batches; without checkpoint_on_close it writes nothing.
TEST(CloseFold, WhenAnotherCompactionHoldsTheLockTheCloseCheckpointsInstead) {
  for (bool checkpoint_on_close : {true, false}) {
    SCOPED_TRACE(checkpoint_on_close ? "checkpoint_on_close" : "no checkpoint_on_close");
    TempDir dir;
    const std::string path = dir.Path("db");
    Options options = CloseCompactionOptions();
    options.checkpoint_on_close = checkpoint_on_close;
    uint64_t unfolded_before_close = 0;
    {
      auto db = OpenOrDie(path, options);
      CommitUntilTheCloseWouldCompact(*db);
      if (HasFatalFailure()) return;
      unfolded_before_close = db->GetStats().value().unfolded_bytes;
      auto compacting = NewPosixFileSystem()->Lock(path + ".compacting.lock", {.wait = false});
      ASSERT_TRUE(compacting.ok()) << compacting.status().ToString();
      db.reset();  // the close, with the compaction lock held
    }
    const Stats stats = ReopenedAfterTheClose(path);
    EXPECT_EQ(stats.generation, 0u) << "the close compacted";
    EXPECT_EQ(stats.txn_id, 51u);
    if (checkpoint_on_close) {
      EXPECT_EQ(stats.commits_in_file, 52u) << "no checkpoint after the 51 commits";
      EXPECT_GT(stats.unfolded_bytes, 0u) << "the close folded";
      EXPECT_LT(stats.unfolded_bytes, unfolded_before_close) << "the open replays the batches, not a checkpoint";
    } else {
      EXPECT_EQ(stats.commits_in_file, 51u) << "the close wrote a commit";
      EXPECT_EQ(stats.unfolded_bytes, unfolded_before_close);
    }
  }
}

// A checkpoint restates the log since the fold, so folds count the batches (and their commits and
// seals) and not the checkpoints as well. Counting both made a reopened 1M-key database fold (a
// whole compaction, at that size) after its first 1,500 single-put commits: dbdb-bench's fillsync
// fell from about 4,200 to 1,800 commits/s.
TEST(Checkpoint, FoldsCountTheLogNotTheCheckpointsThatRestateIt) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 64 * 1024;
  options.auto_compact = false;
  {
    auto db = OpenOrDie(path, options);
    ASSERT_TRUE(db->Put("first", "v").ok());  // the first commit folds
    for (int i = 0; i < 20; i++) ASSERT_TRUE(db->Put(Key(i), std::string(2000, 'x')).ok());
  }  // closing writes a checkpoint of about the same 40 KB
  auto db = OpenOrDie(path, options);
  auto opened = db->GetStats();
  ASSERT_TRUE(opened.ok());
  ASSERT_GT(opened->unfolded_bytes, 35u * 1000) << "no checkpoint to open at";
  ASSERT_LT(opened->unfolded_bytes, 50u * 1000);
  auto unfolded = [&] { return db->GetStats().value().unfolded_bytes; };
  // About 10 KB more: the log since the fold is about 50 KB, under the threshold, while the file
  // since the fold (the log and the checkpoint) is about 90 KB, over it.
  uint64_t last = opened->unfolded_bytes;
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(db->Put(Key(100 + i), std::string(2000, 'y')).ok());
    ASSERT_GT(unfolded(), last) << "commit " << i << " folded: the checkpoint was counted as log";
    last = unfolded();
  }
  // And a fold still comes once the log itself passes the threshold.
  int commits = 0;
  for (; commits < 20 && unfolded() >= last; commits++) {
    last = unfolded();
    ASSERT_TRUE(db->Put(Key(200 + commits), std::string(2000, 'z')).ok());
  }
  EXPECT_LT(unfolded(), last) << "no fold after " << commits << " more commits";
  EXPECT_GE(commits, 4) << "folded before the log passed the threshold";
  EXPECT_TRUE(db->Check().ok());
}

// The same for overlays that step over checkpoints rather than open at one: the writer that wrote
// it (on demand) and a handle that caught up across it count the log since the fold, not the
// checkpoint, and both fold once the log passes the threshold.
TEST(Checkpoint, HandlesSteppingOverACheckpointCountTheLogOnly) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 64 * 1024;
  options.auto_compact = false;
  options.checkpoint_on_close = false;
  auto db = OpenOrDie(path, options);
  ASSERT_TRUE(db->Put("first", "v").ok());  // the first commit folds
  ASSERT_TRUE(db->Put("second", "v").ok());
  auto other = OpenOrDie(path, options);
  ASSERT_TRUE(other->Get("second").ok());  // its overlay holds a commit after the fold
  for (int i = 0; i < 20; i++) ASSERT_TRUE(db->Put(Key(i), std::string(2000, 'x')).ok());
  ASSERT_TRUE(db->Checkpoint().ok());  // about 40 KB, restating the 43 KB log
  // Catches up from the commit it holds, stepping over the checkpoint (an overlay at the fold
  // itself would start again from the checkpoint instead, as a new handle does).
  ASSERT_TRUE(other->Get("first").ok());
  auto unfolded = [](DB& handle) { return handle.GetStats().value().unfolded_bytes; };
  // Each handle in turn: 3 commits of about 2 KB (the log stays under 64 KiB while the file since
  // the fold passes it), then commits until one folds, which must come once the log passes.
  int key = 100;
  for (DB* handle : {db.get(), other.get()}) {
    SCOPED_TRACE(handle == db.get() ? "the writer of the checkpoint" : "a handle that caught up across it");
    uint64_t last = unfolded(*handle);
    for (int i = 0; i < 3; i++) {
      ASSERT_TRUE(handle->Put(Key(key++), std::string(2000, 'y')).ok());
      ASSERT_GT(unfolded(*handle), last) << "commit " << i << " folded: the checkpoint was counted as log";
      last = unfolded(*handle);
    }
  }
  int commits = 0;
  for (uint64_t last = unfolded(*other); commits < 20 && unfolded(*other) >= last; commits++) {
    last = unfolded(*other);
    ASSERT_TRUE(other->Put(Key(key++), std::string(2000, 'z')).ok());
  }
  EXPECT_LT(commits, 20) << "no fold once the log passed the threshold";
  EXPECT_TRUE(other->Check().ok());
}

// Checkpoints written on demand restate the whole log each time; without a bound on the file since
// the fold, checkpointing after every commit would grow it quadratically before the log alone
// reached the threshold. A fold comes once the file since the fold passes three thresholds.
TEST(Checkpoint, CheckpointsOnDemandCannotKeepAFoldAway) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 64 * 1024;
  options.auto_compact = false;
  auto db = OpenOrDie(path, options);
  ASSERT_TRUE(db->Put("first", "v").ok());  // the first commit folds
  uint64_t last = 0;
  int commits = 0;
  bool folded = false;
  for (; commits < 40 && !folded; commits++) {
    ASSERT_TRUE(db->Put(Key(commits), std::string(2000, 'x')).ok());
    uint64_t now = db->GetStats().value().unfolded_bytes;
    folded = now < last;
    last = now;
    ASSERT_TRUE(db->Checkpoint().ok());
  }
  // The log alone passes 64 KiB after about 30 commits of 2.2 KB; the file since the fold (each
  // checkpoint about as large as the log before it) passes 192 KiB at the 14th (two thresholds
  // would fold at about the 11th, four at about the 16th).
  ASSERT_TRUE(folded) << "no fold in 40 commits";
  EXPECT_LE(commits, 15) << "the fold waited past three thresholds of file (or for the log alone)";
  EXPECT_GE(commits, 13) << "folded before the file since the fold passed three thresholds";
  EXPECT_TRUE(db->Check().ok());
}

// A checkpoint record named by a commit that does not restate the txn id, and a checkpoint whose
// checksums hold but whose changes are not the log's: Corruption on open for the first (the types
// tie), and from check() for the second (a reader trusts a checkpoint as it trusts a batch).
TEST(Checkpoint, AMisplacedOrWrongCheckpointIsCorruption) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.fold_threshold_bytes = 1 << 20;
  options.checkpoint_on_close = false;
  {
    auto writer = OpenOrDie(path, options);
    ASSERT_TRUE(writer->Put("a", "1").ok());
    ASSERT_TRUE(writer->Put("k", "2").ok());
  }
  std::filesystem::copy_file(path, path + ".copy");
  ForgeNextCommit(path, 3, "k", "3", format::RecordType::kCheckpoint);  // txn 3 after txn 2
  Options read_only;
  read_only.read_only = true;
  auto opened = DB::Open(path, read_only);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(opened.status().IsCorruption()) << opened.status().ToString();
  EXPECT_NE(opened.status().ToString().find("is not a batch"), std::string::npos) << opened.status().ToString();

  std::filesystem::rename(path + ".copy", path);
  ForgeNextCommit(path, 2, "k", "forged", format::RecordType::kCheckpoint);  // restates txn 2, but says k = "forged"
  auto forged = DB::Open(path, read_only);
  ASSERT_TRUE(forged.ok()) << forged.status().ToString();
  // Every checksum holds, so a new handle takes it for what it says (as it takes a batch)...
  EXPECT_EQ((*forged)->Get("k").value(), std::optional<std::string>("forged"));
  // ... and check() replays the log and finds it does not hold what the log replays to.
  auto report = (*forged)->Check();
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().ToString().find("does not hold"), std::string::npos) << report.status().ToString();
}


// Found by StoreVsModel.SimulatedFilesystemNoSyncMode (shrunk): in no-sync mode opening verifies the
// chain of unsynced commits back to the last sync, and that walk required +1 txn ids, so the commit
// after a checkpoint was refused and opening fell back to the checkpoint, losing it (mutant 60).
TEST(Checkpoint, ANoSyncCommitAfterACheckpointSurvivesReopen) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Options options;
  options.durability = Durability::kNoSync;
  options.fold_threshold_bytes = 1 << 20;
  {
    auto db = OpenOrDie(path, options);
    ASSERT_TRUE(db->Del("k").ok());
    ASSERT_TRUE(db->Put("k", "1").ok());
    ASSERT_TRUE(db->Checkpoint().ok());
    ASSERT_TRUE(db->Put("k", std::string(501, 'v')).ok());
    EXPECT_EQ(db->GetStats().value().txn_id, 3u);
  }
  auto db = OpenOrDie(path, options);
  EXPECT_EQ(db->GetStats().value().txn_id, 3u);
  EXPECT_EQ(db->Get("k").value(), std::optional<std::string>(std::string(501, 'v')));
  ASSERT_TRUE(db->Check().ok());
}

}  // namespace
}  // namespace dbdb
