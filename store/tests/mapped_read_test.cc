// Reads through the file mapping (docs/FORMAT.md, "Nodes"): a page the disk cannot deliver is an
// IOError and not a crash, and not sticky; a node damaged in the mapping is Corruption; a SIGBUS
// outside dbdb's reads still reaches the default action; a snapshot keeps reading the file a
// compaction replaced.
//
// The faulting and damaged pages are made real: the database file is mapped from a side copy the
// test truncates or edits, so the reader's view of the file itself (its size, its commits) stays
// as it is.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "dbdb/db.h"
#include "test_util.h"
#include "tree_file.h"

namespace dbdb {
namespace {

using testing::TempDir;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// `shown` of the `length` bytes mapped at `address`.
class RawMapping final : public FileMapping {
 public:
  RawMapping(void* address, uint64_t length, uint64_t shown)
      : FileMapping(static_cast<const char*>(address), shown), length_(length) {}
  ~RawMapping() override { ::munmap(const_cast<char*>(data()), length_); }

 private:
  uint64_t length_;
};

// Where each mapping SideMapFile made lies (the newest last).
using MappedRegions = std::vector<std::pair<char*, uint64_t>>;

// Maps `side` wherever the database file is mapped. With `short_mappings`, a mapping says it
// holds only as far as `side` reached when it was made (so the database maps again, with what
// `side` holds then, as soon as it reads past that). With `regions`, records each mapping there.
class SideMapFile final : public FileWrapper {
 public:
  SideMapFile(std::unique_ptr<File> base, std::string side, bool short_mappings,
              std::shared_ptr<MappedRegions> regions)
      : FileWrapper(std::move(base)), side_(std::move(side)), short_(short_mappings), regions_(std::move(regions)) {}
  Result<std::shared_ptr<const FileMapping>> Map(uint64_t length) override {
    int fd = ::open(side_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IOError("open " + side_);
    void* address = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (address == MAP_FAILED) return Status::IOError("mmap " + side_);
    uint64_t shown = short_ ? std::min<uint64_t>(length, std::filesystem::file_size(side_)) : length;
    if (regions_ != nullptr) regions_->emplace_back(static_cast<char*>(address), length);
    return std::shared_ptr<const FileMapping>(std::make_shared<RawMapping>(address, length, shown));
  }

 private:
  std::string side_;
  bool short_;
  std::shared_ptr<MappedRegions> regions_;
};

class SideMapFs final : public FileSystemWrapper {
 public:
  SideMapFs(std::string db, std::string side, bool short_mappings = false,
            std::shared_ptr<MappedRegions> regions = nullptr)
      : FileSystemWrapper(NewPosixFileSystem()),
        db_(std::move(db)),
        side_(std::move(side)),
        short_(short_mappings),
        regions_(std::move(regions)) {}
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (path != db_) return file;
    return std::unique_ptr<File>(std::make_unique<SideMapFile>(std::move(file), side_, short_, regions_));
  }

