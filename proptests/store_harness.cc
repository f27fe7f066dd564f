// The Sut of the stateful property tests.
#include "store_harness.h"

#include <stdlib.h>

namespace proptests {

using dbdb::Durability;

Sut::Sut(bool simulated_fs, Durability durability, uint64_t seed_value) : simulated(simulated_fs), seed(seed_value) {
  options.create_if_missing = true;
  options.durability = durability;
  // Small nodes and a small cache, so that short command sequences split, merge and re-read nodes.
  options.node_size_target_bytes = 512;
  options.key_size_max_bytes = 64;
  options.value_size_max_bytes = 4096;
  options.node_cache_bytes = 64 * 1024;
  // The write path varies with the seed: fold every commit, every few, or rarely; compact by
  // itself often or hardly ever; merge the log's index in memory as often as it may, or (the
  // default) not in a run this small.
  static const uint64_t kFoldThresholds[] = {0, 300, 2000, uint64_t{1} << 22};
  options.fold_threshold_bytes = kFoldThresholds[seed % 4];
  options.auto_compact_slack_bytes = (seed / 4) % 2 == 0 ? 2048 : uint64_t{1} << 20;
  if ((seed / 8) % 2 == 0) options.overlay_merge_keys = 1;
  // A close folds any unfolded log, one past a few hundred bytes, or (the default) one past 256 KiB.
  static const uint64_t kCloseFolds[] = {0, 600, dbdb::Options{}.fold_on_close_bytes};
  options.fold_on_close_bytes = kCloseFolds[(seed / 16) % 3];
  if (simulated) {
    sim = std::make_shared<faultfs::SimFileSystem>(seed);
    options.file_system = sim;
    path = "db";
  } else {
    std::string pattern = (std::filesystem::temp_directory_path() / "dbdb-proptest-XXXXXX").string();
    RC_ASSERT(::mkdtemp(pattern.data()) != nullptr);
    temp_dir = pattern;
    path = temp_dir + "/db";
  }
  Open();
}

Sut::~Sut() {
  Close();
  if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir);
}

void Sut::Open() {
  auto opened = dbdb::DB::Open(path, options);
  RC_ASSERT(opened.ok());
  db = std::move(opened).value();
}

void Sut::Close() {
  snapshots.clear();
  txn.reset();
  db.reset();
}

model::State Sut::ReadAll(dbdb::Snapshot& snapshot) {
  auto all = snapshot.Scan(dbdb::ScanRange{});
  if (!all.ok()) RC_FAIL("full scan failed: " + all.status().ToString());
  model::State state;
  for (auto& kv : *all) state.emplace(std::move(kv.key), std::move(kv.value));
  return state;
}

void Sut::VerifyAll() {
  if (txn) {
    auto all = txn->Scan(dbdb::ScanRange{});
    RC_ASSERT(all.ok());
    model::State view;
    for (auto& kv : *all) view.emplace(kv.key, kv.value);
    RC_ASSERT(view == model.View());
    return;
  }
  auto snapshot = db->GetSnapshot();
  RC_ASSERT(snapshot.ok());
  RC_ASSERT((*snapshot)->txn_id() == model.txn_id());
  RC_ASSERT(ReadAll(**snapshot) == model.committed());
}

void Sut::Write(const std::string& key, const std::optional<std::string>& value) {
  if (txn) {
    dbdb::Status s = value ? txn->Put(key, *value) : txn->Del(key);
    RC_ASSERT(s.ok());
    if (value) model.Put(key, *value);
    else model.Del(key);
    return;
  }
  model::Changes changes{{key, value}};
  uint64_t k = BeginCommit(model::Apply(model.committed(), changes));
  dbdb::Status s = value ? db->Put(key, *value) : db->Del(key);
  if (!s.ok()) RC_FAIL("auto-commit failed: " + s.ToString());
  AcknowledgeCommit(k);
  model.Begin();
  if (value) model.Put(key, *value);
  else model.Del(key);
  model.Commit();
}

