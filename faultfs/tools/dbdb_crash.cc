// dbdb-crash: the crash-state explorer on the command line. Generates workloads from a seed, runs
// each on the simulated filesystem, checks every crash state at every operation boundary against
// the crash oracle, and reports what it checked, how fast, and any violation — shrunk to a minimal
// workload, with the command that replays it. Exit codes: 0 no violation, 1 violation, 2 usage.
#include <faultfs/explorer.h>
#include <faultfs/multiprocess.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

using faultfs::CrashPlan;

namespace {

std::string ReplayCommand(uint64_t seed, size_t ops, const std::string& plan, uint64_t states_max,
                          const std::string& durability, uint32_t node_size, uint64_t fold_threshold) {
  return "dbdb-crash --seed " + std::to_string(seed) + " --workloads 1 --ops " + std::to_string(ops) + " --plan " +
         plan + " --states-max " + std::to_string(states_max) + " --durability " + durability + " --node-size " +
         std::to_string(node_size) + " --fold-threshold " + std::to_string(fold_threshold);
}

// --processes N: multi-process histories (faultfs/multiprocess.h) instead of one handle's workload.
int RunMultiProcess(uint64_t seed, size_t workloads, size_t ops, size_t processes, double duration_seconds,
                    CrashPlan plan, const std::string& plan_name, uint64_t states_max, unsigned threads,
                    const std::string& report_path) {
  auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  uint64_t run = 0, histories = 0, crash_points = 0, checked = 0, distinct = 0, kills = 0, commits = 0;
  std::map<std::string, uint64_t> fired;
  nlohmann::json violations = nlohmann::json::array();
  auto replay = [&](uint64_t s) {
    return "dbdb-crash --processes " + std::to_string(processes) + " --seed " + std::to_string(s) +
           " --workloads 1 --ops " + std::to_string(ops) + " --plan " + plan_name + " --states-max " +
           std::to_string(states_max);
  };
  for (uint64_t w = 0; w < workloads; w++) {
    if (duration_seconds > 0 && elapsed() >= duration_seconds) break;
    uint64_t workload_seed = seed + w;
    faultfs::MultiWorkload workload = faultfs::GenerateMultiWorkload(workload_seed, processes, ops);
    faultfs::MultiExploreResult result = faultfs::ExploreMulti(workload, plan, states_max, workload_seed, threads);
    run++;
    histories += result.histories;
    crash_points += result.crash_points;
    checked += result.states_checked;
    distinct += result.distinct_states;
    kills += result.kills;
    commits += result.commits_acknowledged;
    for (const auto& [point, count] : result.faults_fired) fired[point] += count;
    std::cerr << "\r[" << run << "/" << workloads << "] " << static_cast<int>(elapsed()) << " s, " << histories
              << " histories, " << checked << " crash states checked (" << distinct << " distinct), "
              << static_cast<uint64_t>(checked / std::max(elapsed(), 1e-9)) << " states/s" << std::flush;
    if (result.violations.empty()) continue;
    std::cerr << "\n";
    auto still_fails = [&](const faultfs::MultiWorkload& candidate) {
      return !faultfs::ExploreMulti(candidate, plan, states_max, workload_seed, threads, 1).violations.empty();
    };
    faultfs::MultiWorkload minimal = faultfs::ShrinkMultiWorkload(workload, still_fails);
    auto minimal_result = faultfs::ExploreMulti(minimal, plan, states_max, workload_seed, threads, 1);
    std::string message = minimal_result.violations.empty() ? result.violations.front() : minimal_result.violations.front();
    std::cout << "VIOLATION in workload seed " << workload_seed << ": " << message << "\n"
              << "  minimal workload:\n" << minimal.Describe() << "  replay: " << replay(workload_seed) << "\n";
    if (const char* lines_env = std::getenv("DBDB_TRACE_LINES")) {
      // The minimal workload's trace (as the multi-process property prints it): the last N operations.
      faultfs::MultiOracle oracle;
      faultfs::MultiRun trace_run = oracle.Run(minimal, std::make_shared<faultfs::SimFileSystem>(workload_seed));
      size_t lines = std::strtoull(lines_env, nullptr, 10), end = trace_run.trace.size();
      std::cout << "  trace of the minimal workload (DBDB_TRACE_LINES=" << lines << "):\n";
      for (size_t i = end > lines ? end - lines : 0; i < end; i++) {
        std::cout << "    " << i + 1 << ": " << trace_run.trace[i].ToString() << "\n";
      }
    }
    violations.push_back({{"workload_seed", workload_seed}, {"message", message},
                          {"minimal_workload", minimal.Describe()}, {"replay", replay(workload_seed)}});
    break;
  }
  std::cerr << "\n";
  double seconds = elapsed();
  std::cout << "multi-process histories: " << histories << " (" << processes << " processes, about " << ops
            << " steps each, plan " << plan_name << "), " << static_cast<uint64_t>(histories / std::max(seconds, 1e-9))
            << " histories/s\n"
            << "commits acknowledged:    " << commits << ", processes killed: " << kills << "\n"
            << "crash points:            " << crash_points << "\n"
            << "crash states checked:    " << checked << " (" << distinct << " distinct), "
            << static_cast<uint64_t>(checked / std::max(seconds, 1e-9)) << " states/s (" << threads << " threads, "
            << seconds << " s)\n"
            << "faults fired by point:  ";
  for (const auto& [point, count] : fired) std::cout << " " << point << "=" << count;
  std::cout << "\nviolations:              " << violations.size() << "\n";
  if (!report_path.empty()) {
    nlohmann::json report = {{"seed", seed}, {"processes", processes}, {"workloads", run}, {"histories", histories},
                             {"ops_per_process", ops}, {"plan", plan_name}, {"crash_points", crash_points},
                             {"states_checked", checked}, {"distinct_states", distinct}, {"kills", kills},
                             {"commits_acknowledged", commits}, {"faults_fired", fired}, {"seconds", seconds},
                             {"histories_per_second", histories / std::max(seconds, 1e-9)},
                             {"states_per_second", checked / std::max(seconds, 1e-9)}, {"violations", violations}};
    std::ofstream(report_path) << report.dump(2) << "\n";
    std::cout << "report: " << report_path << "\n";
  }
  return violations.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dbdb-crash: explore every crash state of generated workloads on the simulated filesystem"};
  uint64_t seed = 0;
  size_t ops = 100, workloads = 10;
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  uint64_t states_max = 64;
  double duration_seconds = 0;
  std::string plan_name = "all", durability_name = "sync", report_path;
  uint32_t node_size = 512;
  uint64_t fold_threshold = 1024;
  auto* seed_option = app.add_option("--seed", seed, "seed (default: random, printed first)");
  app.add_option("--ops", ops, "steps per workload")->check(CLI::Range(1, 100000));
  app.add_option("--workloads", workloads, "workloads to run (seeds seed, seed+1, ...)")->check(CLI::Range(1, 1000000));
  app.add_option("--duration", duration_seconds, "stop starting workloads after this many seconds (0: no limit)");
  app.add_option("--threads", threads, "threads checking crash states")->check(CLI::Range(1, 256));
  app.add_option("--states-max", states_max, "crash states per crash point: all up to this, sampled beyond")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--plan", plan_name, "crash plan")->check(CLI::IsMember({"all", "drop", "prefix", "subset", "torn"}));
  app.add_option("--durability", durability_name, "store durability mode")->check(CLI::IsMember({"sync", "nosync"}));
  app.add_option("--node-size", node_size, "B+tree node size target in bytes")->check(CLI::Range(512, 65536));
  app.add_option("--fold-threshold", fold_threshold,
                 "fold the batches into the tree once they pass this many bytes (0: every commit folds)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 30));
  app.add_option("--report", report_path, "write a JSON report here");
  size_t processes = 0;
  app.add_option("--processes", processes,
                 "run multi-process histories of this many simulated processes (kills, faults, schedules), "
                 "each process about --ops steps")
      ->check(CLI::Range(2, 16));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (seed_option->count() == 0) seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  std::cout << "seed: " << seed << std::endl;

  if (processes > 0) {
    CrashPlan plan;
    faultfs::ParseCrashPlan(plan_name, &plan);
    return RunMultiProcess(seed, workloads, ops, processes, duration_seconds, plan, plan_name, states_max, threads,
                           report_path);
  }

  faultfs::ExploreOptions options;
  faultfs::ParseCrashPlan(plan_name, &options.plan);
  options.states_max = states_max;
  options.threads = threads;
  options.durability = durability_name == "sync" ? dbdb::Durability::kSync : dbdb::Durability::kNoSync;
  options.node_size_target_bytes = node_size;
  options.fold_threshold_bytes = fold_threshold;

  auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); };
  uint64_t run = 0, crash_points = 0, checked = 0, distinct = 0, recoveries = 0, exist = 0;
  uint64_t epochs = 0, epochs_complete = 0, epoch_checked = 0, epoch_exist = 0;
  nlohmann::json violations = nlohmann::json::array();
  int exit_code = 0;
  for (uint64_t w = 0; w < workloads; w++) {
    if (duration_seconds > 0 && elapsed() >= duration_seconds) break;
    uint64_t workload_seed = seed + w;
    options.seed = workload_seed;
    faultfs::Workload workload = faultfs::GenerateWorkload(workload_seed, ops);
    faultfs::ExploreResult result = faultfs::Explore(workload, options);
    run++;
    crash_points += result.crash_points;
    checked += result.states_checked;
    distinct += result.distinct_states;
    recoveries += result.recoveries;
    exist = result.states_exist > UINT64_MAX - exist ? UINT64_MAX : exist + result.states_exist;
    for (const auto& e : result.epochs) {
      epochs++;
      if (e.states_checked >= e.states_exist) epochs_complete++;
      epoch_checked += e.states_checked;
      epoch_exist = e.states_exist > UINT64_MAX - epoch_exist ? UINT64_MAX : epoch_exist + e.states_exist;
    }
    std::cerr << "\r[" << run << "/" << workloads << "] " << static_cast<int>(elapsed()) << " s, " << crash_points
              << " crash points, " << checked << " states checked (" << distinct << " distinct), "
              << static_cast<uint64_t>(checked / std::max(elapsed(), 1e-9)) << " states/s, " << violations.size()
              << " violations" << std::flush;
    if (result.violations.empty()) continue;
    std::cerr << "\n";
    // Shrink to a minimal workload that still has a violation.
    auto still_fails = [&](const faultfs::Workload& candidate) { return !faultfs::Explore(candidate, options).violations.empty(); };
    faultfs::Workload minimal = faultfs::ShrinkWorkload(workload, still_fails);
    faultfs::ExploreResult minimal_result = faultfs::Explore(minimal, options);
    const faultfs::Violation& v = minimal_result.violations.empty() ? result.violations.front()
                                                                     : minimal_result.violations.front();
    std::string replay = ReplayCommand(workload_seed, ops, plan_name, states_max, durability_name, node_size, fold_threshold);
    std::cout << "VIOLATION in workload seed " << workload_seed << ": " << v.message << "\n"
              << "  crash after " << v.crash_point << " operations (last: " << v.last_operation << ")\n"
              << "  crash state: " << v.crash_state << "\n"
              << "  minimal workload (" << minimal.size() << " of " << workload.size() << " steps):\n"
              << faultfs::DescribeWorkload(minimal) << "  replay: " << replay << "\n";
    violations.push_back({{"workload_seed", workload_seed}, {"message", v.message}, {"crash_point", v.crash_point},
                          {"last_operation", v.last_operation}, {"crash_state", v.crash_state},
                          {"minimal_workload", faultfs::DescribeWorkload(minimal)}, {"replay", replay}});
    exit_code = 1;
    break;
  }
  std::cerr << "\n";
  double seconds = elapsed();
  double coverage = epoch_exist == 0 ? 1.0 : static_cast<double>(epoch_checked) / static_cast<double>(epoch_exist);
  std::cout << "workloads run:        " << run << " (" << ops << " steps each, plan " << plan_name << ", "
            << durability_name << ")\n"
            << "crash points:         " << crash_points << "\n"
            << "crash states checked: " << checked << " (" << distinct << " distinct, " << recoveries
            << " recoveries run)\n"
            << "states per second:    " << static_cast<uint64_t>(checked / std::max(seconds, 1e-9)) << " ("
            << static_cast<uint64_t>(recoveries / std::max(seconds, 1e-9)) << " recoveries/s, " << threads
            << " threads, " << seconds << " s)\n"
            << "sync epochs:          " << epochs << ", " << epochs_complete
            << " covered exhaustively; states checked / states that exist = " << coverage << "\n"
            << "violations:           " << violations.size() << "\n";
  if (!report_path.empty()) {
    nlohmann::json report = {{"seed", seed},
                             {"workloads", run},
                             {"ops_per_workload", ops},
                             {"plan", plan_name},
                             {"durability", durability_name},
                             {"threads", threads},
                             {"states_max", states_max},
                             {"crash_points", crash_points},
                             {"states_checked", checked},
                             {"distinct_states", distinct},
                             {"recoveries", recoveries},
                             {"states_that_exist", exist},
                             {"seconds", seconds},
                             {"states_per_second", checked / std::max(seconds, 1e-9)},
                             {"recoveries_per_second", recoveries / std::max(seconds, 1e-9)},
                             {"sync_epochs", epochs},
                             {"sync_epochs_covered_exhaustively", epochs_complete},
                             {"epoch_coverage", coverage},
                             {"violations", violations}};
    std::ofstream(report_path) << report.dump(2) << "\n";
    std::cout << "report: " << report_path << "\n";
  }
  return exit_code;
}