 private:
  std::string db_, side_;
  bool short_;
  std::shared_ptr<MappedRegions> regions_;
};

// Makes the page at `offset` (page-aligned) of a region mapped from `side` fault (mapped over from
// an empty file: SIGBUS), or, with `restore`, maps it from `side` again.
void SetPageFaulting(char* region, const std::string& side, uint64_t offset, bool restore) {
  const long page = ::sysconf(_SC_PAGESIZE);
  const std::string empty = side + ".empty";
  WriteAll(empty, "");
  int fd = ::open((restore ? side : empty).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* at = ::mmap(region + offset, static_cast<size_t>(page), PROT_READ, MAP_SHARED | MAP_FIXED, fd,
                    restore ? static_cast<off_t>(offset) : 0);
  ::close(fd);
  ASSERT_EQ(at, static_cast<void*>(region + offset));
}

std::string Key(int i) {
  char key[16];
  std::snprintf(key, sizeof(key), "k%05d", i);
  return key;
}

constexpr int kKeys = 3000;

// A database whose 3,000 keys are all in the tree (small nodes: many pages of them).
Options SmallNodes() {
  Options options;
  options.create_if_missing = true;
  options.node_size_target_bytes = 512;
  options.key_size_max_bytes = 128;
  options.fold_threshold_bytes = 0;
  return options;
}

void Fill(const std::string& path, const std::string& prefix) {
  auto db = DB::Open(path, SmallNodes());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto txn = (*db)->BeginWrite();
  ASSERT_TRUE(txn.ok());
  for (int i = 0; i < kKeys; i++) ASSERT_TRUE((*txn)->Put(Key(i), prefix + Key(i)).ok());
  ASSERT_TRUE((*txn)->Commit().ok());
}

// A filled database at `path` opened with its file mapped from a side copy at `side` (returned in
// `*bytes`), which the test truncates or rewrites to make pages fault or come back. With
// `regions`, each mapping made is recorded there.
std::unique_ptr<DB> OpenOverSideCopy(const std::string& path, const std::string& side, Options options,
                                     std::string* bytes, std::shared_ptr<MappedRegions> regions = nullptr) {
  Fill(path, "v-");
  if (::testing::Test::HasFatalFailure()) return nullptr;
  *bytes = ReadAll(path);
  WriteAll(side, *bytes);
  options.file_system = std::make_shared<SideMapFs>(path, side, /*short_mappings=*/false, std::move(regions));
  auto db = DB::Open(path, options);
  EXPECT_TRUE(db.ok()) << db.status().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

TEST(MappedReads, APageTheDiskCannotDeliverIsAnIOErrorNotACrashAndNotSticky) {
  TempDir dir;
  const std::string path = dir.Path("db"), side = dir.Path("side");
  std::string bytes;
  auto db = OpenOverSideCopy(path, side, SmallNodes(), &bytes);
  ASSERT_NE(db, nullptr);
  ASSERT_GT(bytes.size(), 16384u);
  auto got = db->Get(Key(kKeys - 1));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(**got, "v-" + Key(kKeys - 1));

  // Every page past the first now faults (SIGBUS): the root lies at the end of the file.
  ASSERT_EQ(::truncate(side.c_str(), 4096), 0);
  got = db->Get(Key(kKeys - 1));
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.status().IsIOError()) << got.status().ToString();
  EXPECT_NE(got.status().ToString().find("SIGBUS"), std::string::npos) << got.status().ToString();
  auto snapshot = db->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  auto scan = (*snapshot)->Scan(ScanRange{});
  EXPECT_TRUE(scan.status().IsIOError()) << scan.status().ToString();
  auto it = (*snapshot)->NewIterator();
  EXPECT_TRUE(it->SeekToFirst().IsIOError());
  EXPECT_FALSE(it->Valid());
  EXPECT_TRUE(it->status().IsIOError());

  // The pages come back: so do the reads, on the same handle and mapping.
  WriteAll(side, bytes);
  got = db->Get(Key(kKeys - 1));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(**got, "v-" + Key(kKeys - 1));
  scan = (*snapshot)->Scan(ScanRange{});
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(scan->size(), static_cast<size_t>(kKeys));
  EXPECT_TRUE(db->Put("another", "commit").ok()) << "a failed read does not fail the handle";
}

// A scan's iterator copies each mapped leaf out whole under the fault guard as it enters it, and
// reads the leaf's entries from its copy: once the file's pages stop being deliverable, the steps
// within the leaf it stands in still give its entries, and the step into the next leaf is an
// IOError, not a crash. After a Seek to a key (not the first), the leaf's entries are copied out
// one by one under the guard: the next step is the IOError.
TEST(MappedReads, AnIteratorsNextLeafThatIsNotReadableIsAnIOError) {
  TempDir dir;
  const std::string path = dir.Path("db"), side = dir.Path("side");
  std::string bytes;
  auto db = OpenOverSideCopy(path, side, SmallNodes(), &bytes);
  ASSERT_NE(db, nullptr);
  auto snapshot = db->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  auto it = (*snapshot)->NewIterator();
  ASSERT_TRUE(it->SeekToFirst().ok());
  ASSERT_TRUE(it->Valid());
  EXPECT_EQ(it->key(), Key(0));
  ASSERT_EQ(::truncate(side.c_str(), 0), 0);  // every page now faults, the leaf it stands in too
  Status s;
  int steps = 0;
  while ((s = it->Next()).ok()) {
    ASSERT_TRUE(it->Valid());
    steps++;
    ASSERT_EQ(it->key(), Key(steps));
    ASSERT_EQ(it->value(), "v-" + Key(steps));
  }
  EXPECT_GE(steps, 2) << "the leaf it stood in was not read from a copy";
  EXPECT_LT(steps, kKeys);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("SIGBUS"), std::string::npos) << s.ToString();
  EXPECT_FALSE(it->Valid());
  WriteAll(side, bytes);
  auto sought = (*snapshot)->NewIterator();
  ASSERT_TRUE(sought->Seek(Key(0)).ok());
  ASSERT_TRUE(sought->Valid());
  EXPECT_EQ(sought->key(), Key(0));
  ASSERT_EQ(::truncate(side.c_str(), 0), 0);
  s = sought->Next();
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("SIGBUS"), std::string::npos) << s.ToString();
  EXPECT_FALSE(sought->Valid());
  WriteAll(side, bytes);
  auto again = (*snapshot)->NewIterator();
  ASSERT_TRUE(again->SeekToFirst().ok());
  ASSERT_TRUE(again->Next().ok());
  EXPECT_EQ(again->key(), Key(1));
  EXPECT_EQ(again->value(), "v-" + Key(1));
}

// An iterator's copy of a leaf it enters is a guarded read too: a page that faults under the tail
// of a leaf whose first bytes (its count, which the descent reads) lie on the page before is an
// IOError naming that leaf, not a crash. One page of the file's first three quarters (leaves:
// the tree's internal nodes follow them) is made to fault after a scan verified every node in the
// current mapping (so that no verification reads it first). A page that holds a leaf's header or
// count is read first by the descent (the IOError then names a node that starts on it or just
// before it): the next page is tried, each after a scan that maps the file again (the fault dropped the mapping) and
// verifies every node in the new mapping.
TEST(MappedReads, AnIteratorsCopyOfALeafThatFaultsIsAnIOError) {
  TempDir dir;
  const std::string path = dir.Path("db"), side = dir.Path("side");
  std::string bytes;
  auto regions = std::make_shared<MappedRegions>();
  const Options options = SmallNodes();
  auto db = OpenOverSideCopy(path, side, options, &bytes, regions);
  ASSERT_NE(db, nullptr);
  auto snapshot = db->GetSnapshot();
  ASSERT_TRUE(snapshot.ok());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  bool named_a_leaf_before = false;
  for (uint64_t faulting = page; faulting < bytes.size() * 3 / 4 && !named_a_leaf_before; faulting += page) {
    SCOPED_TRACE("page at " + std::to_string(faulting));
    auto all = (*snapshot)->Scan(ScanRange{});  // maps the file (again) and verifies every node there
    ASSERT_TRUE(all.ok()) << all.status().ToString();
    ASSERT_EQ(all->size(), static_cast<size_t>(kKeys));
    ASSERT_FALSE(regions->empty());
    char* const region = regions->back().first;
    SetPageFaulting(region, side, faulting, /*restore=*/false);
    auto it = (*snapshot)->NewIterator();
    Status s = it->SeekToFirst();
    int seen = 0;
    while (s.ok() && it->Valid()) {
      ASSERT_EQ(it->key(), Key(seen));
      seen++;
      s = it->Next();
    }
    ASSERT_TRUE(s.IsIOError()) << s.ToString();
    EXPECT_NE(s.ToString().find("SIGBUS"), std::string::npos) << s.ToString();
    EXPECT_FALSE(it->Valid());
    const size_t at = s.ToString().find("at offset ");
    ASSERT_NE(at, std::string::npos) << s.ToString();
    const uint64_t node = std::stoull(s.ToString().substr(at + 10));
    EXPECT_LE(node, faulting) << s.ToString();
    EXPECT_GT(node + 2 * options.node_size_target_bytes, faulting) << s.ToString();
    // The leaf's header and count (the descent's reads) before the page: the copy read it first.
    named_a_leaf_before = node + format::kRecordHeaderSizeBytes + kNodeCountSizeBytes <= faulting;
    SetPageFaulting(region, side, faulting, /*restore=*/true);
  }
  EXPECT_TRUE(named_a_leaf_before) << "no page of the leaves began inside a leaf";
}

// Compaction's walk copies each node out of the mapping under the fault guard before it verifies
// it (TreeFile::NodeUse::kOnePass): a page the disk cannot deliver fails the compaction with an
// IOError, installs nothing, and the next compaction, once the pages are back, succeeds.
TEST(MappedReads, ACompactionWhoseReadOfTheMappingFaultsIsAnIOError) {
  TempDir dir;
  const std::string path = dir.Path("db"), side = dir.Path("side");
  Options options = SmallNodes();
  options.auto_compact = false;
  std::string bytes;
  auto db = OpenOverSideCopy(path, side, options, &bytes);
  ASSERT_NE(db, nullptr);
  ASSERT_EQ(::truncate(side.c_str(), 4096), 0);  // the root, at the file's end, faults
  Status s = db->Compact();
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("SIGBUS"), std::string::npos) << s.ToString();
  EXPECT_EQ(db->GetStats()->generation, 0u);
  WriteAll(side, bytes);
  ASSERT_TRUE(db->Compact().ok());
  EXPECT_EQ(db->GetStats()->generation, 1u);
  db.reset();  // (its side mapping holds the replaced file's bytes)
  auto reopened = DB::Open(path, SmallNodes());
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  auto got = (*reopened)->Get(Key(kKeys - 1));
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ(**got, "v-" + Key(kKeys - 1));
  EXPECT_EQ((*reopened)->GetStats()->generation, 1u);
}

