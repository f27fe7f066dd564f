// Multi-process histories and the multi-process oracle (multiprocess.h).
#include "faultfs/multiprocess.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "dbdb/dump.h"
#include "faultfs/rng.h"

namespace faultfs {
namespace {

constexpr const char* kPath = "db";

// The workload's engine, with the workload's tuning when it is dbdb.
dbdb::Result<std::unique_ptr<Engine>> EngineFor(const MultiWorkload& w) {
  DbdbTuning tuning;
  tuning.file_size_max_bytes = w.file_size_max_bytes;
  tuning.node_size_target_bytes = w.node_size_target_bytes;
  tuning.fold_threshold_bytes = w.fold_threshold_bytes;
  tuning.auto_compact_slack_bytes = w.auto_compact_slack_bytes;
  auto engine = NewEngine(w.EngineName(), tuning);
  if (engine.ok() && !(*engine)->info().multi_process) {
    return dbdb::Status::InvalidArgument((*engine)->info().name() +
                                         " does not support several processes: the multi-process simulation runs "
                                         "dbdb and SQLite (docs/ENGINES.md)");
  }
  return engine;
}

// The attempt a state names through its marker (0: none, the empty database).
std::optional<uint64_t> AttemptOf(const model::State& state) {
  auto it = state.find(std::string(kAttemptMarkerKey));
  if (it == state.end()) return uint64_t{0};
  uint64_t id = 0;
  auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), id);
  if (ec != std::errc() || end != it->second.data() + it->second.size()) return std::nullopt;
  return id;
}

}  // namespace

std::string ProcessStep::ToString() const {
  switch (kind) {
    case Kind::kOpen: return "open";
    case Kind::kOpenReadOnly: return "open read-only";
    case Kind::kClose: return "close";
    case Kind::kRead: return "read";
    case Kind::kCompact: return "compact";
    case Kind::kCommit: break;
  }
  std::string out = "commit {";
  for (size_t i = 0; i < changes.size(); i++) {
    if (i > 0) out += ", ";
    const auto& [key, value] = changes[i];
    out += value ? "put " + dbdb::EscapeBytes(key) + " (" + std::to_string(value->size()) + " bytes)"
                 : "del " + dbdb::EscapeBytes(key);
  }
  return out + "}";
}

std::string MultiWorkload::Describe() const {
  std::string out = "engine " + EngineName();
  if (IsDbdbEngine(engine)) {
    out += ", node size " + std::to_string(node_size_target_bytes) + ", fold threshold " +
           std::to_string(fold_threshold_bytes) + ", compaction slack " + std::to_string(auto_compact_slack_bytes);
    if (file_size_max_bytes != uint64_t{1} << 40) out += ", file size limit " + std::to_string(file_size_max_bytes);
  }
  out += "\n";
  for (size_t p = 0; p < processes.size(); p++) {
    out += "  process p" + std::to_string(p + 1) + ":";
    for (const auto& step : processes[p].steps) out += " [" + step.ToString() + "]";
    for (const auto& f : processes[p].faults) {
      out += " {fault " + f.point + " after " + std::to_string(f.skip) + " calls" +
             (f.error_number != 0 ? " errno " + std::to_string(f.error_number) : "") + "}";
    }
    out += "\n";
  }
  out += "  schedule:";
  size_t last = schedule.choices.size();
  while (last > 0 && schedule.choices[last - 1] == 0) last--;
  for (size_t i = 0; i < last; i++) out += " " + std::to_string(schedule.choices[i]);
  if (last == 0) out += " (always the first eligible process)";
  out += "\n  kills at steps:";
  for (uint64_t k : schedule.kills) out += " " + std::to_string(k);
  if (schedule.kills.empty()) out += " none";
  if (held_to_promise) out += "\n  held to its promise (its findings excused)";
  return out + "\n";
}

MultiOracle::MultiOracle(std::map<uint64_t, CommitAttempt> known, uint64_t floor)
    : attempts_(std::move(known)), floor_(floor) {
  if (!attempts_.empty()) next_attempt_ = attempts_.rbegin()->first + 1;
}

std::optional<model::State> MultiOracle::StateOf(uint64_t id) const {
  std::vector<const CommitAttempt*> chain;
  for (uint64_t at = id; at != 0;) {
    auto it = attempts_.find(at);
    if (it == attempts_.end() || chain.size() > attempts_.size()) return std::nullopt;
    chain.push_back(&it->second);
    at = it->second.parent;
  }
  model::State state;
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) state = model::Apply(state, (*it)->changes);
  return state;
}

uint64_t MultiOracle::DepthOf(uint64_t id) const {
  uint64_t depth = 0;
  for (uint64_t at = id; at != 0 && depth <= attempts_.size(); depth++) {
    auto it = attempts_.find(at);
    if (it == attempts_.end()) break;
    at = it->second.parent;
  }
  return depth;
}

