// SimFileSystem: the live behaviour matches the FileSystem contract; the trace records it; the
// fault points fail the way faultfs/sim_file_system.h documents.
#include "faultfs/sim_file_system.h"

#include <fiu-control.h>
#include <fiu.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <thread>

#include "faultfs/crash_state.h"

namespace faultfs {
namespace {

using dbdb::OpenOptions;
using dbdb::StatusCode;

std::string ReadAll(dbdb::File& file) {
  std::string out(*file.Size(), '\0');
  EXPECT_EQ(*file.ReadAt(0, out), out.size());
  return out;
}

class SimFileSystemTest : public ::testing::Test {
 protected:
  void SetUp() override { fiu_init(0); }
};

TEST_F(SimFileSystemTest, BehavesLikeAFileSystem) {
  SimFileSystem fs(1);
  auto file = fs.Open("db", OpenOptions{.create = true});
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->WriteAt(4, std::string("abcd")).ok());
  EXPECT_EQ(ReadAll(**file), std::string("\0\0\0\0abcd", 8));
  ASSERT_TRUE((*file)->Truncate(6).ok());
  EXPECT_EQ(*(*file)->Size(), 6u);
  EXPECT_TRUE(fs.Open("missing", OpenOptions{}).status().IsNotFound());
  EXPECT_TRUE(fs.Open("nodir/x", OpenOptions{.create = true}).status().IsNotFound());
  ASSERT_TRUE(fs.Rename("db", "db2").ok());
  EXPECT_FALSE(*fs.Exists("db"));
  EXPECT_EQ(*fs.List("."), std::vector<std::string>{"db2"});
  // A handle keeps its file across the rename.
  EXPECT_EQ(*(*file)->Identity(), *fs.Identity("db2"));
  EXPECT_EQ(ReadAll(**file).size(), 6u);
  EXPECT_TRUE(fs.Remove("db2").ok());
  EXPECT_TRUE(fs.Remove("db2").IsNotFound());
}

TEST_F(SimFileSystemTest, StatReportsSizeAndWhetherTheFileStillHasAName) {
  SimFileSystem fs(1);
  auto old_file = fs.Open("db", OpenOptions{.create = true});
  ASSERT_TRUE((*old_file)->WriteAt(0, std::string("12345")).ok());
  EXPECT_EQ((*old_file)->Stat()->size_bytes, 5u);
  EXPECT_FALSE((*old_file)->Stat()->unlinked);
  auto new_file = fs.Open("db.new", OpenOptions{.create = true});
  ASSERT_TRUE(fs.Rename("db.new", "db").ok());
  EXPECT_TRUE((*old_file)->Stat()->unlinked) << "renamed over";
  EXPECT_FALSE((*new_file)->Stat()->unlinked) << "moved, still named";
  ASSERT_TRUE(fs.Remove("db").ok());
  EXPECT_TRUE((*new_file)->Stat()->unlinked) << "removed";
}

TEST_F(SimFileSystemTest, TraceRecordsEveryOperation) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE((*file)->WriteAt(0, std::string("x")).ok());
  ASSERT_TRUE((*file)->Sync().ok());
  std::string b(1, '\0');
  ASSERT_TRUE((*file)->ReadAt(0, b).ok());
  ASSERT_TRUE(fs.SyncDir(".").ok());
  auto trace = fs.Trace();
  ASSERT_EQ(trace.size(), 5u);
  EXPECT_EQ(trace[0].kind, TraceOp::Kind::kCreate);
  EXPECT_EQ(trace[1].kind, TraceOp::Kind::kWrite);
  EXPECT_EQ(trace[2].kind, TraceOp::Kind::kSync);
  EXPECT_EQ(trace[3].kind, TraceOp::Kind::kRead);
  EXPECT_EQ(trace[4].kind, TraceOp::Kind::kSyncDir);
}

