// Crash exploration as a property: for RapidCheck-generated workloads, every crash state at every
// operation boundary (all while few, a seeded sample beyond) recovers to a commit the oracle
// allows (I1, I2, I3), passes check(), and has its tail truncated by the first writer (I6).
// A failure shrinks to a minimal workload and names the crash point and crash state.
#include <faultfs/explorer.h>
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <atomic>
#include <iostream>

namespace faultfs {
// How RapidCheck prints a workload step in a counterexample.
void showValue(const WorkloadStep& step, std::ostream& os) { os << step.ToString(); }
}  // namespace faultfs

namespace proptests {
namespace {

std::atomic<uint64_t> states_checked_total{0};

class ReportTotals : public ::testing::Environment {
 public:
  void TearDown() override {
    if (states_checked_total > 0) {
      std::cout << "crash exploration: " << states_checked_total.load() << " crash states checked in total\n";
    }
  }
};
const auto* const kReport = ::testing::AddGlobalTestEnvironment(new ReportTotals);

// Whole-range draws: rc::gen::inRange scales with the size (pinned to 40 for workloads below),
// which would make the rarer step kinds and key ranges nearly unreachable.
int Draw(int low, int high) { return *rc::gen::resize(100, rc::gen::inRange(low, high)); }

rc::Gen<faultfs::WorkloadStep> GenStep() {
  return rc::gen::exec([] {
    faultfs::WorkloadStep step;
    int kind = Draw(0, 26);
    if (kind == 0) {
      step.kind = faultfs::WorkloadStep::Kind::kCompact;
      return step;
    }
    if (kind == 1) {
      step.kind = faultfs::WorkloadStep::Kind::kReopen;
      return step;
    }
    int changes = Draw(1, 5);
    for (int c = 0; c < changes; c++) {
      std::string key = "k" + std::to_string(100 + Draw(0, 40) * 3);
      if (Draw(0, 4) == 0) {
        step.changes.emplace_back(key, std::nullopt);
        continue;
      }
      int id = Draw(0, 1000000);
      size_t size = Draw(0, 12) == 0 ? 700 + static_cast<size_t>(id % 1500) : static_cast<size_t>(id % 40);
      step.changes.emplace_back(key, "v" + std::to_string(id) + std::string(size, 'x'));
    }
    return step;
  });
}

void ExploreProperty(dbdb::Durability durability) {
  const auto workload = *rc::gen::resize(40, rc::gen::container<faultfs::Workload>(GenStep()));
  faultfs::ExploreOptions options;
  options.states_max = 16;
  options.seed = *rc::gen::arbitrary<uint64_t>();
  options.durability = durability;
  options.fold_threshold_bytes = *rc::gen::element<uint64_t>(0, 256, 1024, uint64_t{1} << 22);
  options.auto_compact_slack_bytes = *rc::gen::element<uint64_t>(1024, uint64_t{1} << 20);
  options.violations_max = 1;
  auto result = faultfs::Explore(workload, options);
  states_checked_total += result.states_checked;
  RC_TAG(result.states_checked < 500 ? "under 500 crash states" : "500+ crash states");
  if (!result.violations.empty()) {
    const auto& v = result.violations.front();
    RC_FAIL("crash after " + std::to_string(v.crash_point) + " operations (last: " + v.last_operation +
            "), crash state " + v.crash_state + ": " + v.message);
  }
}

RC_GTEST_PROP(CrashExploration, EveryCrashStateRecoversToAnAllowedCommitSyncMode, ()) {
  ExploreProperty(dbdb::Durability::kSync);
}

RC_GTEST_PROP(CrashExploration, EveryCrashStateRecoversToAnAllowedCommitNoSyncMode, ()) {
  ExploreProperty(dbdb::Durability::kNoSync);
}

#ifndef DBDB_NO_FOREIGN_ENGINES
// The same property through the engine interface (docs/ENGINES.md) for every configuration of
// every engine: SQLite, LevelDB, RocksDB and dbdb, each held to its documented promise, on the crash
// states that keep every operation in order (the plan under which no finding of docs/findings/
// shows). Short workloads: the engines open slower than dbdb.
RC_GTEST_PROP(CrashExploration, EveryEngineConfigurationKeepsItsPromiseInOrder, ()) {
  const auto configurations = faultfs::EngineConfigurations();
  const std::string name = *rc::gen::elementOf(configurations);
  const auto workload = *rc::gen::resize(12, rc::gen::container<faultfs::Workload>(GenStep()));
  auto engine = faultfs::NewEngine(name);
  RC_ASSERT(engine.ok());
  faultfs::ExploreOptions options;
  options.engine = std::move(engine).value();
  options.plan = faultfs::CrashPlan::kOrdered;
  options.states_max = 16;
  options.seed = *rc::gen::arbitrary<uint64_t>();
  options.violations_max = 1;
  auto result = faultfs::Explore(workload, options);
  states_checked_total += result.states_checked;
  RC_TAG(name);
  if (!result.violations.empty()) {
    const auto& v = result.violations.front();
    RC_FAIL(name + ": crash after " + std::to_string(v.crash_point) + " operations (last: " + v.last_operation +
            "), crash state " + v.crash_state + ": " + v.message);
  }
}
#endif

}  // namespace
}  // namespace proptests
