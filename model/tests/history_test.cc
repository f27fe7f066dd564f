// The history checker finds the classic anomalies and accepts serial histories.
#include "model/history.h"

#include <gtest/gtest.h>

namespace model {
namespace {

RecordedTransaction Writer(std::string name, uint64_t start, uint64_t end, uint64_t commit,
                           std::vector<Read> reads, std::vector<Write> writes) {
  RecordedTransaction t;
  t.name = std::move(name);
  t.start = start;
  t.end = end;
  t.reads = std::move(reads);
  t.writes = std::move(writes);
  t.commit_id = commit;
  t.snapshot_id = commit - 1;
  return t;
}

RecordedTransaction Reader(std::string name, uint64_t start, uint64_t end, std::vector<Read> reads,
                           std::optional<uint64_t> snapshot = std::nullopt) {
  RecordedTransaction t;
  t.name = std::move(name);
  t.start = start;
  t.end = end;
  t.reads = std::move(reads);
  t.snapshot_id = snapshot;
  return t;
}

TEST(History, SerialHistoryIsAccepted) {
  std::vector<RecordedTransaction> h = {
      Writer("w1", 1, 2, 1, {{"x", "x0"}}, {{"x", "x1"}}),
      Reader("r1", 3, 4, {{"x", "x1"}}),
      Writer("w2", 5, 6, 2, {{"x", "x1"}}, {{"x", "x2"}, {"y", "y2"}}),
      Reader("r2", 7, 8, {{"x", "x2"}, {"y", "y2"}}),
      Reader("r0", 1, 9, {{"x", "x0"}, {"y", std::nullopt}}, 0),  // concurrent with all: may see commit 0
  };
  auto verdict = CheckHistory(h, {{"x", "x0"}});
  EXPECT_TRUE(verdict.ok) << verdict.explanation;
}

TEST(History, LostUpdateIsACycle) {
  // Both increment from x0: the second overwrote the first (DBDB's stale-root bug).
  std::vector<RecordedTransaction> h = {
      Writer("w1", 1, 3, 1, {{"x", "x0"}}, {{"x", "x1"}}),
      Writer("w2", 2, 4, 2, {{"x", "x0"}}, {{"x", "x2"}}),
  };
  auto verdict = CheckHistory(h, {{"x", "x0"}});
  ASSERT_FALSE(verdict.ok);
  EXPECT_EQ(verdict.cycle.size(), 2u) << verdict.explanation;
  EXPECT_NE(verdict.explanation.find("rw"), std::string::npos) << verdict.explanation;
}

TEST(History, ReadSkewOfAPartialCommitIsACycle) {
  // A transfer moves 10 from a to b in one commit; a reader sees the new a and the old b.
  std::vector<RecordedTransaction> h = {
      Writer("transfer", 1, 2, 1, {{"a", "a0"}, {"b", "b0"}}, {{"a", "a1"}, {"b", "b1"}}),
      Reader("reader", 1, 3, {{"a", "a1"}, {"b", "b0"}}),
  };
  auto verdict = CheckHistory(h, {{"a", "a0"}, {"b", "b0"}});
  ASSERT_FALSE(verdict.ok);
  EXPECT_EQ(verdict.cycle.size(), 2u) << verdict.explanation;
}

TEST(History, StaleReadAfterACommitReturnedViolatesRealTime) {
  std::vector<RecordedTransaction> h = {
      Writer("w1", 1, 2, 1, {}, {{"x", "x1"}}),
      Reader("late reader", 3, 4, {{"x", "x0"}}),
  };
  auto verdict = CheckHistory(h, {{"x", "x0"}});
  ASSERT_FALSE(verdict.ok);
  EXPECT_NE(verdict.explanation.find("real-time"), std::string::npos) << verdict.explanation;
  // Overlapping in time, the same reads are fine.
  h[1].start = 1;
  EXPECT_TRUE(CheckHistory(h, {{"x", "x0"}}).ok);
}

TEST(History, ReadingAnAbortedValueIsReported) {
  std::vector<RecordedTransaction> h = {Reader("r", 1, 2, {{"x", "never-committed"}})};
  auto verdict = CheckHistory(h);
  ASSERT_FALSE(verdict.ok);
  EXPECT_NE(verdict.explanation.find("no committed transaction wrote"), std::string::npos);
}

TEST(History, AbsentReadsArePlacedBySnapshot) {
  std::vector<RecordedTransaction> h = {
      Writer("create", 1, 2, 1, {}, {{"x", "x1"}}),
      Writer("delete", 3, 4, 2, {}, {{"x", std::nullopt}}),
      Reader("after delete", 5, 6, {{"x", std::nullopt}}, 2),
  };
  EXPECT_TRUE(CheckHistory(h).ok);
  h[2].snapshot_id = 1;  // claims a snapshot where x was present
  EXPECT_FALSE(CheckHistory(h).ok);
}

TEST(History, DuplicateValuesAreRejected) {
  std::vector<RecordedTransaction> h = {
      Writer("w1", 1, 2, 1, {}, {{"x", "same"}}),
      Writer("w2", 3, 4, 2, {}, {{"x", "same"}}),
  };
  EXPECT_FALSE(CheckHistory(h).ok);
}

TEST(History, LargeSerialHistoryIsFast) {
  std::vector<RecordedTransaction> h;
  for (uint64_t i = 1; i <= 20000; i++) {
    std::string prev = "v" + std::to_string(i - 1);
    h.push_back(Writer("w" + std::to_string(i), 2 * i, 2 * i + 1, i, {{"x", prev}}, {{"x", "v" + std::to_string(i)}}));
  }
  EXPECT_TRUE(CheckHistory(h, {{"x", "v0"}}).ok);
}

}  // namespace
}  // namespace model