TEST_F(SimFileSystemTest, DurableImageHoldsOnlySyncedDataUnderSyncedNames) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE((*file)->WriteAt(0, std::string("synced")).ok());
  ASSERT_TRUE((*file)->Sync().ok());
  EXPECT_TRUE(fs.DurableImage().files.empty()) << "the name is not durable before SyncDir";
  ASSERT_TRUE(fs.SyncDir(".").ok());
  ASSERT_TRUE((*file)->WriteAt(6, std::string("-volatile")).ok());
  auto image = fs.DurableImage();
  ASSERT_EQ(image.files.count("f"), 1u);
  EXPECT_EQ(image.files["f"], "synced");
  EXPECT_EQ(fs.LiveImage().files["f"], "synced-volatile");
}

// A transient handle's writes (a lock file's change counter) change what reads see, in every
// process, but no crash state keeps them and they add no crash point: the trace marks them, and
// the persistence model skips them, even after a sync of the same file.
TEST_F(SimFileSystemTest, TransientWritesAreReadButNoCrashStateKeepsThem) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE((*file)->WriteAt(0, std::string("kept")).ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE(fs.SyncDir(".").ok());
  auto transient = fs.Open("f", OpenOptions{.transient = true});
  ASSERT_TRUE(transient.ok());
  ASSERT_TRUE((*transient)->WriteAt(0, std::string("LOST")).ok());
  ASSERT_TRUE((*transient)->Sync().ok());
  auto other = fs.NewProcess("p2")->Open("f", OpenOptions{});
  EXPECT_EQ(ReadAll(**other), "LOST");
  EXPECT_EQ(fs.LiveImage().files["f"], "LOST");
  EXPECT_EQ(fs.DurableImage().files["f"], "kept") << "a crash kept a transient write";
  auto trace = fs.Trace();
  size_t transient_writes = 0;
  for (const TraceOp& op : trace) {
    if (op.kind == TraceOp::Kind::kWrite && op.transient) {
      transient_writes++;
      EXPECT_FALSE(op.IsMutation());
      EXPECT_EQ(op.size, 4u);
      EXPECT_TRUE(op.data.empty()) << "the trace kept a transient write's bytes";
      EXPECT_NE(op.ToString().find("(transient)"), std::string::npos);
    }
  }
  EXPECT_EQ(transient_writes, 1u);
}

TEST_F(SimFileSystemTest, FromImageIsDurable) {
  CrashImage image;
  image.files["a"] = "alpha";
  auto fs = SimFileSystem::FromImage(image, 3);
  EXPECT_EQ(fs->DurableImage().files, image.files);
  EXPECT_EQ(fs->LiveImage().files, image.files);
}

TEST_F(SimFileSystemTest, LockExcludesOtherHoldersAndWakesWaiters) {
  SimFileSystem fs(1);
  auto held = fs.Lock("l", {.wait = false});
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(fs.Lock("l", {.wait = false}).status().code(), StatusCode::kBusy);
  bool acquired = false;
  std::thread waiter([&] {
    auto lock = fs.Lock("l", {});
    acquired = lock.ok();
  });
  held.value().reset();
  waiter.join();
  EXPECT_TRUE(acquired);
}

