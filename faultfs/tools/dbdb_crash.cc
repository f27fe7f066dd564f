// dbdb-crash: the crash-state explorer on the command line. Generates workloads from a seed, runs
// each on the simulated filesystem, checks every crash state at every operation boundary against
// the crash oracle, and reports what it checked, how fast, and any violation — shrunk to a minimal
// workload, with the command that replays it. Exit codes: 0 no violation, 1 violation, 2 usage.
//
// Campaigns (docs/CAMPAIGNS.md): workload k of a run with seed S has seed S + k; --shard I/N runs
// the workloads k with k % N == I, and --cases-out writes one JSON line per workload and a final
// shard line for `dbdb-campaign merge`.
#include <faultfs/campaign.h>
#include <faultfs/engine.h>
#include <faultfs/explorer.h>
#include <faultfs/multiprocess.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <algorithm>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

using faultfs::CrashPlan;
namespace campaign = faultfs::campaign;

namespace {

struct Cli {
  uint64_t seed = 0;
  size_t ops = 100, workloads = 10, processes = 0, max_violations = 1;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  uint64_t states_max = 64;
  double duration_seconds = 0;
  std::string plan_name = "all", durability_name = "sync", report_path, shard_text, cases_path, engine_name;
  // --fault-points: empty, every point the engine reaches; "promised", those but its findings'
  // (and the workload held to the promise: what the findings document of killed writers is
  // excused); "none"; or a list.
  std::vector<std::string> fault_points;
  bool kills = true;         // --no-kills: multi-process schedules kill no process
  uint32_t node_size = 512;
  uint64_t fold_threshold = 1024;
  campaign::Shard shard;
  bool hold_to_durable = false;
  bool shrink = true;
  size_t shrink_max = SIZE_MAX;
};

// What one workload (a case) produced.
struct CaseOutcome {
  bool passed = true;
  nlohmann::json figures = nlohmann::json::object();  // deterministic counts, summed by merge
  nlohmann::json extra = {{"work", nlohmann::json::object()}};  // work, epochs, faults_fired, violation
  std::string replay;
  std::string report;  // for a violation: what to print (the minimal workload, the replay line)
};

// A shard's cases as they ran: why they stopped, for how long, and the sums of their counts.
struct CasesRun {
  std::string stopped_by;
  double seconds = 0;
  nlohmann::json totals = nlohmann::json::object();       // figures and work, summed; "workloads"
  nlohmann::json violations = nlohmann::json::array();
};

std::string ShardFlags(const Cli& c) {
  return c.shard.count > 1 ? " (shard " + c.shard.ToString() + " of campaign seed " + std::to_string(c.seed) + ")" : "";
}

// The case loop shared by both modes: opens the case log (`tool`, `config`), runs the shard's
// workloads until they are done, the duration passes or max_violations were found, logs each case,
// shows progress, prints each violation's report, and writes the shard line. nullopt (reported)
// when the case log cannot be written.
std::optional<CasesRun> RunCases(const Cli& cli, const std::string& tool, const nlohmann::json& config,
                                 const std::function<CaseOutcome(uint64_t seed)>& run_case,
                                 const std::function<std::string(const CasesRun& run, double elapsed)>& progress_text) {
  campaign::CaseLog log(cli.cases_path, tool, cli.seed, cli.shard, config);
  if (!log.ok()) {
    std::cerr << "dbdb-crash: cannot write " << cli.cases_path << "\n";
    return std::nullopt;
  }
  campaign::Progress progress;
  auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  CasesRun run;
  run.stopped_by = "all cases";
  for (uint64_t k = 0; k < cli.workloads; k++) {
    if (!cli.shard.Owns(k)) continue;
    if (cli.duration_seconds > 0 && elapsed() >= cli.duration_seconds) {
      run.stopped_by = "duration";
      break;
    }
    uint64_t workload_seed = campaign::CaseSeed(cli.seed, k);
    double case_started = elapsed();
    CaseOutcome outcome = run_case(workload_seed);
    run.totals["workloads"] = run.totals.value("workloads", uint64_t{0}) + 1;
    for (const auto* counts : {&outcome.figures, &outcome.extra["work"]}) {
      for (const auto& [key, value] : counts->items()) {
        run.totals[key] = run.totals.value(key, uint64_t{0}) + value.get<uint64_t>();
      }
    }
    log.Case(k, workload_seed, outcome.passed, outcome.figures, elapsed() - case_started, outcome.replay, outcome.extra);
    if (!outcome.passed) {
      progress.Done();
      std::cout << outcome.report;
      run.violations.push_back(outcome.extra["violation"]);
    }
    progress.Update(progress_text(run, elapsed()));
    if (run.violations.size() >= cli.max_violations) {
      run.stopped_by = "violations";
      break;
    }
  }
  progress.Done();
  log.Finish(run.stopped_by);
  run.seconds = elapsed();
  return run;
}

// How many violating workloads broke each invariant (campaign::InvariantOf), for the report.
nlohmann::json ViolationsByInvariant(const nlohmann::json& violations) {
  nlohmann::json by_invariant = nlohmann::json::object();
  for (const auto& v : violations) {
    std::string invariant = v.value("invariant", "other");
    by_invariant[invariant] = by_invariant.value(invariant, uint64_t{0}) + 1;
  }
  return by_invariant;
}

void WriteReport(const std::string& path, const nlohmann::json& report) {
  if (path.empty()) return;
  std::ofstream(path) << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  std::cout << "report: " << path << "\n";
}

// The last `lines` operations of trace[0, end), numbered, under "  trace of the minimal workload<what>".
std::string TraceTail(const std::vector<faultfs::TraceOp>& trace, size_t end, size_t lines, const std::string& what) {
  std::string text = "  trace of the minimal workload" + what + " (DBDB_TRACE_LINES=" + std::to_string(lines) + "):\n";
  for (size_t i = end > lines ? end - lines : 0; i < end; i++) {
    text += "    " + std::to_string(i + 1) + ": " + trace[i].ToString() + "\n";
  }
  return text;
}

// The minimal multi-process workload's trace, the last DBDB_TRACE_LINES operations ("" unset).
std::string TraceText(const faultfs::MultiWorkload& minimal, uint64_t workload_seed) {
  const char* lines_env = std::getenv("DBDB_TRACE_LINES");
  if (lines_env == nullptr) return "";
  faultfs::MultiOracle oracle;
  faultfs::MultiRun trace_run = oracle.Run(minimal, std::make_shared<faultfs::SimFileSystem>(workload_seed));
  return TraceTail(trace_run.trace, trace_run.trace.size(), std::strtoull(lines_env, nullptr, 10), "");
}

// A run's progress line: "[done/all] S s, <count> <count_name>, <checked> <checked_name> (<distinct>
// distinct), <rate> states/s", `count_key` naming the count among the run's totals.
std::string ProgressText(const Cli& cli, const CasesRun& run, double seconds, const std::string& count_key,
                         const std::string& count_name, const std::string& checked_name) {
  const nlohmann::json& totals = run.totals;
  uint64_t checked = totals.value("states_checked", uint64_t{0});
  return "[" + std::to_string(totals.value("workloads", uint64_t{0})) + "/" + std::to_string(cli.workloads) + "] " +
         std::to_string(static_cast<int>(seconds)) + " s, " + std::to_string(totals.value(count_key, uint64_t{0})) + " " +
         count_name + ", " + std::to_string(checked) + " " + checked_name + " (" +
         std::to_string(totals.value("distinct_states", uint64_t{0})) + " distinct), " +
         std::to_string(static_cast<uint64_t>(checked / std::max(seconds, 1e-9))) + " states/s";
}

// What a multi-process run draws its workloads with: the engine, the crash plan, and the fault
// points the workloads may arm.
struct MultiSetup {
  std::unique_ptr<faultfs::Engine> engine;
  CrashPlan plan;
  // --fault-points: the faults a workload arms are drawn among every point the engine reaches;
  // those not allowed are left out (empty: all allowed).
  std::set<std::string> allowed_points;
  std::string fault_points_flag;  // as the replay line repeats it
  bool promised = false;          // "promised": held to the engine's promise only
  std::string engine_label;
};

// The setup of --processes N, or nullopt (reported) for an engine several processes cannot share
// or a fault point the engine never reaches.
std::optional<MultiSetup> SetUpMultiProcess(const Cli& cli) {
  MultiSetup setup;
  faultfs::ParseCrashPlan(cli.plan_name, &setup.plan);
  // The engine: dbdb by default (each workload draws its durability), or --engine's configuration.
  auto engine = faultfs::NewEngine(cli.engine_name.empty() ? "dbdb" : cli.engine_name);
  if (!engine.ok() || !(*engine)->info().multi_process) {
    std::cerr << "dbdb-crash: --processes: "
              << (engine.ok() ? (*engine)->info().name() + " does not support several processes (dbdb and sqlite do)"
                              : engine.status().ToString())
              << "\n";
    return std::nullopt;
  }
  setup.engine = std::move(engine).value();
  const faultfs::EngineInfo& info = setup.engine->info();
  setup.allowed_points = std::set<std::string>(cli.fault_points.begin(), cli.fault_points.end());
  for (const std::string& point : cli.fault_points) {
    setup.fault_points_flag += (setup.fault_points_flag.empty() ? "" : ",") + point;
  }
  if (!setup.fault_points_flag.empty()) setup.fault_points_flag = " --fault-points " + setup.fault_points_flag;
  // "promised" also holds the engine to its promise only: what its findings document is excused.
  setup.promised = setup.allowed_points.erase("promised") != 0;
  if (setup.promised) {
    for (const std::string& point : faultfs::MultiFaultPoints(cli.engine_name, false, true)) {
      setup.allowed_points.insert(point);
    }
  }
  const auto& known = faultfs::MultiFaultPoints(cli.engine_name, false);
  for (const std::string& point : setup.allowed_points) {
    if (point != "none" && std::find(known.begin(), known.end(), point) == known.end()) {
      std::cerr << "dbdb-crash: --fault-points: " << info.name() << " reaches no fault point " << point << "\n";
      return std::nullopt;
    }
  }
  setup.engine_label = cli.engine_name.empty() ? "dbdb (sync or nosync, drawn per workload)" : info.name();
  return setup;
}

std::string MultiReplayCommand(const Cli& cli, const MultiSetup& setup, uint64_t seed) {
  return "dbdb-crash" + (cli.engine_name.empty() ? std::string() : " --engine " + cli.engine_name) + " --processes " +
         std::to_string(cli.processes) + " --seed " + std::to_string(seed) + " --workloads 1 --ops " +
         std::to_string(cli.ops) + " --plan " + cli.plan_name + " --states-max " + std::to_string(cli.states_max) +
         setup.fault_points_flag + (cli.kills ? "" : " --no-kills");
}

// One multi-process workload, explored; a violation shrunk (while --shrink-max allows: `shrunk`
// counts them) and reported. Adds the faults it fired to `fired`.
CaseOutcome RunMultiCase(const Cli& cli, const MultiSetup& setup, uint64_t workload_seed, size_t* shrunk,
                         std::map<std::string, uint64_t>* fired) {
  faultfs::MultiWorkload workload = faultfs::GenerateMultiWorkload(workload_seed, cli.processes, cli.ops, cli.engine_name);
  if (!cli.kills) workload.schedule.kills.clear();
  workload.held_to_promise = setup.promised;
  if (!setup.allowed_points.empty()) {
    for (auto& process : workload.processes) {
      std::erase_if(process.faults, [&](const faultfs::ArmedFault& f) { return setup.allowed_points.count(f.point) == 0; });
    }
  }
  faultfs::MultiExploreResult result = faultfs::ExploreMulti(workload, setup.plan, cli.states_max, workload_seed, cli.threads);
  CaseOutcome o;
  o.replay = MultiReplayCommand(cli, setup, workload_seed);
  o.figures = {{"histories", result.histories},          {"crash_points", result.crash_points},
               {"states_checked", result.states_checked}, {"distinct_states", result.distinct_states},
               {"kills", result.kills},                   {"commits_acknowledged", result.commits_acknowledged}};
  o.extra["faults_fired"] = result.faults_fired;
  for (const auto& [point, count] : result.faults_fired) (*fired)[point] += count;
  if (result.violations.empty()) return o;
  auto still_fails = [&](const faultfs::MultiWorkload& candidate) {
    return !faultfs::ExploreMulti(candidate, setup.plan, cli.states_max, workload_seed, cli.threads, 1).violations.empty();
  };
  bool shrink = cli.shrink && *shrunk < cli.shrink_max;  // as in single-process runs
  if (shrink) ++*shrunk;
  faultfs::MultiWorkload minimal = shrink ? faultfs::ShrinkMultiWorkload(workload, still_fails) : workload;
  auto minimal_result = faultfs::ExploreMulti(minimal, setup.plan, cli.states_max, workload_seed, cli.threads, 1);
  std::string message = minimal_result.violations.empty() ? result.violations.front() : minimal_result.violations.front();
  o.report = "VIOLATION in workload seed " + std::to_string(workload_seed) + ": " + message + "\n" +
             "  minimal workload:\n" + minimal.Describe() + "  replay: " + o.replay + "\n" +
             TraceText(minimal, workload_seed);
  o.passed = false;
  o.extra["violation"] = {{"workload_seed", workload_seed}, {"message", message},
                          {"invariant", campaign::InvariantOf(message)}, {"counterexample", minimal.Describe()},
                          {"minimal_workload", minimal.Describe()}, {"replay", o.replay}};
  return o;
}

std::string MultiProgressText(const Cli& cli, const CasesRun& run, double seconds) {
  return ProgressText(cli, run, seconds, "histories", "histories", "crash states checked");
}

// The summary of a multi-process run on stdout and in --report; the exit code.
int ReportMultiProcess(const Cli& cli, const MultiSetup& setup, const CasesRun& run,
                       const std::map<std::string, uint64_t>& fired) {
  const faultfs::EngineInfo& info = setup.engine->info();
  const nlohmann::json& totals = run.totals;
  const nlohmann::json& violations = run.violations;
  double seconds = run.seconds;
  uint64_t histories = totals.value("histories", uint64_t{0}), checked = totals.value("states_checked", uint64_t{0});
  std::cout << "engine:                  " << setup.engine_label << ", " << info.version << "\n"
            << "multi-process histories: " << histories << " (" << cli.processes << " processes, about " << cli.ops
            << " steps each, plan " << cli.plan_name << ")" << ShardFlags(cli) << ", "
            << static_cast<uint64_t>(histories / std::max(seconds, 1e-9)) << " histories/s\n"
            << "commits acknowledged:    " << totals.value("commits_acknowledged", uint64_t{0})
            << ", processes killed: " << totals.value("kills", uint64_t{0}) << "\n"
            << "crash points:            " << totals.value("crash_points", uint64_t{0}) << "\n"
            << "crash states checked:    " << checked << " (" << totals.value("distinct_states", uint64_t{0})
            << " distinct), " << static_cast<uint64_t>(checked / std::max(seconds, 1e-9)) << " states/s ("
            << cli.threads << " threads, " << seconds << " s)\n"
            << "faults fired by point:  ";
  for (const auto& [point, count] : fired) std::cout << " " << point << "=" << count;
  nlohmann::json by_invariant = ViolationsByInvariant(violations);
  std::cout << "\nviolations:              " << violations.size()
            << (violations.empty() ? "" : " " + by_invariant.dump()) << "\n";
  nlohmann::json report = totals;
  report.update({{"seed", cli.seed}, {"shard", cli.shard.ToString()}, {"engine", setup.engine_label},
                 {"version", info.version}, {"promise", info.promise}, {"durable", info.durable},
                 {"durable_after", info.durable_after}, {"processes", cli.processes},
                 {"ops_per_process", cli.ops}, {"plan", cli.plan_name}, {"faults_fired", fired}, {"seconds", seconds},
                 {"histories_per_second", histories / std::max(seconds, 1e-9)},
                 {"states_per_second", checked / std::max(seconds, 1e-9)}, {"violations", violations},
                 {"violations_by_invariant", by_invariant}, {"matched_promise", violations.empty()}});
  WriteReport(cli.report_path, report);
  return violations.empty() ? 0 : 1;
}

// --processes N: multi-process histories (faultfs/multiprocess.h) instead of one handle's workload.
int RunMultiProcess(const Cli& cli) {
  std::optional<MultiSetup> setup = SetUpMultiProcess(cli);
  if (!setup) return 2;
  nlohmann::json config = {{"mode", "multi-process"}, {"engine", setup->engine_label}, {"processes", cli.processes},
                           {"ops", cli.ops},          {"plan", cli.plan_name},         {"states_max", cli.states_max},
                           {"workloads", cli.workloads}};
  size_t shrunk = 0;
  std::map<std::string, uint64_t> fired;
  // The campaign's tool name: dbdb's default run keeps its old name, an --engine run names it.
  std::string tool =
      cli.engine_name.empty() ? "dbdb-crash-multiprocess" : "dbdb-crash-multiprocess:" + setup->engine->info().name();
  std::optional<CasesRun> run = RunCases(
      cli, tool, config, [&](uint64_t seed) { return RunMultiCase(cli, *setup, seed, &shrunk, &fired); },
      [&](const CasesRun& r, double seconds) { return MultiProgressText(cli, r, seconds); });
  if (!run) return 2;
  return ReportMultiProcess(cli, *setup, *run, fired);
}

bool IsDbdb(const Cli& c) { return faultfs::IsDbdbEngine(c.engine_name); }

std::string ReplayCommand(const Cli& c, uint64_t seed) {
  std::string engine = (c.engine_name.empty() ? "" : " --engine " + c.engine_name) +
                       (c.hold_to_durable ? " --hold-to-durable" : "");
  // dbdb's tuning only for dbdb (its durability is in the configuration's name with --engine).
  std::string tuning = !IsDbdb(c) ? ""
                       : (c.engine_name.empty() ? " --durability " + c.durability_name : "") + " --node-size " +
                             std::to_string(c.node_size) + " --fold-threshold " + std::to_string(c.fold_threshold);
  return "dbdb-crash" + engine + " --seed " + std::to_string(seed) + " --workloads 1 --ops " + std::to_string(c.ops) +
         " --plan " + c.plan_name + " --states-max " + std::to_string(c.states_max) + tuning;
}


uint64_t SaturatingAdd(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }

// The explorer's options for one handle's workloads, --engine's configuration and dbdb's tuning in
// them; nullopt (reported) for an engine that does not exist.
std::optional<faultfs::ExploreOptions> SingleProcessOptions(const Cli& cli) {
  faultfs::ExploreOptions options;
  faultfs::ParseCrashPlan(cli.plan_name, &options.plan);
  options.states_max = cli.states_max;
  options.threads = cli.threads;
  options.durability = cli.durability_name == "sync" ? dbdb::Durability::kSync : dbdb::Durability::kNoSync;
  options.node_size_target_bytes = cli.node_size;
  options.fold_threshold_bytes = cli.fold_threshold;
  // --engine: any engine under test (engine.h); dbdb's configurations take the tuning above.
  faultfs::DbdbTuning tuning;
  tuning.node_size_target_bytes = cli.node_size;
  tuning.fold_threshold_bytes = cli.fold_threshold;
  if (!cli.engine_name.empty()) {
    auto engine = faultfs::NewEngine(cli.engine_name, tuning);
    if (!engine.ok()) {
      std::cerr << "dbdb-crash: " << engine.status().message() << "\n";
      return std::nullopt;
    }
    options.engine = std::move(engine).value();
  }
  if (cli.hold_to_durable) {
    if (!options.engine) options.engine = faultfs::NewDbdbEngine(cli.durability_name, tuning);
    options.engine = faultfs::HoldToDurable(options.engine);
  }
  return options;
}

// The crash states that exist and the sync epochs, summed over a run's workloads.
struct EpochTotals {
  uint64_t states_exist = 0, epochs = 0, epochs_complete = 0, epoch_checked = 0, epoch_exist = 0;
};

// The minimal workload's trace up to its crash point, the last DBDB_TRACE_LINES operations ("" unset).
std::string SingleTraceText(const faultfs::Workload& minimal, const faultfs::ExploreOptions& options,
                            size_t crash_point) {
  const char* lines_env = std::getenv("DBDB_TRACE_LINES");
  if (lines_env == nullptr) return "";
  faultfs::ExploreOptions trace_options = options;
  trace_options.keep_trace = true;
  std::vector<faultfs::TraceOp> trace = faultfs::Explore(minimal, trace_options).trace;
  return TraceTail(trace, std::min(trace.size(), crash_point), std::strtoull(lines_env, nullptr, 10), " up to the crash");
}

// One handle's workload, every crash state of it explored; a violation shrunk (while --shrink-max
// allows: `shrunk` counts them) and reported. Adds its states and epochs to `epochs`.
CaseOutcome RunSingleCase(const Cli& cli, const faultfs::ExploreOptions& options, uint64_t workload_seed,
                          size_t* shrunk, EpochTotals* epochs) {
  faultfs::ExploreOptions o_options = options;
  o_options.seed = workload_seed;
  faultfs::Workload workload = faultfs::GenerateWorkload(workload_seed, cli.ops);
  faultfs::ExploreResult result = faultfs::Explore(workload, o_options);
  CaseOutcome o;
  o.replay = ReplayCommand(cli, workload_seed);
  o.figures = {{"crash_points", result.crash_points}, {"states_checked", result.states_checked},
               {"distinct_states", result.distinct_states},
               {"states_losing_acknowledged_commits", result.states_losing_acknowledged}};
  // Recoveries run depend on how the threads met (two may recover one image): work, not a figure.
  o.extra["work"] = {{"recoveries", result.recoveries}};
  epochs->states_exist = SaturatingAdd(epochs->states_exist, result.states_exist);
  nlohmann::json epoch_lines = nlohmann::json::array();
  for (const auto& e : result.epochs) {
    epochs->epochs++;
    if (e.states_checked >= e.states_exist) epochs->epochs_complete++;
    epochs->epoch_checked += e.states_checked;
    epochs->epoch_exist = SaturatingAdd(epochs->epoch_exist, e.states_exist);
    epoch_lines.push_back({e.states_checked, e.states_exist});
  }
  o.extra["epochs"] = epoch_lines;
  if (result.violations.empty()) return o;
  auto still_fails = [&](const faultfs::Workload& candidate) {
    return !faultfs::Explore(candidate, o_options).violations.empty();
  };
  // Shrinking re-explores the workload many times: --shrink-max bounds how many a run shrinks.
  bool shrink = cli.shrink && *shrunk < cli.shrink_max;
  if (shrink) ++*shrunk;
  faultfs::Workload minimal = shrink ? faultfs::ShrinkWorkload(workload, still_fails) : workload;
  faultfs::ExploreResult minimal_result = faultfs::Explore(minimal, o_options);
  const faultfs::Violation& v =
      minimal_result.violations.empty() ? result.violations.front() : minimal_result.violations.front();
  o.report = "VIOLATION in workload seed " + std::to_string(workload_seed) + ": " + v.message + "\n" +
             "  crash after " + std::to_string(v.crash_point) + " operations (last: " + v.last_operation + ")\n" +
             "  crash state: " + v.crash_state + "\n" + "  minimal workload (" + std::to_string(minimal.size()) +
             " of " + std::to_string(workload.size()) + " steps):\n" + faultfs::DescribeWorkload(minimal) +
             "  replay: " + o.replay + "\n" + SingleTraceText(minimal, o_options, v.crash_point);
  o.passed = false;
  o.extra["violation"] = {{"workload_seed", workload_seed}, {"message", v.message},
                          {"invariant", campaign::InvariantOf(v.message)}, {"crash_point", v.crash_point},   {"last_operation", v.last_operation},
                          {"crash_state", v.crash_state},   {"counterexample", faultfs::DescribeWorkload(minimal)},
                          {"minimal_workload", faultfs::DescribeWorkload(minimal)}, {"replay", o.replay}};
  return o;
}

std::string SingleProgressText(const Cli& cli, const CasesRun& run, double seconds) {
  return ProgressText(cli, run, seconds, "crash_points", "crash points", "states checked") + ", " +
         std::to_string(run.violations.size()) + " violations";
}

// The summary of a single-process run on stdout and in --report; the exit code.
int ReportSingleProcess(const Cli& cli, const faultfs::EngineInfo& info, const CasesRun& run,
                        const EpochTotals& epochs) {
  const nlohmann::json& totals = run.totals;
  const nlohmann::json& violations = run.violations;
  double seconds = run.seconds;
  uint64_t checked = totals.value("states_checked", uint64_t{0}), recoveries = totals.value("recoveries", uint64_t{0});
  double coverage = epochs.epoch_exist == 0 ? 1.0
                                            : static_cast<double>(epochs.epoch_checked) / static_cast<double>(epochs.epoch_exist);
  nlohmann::json by_invariant = ViolationsByInvariant(violations);
  std::cout << "workloads run:        " << totals.value("workloads", uint64_t{0}) << " (" << cli.ops
            << " steps each, plan " << cli.plan_name << ", " << info.name() << ")" << ShardFlags(cli) << "\n"
            << "crash points:         " << totals.value("crash_points", uint64_t{0}) << "\n"
            << "crash states checked: " << checked << " (" << totals.value("distinct_states", uint64_t{0})
            << " distinct, " << recoveries << " recoveries run)\n"
            << "states per second:    " << static_cast<uint64_t>(checked / std::max(seconds, 1e-9)) << " ("
            << static_cast<uint64_t>(recoveries / std::max(seconds, 1e-9)) << " recoveries/s, " << cli.threads
            << " threads, " << seconds << " s)\n"
            << "sync epochs:          " << epochs.epochs << ", " << epochs.epochs_complete
            << " covered exhaustively; states checked / states that exist = " << coverage << "\n"
            << "lost acknowledged:    " << totals.value("states_losing_acknowledged_commits", uint64_t{0})
            << " states recovered to a commit older than the newest acknowledged one"
            << (info.durable ? "" : " (allowed: not durable)") << "\n"
            << "violations:           " << violations.size() << (violations.empty() ? "" : " " + by_invariant.dump())
            << " (workloads that broke the promise of " << info.name() << ")\n";
  nlohmann::json report = totals;
  report.update({{"engine", info.engine}, {"configuration", info.config}, {"version", info.version},
                 {"promise", info.promise}, {"durable", info.durable}, {"durable_after", info.durable_after},
                 {"violations_by_invariant", by_invariant}, {"matched_promise", violations.empty()}});
  report.update({{"seed", cli.seed}, {"shard", cli.shard.ToString()}, {"ops_per_workload", cli.ops},
                 {"plan", cli.plan_name}, {"durability", cli.durability_name}, {"threads", cli.threads},
                 {"states_max", cli.states_max}, {"states_that_exist", epochs.states_exist}, {"seconds", seconds},
                 {"states_per_second", checked / std::max(seconds, 1e-9)},
                 {"recoveries_per_second", recoveries / std::max(seconds, 1e-9)}, {"sync_epochs", epochs.epochs},
                 {"sync_epochs_covered_exhaustively", epochs.epochs_complete}, {"epoch_coverage", coverage},
                 {"violations", violations}});
  WriteReport(cli.report_path, report);
  return violations.empty() ? 0 : 1;
}

// One handle's workloads, every crash state of each (faultfs/explorer.h).
int RunSingleProcess(const Cli& cli) {
  std::optional<faultfs::ExploreOptions> options = SingleProcessOptions(cli);
  if (!options) return 2;
  faultfs::EngineInfo info =
      options->engine ? options->engine->info() : faultfs::NewDbdbEngine(cli.durability_name, {})->info();
  std::cout << "engine: " << info.name() << " (" << info.version << "), "
            << (info.durable ? "durable" : info.durable_after > 0 ? "durable after " + std::to_string(info.durable_after) + " later commit(s)" : "not durable")
            << ": " << info.promise << std::endl;
  nlohmann::json config = {{"mode", "single-process"}, {"engine", info.name()},
                           {"hold_to_durable", cli.hold_to_durable}, {"ops", cli.ops},
                           {"plan", cli.plan_name},    {"states_max", cli.states_max},
                           {"durability", cli.durability_name}, {"node_size", cli.node_size},
                           {"fold_threshold", cli.fold_threshold}, {"workloads", cli.workloads}};
  EpochTotals epochs;
  size_t shrunk = 0;
  // Campaign tool names: dbdb's own runs keep theirs; another engine's configuration is a tool of its
  // own, so a campaign over several merges them side by side.
  std::string tool = cli.engine_name.empty() ? "dbdb-crash"
                     : "dbdb-crash:" + info.name() + (cli.plan_name == "all" ? "" : ":" + cli.plan_name) +
                           (cli.hold_to_durable ? ":held-to-durable" : "");
  std::optional<CasesRun> run = RunCases(
      cli, tool, config, [&](uint64_t seed) { return RunSingleCase(cli, *options, seed, &shrunk, &epochs); },
      [&](const CasesRun& r, double seconds) { return SingleProgressText(cli, r, seconds); });
  if (!run) return 2;
  return ReportSingleProcess(cli, info, *run, epochs);
}

void AddOptions(CLI::App& app, Cli& c, CLI::Option** seed_option) {
  *seed_option = app.add_option("--seed,--campaign-seed", c.seed,
                                "seed: workload k runs with seed + k (default: random, printed first)");
  app.add_option("--ops", c.ops, "steps per workload")->check(CLI::Range(1, 100000));
  app.add_option("--workloads", c.workloads, "workloads in the campaign (seeds seed, seed+1, ...; a shard runs its share)")
      ->check(CLI::Range(1, 1000000000));
  app.add_option("--duration", c.duration_seconds, "stop starting workloads after this many seconds (0: no limit)");
  app.add_option("--threads", c.threads, "threads checking crash states")->check(CLI::Range(1, 256));
  app.add_option("--states-max", c.states_max, "crash states per crash point: all up to this, sampled beyond")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--plan", c.plan_name, "crash plan")->check(CLI::IsMember({"all", "drop", "prefix", "subset", "torn", "ordered"}));
  app.add_option("--engine", c.engine_name,
                 "the engine under test, ENGINE[/CONFIG]: dbdb, sqlite, leveldb or rocksdb (docs/ENGINES.md; "
                 "default dbdb with --durability); with --processes, dbdb or sqlite (default: dbdb, its "
                 "durability drawn per workload)");
  app.add_flag("!--no-shrink", c.shrink, "report a violating workload as it is, without shrinking it");
  app.add_option("--shrink-max", c.shrink_max, "shrink at most this many violating workloads, report the rest as they are");
  app.add_flag("--hold-to-durable", c.hold_to_durable,
               "hold the engine to the durable promise whatever its configuration promises (a non-durable "
               "configuration must then show lost commits: a check that the explorer sees them)");
  app.add_option("--durability", c.durability_name, "store durability mode")->check(CLI::IsMember({"sync", "nosync"}));
  app.add_option("--node-size", c.node_size, "B+tree node size target in bytes")->check(CLI::Range(512, 65536));
  app.add_option("--fold-threshold", c.fold_threshold,
                 "fold the batches into the tree once they pass this many bytes (0: every commit folds)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 30));
  app.add_option("--report", c.report_path, "write a JSON report here");
  app.add_option("--processes", c.processes,
                 "run multi-process histories of this many simulated processes (kills, faults, schedules), "
                 "each process about --ops steps")
      ->check(CLI::Range(2, 16));
  app.add_flag("!--no-kills", c.kills, "with --processes: the schedules kill no process");
  app.add_option("--fault-points", c.fault_points,
                 "with --processes: arm only these fault points, comma-separated (\"none\": no fault; "
                 "\"promised\": every point but those of the engine's findings, and what its findings say of a "
                 "killed writer's commit excused, docs/ENGINES.md; default: every "
                 "point the engine reaches through the filesystem, sim_file_system.h)")
      ->delimiter(',');
  app.add_option("--shard", c.shard_text,
                 "I/N: run the workloads k with k % N == I (N alone: I from JOB_COMPLETION_INDEX or GTEST_SHARD_INDEX)");
  app.add_option("--cases-out", c.cases_path, "write one JSON line per workload and a shard line here (for merge)");
  app.add_option("--max-violations", c.max_violations, "stop after this many violating workloads")
      ->check(CLI::Range(1, 1000000));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dbdb-crash: explore every crash state of generated workloads on the simulated filesystem"};
  Cli cli;
  CLI::Option* seed_option = nullptr;
  AddOptions(app, cli, &seed_option);
  bool list_engines = false;
  app.add_flag("--list-engines", list_engines,
               "print every engine configuration (ENGINE/CONFIG), one a line, and exit (with --processes: those "
               "that several processes may share)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (list_engines) {  // with --processes: only the engines several processes may share
    for (const std::string& name : faultfs::EngineConfigurations()) {
      if (cli.processes > 0) {
        auto engine = faultfs::NewEngine(name);
        if (!engine.ok() || !(*engine)->info().multi_process) continue;
      }
      std::cout << name << "\n";
    }
    return 0;
  }
  if (seed_option->count() == 0) cli.seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  std::cout << "seed: " << cli.seed << std::endl;
  std::string error;
  if (!campaign::ResolveShard(cli.shard_text, &cli.shard, &error)) {
    std::cerr << "dbdb-crash: " << error << "\n";
    return 2;
  }
  if (cli.shard.count > 1) std::cout << "shard: " << cli.shard.ToString() << std::endl;
  if (cli.processes == 0 && (!cli.fault_points.empty() || !cli.kills)) {
    std::cerr << "dbdb-crash: --fault-points and --no-kills need --processes (single-process runs inject no "
                 "fault and kill nothing)\n";
    return 2;
  }
  if (cli.processes > 0 && cli.hold_to_durable) {
    std::cerr << "dbdb-crash: --hold-to-durable is for single-process runs (docs/ENGINES.md)\n";
    return 2;
  }
  // A bare "dbdb" is the configuration --durability names.
  if (cli.engine_name == "dbdb") cli.engine_name = "dbdb/" + cli.durability_name;
  return cli.processes > 0 ? RunMultiProcess(cli) : RunSingleProcess(cli);
}
