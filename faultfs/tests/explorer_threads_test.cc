// The crash explorer on two threads checks exactly what it checks on one: the same crash states,
// the same distinct images, and no violation. TSan runs this test (label threads): it is where the
// explorer's threads meet under the race detector.
#include "faultfs/explorer.h"

#include <gtest/gtest.h>

namespace faultfs {
namespace {

// Under a sanitizer (TSan is about fifty times slower here, ASan three) one workload: its crash
// states keep both threads busy; elsewhere six.
#if defined(DBDB_SANITIZER_THREAD) || defined(DBDB_SANITIZER_ADDRESS)
constexpr uint64_t kSeeds[] = {11};
#else
constexpr uint64_t kSeeds[] = {11, 12, 13, 14, 15, 16};
#endif

TEST(Explorer, TwoThreadsCheckExactlyWhatOneThreadChecks) {
  for (uint64_t seed : kSeeds) {
    SCOPED_TRACE("workload seed " + std::to_string(seed));
    const Workload workload = GenerateWorkload(seed, 40);
    ExploreOptions options;
    options.seed = seed;
    options.states_max = 8;
    ExploreResult one = Explore(workload, options);
    options.threads = 2;
    ExploreResult two = Explore(workload, options);
    for (const ExploreResult* result : {&one, &two}) {
      for (const Violation& v : result->violations) ADD_FAILURE() << v.crash_state << ": " << v.message;
    }
    EXPECT_GT(one.states_checked, 0u);
    EXPECT_EQ(two.crash_points, one.crash_points);
    EXPECT_EQ(two.states_checked, one.states_checked);
    EXPECT_EQ(two.distinct_states, one.distinct_states);
    EXPECT_EQ(two.states_losing_acknowledged, one.states_losing_acknowledged);
  }
}

}  // namespace
}  // namespace faultfs