// As flock through one open file description (PosixFileSystem's test says the same of the real
// one): the lock of the file's inode, one at a time per File, held after the File is gone.
TEST_F(SimFileSystemTest, ALockThroughAnOpenFileIsTheInodesLock) {
  SimFileSystem fs(1);
  auto file = fs.Open("l", OpenOptions{.create = true});
  ASSERT_TRUE(file.ok());
  auto held = (*file)->Lock({.wait = false});
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_EQ(fs.Lock("l", {.wait = false, .shared = true}).status().code(), StatusCode::kBusy);
  EXPECT_EQ((*file)->Lock({.wait = false}).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(fs.Rename("l", "m").ok());  // the inode's lock, whatever its name
  EXPECT_EQ(fs.Lock("m", {.wait = false}).status().code(), StatusCode::kBusy);
  EXPECT_TRUE(fs.Lock("l", {.wait = false}).ok()) << "a new file under the old name has a lock of its own";
  file.value().reset();
  EXPECT_EQ(fs.Lock("m", {.wait = false}).status().code(), StatusCode::kBusy);
  bool acquired = false;
  std::thread waiter([&] {
    auto lock = fs.Lock("m", {});
    acquired = lock.ok();
  });
  held.value().reset();
  waiter.join();
  EXPECT_TRUE(acquired);
}

TEST_F(SimFileSystemTest, InjectedWriteErrorsAreTaggedAndCarryTheirErrno) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  static int no_space = ENOSPC;
  fiu_enable("faultfs/write", 1, &no_space, FIU_ONETIME);
  auto s = (*file)->WriteAt(0, std::string("data"));
  EXPECT_EQ(s.code(), StatusCode::kNoSpace);
  EXPECT_EQ(s.message().rfind("injected:", 0), 0u) << s.ToString();
  EXPECT_EQ(*(*file)->Size(), 0u) << "a failed write must not happen";
  EXPECT_TRUE((*file)->WriteAt(0, std::string("data")).ok()) << "FIU_ONETIME fails once";
}

TEST_F(SimFileSystemTest, ShortWriteWritesHalfThenFails) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  fiu_enable("faultfs/write/short", 1, nullptr, FIU_ONETIME);
  EXPECT_TRUE((*file)->WriteAt(0, std::string("12345678")).IsIOError());
  EXPECT_EQ(ReadAll(**file), "1234");
}

TEST_F(SimFileSystemTest, LostSyncNeverMakesItsWritesDurable) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE(fs.SyncDir(".").ok());
  ASSERT_TRUE((*file)->WriteAt(0, std::string("lost")).ok());
  fiu_enable("faultfs/sync/lose", 1, nullptr, FIU_ONETIME);
  EXPECT_TRUE((*file)->Sync().IsIOError());
  EXPECT_EQ(ReadAll(**file), "lost") << "still readable until a crash";
  ASSERT_TRUE((*file)->Sync().ok()) << "a retried sync succeeds...";
  EXPECT_EQ(fs.DurableImage().files["f"], "") << "...but the lost writes are not durable (fsyncgate)";
}

TEST_F(SimFileSystemTest, CorruptReadFlipsOneBit) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE((*file)->WriteAt(0, std::string(16, 'a')).ok());
  fiu_enable("faultfs/read/corrupt", 1, nullptr, FIU_ONETIME);
  std::string got = ReadAll(**file);
  int differing_bits = 0;
  for (char c : got) differing_bits += __builtin_popcount(static_cast<uint8_t>(c ^ 'a'));
  EXPECT_EQ(differing_bits, 1);
  EXPECT_EQ(ReadAll(**file), std::string(16, 'a')) << "the stored bytes are intact";
}

// A mapping is a shared page cache: it shows later writes and truncates through any handle and
// from any process, and stays with the file after its name is renamed over.
TEST_F(SimFileSystemTest, MappingsSeeEveryLaterWrite) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE((*file)->WriteAt(0, std::string(100, 'a')).ok());
  auto mapping = (*file)->Map(1 << 20);
  ASSERT_TRUE(mapping.ok() && *mapping != nullptr) << mapping.status().ToString();
  EXPECT_EQ(std::string((*mapping)->data(), 100), std::string(100, 'a'));
  auto other = fs.NewProcess("p1")->Open("f", OpenOptions{});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->WriteAt(50, std::string(100, 'b')).ok());
  EXPECT_EQ(std::string((*mapping)->data(), 150), std::string(50, 'a') + std::string(100, 'b'));
  ASSERT_TRUE((*file)->Truncate(10).ok());
  ASSERT_TRUE((*file)->WriteAt(10, std::string("c")).ok());
  EXPECT_EQ(std::string((*mapping)->data(), 12), std::string(10, 'a') + std::string("c\0", 2))
      << "the bytes past the end of the file read as zeros up to its last page";
  auto replacement = fs.Open("g", OpenOptions{.create = true});
  ASSERT_TRUE((*replacement)->WriteAt(0, std::string("zzz")).ok());
  ASSERT_TRUE(fs.Rename("g", "f").ok());
  EXPECT_EQ(std::string((*mapping)->data(), 3), "aaa") << "the mapping stays with the file, not the name";
}

