// The crash-state explorer (explorer.h).
#include "faultfs/explorer.h"

#include <model/crash_oracle.h>
#include <model/model.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "faultfs/rng.h"
#include "faultfs/sim_file_system.h"

namespace faultfs {
namespace {

constexpr const char* kPath = "db";
// A key the explorer writes after recovery to make the first writer truncate the tail; it sorts
// after every workload key and is never part of a workload.
constexpr std::string_view kProbeKey = "\xff\xff-explorer-probe";

std::shared_ptr<Engine> EngineOf(const ExploreOptions& options) {
  if (options.engine) return options.engine;
  DbdbTuning tuning;
  tuning.node_size_target_bytes = options.node_size_target_bytes;
  tuning.fold_threshold_bytes = options.fold_threshold_bytes;
  tuning.auto_compact_slack_bytes = options.auto_compact_slack_bytes;
  return NewDbdbEngine(options.durability == dbdb::Durability::kSync ? "sync" : "nosync", tuning);
}

// What running a workload recorded: the trace, and each commit's state and trace timing.
struct Run {
  std::vector<TraceOp> trace;
  std::vector<model::State> states{model::State{}};  // states[k]: after commit k
  std::vector<model::CommitTiming> timings;
  std::vector<uint64_t> acknowledged_at;  // per timing, when Commit returned (ApplyPromise aside)
  std::vector<std::string> dirs;  // the machine's directories (not in the crash model: they stay)
  std::string error;  // the workload itself failed (a violation too)
};

// When each commit became durable, by the engine's promise: at its acknowledgement (durable), when
// `durable_after` later commits were acknowledged, or never. Only commits count: a compaction or a
// reopen that makes earlier commits durable as a side effect (SQLite's VACUUM syncs the directory
// through its new journal) does not raise the floor, which may let a loss pass but never reports
// a false one.
void ApplyPromise(const EngineInfo& info, std::vector<model::CommitTiming>* timings) {
  for (size_t i = 0; i < timings->size(); i++) {
    model::CommitTiming& t = (*timings)[i];
    if (info.durable) {
      t.durable = t.acknowledged_at != UINT64_MAX;
    } else if (info.durable_after > 0 && i + info.durable_after < timings->size()) {
      t.durable = true;
      t.acknowledged_at = (*timings)[i + info.durable_after].acknowledged_at;
    }
  }
}

Run RunWorkload(const Workload& workload, const ExploreOptions& options, Engine& engine) {
  Run run;
  auto fs = std::make_shared<SimFileSystem>(options.seed);
  auto opened = engine.Open(fs, kPath);
  if (!opened.ok()) {
    run.error = "open: " + opened.status().ToString();
    return run;
  }
  std::unique_ptr<EngineHandle> db = std::move(opened).value();
  auto number = db->CommitNumber();
  if (!number.ok()) {
    run.error = "the commit number after opening: " + number.status().ToString();
    return run;
  }
  bool numbered = number->has_value();
  for (size_t i = 0; i < workload.size() && run.error.empty(); i++) {
    const WorkloadStep& step = workload[i];
    dbdb::Status s;
    if (step.kind == WorkloadStep::Kind::kCompact) {
      s = db->Compact();
    } else if (step.kind == WorkloadStep::Kind::kReopen) {
      db.reset();
      opened = engine.Open(fs, kPath);
      s = opened.status();
      if (s.ok()) db = std::move(opened).value();
    } else {
      model::Changes changes;  // the last change to a key wins, as in the store
      for (const auto& [key, value] : step.changes) changes[key] = value;
      model::CommitTiming timing{run.states.size(), fs->TraceSize()};
      EngineBatch batch = step.changes;
      if (!numbered) batch.emplace_back(std::string(kCommitMarkerKey), std::to_string(timing.k));
      s = db->Commit(batch);
      if (s.ok() && !changes.empty()) {
        timing.acknowledged_at = fs->TraceSize();
        run.states.push_back(model::Apply(run.states.back(), changes));
        run.timings.push_back(timing);
        run.acknowledged_at.push_back(timing.acknowledged_at);
      }
    }
    if (!s.ok()) run.error = "step " + std::to_string(i) + " (" + step.ToString() + "): " + s.ToString();
  }
  db.reset();
  ApplyPromise(engine.info(), &run.timings);
  run.trace = fs->Trace();
  run.dirs = fs->Dirs();
  return run;
}

struct Recovered {
  std::string error;  // recovery, the engine's check or the first write after it failed
  uint64_t txn_id = 0;
  model::State state;
};

Recovered Recover(const CrashImage& image, const std::vector<std::string>& dirs, const ExploreOptions& options,
                  Engine& engine) {
  Recovered r;
  auto fs = SimFileSystem::FromImage(image, options.seed, dirs);
  auto opened = engine.Open(fs, kPath);
  if (!opened.ok()) {
    r.error = "recovery failed: " + opened.status().ToString();
    return r;
  }
  auto& db = *opened;
  auto number = db->CommitNumber();
  if (!number.ok()) {
    r.error = "snapshot after recovery: " + number.status().ToString();
    return r;
  }
  auto all = db->ScanAll();
  if (!all.ok()) {
    r.error = "reading the recovered state: " + all.status().ToString();
    return r;
  }
  r.state = std::move(all).value();
  if (number->has_value()) {
    r.txn_id = **number;
  } else if (auto marker = r.state.find(std::string(kCommitMarkerKey)); marker != r.state.end()) {
    const std::string& text = marker->second;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), r.txn_id);
    if (error != std::errc() || end != text.data() + text.size()) {
      r.error = "the recovered commit marker is not a commit number: '" + text.substr(0, 32) + "' (I1 atomic commit)";
      return r;
    }
    r.state.erase(marker);
  }
  if (dbdb::Status s = db->Check(); !s.ok()) {
    r.error = "the engine's check after recovery: " + s.ToString();
    return r;
  }
  if (dbdb::Status s = db->Commit({{std::string(kProbeKey), "1"}}); !s.ok()) {
    r.error = "first write after recovery: " + s.ToString();
    return r;
  }
  if (dbdb::Status s = db->CheckAfterFirstWrite(); !s.ok()) {
    r.error = s.IsCorruption() && s.message().find("(I6)") != std::string::npos ? s.message()
                                                                               : "after the first write: " + s.ToString();
  }
  return r;
}

