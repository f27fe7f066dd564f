// The reference store semantics.
#include "model/model.h"

#include <gtest/gtest.h>

namespace model {
namespace {

TEST(ModelStore, TransactionsReadTheirWritesAndCommitAtomically) {
  Store s;
  s.Begin();
  s.Put("a", "1");
  s.Put("b", "2");
  s.Del("a");
  EXPECT_EQ(s.Get("a"), std::nullopt);
  EXPECT_EQ(s.Get("b"), "2");
  EXPECT_TRUE(s.committed().empty());
  EXPECT_TRUE(s.Commit());
  EXPECT_EQ(s.committed(), (State{{"b", "2"}}));
  EXPECT_EQ(s.txn_id(), 1u);
  s.Begin();
  s.Put("c", "3");
  s.Abort();
  EXPECT_EQ(s.committed().size(), 1u);
  s.Begin();
  EXPECT_FALSE(s.Commit()) << "an empty transaction commits nothing";
  EXPECT_EQ(s.txn_id(), 1u);
}

TEST(ModelStore, ResetToAdoptsARecoveredState) {
  Store s;
  for (int i = 0; i < 3; i++) {
    s.Begin();
    s.Put("k", std::to_string(i));
    s.Commit();
  }
  s.ResetTo(1, State{{"k", "0"}});
  EXPECT_EQ(s.txn_id(), 1u);
  EXPECT_EQ(s.committed(), (State{{"k", "0"}}));
}

TEST(ModelScan, RangesAndPrefixes) {
  State st{{"a", "1"}, {"b", "2"}, {"ba", "3"}, {"c", "4"}};
  EXPECT_EQ(Scan(st, "b", std::string("c"), 10).size(), 2u);
  EXPECT_EQ(Scan(st, "", std::nullopt, 3).size(), 3u);
  EXPECT_EQ(ScanPrefix(st, "b").size(), 2u);
  EXPECT_TRUE(ScanPrefix(st, "z").empty());
}

}  // namespace
}  // namespace model