void Sut::WriteBatch(const std::vector<std::pair<std::string, std::optional<std::string>>>& changes) {
  if (txn) {
    for (const auto& [key, value] : changes) Write(key, value);
    return;
  }
  model::Changes after;  // the model's own reading of the batch: the last change of a key wins
  dbdb::WriteBatch batch;
  for (const auto& [key, value] : changes) {
    after[key] = value;
    if (value) batch.Put(key, *value);
    else batch.Del(key);
  }
  uint64_t k = BeginCommit(model::Apply(model.committed(), after));
  dbdb::Status s = db->Write(batch);
  if (!s.ok()) RC_FAIL("batch write failed: " + s.ToString());
  AcknowledgeCommit(k);
  model.Begin();
  for (const auto& [key, value] : changes) {
    if (value) model.Put(key, *value);
    else model.Del(key);
  }
  model.Commit();
}

void Sut::ReopenAfterFailure(uint64_t k) {
  Close();
  Open();
  auto snapshot = db->GetSnapshot();
  RC_ASSERT(snapshot.ok());
  uint64_t shown = (*snapshot)->txn_id();
  model::State state = ReadAll(**snapshot);
  // Nothing committed is lost; the failed commit is there whole or not at all.
  RC_ASSERT(shown == k || shown + 1 == k);
  RC_ASSERT(state == oracle.state(shown));
  oracle.Truncate(shown);
  model.ResetTo(shown, state);
  // A later crash may not go back before this point: the failed commit's number is reused.
  commit_traces.erase(commit_traces.upper_bound(shown), commit_traces.end());
  if (simulated) epoch_start = sim->TraceSize();
  epoch_floor = oracle.lowest_allowed();
}

uint64_t Sut::BeginCommit(model::State after) {
  uint64_t k = oracle.Begin(std::move(after));
  if (simulated) commit_traces[k] = model::CommitTiming{k, sim->TraceSize()};
  return k;
}

void Sut::AcknowledgeCommit(uint64_t k) {
  oracle.Acknowledge(k, options.durability == Durability::kSync);
  if (simulated) {
    commit_traces[k].acknowledged_at = sim->TraceSize();
    commit_traces[k].durable = options.durability == Durability::kSync;
  }
}

void Sut::Crash(faultfs::CrashPlan plan, uint64_t choice_seed, size_t rewind) {
  RC_ASSERT(simulated);
  Close();
  const auto trace = sim->Trace();
  // Crash at a mutation boundary `rewind` mutations back (never before this filesystem began).
  size_t point = trace.size();
  for (size_t skipped = 0; skipped < rewind && point > epoch_start; point--) {
    if (trace[point - 1].IsMutation()) skipped++;
  }
  // The oracle's bounds at that point: acknowledged durable commits before it must survive;
  // commits begun before it may; commits begun after it cannot.
  std::vector<model::CommitTiming> timings;
  for (const auto& [k, timing] : commit_traces) timings.push_back(timing);
  auto [lowest, highest] = model::AllowedAt(timings, point, epoch_floor);
  RC_LOG() << "crash at trace " << point << " of " << trace.size() << ", commits allowed [" << lowest << ", "
           << highest << "]\n";
  auto tracker = faultfs::TrackerAt(trace, point);
  faultfs::CrashChoice choice = faultfs::PickCrashChoice(tracker, plan, choice_seed);
  RC_LOG() << "crash under plan " << faultfs::CrashPlanName(plan) << ": " << choice.Describe() << "\n";
  sim = faultfs::SimFileSystem::FromImage(tracker.Build(choice), seed);
  options.file_system = sim;
  auto opened = dbdb::DB::Open(path, options);
  if (!opened.ok()) RC_FAIL("recovery failed: " + opened.status().ToString() + " after " + choice.Describe());
  db = std::move(opened).value();
  auto snapshot = db->GetSnapshot();
  RC_ASSERT(snapshot.ok());
  uint64_t recovered = (*snapshot)->txn_id();
  model::State state = ReadAll(**snapshot);
  if (auto why = oracle.Check(recovered, state, lowest, highest)) RC_FAIL(*why + " after " + choice.Describe());
  auto report = db->Check();
  if (!report.ok()) RC_FAIL("check() after recovery: " + report.status().ToString());
  oracle.Recovered(recovered);
  model.ResetTo(recovered, state);
  commit_traces.clear();
  epoch_start = sim->TraceSize();
  epoch_floor = oracle.lowest_allowed();
}

}  // namespace proptests