TEST(MappedReads, ANodeDamagedInTheMappingIsCorruptionNeverWrongData) {
  TempDir dir;
  const std::string path = dir.Path("db"), side = dir.Path("side");
  Fill(path, "v-");
  std::string bytes = ReadAll(path);
  // The first copy of the last key is in its leaf (nodes come before the commit's batch).
  size_t at = bytes.find(Key(kKeys - 1));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 3] ^= 0x01;  // "k02999" -> "k03999" in the mapping only
  WriteAll(side, bytes);
  Options options = SmallNodes();
  options.file_system = std::make_shared<SideMapFs>(path, side);
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ(**(*db)->Get(Key(0)), "v-" + Key(0)) << "the other leaves read";
  auto got = (*db)->Get(Key(kKeys - 1));
  EXPECT_TRUE(got.status().IsCorruption()) << (got.ok() ? "read: " + got->value_or("(absent)") : got.status().ToString());
  auto scan = (*(*db)->GetSnapshot())->Scan(ScanRange{});
  EXPECT_TRUE(scan.status().IsCorruption()) << scan.status().ToString();
}

// A new mapping (made when the file outgrew the last) checks again every node it reads: a node
// verified in the old mapping is not trusted in the new one, whose page may have been read anew.
TEST(MappedReads, ANewMappingVerifiesAgainWhatItReads) {
  TempDir dir;
  const std::string path = dir.Path("db"), side = dir.Path("side");
  Fill(path, "v-");
  WriteAll(side, ReadAll(path));
  Options options = SmallNodes();
  options.file_system = std::make_shared<SideMapFs>(path, side, /*short_mappings=*/true);
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  EXPECT_EQ(**(*db)->Get(Key(1000)), "v-" + Key(1000));  // its leaf verified in the first mapping
  // A commit folds a new path past the first mapping's end; the next mapping shows the leaf of
  // k01000 (which the commit did not rewrite) damaged.
  ASSERT_TRUE((*db)->Put("zzz", "last").ok());
  std::string bytes = ReadAll(path);
  size_t at = bytes.find(Key(1000));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] ^= 0x01;  // "k01000" -> "k00000"
  WriteAll(side, bytes);
  auto got = (*db)->Get(Key(1000));
  EXPECT_TRUE(got.status().IsCorruption()) << (got.ok() ? "read: " + got->value_or("(absent)") : got.status().ToString());
}