struct Task {
  size_t point;  // index into points
  CrashChoice choice;
};

struct Point {
  size_t trace_position;
  size_t epoch;
  std::shared_ptr<const PersistenceTracker> tracker;
  uint64_t lowest, highest;
  uint64_t acknowledged;  // the newest commit acknowledged before this point (durable or not)
};

// The crash points of a run: one after every mutation in its trace, each with the tracker as of
// then, the commits a recovery there may hold and the newest acknowledged one. `epochs` is set to
// the number of the last sync epoch (the syncs before the last point).
std::vector<Point> CrashPoints(const Run& run, size_t* epochs) {
  std::vector<Point> points;
  PersistenceTracker tracker;
  size_t epoch = 0;
  size_t next_acknowledged = 0;
  uint64_t acknowledged = 0;  // the newest commit acknowledged so far
  for (size_t i = 0; i < run.trace.size(); i++) {
    const TraceOp& op = run.trace[i];
    if (!op.IsMutation()) continue;
    tracker.Apply(op);
    if (op.kind == TraceOp::Kind::kSync || op.kind == TraceOp::Kind::kSyncDir || op.kind == TraceOp::Kind::kSyncLost) {
      epoch++;
    }
    auto [lowest, highest] = model::AllowedAt(run.timings, i + 1, 0);
    // Commits are acknowledged in order: advance past those acknowledged by now.
    while (next_acknowledged < run.timings.size() && run.acknowledged_at[next_acknowledged] <= i + 1) {
      acknowledged = run.timings[next_acknowledged++].k;
    }
    points.push_back(
        Point{i + 1, epoch, std::make_shared<PersistenceTracker>(tracker), lowest, highest, acknowledged});
  }
  *epochs = epoch;
  return points;
}

