// dbdb-stress: multiprocess stress and crash campaigns against one database file. See runner.h.
// Prints its seed first; exits 0 when no invariant broke, 1 with the replay command when one did,
// 2 on bad usage or a setup failure.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <iostream>
#include <random>

#include "child.h"
#include "runner.h"

namespace {

// The command line's flags, as they fill `o` (the run), `child` (a child's: internal, how the
// parent starts its children) and the two texts parsed after.
struct Flags {
  stress::RunOptions o;
  stress::ChildArgs child;
  std::string faults, shard_text;
  CLI::Option* seed_option = nullptr;
  CLI::Option* child_option = nullptr;
};

void AddOptions(CLI::App& app, Flags& f) {
  stress::RunOptions& o = f.o;
  f.seed_option = app.add_option("--seed,--campaign-seed", o.campaign_seed,
                                 "seed; shard I of a campaign runs with seed + I (default: random, printed first)");
  app.add_option("--shard", f.shard_text,
                 "I/N: this run is case I of an N-shard campaign (N alone: I from JOB_COMPLETION_INDEX or "
                 "GTEST_SHARD_INDEX)");
  app.add_option("--cases-out", o.cases_path, "write this run's case line and shard line here (for merge)");
  app.add_option("--workload", o.workload, "bank, counter, ledger or mixed")
      ->check(CLI::IsMember({"bank", "counter", "ledger", "mixed"}));
  app.add_option("--writers", o.writers, "writer processes")->check(CLI::Range(1, 64));
  app.add_option("--readers", o.readers, "reader processes")->check(CLI::Range(0, 64));
  app.add_option("--duration", o.duration_seconds, "seconds")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--kill-interval-ms", o.kill_interval_ms, "mean milliseconds between SIGKILLs (0: no kills)")
      ->check(CLI::Range(0.0, 3600000.0));
  app.add_option("--faults", f.faults,
                 "I/O faults injected into the children's system calls with fiu-run -x: NAME=PROB[:ERRNO],... "
                 "(names pwrite, pwrite-short, pread, fdatasync, fsync, ftruncate, rename, open; 'default' for a mix)");
  app.add_flag("--power-cut", o.power_cut,
               "run on a dbdb-powerfs mount made under --dir, and cut the power under every child at random "
               "(needs FUSE: /dev/fuse, and root or fusermount3)");
  app.add_option("--cut-interval-ms", o.cut_interval_ms, "with --power-cut: mean milliseconds between power cuts")
      ->check(CLI::Range(1.0, 3600000.0));
  app.add_option("--cut-plan", o.cut_plan,
                 "with --power-cut: the crash plan of every cut (drop, prefix, subset, torn, all), or mixed: one "
                 "drawn per cut")
      ->check(CLI::IsMember({"drop", "prefix", "subset", "torn", "all", "mixed"}));
  app.add_option("--dir", o.dir, "directory for the database (its stress.dbdb is replaced); required");
  app.add_option("--report", o.report_path, "write a JSON report here");
  f.child_option = app.add_option("--child", f.child.role)->group("")->check(CLI::IsMember({"writer", "reader"}));
  app.add_option("--child-id", f.child.id)->group("");
  app.add_option("--incarnation", f.child.incarnation)->group("");
  app.add_option("--db", f.child.path)->group("");
}

// The run's seed (printed), shard, faults and executables, from the flags; false (reported) on a
// bad shard or fault list, or an executable that cannot find itself.
bool PrepareRun(Flags& f) {
  stress::RunOptions& o = f.o;
  if (f.seed_option->count() == 0) o.campaign_seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  std::string error;
  if (!faultfs::campaign::ResolveShard(f.shard_text, &o.shard, &error)) {
    std::cerr << "dbdb-stress: " << error << "\n";
    return false;
  }
  o.seed = faultfs::campaign::CaseSeed(o.campaign_seed, o.shard.index);
  std::cout << "seed: " << o.seed << std::endl;
  if (o.shard.count > 1) {
    std::cout << "shard: " << o.shard.ToString() << " of campaign seed " << o.campaign_seed << std::endl;
  }
  if (!stress::ParseFaults(f.faults, &o.faults, &error)) {
    std::cerr << "dbdb-stress: --faults: " << error << "\n";
    return false;
  }
  o.faults_text = f.faults;
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    std::cerr << "dbdb-stress: cannot find its own executable\n";
    return false;
  }
  o.self_path.assign(self, static_cast<size_t>(n));
  o.powerfs_path = o.self_path.substr(0, o.self_path.find_last_of('/') + 1) + "dbdb-powerfs";
  return true;
}

// The command that replays this run.
std::string ReplayCommand(const stress::RunOptions& o, const std::string& faults) {
  return "dbdb-stress --workload " + o.workload + " --writers " + std::to_string(o.writers) + " --readers " +
         std::to_string(o.readers) + " --duration " + std::to_string(o.duration_seconds) + " --kill-interval-ms " +
         std::to_string(o.kill_interval_ms) + (faults.empty() ? "" : " --faults " + faults) +
         (o.power_cut ? " --power-cut --cut-interval-ms " + std::to_string(o.cut_interval_ms) + " --cut-plan " + o.cut_plan
                      : "") +
         " --seed " + std::to_string(o.seed) + " --dir " + o.dir;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dbdb-stress: fork writers and readers against one dbdb file, SIGKILL them at random, inject I/O "
               "faults, and check atomic commit (bank), serialized writers (counter) and durability (ledger)"};
  Flags f;
  AddOptions(app, f);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (f.child_option->count() > 0) {
    f.child.workload = f.o.workload;
    f.child.seed = f.o.campaign_seed;
    return stress::RunChild(f.child);
  }
  if (f.o.dir.empty()) {
    std::cerr << "dbdb-stress: --dir is required\n" << app.help();
    return 2;
  }
  if (!PrepareRun(f)) return 2;
  return stress::RunStress(f.o, ReplayCommand(f.o, f.faults));
}