// A get whose whole path this mapping has verified searches it under one fault guard, copying
// the value into the caller's string when it fits its capacity (else into a string sized first);
// the first get of a path verifies it one node at a time. Both answer alike, for every key of a
// tree of three levels, for the keys between them and beyond both ends, and into a string that
// is also the key.
TEST(MappedReads, AGetOnAVerifiedPathAnswersAsTheFirstGetDid) {
  TempDir dir;
  const std::string path = dir.Path("db");
  const std::string prefix(40, 'v');  // values of 46 bytes: past a string's own short buffer
  Fill(path, prefix);
  auto db = DB::Open(path, SmallNodes());
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  for (int round = 0; round < 2; round++) {
    SCOPED_TRACE(round == 0 ? "first gets: each path verified as it is reached" : "second gets: every path verified");
    std::string value;  // reused: sized by the first found value, then copied into
    for (int i = 0; i < kKeys; i++) {
      const std::string want = prefix + Key(i);
      auto found = (*db)->Get(Key(i), &value);
      ASSERT_TRUE(found.ok() && *found) << Key(i) << ": " << found.status().ToString();
      ASSERT_EQ(value, want);
      auto got = (*db)->Get(Key(i));  // a new string each time
      ASSERT_TRUE(got.ok() && got->has_value()) << Key(i);
      ASSERT_EQ(**got, want);
      for (const std::string& absent : {Key(i) + "!", Key(i).substr(0, 5)}) {  // just after it; a prefix of it
        found = (*db)->Get(absent, &value);
        ASSERT_TRUE(found.ok()) << found.status().ToString();
        ASSERT_FALSE(*found) << absent;
        ASSERT_EQ(value, want) << "a key not found wrote the string";
      }
    }
    for (const std::string& absent : {std::string(), std::string("a"), std::string("zzz")}) {
      auto found = (*db)->Get(absent, &value);
      ASSERT_TRUE(found.ok() && !*found) << absent;
    }
    std::string key = Key(kKeys / 2);
    key.reserve(64);  // the value fits: copied into the key's own string
    auto found = (*db)->Get(key, &key);
    ASSERT_TRUE(found.ok() && *found);
    EXPECT_EQ(key, prefix + Key(kKeys / 2));
    key = Key(kKeys / 3);
    key.shrink_to_fit();  // it does not: the string grows first
    found = (*db)->Get(key, &key);
    ASSERT_TRUE(found.ok() && *found);
    EXPECT_EQ(key, prefix + Key(kKeys / 3));
  }
}

