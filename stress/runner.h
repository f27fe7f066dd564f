// The dbdb-stress parent: forks writer and reader children against one database, kills one at
// random every --kill-interval-ms on average (preferring, sometimes, one in the middle of a
// compaction), restarts it, and after every kill opens the database, runs check() and verifies
// the workload invariants. At the end the whole history goes through the model's history checker.
//   bank    (I1)  every snapshot and every recovered state holds the same total
//   counter (I4)  each counter = acknowledged increments + at most those in flight at a kill
//   ledger  (I2)  every acknowledged entry survives every kill
// With power_cut, the database lives on a dbdb-powerfs mount (docs/POWERFS.md) that the runner
// mounts under `dir`, and every cut_interval_ms on average the power is cut under all the children:
// they die, the mount is reset to a crash state of a seeded plan, and the same checks run, now
// against what a power loss leaves (every commit acknowledged durable must survive).
#pragma once

#include <faultfs/campaign.h>

#include <cstdint>
#include <string>
#include <vector>

namespace stress {

struct FaultSpec {
  std::string point;  // libfiu POSIX point, e.g. posix/io/rw/pwrite
  double probability;
  int error_number;   // 0: a random valid errno
};

// "pwrite=0.002,fdatasync=0.01:ENOSPC,pread=0.001" (names: pwrite, pwrite-short, pread, fdatasync,
// fsync, ftruncate, rename, open; errnos: EIO, ENOSPC, or a number). "default" is a mix; "none" or
// "" is none. Returns false with `error` set when malformed.
bool ParseFaults(const std::string& spec, std::vector<FaultSpec>* faults, std::string* error);

struct RunOptions {
  std::string workload = "mixed";
  int writers = 4;
  int readers = 2;
  double duration_seconds = 20;
  double kill_interval_ms = 200;
  std::vector<FaultSpec> faults;
  std::string faults_text;
  uint64_t seed = 0;           // this run's seed: the campaign seed + the shard index
  uint64_t campaign_seed = 0;
  faultfs::campaign::Shard shard;
  std::string cases_path;      // one case line and a shard line for `dbdb-campaign merge`
  std::string dir;
  std::string report_path;
  std::string self_path;  // this executable, for re-executing children
  bool power_cut = false;
  double cut_interval_ms = 1000;
  std::string cut_plan = "mixed";  // drop, prefix, subset, torn, all, or mixed (one drawn per cut)
  std::string powerfs_path;        // the dbdb-powerfs executable
};

// Runs the campaign; prints progress and a summary; returns the process exit code
// (0 clean, 1 violations, 2 setup failure).
int RunStress(const RunOptions& options, const std::string& replay_command);

}  // namespace stress