// The crash states to check at each point (every one up to states_max, a seeded sample beyond),
// with how many exist and how many are checked, per sync epoch, counted into `result`.
std::vector<Task> CrashTasks(const std::vector<Point>& points, const ExploreOptions& options, ExploreResult* result) {
  std::vector<Task> tasks;
  for (size_t p = 0; p < points.size(); p++) {
    const Point& point = points[p];
    uint64_t exist = point.tracker->CountStates(options.plan);
    EpochCoverage& coverage = result->epochs[point.epoch];
    coverage.crash_points++;
    coverage.states_exist = exist > UINT64_MAX - coverage.states_exist ? UINT64_MAX : coverage.states_exist + exist;
    result->states_exist = exist > UINT64_MAX - result->states_exist ? UINT64_MAX : result->states_exist + exist;
    uint64_t before = tasks.size();
    point.tracker->Enumerate(options.plan, options.states_max, options.seed ^ (p * 0x9E3779B97F4A7C15ULL),
                             [&](const CrashChoice& c) {
                               tasks.push_back(Task{p, c});
                               return true;
                             });
    if (tasks.size() == before) {  // a plan with nothing to do here (e.g. nothing to tear)
      CrashChoice none = PickCrashChoice(*point.tracker, CrashPlan::kDrop, options.seed);
      tasks.push_back(Task{p, none});
    }
    coverage.states_checked += tasks.size() - before;
  }
  return tasks;
}

// What the threads checking a run's tasks share.
struct TaskChecks {
  TaskChecks(const Run& run, const std::vector<Point>& points, const std::vector<Task>& tasks,
             const ExploreOptions& options, Engine& engine)
      : run(run), points(points), tasks(tasks), options(options), engine(engine) {}
  const Run& run;
  const std::vector<Point>& points;
  const std::vector<Task>& tasks;
  const ExploreOptions& options;
  Engine& engine;
  std::mutex mutex;
  std::unordered_map<uint64_t, std::shared_ptr<const Recovered>> recovered_by_image;  // one recovery an image
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> recoveries{0};
  std::atomic<uint64_t> lost_acknowledged{0};
  // Every violation with its task's index: the report keeps the first violations_max in task
  // order, so which ones it shows does not depend on how the threads met.
  std::vector<std::pair<size_t, Violation>> found;
};

// Task t: its image recovered (or an equal image's recovery reused) and judged.
void CheckTask(TaskChecks& c, size_t t) {
  const Task& task = c.tasks[t];
  const Point& point = c.points[task.point];
  CrashImage image = point.tracker->Build(task.choice);
  uint64_t hash = image.Hash();
  std::shared_ptr<const Recovered> r;
  {
    std::lock_guard<std::mutex> guard(c.mutex);
    auto it = c.recovered_by_image.find(hash);
    if (it != c.recovered_by_image.end()) r = it->second;
  }
  if (!r) {
    r = std::make_shared<const Recovered>(Recover(image, c.run.dirs, c.options, c.engine));
    c.recoveries++;
    std::lock_guard<std::mutex> guard(c.mutex);
    c.recovered_by_image.emplace(hash, r);
  }
  std::string problem = r->error;
  if (problem.empty()) {
    problem = model::CheckRecovery(c.run.states, point.lowest, point.highest, r->txn_id, r->state).value_or("");
    if (problem.empty() && r->txn_id < point.acknowledged) c.lost_acknowledged++;
  }
  if (problem.empty()) return;
  std::lock_guard<std::mutex> guard(c.mutex);
  c.found.emplace_back(t, Violation{point.trace_position, c.run.trace[point.trace_position - 1].ToString(),
                                    task.choice.Describe(), problem});
  if (c.found.size() > 2 * c.options.violations_max + 16) {  // a bound: drop all but the lowest indexes
    std::sort(c.found.begin(), c.found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    c.found.resize(c.options.violations_max);
  }
}

// Every task checked on options.threads threads; the counts and the first violations_max
// violations (in task order, then sorted by crash point) into `result`.
void CheckTasks(const Run& run, const std::vector<Point>& points, const std::vector<Task>& tasks,
                const ExploreOptions& options, Engine& engine, ExploreResult* result) {
  TaskChecks c(run, points, tasks, options, engine);
  auto worker = [&] {
    for (size_t t = c.next++; t < tasks.size(); t = c.next++) CheckTask(c, t);
  };
  unsigned threads = std::max(1u, options.threads);
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; i++) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  result->states_checked = tasks.size();
  result->distinct_states = c.recovered_by_image.size();
  result->recoveries = c.recoveries.load();
  result->states_losing_acknowledged = c.lost_acknowledged.load();
  std::sort(c.found.begin(), c.found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < c.found.size() && i < options.violations_max; i++) result->violations.push_back(c.found[i].second);
  std::sort(result->violations.begin(), result->violations.end(),
            [](const Violation& a, const Violation& b) { return a.crash_point < b.crash_point; });
}

}  // namespace