bool MultiOracle::IsAncestorOrSelf(uint64_t ancestor, uint64_t id) const {
  for (uint64_t at = id, hops = 0; hops <= attempts_.size() + 1; hops++) {
    if (at == ancestor) return true;
    if (at == 0) return false;
    auto it = attempts_.find(at);
    if (it == attempts_.end()) return false;
    at = it->second.parent;
  }
  return false;
}

namespace {

// One process's script, run inside RunScheduled: only one process runs at a time, so the shared
// oracle and run are touched by one thread at a time (the scheduler's hand-off orders them).
class ScriptRunner {
 public:
  ScriptRunner(MultiOracle* oracle, std::map<uint64_t, CommitAttempt>* attempts, MultiRun* run,
               std::vector<Fact>* facts, const MultiWorkload& w, Engine* engine,
               std::shared_ptr<EngineMachine> machine, std::shared_ptr<SimFileSystem> fs, uint32_t index)
      : oracle_(oracle), attempts_(attempts), run_(run), facts_(facts), w_(w), engine_(engine),
        machine_(std::move(machine)), fs_(std::move(fs)), index_(index) {}

  void Run() {
    for (const ProcessStep& step : w_.processes[index_].steps) {
      if (fs_->killed()) break;
      switch (step.kind) {
        case ProcessStep::Kind::kOpen: Open(false); break;
        case ProcessStep::Kind::kOpenReadOnly: Open(true); break;
        case ProcessStep::Kind::kClose: db_.reset(); break;
        case ProcessStep::Kind::kCommit: Commit(step); break;
        case ProcessStep::Kind::kRead: Read(); break;
        case ProcessStep::Kind::kCompact: Compact(); break;
      }
    }
    db_.reset();
  }

 private:
  std::string Name() const { return "p" + std::to_string(index_ + 1); }
  void Violation(const std::string& what) { run_->violations.push_back(Name() + ": " + what); }

  // An error is fine if the process was killed, or a fault fired in it; never Corruption without
  // a read fault, never an I/O error without any fault, never a refusal of a step the workload
  // keeps within the engine's limits. Busy (another process holds a lock the engine does not wait
  // for) and ReadOnly (a read-only handle that cannot recover what a writer must) are answers.
  void Judge(const dbdb::Status& s, const std::string& what) {
    if (s.ok() || fs_->killed()) return;
    bool faulted = fs_->FaultsFired() > 0;
    if (s.IsCorruption() && !faulted) Violation(what + " reported Corruption with no fault: " + s.ToString());
    if ((s.IsIOError() || s.code() == dbdb::StatusCode::kNoSpace) && !faulted) {
      Violation(what + " failed with no fault injected: " + s.ToString());
    }
    if (s.code() == dbdb::StatusCode::kInvalidArgument) Violation(what + " was refused: " + s.ToString());
  }

  bool Open(bool read_only) {
    db_.reset();
    read_only_ = read_only;
    auto opened = engine_->Open(fs_, kPath, EngineOpenOptions{read_only, machine_});
    if (!opened.ok()) {
      if (!(read_only && opened.status().code() == dbdb::StatusCode::kNotFound)) Judge(opened.status(), "open");
      return false;
    }
    db_ = std::move(opened).value();
    return true;
  }

  bool EnsureWriter() { return (db_ && !read_only_) || Open(false); }

  // Checks a state seen at this point and records it as a fact of the history; the attempt it
  // shows, or nullopt.
  // A dead process's view is checked but not recorded: it saw nothing anyone relies on.
  std::optional<uint64_t> Observe(const EngineView& view, uint64_t started_at, uint64_t started_step,
                                  const std::string& what, bool record) {
    auto attempt = AttemptOf(view.state);
    if (!attempt) {
      Violation(what + " shows a damaged attempt marker");
      return std::nullopt;
    }
    auto expected = oracle_->StateOf(*attempt);
    uint64_t number = view.number.value_or(oracle_->DepthOf(*attempt));
    if (!expected) {
      Violation(what + " shows attempt " + std::to_string(*attempt) + ", which no process began");
    } else if (*expected != view.state || oracle_->DepthOf(*attempt) != number) {
      Violation(what + " shows commit " + std::to_string(number) + " with attempt " + std::to_string(*attempt) +
                " but not its state (I1/I3): " + model::Describe(view.state) + " instead of " +
                model::Describe(*expected));
    }
    if (!record) return attempt;
    uint64_t at = fs_->TraceSize();
    run_->observations.push_back(Observation{index_ + 1, *attempt, number, started_at, at, what});
    facts_->push_back(Fact{started_at, at, *attempt, Name() + " " + what + " of commit " + std::to_string(number),
                           index_, started_step, fs_->ScheduledSteps()});
    return attempt;
  }

  void Read() {
    if (!db_ && !Open(true)) return;
    uint64_t started_at = fs_->TraceSize(), started_step = fs_->ScheduledSteps();
    auto view = db_->Read();
    if (!view.ok()) return Judge(view.status(), "reading a snapshot");
    Observe(*view, started_at, started_step, "read", !fs_->killed());
  }

