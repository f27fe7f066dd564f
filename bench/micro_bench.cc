// Google Benchmark microbenchmarks of the store and of the harness. Built by default, run on
// demand: build/bin/dbdb-microbench (CI runs it once with a tiny time budget, only to prove it runs).
#include <benchmark/benchmark.h>
#include <dbdb/db.h>
#include <faultfs/explorer.h>
#include <faultfs/rng.h>
#include <faultfs/sim_file_system.h>

#include <filesystem>

#include "store_harness.h"

namespace {

std::string Key(uint64_t i) {
  char buffer[24];
  std::snprintf(buffer, sizeof(buffer), "key%012llu", static_cast<unsigned long long>(i));
  return buffer;
}

// A store on the simulated filesystem: measures the store's CPU, not the disk.
std::unique_ptr<dbdb::DB> SimStore(uint64_t keys) {
  dbdb::Options o;
  o.file_system = std::make_shared<faultfs::SimFileSystem>(1);
  o.create_if_missing = true;
  auto db = std::move(dbdb::DB::Open("db", o)).value();
  for (uint64_t i = 0; i < keys; i += 1000) {
    auto txn = std::move(db->BeginWrite()).value();
    for (uint64_t j = i; j < i + 1000 && j < keys; j++) (void)txn->Put(Key(j), std::string(100, 'v'));
    (void)txn->Commit();
  }
  return db;
}

void BM_Put(benchmark::State& state) {
  auto db = SimStore(100000);
  faultfs::Rng rng(1);
  for (auto _ : state) benchmark::DoNotOptimize(db->Put(Key(rng.Uniform(100000)), std::string(100, 'w')));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Put);

void BM_Get(benchmark::State& state) {
  auto db = SimStore(100000);
  faultfs::Rng rng(1);
  for (auto _ : state) benchmark::DoNotOptimize(db->Get(Key(rng.Uniform(100000))));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Get);

void BM_Scan(benchmark::State& state) {
  auto db = SimStore(100000);
  for (auto _ : state) {
    auto snapshot = std::move(db->GetSnapshot()).value();
    auto it = snapshot->NewIterator();
    uint64_t n = 0;
    for ((void)it->SeekToFirst(); it->Valid(); (void)it->Next()) n++;
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(state.iterations() * 100000);
}
BENCHMARK(BM_Scan);

void BM_CommitBatchOf1000(benchmark::State& state) {
  auto db = SimStore(100000);
  faultfs::Rng rng(2);
  for (auto _ : state) {
    auto txn = std::move(db->BeginWrite()).value();
    for (int i = 0; i < 1000; i++) (void)txn->Put(Key(rng.Uniform(1000000)), std::string(100, 'b'));
    benchmark::DoNotOptimize(txn->Commit());
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
BENCHMARK(BM_CommitBatchOf1000);

void BM_OpenOnTheRealDisk(benchmark::State& state) {
  std::string dir = std::filesystem::temp_directory_path() / "dbdb-microbench-open";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    dbdb::Options o;
    o.create_if_missing = true;
    auto db = std::move(dbdb::DB::Open(dir + "/db", o)).value();
    auto txn = std::move(db->BeginWrite()).value();
    for (int i = 0; i < state.range(0); i++) (void)txn->Put(Key(i), std::string(100, 'v'));
    (void)txn->Commit();
  }
  for (auto _ : state) benchmark::DoNotOptimize(dbdb::DB::Open(dir + "/db", dbdb::Options{}));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_OpenOnTheRealDisk)->Arg(1000)->Arg(100000);

void BM_Compact(benchmark::State& state) {
  auto db = SimStore(100000);
  for (auto _ : state) benchmark::DoNotOptimize(db->Compact());
  state.SetItemsProcessed(state.iterations() * 100000);
}
BENCHMARK(BM_Compact);

void BM_SimFileSystemWriteAndSync(benchmark::State& state) {
  faultfs::SimFileSystem fs(1);
  auto file = std::move(fs.Open("f", dbdb::OpenOptions{.create = true})).value();
  std::string block(4096, 'x');
  uint64_t offset = 0;
  for (auto _ : state) {
    (void)file->WriteAt(offset, block);
    (void)file->Sync();
    offset = (offset + 4096) % (64 << 20);
  }
  state.SetBytesProcessed(state.iterations() * 4096);
}
BENCHMARK(BM_SimFileSystemWriteAndSync);

void BM_ExplorerCrashStates(benchmark::State& state) {
  faultfs::Workload workload = faultfs::GenerateWorkload(1, 100);
  faultfs::ExploreOptions options;
  options.threads = 1;
  uint64_t states = 0;
  for (auto _ : state) states += faultfs::Explore(workload, options).states_checked;
  state.counters["crash_states_per_second"] = benchmark::Counter(static_cast<double>(states), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ExplorerCrashStates)->Unit(benchmark::kMillisecond);

// Stateful property-test cases per second: the store against the model on the simulated
// filesystem, with the same commands as ctest -L proptest (100 cases a check).
void BM_StatefulPropertyCases(benchmark::State& state) {
  for (auto _ : state) {
    bool ok = rc::check("store vs model, simulated filesystem",
                        [] { proptests::RunStateful(true, dbdb::Durability::kSync); });
    if (!ok) state.SkipWithError("the property failed");
  }
  state.counters["cases_per_second"] = benchmark::Counter(100.0 * static_cast<double>(state.iterations()),
                                                          benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StatefulPropertyCases)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