// A file system whose Map fails (a mount without mmap: ENODEV; no address space left: ENOMEM).
class NoMapFs final : public FileSystemWrapper {
 public:
  NoMapFs() : FileSystemWrapper(NewPosixFileSystem()) {}
  class NoMapFile final : public FileWrapper {
   public:
    using FileWrapper::FileWrapper;
    Result<std::shared_ptr<const FileMapping>> Map(uint64_t) override {
      maps++;
      return Status::IOError("mmap: No such device");
    }
    static inline int maps = 0;
  };
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (path.ends_with(".lock")) return file;  // the change counter's mapping is not what this counts
    return std::unique_ptr<File>(std::make_unique<NoMapFile>(std::move(file)));
  }
};

TEST(MappedReads, AFileThatCannotBeMappedIsReadWithReadAt) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Fill(path, "v-");
  Options options = SmallNodes();
  options.file_system = std::make_shared<NoMapFs>();
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  for (int i = 0; i < kKeys; i += 97) ASSERT_EQ(**(*db)->Get(Key(i)), "v-" + Key(i));
  auto scan = (*(*db)->GetSnapshot())->Scan(ScanRange{});
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(scan->size(), static_cast<size_t>(kKeys));
  EXPECT_EQ(NoMapFs::NoMapFile::maps, 1) << "tried once, then read with ReadAt";
}