  void Compact() {
    if (!EnsureWriter()) return;
    Judge(db_->Compact(), "compact");
  }

  void Commit(const ProcessStep& step) {
    if (!EnsureWriter()) return;
    uint64_t started_at = fs_->TraceSize(), started_step = fs_->ScheduledSteps(), begun_step = 0;
    CommitAttempt attempt;
    attempt.process = index_ + 1;
    for (const auto& [key, value] : step.changes) attempt.changes[key] = value;
    // Once the engine has read the base inside its write transaction: name the attempt, record it
    // with its parent before anything is written (a reader may see it before Commit returns), and
    // commit the step's changes with the marker.
    auto build = [&](const EngineView& base) -> std::optional<EngineBatch> {
      auto parent = Observe(base, started_at, started_step, "writer base", !fs_->killed());
      if (!parent || attempt.id != 0) return std::nullopt;  // a damaged base; never twice
      attempt.id = oracle_->TakeAttemptId();
      attempt.parent = *parent;
      std::string marker = std::to_string(attempt.id);
      attempt.changes[std::string(kAttemptMarkerKey)] = marker;
      attempt.begun_at = fs_->TraceSize();
      begun_step = fs_->ScheduledSteps();
      (*attempts_)[attempt.id] = attempt;
      EngineBatch batch = step.changes;
      batch.emplace_back(std::string(kAttemptMarkerKey), marker);
      return batch;
    };
    dbdb::Status s = db_->CommitOnBase(build);
    if (s.ok()) {
      CommitAttempt& done = (*attempts_)[attempt.id];
      done.acknowledged_at = fs_->TraceSize();
      done.durable = engine_->info().durable;
      run_->commits_acknowledged++;
      facts_->push_back(Fact{done.begun_at, done.acknowledged_at, attempt.id,
                             Name() + " acknowledged commit " + std::to_string(oracle_->DepthOf(attempt.id)), index_,
                             begun_step, fs_->ScheduledSteps()});
      return;
    }
    if (s.code() == dbdb::StatusCode::kLimitExceeded) return;  // a file size limit: nothing written
    if (s.code() == dbdb::StatusCode::kAborted && attempt.id == 0) return;  // a damaged base, reported
    Judge(s, attempt.id == 0 ? "beginning a commit" : "commit");
    // A failure before the commit was attempted (beginning it, reading its base) keeps the handle:
    // its next step checks that it still works.
    if (fs_->killed() || attempt.id == 0) return;
    if (std::string broken = db_->CheckAfterFailedCommit(s); !broken.empty()) Violation(broken);
    db_.reset();
  }

 private:
  MultiOracle* oracle_;
  std::map<uint64_t, CommitAttempt>* attempts_;
  MultiRun* run_;
  std::vector<Fact>* facts_;
  const MultiWorkload& w_;
  Engine* engine_;
  std::shared_ptr<EngineMachine> machine_;
  std::shared_ptr<SimFileSystem> fs_;
  uint32_t index_;
  std::unique_ptr<EngineHandle> db_;
  bool read_only_ = false;
};

}  // namespace

MultiRun MultiOracle::Run(const MultiWorkload& workload, const std::shared_ptr<SimFileSystem>& machine) {
  MultiRun run;
  run.first_trace_position = machine->TraceSize();
  run.first_attempt = next_attempt_;
  auto engine = EngineFor(workload);
  if (!engine.ok()) {
    run.violations.push_back("no engine: " + engine.status().ToString());
    return run;
  }
  std::vector<Fact> facts;
  std::vector<std::shared_ptr<SimFileSystem>> processes;
  std::vector<std::unique_ptr<ScriptRunner>> runners;
  auto memory = std::make_shared<EngineMachine>();  // this boot's
  for (size_t i = 0; i < workload.processes.size(); i++) {
    auto process = machine->NewProcess("p" + std::to_string(i + 1));
    for (const ArmedFault& fault : workload.processes[i].faults) process->ArmFault(fault);
    processes.push_back(process);
    runners.push_back(std::make_unique<ScriptRunner>(this, &attempts_, &run, &facts, workload, engine->get(), memory,
                                                     process, static_cast<uint32_t>(i)));
  }
  std::vector<std::function<void()>> bodies;
  for (auto& runner : runners) bodies.push_back([r = runner.get()] { r->Run(); });
  std::string outcome = machine->RunScheduled(processes, bodies, workload.schedule);
  if (!outcome.empty()) run.violations.push_back(outcome);
  run.trace = machine->Trace();
  run.faults_fired = machine->FiredFaults();
  run.steps = machine->ScheduledSteps();
  for (size_t i = 0; i < processes.size(); i++) {
    if (auto killed_at = processes[i]->KilledAt()) {
      run.kills++;
      run.killed_at[static_cast<uint32_t>(i + 1)] = *killed_at;
    }
  }
  run.attempts = attempts_;
  // (c) One chain: whatever was seen or acknowledged builds on everything that ended before it
  // began (reads and commits that overlap may be ordered either way).
  for (size_t l = 0; l < facts.size(); l++) {
    const Fact& later = facts[l];
    if (!IsAncestorOrSelf(floor_, later.attempt)) {
      run.violations.push_back(later.what + " (attempt " + std::to_string(later.attempt) +
                               ") does not build on the state this boot started from (I2/I9)");
      break;
    }
    for (size_t e = 0; e < facts.size(); e++) {
      const Fact& earlier = facts[e];
      bool before = earlier.ended_step < later.started_step ||
                    (earlier.process == later.process && e < l && earlier.ended_step <= later.started_step);
      if (!before || IsAncestorOrSelf(earlier.attempt, later.attempt)) continue;
      run.violations.push_back(
          "the visible state went back: " + earlier.what + " (attempt " + std::to_string(earlier.attempt) +
          ", trace positions " + std::to_string(earlier.started_at) + "-" + std::to_string(earlier.ended_at) +
          "), then " + later.what + " (attempt " + std::to_string(later.attempt) + ", trace positions " +
          std::to_string(later.started_at) + "-" + std::to_string(later.ended_at) +
          "), which does not build on it: a commit seen or acknowledged was lost (I2/I4/I9)");
      break;
    }
    if (!run.violations.empty()) break;
  }
  return run;
}

