// The crash oracle allows exactly the states I1-I3 allow.
#include "model/crash_oracle.h"

#include <gtest/gtest.h>

namespace model {
namespace {

TEST(CrashOracle, AllowsFromTheLastDurableAcknowledgementToTheLastStarted) {
  CrashOracle oracle;
  uint64_t c1 = oracle.Begin({{"a", "1"}});
  oracle.Acknowledge(c1, true);
  uint64_t c2 = oracle.Begin({{"a", "2"}});
  oracle.Acknowledge(c2, false);  // acknowledged, not durable (no-sync mode)
  uint64_t c3 = oracle.Begin({{"a", "3"}});  // in flight at the crash
  EXPECT_EQ(oracle.lowest_allowed(), c1);
  EXPECT_EQ(oracle.highest_allowed(), c3);
  EXPECT_FALSE(oracle.Check(c1, {{"a", "1"}}).has_value());
  EXPECT_FALSE(oracle.Check(c3, {{"a", "3"}}).has_value());
  EXPECT_TRUE(oracle.Check(0, {}).has_value()) << "losing a durable commit violates I2";
  EXPECT_TRUE(oracle.Check(c2, {{"a", "2"}, {"b", "partial"}}).has_value()) << "a partial commit violates I1";
  EXPECT_TRUE(oracle.Check(c2, {{"a", "3"}}).has_value()) << "the right contents under the wrong commit number";
  EXPECT_NE(oracle.Check(0, {})->find("I2"), std::string::npos);
  EXPECT_NE(oracle.Check(c2, {{"a", "3"}})->find("I1"), std::string::npos);
  EXPECT_NE(oracle.Check(c3 + 1, {{"a", "3"}})->find("I3"), std::string::npos);
  // A torn state is I1 wherever the commit it names lies, also below the durable floor.
  EXPECT_NE(oracle.Check(0, {{"a", "2"}})->find("I1"), std::string::npos);
  // At an earlier crash point the range is narrower (AllowedAt).
  EXPECT_TRUE(oracle.Check(c3, {{"a", "3"}}, c1, c2).has_value()) << "commit 3 had not begun";
}

TEST(CrashOracle, RecoveryForgetsLaterCommits) {
  CrashOracle oracle;
  oracle.Begin({{"a", "1"}});
  oracle.Begin({{"a", "2"}});
  oracle.Recovered(1);
  EXPECT_EQ(oracle.lowest_allowed(), 1u);
  EXPECT_EQ(oracle.highest_allowed(), 1u);
  uint64_t next = oracle.Begin({{"a", "9"}});
  EXPECT_EQ(next, 2u);
  EXPECT_EQ(oracle.state(2), (State{{"a", "9"}}));
}

}  // namespace
}  // namespace model

namespace model {
namespace {

std::pair<uint64_t, uint64_t> Range(uint64_t lowest, uint64_t highest) { return {lowest, highest}; }

TEST(AllowedAt, BoundsFollowTheCrashPoint) {
  std::vector<CommitTiming> commits = {{1, 10, 20, true}, {2, 30, 40, true}, {3, 50, UINT64_MAX, false}};
  EXPECT_EQ(AllowedAt(commits, 5, 0), Range(0, 0));
  EXPECT_EQ(AllowedAt(commits, 15, 0), Range(0, 1)) << "commit 1 in flight";
  EXPECT_EQ(AllowedAt(commits, 20, 0), Range(1, 1)) << "commit 1 acknowledged";
  EXPECT_EQ(AllowedAt(commits, 45, 0), Range(2, 2));
  EXPECT_EQ(AllowedAt(commits, 60, 0), Range(2, 3)) << "commit 3 never returned";
  commits[1].durable = false;  // no-sync mode
  EXPECT_EQ(AllowedAt(commits, 45, 0), Range(1, 2));
}

}  // namespace
}  // namespace model