TEST(MappedReads, ASnapshotKeepsReadingTheFileACompactionReplaced) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Fill(path, "old-");
  auto db = DB::Open(path, SmallNodes());
  ASSERT_TRUE(db.ok());
  auto before = (*db)->GetSnapshot();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(**(*before)->Get(Key(7)), "old-" + Key(7));  // its file is mapped now
  {
    auto other = DB::Open(path, SmallNodes());
    ASSERT_TRUE(other.ok());
    auto txn = (*other)->BeginWrite();
    ASSERT_TRUE(txn.ok());
    for (int i = 0; i < kKeys; i++) ASSERT_TRUE((*txn)->Put(Key(i), "new-" + Key(i)).ok());
    ASSERT_TRUE((*txn)->Commit().ok());
    ASSERT_TRUE((*other)->Compact().ok());
  }
  auto scan = (*before)->Scan(ScanRange{});
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  ASSERT_EQ(scan->size(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; i++) ASSERT_EQ((*scan)[i].value, "old-" + Key(i));
  auto after = (*db)->GetSnapshot();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(**(*after)->Get(Key(7)), "new-" + Key(7));
}

// Reads every key of the Fill and counts the ones that read as `prefix` wrote them.
int GetAll(DB& db, const std::string& prefix) {
  int right = 0;
  std::string value;
  for (int i = 0; i < kKeys; i++) {
    auto found = db.Get(Key(i), &value);
    if (found.ok() && *found && value == prefix + Key(i)) right++;
  }
  return right;
}

// A compaction verifies its new file's tree before installing it, as far as the handle read since
// the last one (Stats::nodes_warmed): the handle's reads then find every node verified already,
// and verify none at their first use in the new file (Stats::nodes_verified). A handle that has
// not read warms nothing, and its reads verify the nodes themselves (I5 either way).
TEST(MappedReads, ACompactionWarmsItsFileForAHandleThatReads) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Fill(path, "v-");
  {
    auto db = DB::Open(path, SmallNodes());
    ASSERT_TRUE(db.ok());
    ASSERT_EQ(GetAll(**db, "v-"), kKeys);
    const uint64_t verified = (*db)->GetStats()->nodes_verified;
    EXPECT_GT(verified, 10u) << "3,000 keys in 512-byte nodes";
    ASSERT_TRUE((*db)->Compact().ok());
    auto stats = (*db)->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->generation, 1u);
    auto report = (*db)->Check();
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(stats->nodes_warmed, report->nodes) << "every node of the compacted tree";
    EXPECT_EQ(stats->nodes_verified, 0u) << "a new file: nothing read from it yet";
    ASSERT_EQ(GetAll(**db, "v-"), kKeys);
    EXPECT_EQ((*db)->GetStats()->nodes_verified, 0u) << "every node the gets read was verified by the compaction";
    EXPECT_TRUE((*db)->Check().ok());
  }
  {
    // One get: the compaction warms at most one path's worth (the tree's height).
    auto db = DB::Open(path, SmallNodes());
    ASSERT_TRUE(db.ok());
    EXPECT_EQ(**(*db)->Get(Key(5)), "v-" + Key(5));
    ASSERT_TRUE((*db)->Compact().ok());
    auto stats = (*db)->GetStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_GT(stats->nodes_warmed, 0u);
    EXPECT_LE(stats->nodes_warmed, stats->tree_height);
  }
  auto db = DB::Open(path, SmallNodes());
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Compact().ok());
  EXPECT_EQ((*db)->GetStats()->nodes_warmed, 0u) << "no reads, no warming";
  ASSERT_EQ(GetAll(**db, "v-"), kKeys);
  EXPECT_GT((*db)->GetStats()->nodes_verified, 10u) << "the gets verified the nodes themselves";
}