std::string WorkloadStep::ToString() const {
  switch (kind) {
    case Kind::kCompact: return "compact";
    case Kind::kReopen: return "reopen";
    case Kind::kCommit: break;
  }
  std::string out = "commit {";
  for (size_t i = 0; i < changes.size(); i++) {
    if (i > 0) out += ", ";
    const auto& [key, value] = changes[i];
    out += value ? "put " + key + " (" + std::to_string(value->size()) + " bytes)" : "del " + key;
  }
  return out + "}";
}

std::string DescribeWorkload(const Workload& workload) {
  std::string out;
  for (size_t i = 0; i < workload.size(); i++) out += "  " + std::to_string(i) + ": " + workload[i].ToString() + "\n";
  return out;
}

Workload GenerateWorkload(uint64_t seed, size_t steps) {
  Rng rng(seed);
  Workload workload;
  uint64_t value_counter = 0;
  for (size_t i = 0; i < steps; i++) {
    WorkloadStep step;
    uint64_t roll = rng.Uniform(100);
    if (roll < 3) {
      step.kind = WorkloadStep::Kind::kCompact;
    } else if (roll < 6) {
      step.kind = WorkloadStep::Kind::kReopen;
    } else {
      size_t changes = 1 + rng.Uniform(rng.OneIn(5) ? 12 : 3);
      for (size_t c = 0; c < changes; c++) {
        std::string key = "k" + std::to_string(100 + rng.Uniform(60) * 3);
        if (rng.OneIn(4)) {
          step.changes.emplace_back(key, std::nullopt);
        } else {
          size_t size = rng.OneIn(12) ? 600 + rng.Uniform(1500) : rng.Uniform(40);
          std::string value = "v" + std::to_string(value_counter++) + "-";
          value += std::string(size, static_cast<char>('a' + rng.Uniform(26)));
          step.changes.emplace_back(key, value);
        }
      }
    }
    workload.push_back(std::move(step));
  }
  return workload;
}

ExploreResult Explore(const Workload& workload, const ExploreOptions& options) {
  auto started = std::chrono::steady_clock::now();
  ExploreResult result;
  std::shared_ptr<Engine> engine = EngineOf(options);
  Run run = RunWorkload(workload, options, *engine);
  result.trace_operations = run.trace.size();
  if (options.keep_trace) result.trace = run.trace;
  if (!run.error.empty()) {
    result.violations.push_back(Violation{run.trace.size(), "", "", "the workload failed without a crash: " + run.error});
    return result;
  }
  size_t epochs = 0;
  std::vector<Point> points = CrashPoints(run, &epochs);
  result.crash_points = points.size();
  result.epochs.resize(epochs + 1);
  std::vector<Task> tasks = CrashTasks(points, options, &result);
  CheckTasks(run, points, tasks, options, *engine, &result);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

Workload ShrinkWorkload(Workload workload, const std::function<bool(const Workload&)>& still_fails) {
  // Remove whole steps, latest first, then single changes inside commits, until nothing more can go.
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t i = workload.size(); i-- > 0;) {
      Workload candidate = workload;
      candidate.erase(candidate.begin() + static_cast<long>(i));
      if (still_fails(candidate)) {
        workload = std::move(candidate);
        progress = true;
      }
    }
    for (size_t i = 0; i < workload.size(); i++) {
      for (size_t c = workload[i].changes.size(); c-- > 0 && workload[i].changes.size() > 1;) {
        Workload candidate = workload;
        candidate[i].changes.erase(candidate[i].changes.begin() + static_cast<long>(c));
        if (still_fails(candidate)) {
          workload = std::move(candidate);
          progress = true;
        }
      }
    }
  }
  return workload;
}

}  // namespace faultfs
