// Crash states: each plan yields exactly the filesystems docs/PERSISTENCE.md allows.
#include "faultfs/crash_state.h"

#include <gtest/gtest.h>

#include <set>

namespace faultfs {
namespace {

using dbdb::OpenOptions;

// Three volatile single-sector writes to a durable, empty, named file.
struct ThreeWrites {
  SimFileSystem fs{7};
  PersistenceTracker tracker;
  ThreeWrites() {
    auto file = fs.Open("f", OpenOptions{.create = true});
    EXPECT_TRUE((*file)->Sync().ok());
    EXPECT_TRUE(fs.SyncDir(".").ok());
    EXPECT_TRUE((*file)->WriteAt(0, std::string("a")).ok());
    EXPECT_TRUE((*file)->WriteAt(1, std::string("b")).ok());
    EXPECT_TRUE((*file)->WriteAt(2, std::string("c")).ok());
    tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  }
  std::set<std::string> Contents(CrashPlan plan) {
    std::set<std::string> out;
    tracker.Enumerate(plan, 1000, 1, [&](const CrashChoice& c) {
      out.insert(tracker.Build(c).files.at("f"));
      return true;
    });
    return out;
  }
};

TEST(CrashState, DropLosesEveryVolatileWrite) {
  ThreeWrites t;
  EXPECT_EQ(t.tracker.CountStates(CrashPlan::kDrop), 1u);
  EXPECT_EQ(t.Contents(CrashPlan::kDrop), std::set<std::string>{""});
}

TEST(CrashState, PrefixKeepsTheFirstK) {
  ThreeWrites t;
  EXPECT_EQ(t.tracker.CountStates(CrashPlan::kPrefix), 4u);
  EXPECT_EQ(t.Contents(CrashPlan::kPrefix), (std::set<std::string>{"", "a", "ab", "abc"}));
}

// Writes and name operations interleaved: kOrdered keeps a prefix of them all, in the order they
// were made, so a later write is never kept without an earlier create, where kPrefix (names and
// writes each a prefix of their own) allows it.
TEST(CrashState, OrderedKeepsAPrefixOfEveryOperationInOrder) {
  SimFileSystem fs(3);
  ASSERT_TRUE(fs.Open("f", OpenOptions{.create = true}).ok());
  ASSERT_TRUE(fs.SyncDir(".").ok());
  auto f = fs.Open("f", OpenOptions{});
  ASSERT_TRUE((*f)->WriteAt(0, std::string("a")).ok());
  auto g = fs.Open("g", OpenOptions{.create = true});
  ASSERT_TRUE((*g)->WriteAt(0, std::string("b")).ok());
  ASSERT_TRUE((*f)->WriteAt(1, std::string("c")).ok());
  PersistenceTracker tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  EXPECT_EQ(tracker.CountStates(CrashPlan::kOrdered), 5u);  // 3 writes and 1 create, kept 0..4
  std::set<std::string> got;
  tracker.Enumerate(CrashPlan::kOrdered, 100, 1, [&](const CrashChoice& c) {
    CrashImage image = tracker.Build(c);
    got.insert(image.files.at("f") + "|" + (image.files.count("g") ? image.files.at("g") : "-"));
    return true;
  });
  EXPECT_EQ(got, (std::set<std::string>{"|-", "a|-", "a|", "a|b", "ac|b"}));
  // kPrefix holds a state kOrdered rules out: the last write kept, the create of g before it lost.
  std::set<std::string> prefix;
  tracker.Enumerate(CrashPlan::kPrefix, 100, 1, [&](const CrashChoice& c) {
    CrashImage image = tracker.Build(c);
    prefix.insert(image.files.at("f") + "|" + (image.files.count("g") ? image.files.at("g") : "-"));
    return true;
  });
  EXPECT_TRUE(prefix.count("ac|-"));
}

TEST(CrashState, SubsetReordersWithHolesReadingAsZeros) {
  ThreeWrites t;
  EXPECT_EQ(t.tracker.CountStates(CrashPlan::kSubset), 8u);
  auto got = t.Contents(CrashPlan::kSubset);
  EXPECT_EQ(got.size(), 8u);
  EXPECT_TRUE(got.count(std::string("\0\0c", 3))) << "the last write alone, over a zero hole";
  EXPECT_TRUE(got.count(std::string("a\0c", 3)));
}

TEST(CrashState, SyncMakesWritesDurableForEveryPlan) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE(fs.SyncDir(".").ok());
  ASSERT_TRUE((*file)->WriteAt(0, std::string("durable")).ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->WriteAt(7, std::string("+")).ok());
  auto tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  tracker.Enumerate(CrashPlan::kAll, 1000, 1, [&](const CrashChoice& c) {
    std::string got = tracker.Build(c).files.at("f");
    EXPECT_EQ(got.substr(0, 7), "durable") << c.Describe();
    return true;
  });
}

TEST(CrashState, TornWritesKeepWholeSectorsOnly) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE(fs.SyncDir(".").ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->WriteAt(0, std::string(3 * 512, 'x')).ok());
  auto tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  EXPECT_EQ(tracker.SectorCount(0), 3u);
  // Per write: 2^3-2 proper masks + extended-only, times zero/garbage fill.
  EXPECT_EQ(tracker.CountStates(CrashPlan::kTorn), (6u + 1u) * 2u);
  std::set<std::string> zero_filled;
  tracker.Enumerate(CrashPlan::kTorn, 1000, 1, [&](const CrashChoice& c) {
    std::string got = tracker.Build(c).files.at("f");
    const WriteFate& fate = c.writes[0];
    // The file grows to the end of the highest sector that arrived (all three when only the
    // size arrived).
    uint64_t expected_size = fate.kind == WriteFate::Kind::kTorn ? 512 * (64 - __builtin_clzll(fate.sectors)) : 1536;
    EXPECT_EQ(got.size(), expected_size) << c.Describe();
    for (size_t sector = 0; sector * 512 < got.size(); sector++) {
      std::string s = got.substr(sector * 512, 512);
      bool kept = fate.kind == WriteFate::Kind::kTorn && (fate.sectors >> sector & 1) != 0;
      if (kept) {
        EXPECT_EQ(s, std::string(512, 'x')) << "sector " << sector << ": " << c.Describe();
      } else if (!fate.garbage_fill) {
        EXPECT_EQ(s, std::string(512, '\0')) << "sector " << sector << ": " << c.Describe();
      } else {
        EXPECT_NE(s, std::string(512, 'x')) << "sector " << sector << ": " << c.Describe();
        EXPECT_NE(s, std::string(512, '\0')) << "sector " << sector << ": " << c.Describe();
      }
    }
    if (!fate.garbage_fill) zero_filled.insert(got);
    return true;
  });
  // With zero fill, the kept sectors over zeros: x.. / .x. / ..x-shaped files, and more.
  EXPECT_TRUE(zero_filled.count(std::string(512, '\0') + std::string(512, 'x')));
  EXPECT_TRUE(zero_filled.count(std::string(1024, '\0') + std::string(512, 'x')));
  EXPECT_TRUE(zero_filled.count(std::string(1536, '\0'))) << "extended, no data";
}