// What a FlipMapFs shows of its target: one byte flipped at `flip_at` (when the file reaches it)
// in every mapping, and also in every ReadAt with `reads_too` (the file's own bytes, as far as
// dbdb can tell). The bytes on disk are never touched.
class FlipMapFile final : public FileWrapper {
 public:
  FlipMapFile(std::unique_ptr<File> base, std::string path, uint64_t flip_at, bool reads_too)
      : FileWrapper(std::move(base)), path_(std::move(path)), flip_at_(flip_at), reads_too_(reads_too) {}
  Result<std::shared_ptr<const FileMapping>> Map(uint64_t length) override {
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IOError("open " + path_);
    void* address = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (address == MAP_FAILED) return Status::IOError("mmap " + path_);
    if (flip_at_ < std::filesystem::file_size(path_)) static_cast<char*>(address)[flip_at_] ^= 0x20;
    ::mprotect(address, length, PROT_READ);
    return std::shared_ptr<const FileMapping>(std::make_shared<RawMapping>(address, length, length));
  }
  Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
    DBDB_ASSIGN_OR_RETURN(size_t n, FileWrapper::ReadAt(offset, dst));
    if (reads_too_ && flip_at_ >= offset && flip_at_ < offset + n) dst[flip_at_ - offset] ^= 0x20;
    return n;
  }

 private:
  std::string path_;
  uint64_t flip_at_;
  bool reads_too_;
};

class FlipMapFs final : public FileSystemWrapper {
 public:
  FlipMapFs(std::string target, uint64_t flip_at, bool reads_too)
      : FileSystemWrapper(NewPosixFileSystem()), target_(std::move(target)), flip_at_(flip_at), reads_too_(reads_too) {}
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (path != target_) return file;
    return std::unique_ptr<File>(std::make_unique<FlipMapFile>(std::move(file), path, flip_at_, reads_too_));
  }

 private:
  std::string target_;
  uint64_t flip_at_;
  bool reads_too_;
};

// Inside the compacted file's first node (Key(0)'s leaf, right after the 512-byte header).
constexpr uint64_t kFirstLeafByte = 512 + 40;

// The compaction's read of its new tree meets damage. Only in its mapping (a byte flipped there,
// pages that fault, a mapping too short for the root): the node is read again from the file,
// verifies, and the file is installed unwarmed, every key reading right. In the file's own bytes
// too: the compaction fails with Corruption before the rename, and the database is as it was.
TEST(MappedReads, ACompactedTreeThatDoesNotVerifyIsNeverInstalled) {
  enum class Damage { kFlippedInTheMapping, kMappedPagesThatFault, kMappingShorterThanAsked, kFlippedInTheFile };
  const std::pair<Damage, const char*> cases[] = {
      {Damage::kFlippedInTheMapping, "a byte flipped in the mapping"},
      {Damage::kMappedPagesThatFault, "mapped pages that fault"},
      {Damage::kMappingShorterThanAsked, "a mapping shorter than asked (the root's read fails)"},
      {Damage::kFlippedInTheFile, "the file's bytes"}};
  for (const auto& [damage, what] : cases) {
    const bool in_file = damage == Damage::kFlippedInTheFile;
    SCOPED_TRACE(what);
    TempDir dir;
    const std::string path = dir.Path("db");
    Fill(path, "v-");
    const std::string before = ReadAll(path);
    Options options = SmallNodes();
    if (damage == Damage::kMappedPagesThatFault || damage == Damage::kMappingShorterThanAsked) {
      // Mapped as an empty file: every page raises SIGBUS (pages the disk cannot deliver); or,
      // as short mappings, the mapping holds none of the bytes asked for.
      const std::string empty = dir.Path("empty");
      WriteAll(empty, "");
      options.file_system = std::make_shared<SideMapFs>(path + ".compacting", empty,
                                                        damage == Damage::kMappingShorterThanAsked);
    } else {
      options.file_system = std::make_shared<FlipMapFs>(path + ".compacting", kFirstLeafByte, in_file);
    }
    auto db = DB::Open(path, options);
    ASSERT_TRUE(db.ok());
    ASSERT_EQ(GetAll(**db, "v-"), kKeys);
    Status s = (*db)->Compact();
    if (in_file) {
      EXPECT_TRUE(s.IsCorruption()) << s.ToString();
      EXPECT_NE(s.ToString().find("verifying the compacted tree"), std::string::npos) << s.ToString();
      EXPECT_EQ((*db)->GetStats()->generation, 0u) << "not installed";
    } else {
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ((*db)->GetStats()->generation, 1u) << "installed, unwarmed";
    }
    ASSERT_EQ(GetAll(**db, "v-"), kKeys);
    EXPECT_TRUE((*db)->Put("after", "the compaction").ok());
    db->reset();
    if (in_file) {
      EXPECT_EQ(ReadAll(path).substr(0, before.size()), before);
    }
    auto reopened = DB::Open(path, SmallNodes());
    ASSERT_TRUE(reopened.ok());
    ASSERT_EQ(GetAll(**reopened, "v-"), kKeys);
    EXPECT_EQ(**(*reopened)->Get("after"), "the compaction");
    EXPECT_TRUE((*reopened)->Check().ok());
  }
}