namespace {

// One observer's view of a recovered image.
struct Seen {
  std::string who;
  std::string error;  // how it failed to open or read ("" if it read)
  bool exists = true;
  uint64_t txn_id = 0;
  model::State state;
  bool skipped = false;  // a read-only handle the engine lets refuse a database a writer must recover
};

// What a handle saw when it failed before reading anything.
Seen Failed(std::string who, std::string error) {
  Seen s;
  s.who = std::move(who);
  s.error = std::move(error);
  return s;
}

std::string Show(const Seen& s) {
  if (s.skipped) return s.who + ": refused, a writer must recover first (" + s.error + ")";
  if (!s.error.empty()) return s.who + " failed: " + s.error;
  if (!s.exists) return s.who + ": no database";
  auto attempt = AttemptOf(s.state);
  return s.who + ": commit " + std::to_string(s.txn_id) + " (attempt " +
         (attempt ? std::to_string(*attempt) : std::string("?")) + ")";
}

// What a view shows; an engine without commit numbers is given its chain's depth.
Seen SeeView(const std::string& who, const dbdb::Result<EngineView>& view, const MultiOracle& oracle) {
  Seen seen{who, "", true, 0, {}, false};
  if (!view.ok()) {
    seen.error = view.status().ToString();
    return seen;
  }
  seen.state = view->state;
  auto attempt = AttemptOf(seen.state);
  seen.txn_id = view->number.value_or(attempt ? oracle.DepthOf(*attempt) : 0);
  return seen;
}

// Every observer of one image, in the order a user might run them: a read-only handle and the
// engine's check, a read-write handle (its first view, its first writer's base once it holds the
// write lock and has settled any torn tail, a view after that), and, beside it, a read-only handle
// again. Every handle is a process of the rebooted machine.
std::vector<Seen> ObserveImage(Engine& engine, const MultiOracle& oracle, const CrashImage& image, uint64_t seed) {
  std::vector<Seen> seen;
  auto machine = SimFileSystem::FromImage(image, seed);
  auto memory = std::make_shared<EngineMachine>();
  auto open = [&](bool read_only) {
    return engine.Open(machine->NewProcess(read_only ? "reader" : "writer"), kPath, EngineOpenOptions{read_only, memory});
  };
  bool checked = false;
  // The first read-only handle may be refused what only a writer can recover (SQLite's hot
  // journal); the second comes after a writer has, and may not.
  auto read_only = [&](const std::string& who, bool first) {
    auto opened = open(true);
    if (!opened.ok()) {
      bool missing = opened.status().code() == dbdb::StatusCode::kNotFound;
      seen.push_back(Seen{who, missing ? "" : opened.status().ToString(), !missing, 0, {}, false});
      return;
    }
    auto view = (*opened)->Read();
    Seen s = SeeView(who, view, oracle);
    s.skipped = first && engine.info().read_only_may_refuse_recovery && !view.ok() &&
                view.status().code() == dbdb::StatusCode::kReadOnly;
    seen.push_back(s);
    if (first && s.error.empty()) {
      checked = true;
      if (dbdb::Status c = (*opened)->Check(); !c.ok()) seen.push_back(Failed("the engine's check", c.ToString()));
    }
  };
  read_only("read-only handle", true);
  if (!seen.front().exists || !(seen.front().error.empty() || seen.front().skipped)) return seen;
  auto opened = open(false);
  if (!opened.ok()) {
    seen.push_back(Failed("read-write handle", opened.status().ToString()));
    return seen;
  }
  EngineHandle& writer = **opened;
  seen.push_back(SeeView("read-write handle", writer.Read(), oracle));
  if (!checked) {
    if (dbdb::Status c = writer.Check(); !c.ok()) seen.push_back(Failed("the engine's check", c.ToString()));
  }
  std::optional<Seen> base;
  dbdb::Status s = writer.CommitOnBase([&](const EngineView& view) {
    base = SeeView("first writer's base", view, oracle);
    return std::nullopt;
  });
  if (base) {
    seen.push_back(*base);
  } else {
    seen.push_back(Failed("first writer", s.ToString()));
  }
  seen.push_back(SeeView("read-write handle after the writer", writer.Read(), oracle));
  read_only("second read-only handle", false);
  return seen;
}

// (c) Stable recovery: every observer recovers the same commit (the skipped ones are taken out of
// `seen`). The violation, or "".
std::string UnstableRecovery(std::vector<Seen>& seen) {
  std::erase_if(seen, [](const Seen& s) { return s.skipped; });
  auto all = [&] {
    std::string out;
    for (const Seen& s : seen) out += "\n    " + Show(s);
    return out;
  };
  for (const Seen& s : seen) {
    if (!s.error.empty()) return "recovery failed: " + Show(s) + all();
    if (s.exists != seen.front().exists || s.txn_id != seen.front().txn_id || s.state != seen.front().state) {
      return "observers of one crash image disagree (I9):" + all();
    }
  }
  return "";
}

// (d) The recovered state is exactly its chain's, of an attempt begun before the cut, on the state
// this boot started from. The violation, or "".
std::string NotItsChainsState(const MultiOracle& oracle, const MultiRun& run, size_t point, const Seen& recovered,
                              uint64_t attempt) {
  auto expected = oracle.StateOf(attempt);
  if (!expected || *expected != recovered.state || oracle.DepthOf(attempt) != recovered.txn_id) {
    return "recovered commit " + std::to_string(recovered.txn_id) + " (attempt " + std::to_string(attempt) +
           ") does not hold its chain's state (I1/I3): " + model::Describe(recovered.state);
  }
  auto begun = run.attempts.find(attempt);
  if (attempt >= run.first_attempt && begun != run.attempts.end() && begun->second.begun_at >= point) {
    return "recovered attempt " + std::to_string(attempt) + ", which began after the power cut (I3)";
  }
  if (!oracle.IsAncestorOrSelf(oracle.floor(), attempt)) {
    return "recovered attempt " + std::to_string(attempt) + " does not build on the state this boot started from (I2)";
  }
  return "";
}

// (a) Acknowledged commits the promise keeps survive: every one in a durable configuration, one
// with `durable_after` acknowledged descendants in one that says so. The violation, or "".
std::string LostAcknowledged(const MultiOracle& oracle, const EngineInfo& info, const MultiRun& run, size_t point,
                             uint64_t attempt, uint64_t recovered_txn_id) {
  auto promised = [&](uint64_t id, const CommitAttempt& a) {
    if (a.acknowledged_at > point) return false;
    if (a.durable) return true;
    if (info.durable_after == 0) return false;
    uint64_t later = 0;
    for (const auto& [other, o] : run.attempts) {
      if (other != id && o.acknowledged_at <= point && oracle.IsAncestorOrSelf(id, other)) later++;
    }
    return later >= info.durable_after;
  };
  for (const auto& [id, a] : run.attempts) {
    if (id < run.first_attempt) continue;  // earlier boots: covered by the floor
    if (promised(id, a) && !oracle.IsAncestorOrSelf(id, attempt)) {
      return "commit " + std::to_string(oracle.DepthOf(id)) + " (attempt " + std::to_string(id) + " by p" +
             std::to_string(a.process) + ") was acknowledged durable at trace position " +
             std::to_string(a.acknowledged_at) + " and is lost after a power cut at " + std::to_string(point) +
             ", which recovered commit " + std::to_string(recovered_txn_id) + " (I2)";
    }
  }
  return "";
}

// Whether an observation of a commit the cut lost is excused.
//
// The fsyncgate limit of dbdb's readers (docs/PERSISTENCE.md, "Limits"): a sync that failed
// and dropped its pages is reported to the process that made it, and (rule 9) a later sync of
// another process may return OK over them. A dbdb reader that finds a commit its writer never
// acknowledged nor rolled back (it died) syncs the file before showing it; after such a failed
// sync of that file, its sync may return OK over pages the disk never got, and a reader (which
// never writes) cannot tell. So what a dbdb reader saw of an attempt never acknowledged, after
// a sync of the file that attempt wrote lost pages since the attempt began, may be lost. A
// writer's base is not excused: a writer writes such bytes again before its sync (mutant 59).
//
// An engine's finding, when the workload holds it to its promise (EngineInfo's
// killed_writers_commit_visible_before_durable): what anyone saw of an attempt never
// acknowledged, once its writer had been killed, may be lost. "Once": the kill is strictly
// before the observation's end in the trace (a kill at the same trace position may have come
// after it: trace positions do not order operations that leave no entry).
bool Excused(const MultiWorkload& workload, const EngineInfo& info, const MultiRun& run, size_t point,
             const Observation& o) {
  auto a = run.attempts.find(o.attempt);
  if (a == run.attempts.end() || a->second.acknowledged_at <= point) return false;
  if (workload.held_to_promise && info.killed_writers_commit_visible_before_durable) {
    auto killed = run.killed_at.find(a->second.process);
    if (killed != run.killed_at.end() && killed->second >= a->second.begun_at && killed->second < o.at) return true;
  }
  if (!IsDbdbEngine(workload.EngineName()) || o.what != "read") return false;
  std::optional<uint64_t> inode;  // the file the attempt wrote
  for (uint64_t i = a->second.begun_at; i < o.at && i < run.trace.size(); i++) {
    const TraceOp& op = run.trace[i];
    if (!inode && op.kind == TraceOp::Kind::kWrite && !op.transient && op.process == a->second.process) inode = op.inode;
    if (inode && op.kind == TraceOp::Kind::kSyncLost && op.inode == *inode) return true;
  }
  return false;
}

// (b) In a durable configuration, what any process saw survives the cut (unless Excused). The
// violation, or "".
std::string SeenButLost(const MultiOracle& oracle, const MultiWorkload& workload, const EngineInfo& info,
                        const MultiRun& run, size_t point, uint64_t attempt, uint64_t recovered_txn_id) {
  if (!info.durable) return "";
  for (const Observation& o : run.observations) {
    if (o.at <= point && !oracle.IsAncestorOrSelf(o.attempt, attempt) && !Excused(workload, info, run, point, o)) {
      return "p" + std::to_string(o.process) + " saw commit " + std::to_string(o.txn_id) + " (attempt " +
             std::to_string(o.attempt) + ", " + o.what + ") at trace position " + std::to_string(o.at) +
             ", and a power cut at " + std::to_string(point) + " recovered commit " + std::to_string(recovered_txn_id) +
             ": seen but not durable (I2)";
    }
  }
  return "";
}

}  // namespace