TEST(CrashState, GarbageFillIsDeterministicForTheSeed) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE(fs.SyncDir(".").ok());
  ASSERT_TRUE((*file)->WriteAt(0, std::string(1024, 'x')).ok());
  auto tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  CrashChoice choice{{WriteFate{WriteFate::Kind::kExtendedOnly, 0, true}}, {}, 42};
  std::string first = tracker.Build(choice).files.at("f");
  EXPECT_EQ(first.size(), 1024u);
  EXPECT_NE(first, std::string(1024, '\0'));
  EXPECT_EQ(tracker.Build(choice).files.at("f"), first);
  choice.garbage_seed = 43;
  EXPECT_NE(tracker.Build(choice).files.at("f"), first);
}

TEST(CrashState, UnsyncedCreateAndRenameMayBeLost) {
  SimFileSystem fs(1);
  {
    auto file = fs.Open("old", OpenOptions{.create = true});
    ASSERT_TRUE((*file)->WriteAt(0, std::string("O")).ok());
    ASSERT_TRUE((*file)->Sync().ok());
    ASSERT_TRUE(fs.SyncDir(".").ok());
    auto temp = fs.Open("tmp", OpenOptions{.create = true});
    ASSERT_TRUE((*temp)->WriteAt(0, std::string("N")).ok());
    ASSERT_TRUE((*temp)->Sync().ok());
    ASSERT_TRUE(fs.Rename("tmp", "old").ok());
  }
  auto tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  EXPECT_EQ(tracker.volatile_name_op_count(), 2u);  // create tmp, rename tmp -> old
  std::set<std::string> olds;
  tracker.Enumerate(CrashPlan::kPrefix, 100, 1, [&](const CrashChoice& c) {
    auto image = tracker.Build(c);
    olds.insert(image.files.at("old"));
    return true;
  });
  EXPECT_EQ(olds, (std::set<std::string>{"O", "N"})) << "the rename may or may not have persisted";
  // After the directory sync only the new file remains.
  ASSERT_TRUE(fs.SyncDir(".").ok());
  auto synced = TrackerAt(fs.Trace(), fs.TraceSize());
  EXPECT_EQ(synced.CountStates(CrashPlan::kAll), 3u);  // nothing volatile: drop, prefix, subset
  EXPECT_EQ(synced.Build(CrashChoice{}).files, (std::map<std::string, std::string>{{"old", "N"}}));
}

TEST(CrashState, SamplingBeyondTheBoundIsSeededAndBounded) {
  SimFileSystem fs(1);
  auto file = fs.Open("f", OpenOptions{.create = true});
  ASSERT_TRUE(fs.SyncDir(".").ok());
  for (int i = 0; i < 40; i++) ASSERT_TRUE((*file)->WriteAt(i * 512, std::string(512, 'a' + i % 26)).ok());
  auto tracker = TrackerAt(fs.Trace(), fs.TraceSize());
  EXPECT_EQ(tracker.CountStates(CrashPlan::kSubset), uint64_t{1} << 40);
  auto sample = [&](uint64_t seed) {
    std::vector<uint64_t> hashes;
    tracker.Enumerate(CrashPlan::kAll, 50, seed, [&](const CrashChoice& c) {
      hashes.push_back(tracker.Build(c).Hash());
      return true;
    });
    return hashes;
  };
  auto a = sample(5);
  EXPECT_EQ(a.size(), 50u);
  EXPECT_EQ(a, sample(5)) << "the same seed samples the same states";
  EXPECT_NE(a, sample(6));
}

TEST(CrashState, PlanNamesRoundTrip) {
  for (CrashPlan p : {CrashPlan::kAll, CrashPlan::kDrop, CrashPlan::kPrefix, CrashPlan::kSubset, CrashPlan::kTorn,
                      CrashPlan::kOrdered}) {
    CrashPlan parsed;
    ASSERT_TRUE(ParseCrashPlan(CrashPlanName(p), &parsed));
    EXPECT_EQ(parsed, p);
  }
  CrashPlan unused;
  EXPECT_FALSE(ParseCrashPlan("bogus", &unused));
}

}  // namespace
}  // namespace faultfs