// A node the warm-up did not reach is verified at its first read in the mapping the handle took
// over (I5): one get warms one path, and a leaf off that path, damaged in that mapping, is
// Corruption when read, never wrong data.
TEST(MappedReads, ANodeTheWarmUpDidNotReachIsVerifiedAtItsFirstRead) {
  TempDir dir;
  const std::string path = dir.Path("db");
  Fill(path, "v-");
  Options options = SmallNodes();
  options.file_system = std::make_shared<FlipMapFs>(path + ".compacting", kFirstLeafByte, /*reads_too=*/false);
  auto db = DB::Open(path, options);
  ASSERT_TRUE(db.ok());
  EXPECT_EQ(**(*db)->Get(Key(kKeys - 1)), "v-" + Key(kKeys - 1));
  Status s = (*db)->Compact();
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto stats = (*db)->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->generation, 1u);
  EXPECT_GT(stats->nodes_warmed, 0u);
  EXPECT_LE(stats->nodes_warmed, stats->tree_height) << "one get: one path";
  EXPECT_EQ(**(*db)->Get(Key(kKeys - 1)), "v-" + Key(kKeys - 1)) << "the warmed path reads";
  auto got = (*db)->Get(Key(0));
  EXPECT_TRUE(got.status().IsCorruption()) << (got.ok() ? "read: " + got->value_or("(absent)") : got.status().ToString());
  // The file itself is whole: a handle of its own maps it anew and reads every key.
  auto other = DB::Open(path, SmallNodes());
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(GetAll(**other, "v-"), kKeys);
}

// Killed by SIGBUS; or, in a sanitizer build, ended by the sanitizer's own SIGBUS handler (the one
// installed before dbdb's, so the one dbdb hands a foreign SIGBUS to), which reports and then
// exits with its exit code (ASan and UBSan 1, TSan 66) or aborts (abort_on_error=1, as CI runs).
// A SIGBUS dbdb swallowed would end in the test's own _Exit(73) instead.
bool DiedOfSigbus(int status) {
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT;
  return WIFEXITED(status) && (WEXITSTATUS(status) == 1 || WEXITSTATUS(status) == 66);
}

// dbdb's SIGBUS handler catches only its own reads: any other SIGBUS in the process still ends it
// as it would have without dbdb.
TEST(MappedReadsDeathTest, ASigbusOutsideDbdbsReadsStillKills) {
  TempDir dir;
  const std::string path = dir.Path("db"), other = dir.Path("other");
  Fill(path, "v-");
  WriteAll(other, std::string(8192, 'x'));
  EXPECT_EXIT(
      {
        auto db = DB::Open(path, SmallNodes());
        if (!db.ok() || !(*db)->Get(Key(1)).ok()) std::_Exit(71);  // maps: the handler is installed
        int fd = ::open(other.c_str(), O_RDONLY);
        auto* page = static_cast<volatile const char*>(::mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd, 0));
        if (::truncate(other.c_str(), 0) != 0) std::_Exit(72);
        std::printf("%d\n", page[4096]);  // past the end: SIGBUS
        std::_Exit(73);
      },
      DiedOfSigbus, "");
}

}  // namespace
}  // namespace dbdb