Recovery MultiOracle::CheckCrash(const MultiWorkload& workload, const MultiRun& run, size_t point,
                                 const CrashImage& image) const {
  Recovery r;
  auto engine = EngineFor(workload);
  if (!engine.ok()) {
    r.violation = "no engine: " + engine.status().ToString();
    return r;
  }
  const EngineInfo& info = (*engine)->info();
  std::vector<Seen> seen = ObserveImage(**engine, *this, image, 1);
  r.violation = UnstableRecovery(seen);
  if (!r.violation.empty()) return r;
  const Seen& recovered = seen.front();
  auto attempt = recovered.exists ? AttemptOf(recovered.state) : std::optional<uint64_t>(0);
  if (!attempt) {
    r.violation = "the recovered state has a damaged attempt marker";
    return r;
  }
  r.attempt = *attempt;
  r.txn_id = recovered.txn_id;
  r.violation = NotItsChainsState(*this, run, point, recovered, *attempt);
  if (r.violation.empty()) r.violation = LostAcknowledged(*this, info, run, point, *attempt, recovered.txn_id);
  if (r.violation.empty()) r.violation = SeenButLost(*this, workload, info, run, point, *attempt, recovered.txn_id);
  return r;
}

const std::vector<std::string>& MultiFaultPoints(const std::string& engine, bool reader, bool held_to_promise) {
  static const std::vector<std::string> kDbdbWriter = {
      "faultfs/write", "faultfs/write/short", "faultfs/sync",         "faultfs/sync/lose", "faultfs/truncate",
      "faultfs/syncdir", "faultfs/rename",    "faultfs/open",         "faultfs/lock",      "faultfs/read",
      "faultfs/read/corrupt", "faultfs/map",  "faultfs/map/fault",    "faultfs/map/corrupt",
      "faultfs/allocate"};
  static const std::vector<std::string> kDbdbReader = {"faultfs/read", "faultfs/read/corrupt", "faultfs/lock",
                                                       "faultfs/open", "faultfs/map",          "faultfs/map/fault",
                                                       "faultfs/map/corrupt"};
  // Not faultfs/read/corrupt: SQLite keeps no checksums of its pages and does not promise to notice
  // a bit the disk flipped (docs/ENGINES.md).
  static const std::vector<std::string> kWriter = {"faultfs/write",    "faultfs/write/short", "faultfs/sync",
                                                   "faultfs/sync/lose", "faultfs/truncate",   "faultfs/syncdir",
                                                   "faultfs/remove",   "faultfs/open",        "faultfs/read"};
  static const std::vector<std::string> kReader = {"faultfs/read", "faultfs/open"};
  // SQLite's findings (docs/findings/sqlite-failed-directory-sync.md,
  // sqlite-wal-failed-sync-frames-recovered.md): a failed directory sync, a failed sync.
  static const std::vector<std::string> kSqliteWriterPromised = {"faultfs/write",    "faultfs/write/short",
                                                                 "faultfs/truncate", "faultfs/remove",
                                                                 "faultfs/open",     "faultfs/read"};
  if (IsDbdbEngine(engine)) return reader ? kDbdbReader : kDbdbWriter;
  if (held_to_promise && !reader && engine.rfind("sqlite/", 0) == 0) return kSqliteWriterPromised;
  return reader ? kReader : kWriter;
}