TEST_F(SimFileSystemTest, MapFaultsFailTheMapFlipABitOfOneMappingOrFaultEveryRead) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE((*file)->WriteAt(0, std::string(5000, 'a')).ok());
  fiu_enable("faultfs/map", 1, nullptr, FIU_ONETIME);
  auto failed = (*file)->Map(8192);
  EXPECT_TRUE(failed.status().IsIOError());
  EXPECT_EQ(failed.status().message().rfind("injected:", 0), 0u) << failed.status().ToString();

  fiu_enable("faultfs/map/corrupt", 1, nullptr, FIU_ONETIME);
  auto corrupt = (*file)->Map(8192);
  ASSERT_TRUE(corrupt.ok() && *corrupt != nullptr);
  int differing_bits = 0;
  for (int i = 0; i < 5000; i++) differing_bits += __builtin_popcount(static_cast<uint8_t>((*corrupt)->data()[i] ^ 'a'));
  EXPECT_EQ(differing_bits, 1);
  auto clean = (*file)->Map(8192);
  ASSERT_TRUE(clean.ok());
  EXPECT_EQ(std::string((*clean)->data(), 5000), std::string(5000, 'a')) << "the flip is in that mapping only";
  EXPECT_EQ(ReadAll(**file), std::string(5000, 'a'));

  fiu_enable("faultfs/map/fault", 1, nullptr, FIU_ONETIME);
  auto faulty = (*file)->Map(8192);
  ASSERT_TRUE(faulty.ok() && *faulty != nullptr);
  const char* data = (*faulty)->data();
  // Killed by SIGBUS (or, in a sanitizer build, reported by the sanitizer's handler, which then
  // exits with its exit code, ASan and UBSan 1, TSan 66, or aborts with abort_on_error=1).
  auto died_of_sigbus = [](int status) {
    return WIFSIGNALED(status) ? WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT
                               : WIFEXITED(status) && (WEXITSTATUS(status) == 1 || WEXITSTATUS(status) == 66);
  };
  EXPECT_EXIT({ std::_Exit(70 + data[0]); }, died_of_sigbus, "") << "every read of it faults";
}

TEST_F(SimFileSystemTest, MisdirectedWriteLandsElsewhere) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  fiu_enable("faultfs/write/misdirect", 1, nullptr, FIU_ONETIME);
  ASSERT_TRUE((*file)->WriteAt(0, std::string("m")).ok());
  EXPECT_EQ(*(*file)->Size(), 4097u);
}

TEST_F(SimFileSystemTest, FailedSyncAndRenameAndOpenReportErrors) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  fiu_enable("faultfs/sync", 1, nullptr, FIU_ONETIME);
  EXPECT_TRUE((*file)->Sync().IsIOError());
  fiu_enable("faultfs/rename", 1, nullptr, FIU_ONETIME);
  EXPECT_TRUE(fs.Rename("f", "g").IsIOError());
  EXPECT_TRUE(*fs.Exists("f"));
  fiu_enable("faultfs/open", 1, nullptr, FIU_ONETIME);
  EXPECT_TRUE(fs.Open("f", OpenOptions{}).status().IsIOError());
  fiu_enable("faultfs/syncdir", 1, nullptr, FIU_ONETIME);
  EXPECT_TRUE(fs.SyncDir(".").IsIOError());
}

}  // namespace
}  // namespace faultfs