MultiWorkload GenerateMultiWorkload(uint64_t seed, size_t processes, size_t steps, const std::string& engine) {
  Rng rng(seed);
  MultiWorkload w;
  w.engine = engine;
  w.durability = rng.OneIn(4) ? dbdb::Durability::kNoSync : dbdb::Durability::kSync;
  static const uint64_t kFoldThresholds[] = {0, 256, 1024, 8192, uint64_t{1} << 22};
  w.fold_threshold_bytes = kFoldThresholds[rng.Uniform(5)];
  w.auto_compact_slack_bytes = rng.OneIn(2) ? 2048 : uint64_t{1} << 20;
  static const int kErrnos[] = {0, ENOSPC, EACCES, EMFILE};
  uint64_t value_counter = 0;
  for (size_t p = 0; p < processes; p++) {
    ProcessScript script;
    bool reader = rng.OneIn(3);
    script.steps.push_back(ProcessStep{reader ? ProcessStep::Kind::kOpenReadOnly : ProcessStep::Kind::kOpen, {}});
    for (size_t i = 0; i < steps; i++) {
      ProcessStep step;
      uint64_t roll = rng.Uniform(100);
      if (reader) {
        step.kind = roll < 85 ? ProcessStep::Kind::kRead : ProcessStep::Kind::kOpenReadOnly;
      } else if (roll < 6) {
        step.kind = ProcessStep::Kind::kCompact;
      } else if (roll < 10) {
        step.kind = ProcessStep::Kind::kOpen;
      } else if (roll < 30) {
        step.kind = ProcessStep::Kind::kRead;
      } else {
        size_t changes = 1 + rng.Uniform(rng.OneIn(5) ? 10 : 3);
        for (size_t c = 0; c < changes; c++) {
          std::string key;
          switch (rng.Uniform(8)) {
            case 0: key = ""; break;
            case 1: key = std::string(1 + rng.Uniform(3), '\0'); break;
            case 2: key = std::string(1 + rng.Uniform(3), '\xff') + "k"; break;
            case 3: key = std::string(64, static_cast<char>('a' + rng.Uniform(3))); break;
            default: key = "k" + std::to_string(100 + rng.Uniform(40) * 3); break;
          }
          if (rng.OneIn(4)) {
            step.changes.emplace_back(key, std::nullopt);
          } else {
            size_t size = rng.OneIn(12) ? 600 + rng.Uniform(1500) : rng.Uniform(30);
            std::string value = "v" + std::to_string(value_counter++) + "-" + std::string(size, '\xfe');
            step.changes.emplace_back(key, value);
          }
        }
      }
      script.steps.push_back(std::move(step));
    }
    if (rng.OneIn(2)) {
      ArmedFault fault;
      const std::vector<std::string>& points = MultiFaultPoints(engine, reader);
      fault.point = points[rng.Uniform(points.size())];
      fault.skip = static_cast<uint32_t>(rng.Uniform(12));
      fault.error_number = kErrnos[rng.Uniform(std::size(kErrnos))];
      script.faults.push_back(fault);
    }
    w.processes.push_back(std::move(script));
  }
  size_t schedule_steps = processes * steps * 40;
  for (size_t i = 0; i < schedule_steps; i++) {
    // Runs of the same choice keep one process going for a while, so commits also finish
    // uninterrupted; sometimes every step switches.
    w.schedule.choices.push_back(static_cast<uint8_t>(rng.Uniform(256)));
  }
  size_t kills = rng.Uniform(3);
  for (size_t k = 0; k < kills; k++) w.schedule.kills.push_back(rng.Uniform(schedule_steps));
  std::sort(w.schedule.kills.begin(), w.schedule.kills.end());
  return w;
}

std::vector<size_t> CrashPoints(const MultiRun& run) {
  std::vector<size_t> points;
  for (size_t i = run.first_trace_position; i < run.trace.size(); i++) {
    if (run.trace[i].IsMutation()) points.push_back(i + 1);
  }
  if (run.trace.size() > run.first_trace_position && !run.trace.back().IsMutation()) points.push_back(run.trace.size());
  return points;
}

MultiExploreResult ExploreMulti(const MultiWorkload& workload, CrashPlan plan, uint64_t states_max, uint64_t seed,
                                unsigned threads, size_t violations_max) {
  auto started = std::chrono::steady_clock::now();
  MultiExploreResult result;
  MultiOracle oracle;
  auto machine = std::make_shared<SimFileSystem>(seed);
  MultiRun run = oracle.Run(workload, machine);
  result.histories = 1;
  result.faults_fired = run.faults_fired;
  result.kills = run.kills;
  result.commits_acknowledged = run.commits_acknowledged;
  for (const std::string& v : run.violations) {
    if (result.violations.size() < violations_max) result.violations.push_back("while running: " + v);
  }
  // Crash points: CrashPoints(run).
  struct Task {
    size_t point;
    std::shared_ptr<const PersistenceTracker> tracker;
    CrashChoice choice;
  };
  std::vector<Task> tasks;
  PersistenceTracker tracker;
  size_t applied = 0;  // trace operations the tracker has seen
  for (size_t point : CrashPoints(run)) {
    for (; applied < point; applied++) {
      if (run.trace[applied].IsMutation()) tracker.Apply(run.trace[applied]);
    }
    auto at = std::make_shared<const PersistenceTracker>(tracker);
    result.crash_points++;
    size_t before = tasks.size();
    at->Enumerate(plan, states_max, seed ^ ((point - 1) * 0x9E3779B97F4A7C15ULL), [&](const CrashChoice& c) {
      tasks.push_back(Task{point, at, c});
      return true;
    });
    if (tasks.size() == before) tasks.push_back(Task{point, at, PickCrashChoice(*at, CrashPlan::kDrop, seed)});
  }
  std::mutex mutex;
  std::unordered_map<uint64_t, size_t> seen_images;
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t t = next++; t < tasks.size(); t = next++) {
      const Task& task = tasks[t];
      CrashImage image = task.tracker->Build(task.choice);
      {
        std::lock_guard<std::mutex> guard(mutex);
        seen_images[image.Hash()]++;
      }
      Recovery r = oracle.CheckCrash(workload, run, task.point, image);
      if (!r.violation.empty()) {
        std::lock_guard<std::mutex> guard(mutex);
        if (result.violations.size() < violations_max) {
          result.violations.push_back("power cut after trace position " + std::to_string(task.point) + " (" +
                                      run.trace[task.point - 1].ToString() + "), crash state " +
                                      task.choice.Describe() + ": " + r.violation);
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < std::max(1u, threads); i++) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  result.states_checked = tasks.size();
  result.distinct_states = seen_images.size();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

MultiWorkload ShrinkMultiWorkload(MultiWorkload w, const std::function<bool(const MultiWorkload&)>& still_fails) {
  auto attempt = [&](MultiWorkload candidate) {
    if (!still_fails(candidate)) return false;
    w = std::move(candidate);
    return true;
  };
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t p = w.processes.size(); p-- > 0 && w.processes.size() > 1;) {
      MultiWorkload c = w;
      c.processes.erase(c.processes.begin() + static_cast<long>(p));
      progress |= attempt(std::move(c));
    }
    for (size_t p = 0; p < w.processes.size(); p++) {
      for (size_t i = w.processes[p].steps.size(); i-- > 0;) {
        MultiWorkload c = w;
        c.processes[p].steps.erase(c.processes[p].steps.begin() + static_cast<long>(i));
        progress |= attempt(std::move(c));
      }
      for (size_t f = w.processes[p].faults.size(); f-- > 0;) {
        MultiWorkload c = w;
        c.processes[p].faults.erase(c.processes[p].faults.begin() + static_cast<long>(f));
        progress |= attempt(std::move(c));
      }
      for (size_t i = 0; i < w.processes[p].steps.size(); i++) {
        for (size_t k = w.processes[p].steps[i].changes.size(); k-- > 0 && w.processes[p].steps[i].changes.size() > 1;) {
          MultiWorkload c = w;
          auto& changes = c.processes[p].steps[i].changes;
          changes.erase(changes.begin() + static_cast<long>(k));
          progress |= attempt(std::move(c));
        }
      }
    }
    for (size_t k = w.schedule.kills.size(); k-- > 0;) {
      MultiWorkload c = w;
      c.schedule.kills.erase(c.schedule.kills.begin() + static_cast<long>(k));
      progress |= attempt(std::move(c));
    }
    // The schedule: cut its tail by halves, then zero single choices.
    for (size_t keep = w.schedule.choices.size() / 2; keep > 0 && keep < w.schedule.choices.size(); keep /= 2) {
      MultiWorkload c = w;
      c.schedule.choices.resize(keep);
      if (attempt(std::move(c))) {
        progress = true;
        break;
      }
    }
  }
  for (size_t i = 0; i < w.schedule.choices.size(); i++) {
    if (w.schedule.choices[i] == 0) continue;
    MultiWorkload c = w;
    c.schedule.choices[i] = 0;
    attempt(std::move(c));
  }
  return w;
}

}  // namespace faultfs
