// The dbdb-stress parent (runner.h).
#include "runner.h"

#include <dbdb/db.h>
#include <faultfs/campaign.h>
#include <faultfs/powerfs_client.h>
#include <faultfs/rng.h>
#include <fcntl.h>
#include <model/history.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "child.h"
#include "protocol.h"

namespace stress {
namespace {

struct Op {  // one write transaction as the parent saw it
  model::RecordedTransaction txn;
  uint64_t intended_commit = 0;
  enum class State { kPending, kAcknowledged, kMaybe } state = State::kPending;
};

struct Child {
  Child(int child_id, bool is_writer) : id(child_id), writer(is_writer) {}
  int id;
  bool writer;
  uint64_t incarnation = 0;
  pid_t pid = -1;
  int fd = -1;
  std::string buffer;
  bool compacting = false;
  std::map<std::string, size_t> pending;  // op id -> index into ops
};

class Runner {
 public:
  Runner(const RunOptions& options, std::string replay) : o_(options), replay_(std::move(replay)), rng_(options.seed) {}
  int Run();

 private:
  bool Setup();
  bool MountPowerFs();
  void UnmountPowerFs();
  void CutPower();
  void Spawn(Child& c);
  void Drain(Child& c, bool until_eof);
  void HandleLine(Child& c, const std::string& line);
  void Reap(Child& c, int status, bool killed_by_us, bool stopping = false);
  // record: the state read goes into the history as one more transaction (at the end, and after a
  // power cut, when no child runs: the recovered state must be a serial prefix, I3).
  void Verify(const char* when, bool record);
  void Violation(const std::string& what);
  void CheckHistory();
  void ShowProgress();
  void Loop();
  void StopChildren();
  void PrintSummary(double seconds);
  nlohmann::json Figures() const;
  void WriteReport(double seconds);
  std::unique_ptr<faultfs::campaign::CaseLog> OpenCaseLog() const;
  void LogCase(faultfs::campaign::CaseLog* log, double seconds);
  double Elapsed() const { return (MonotonicNanos() - start_ns_) / 1e9; }

  const RunOptions& o_;
  std::string replay_;
  faultfs::Rng rng_;
  std::string path_;
  std::vector<Child> children_;
  std::vector<Op> ops_;
  std::vector<model::RecordedTransaction> snapshots_;
  model::RecordedTransaction setup_;
  std::vector<std::string> violations_;
  uint64_t start_ns_ = 0;
  uint64_t commits_ = 0, kills_ = 0, faults_ = 0, restarts_ = 0, reads_ = 0, compactions_ = 0, verifications_ = 0;
  // Power cuts: how many, and how many acknowledged ledger entries were looked up after them.
  uint64_t cuts_ = 0, cut_ledger_checked_ = 0;
  std::map<std::string, uint64_t> cut_plans_;
  std::string mount_;  // the dbdb-powerfs mount point, with --power-cut
  int stopped_by_ = 0;  // the signal that stopped the run before its duration (g_stop_signal), or 0
  bool cutting_ = false;
  bool cut_soon_ = false;  // a compaction just began or ended: the next cut comes now (sometimes)
  std::map<int, int64_t> counter_acknowledged_, counter_maybe_;
  std::vector<std::string> ledger_acknowledged_;  // in acknowledgement order
  faultfs::campaign::Progress progress_;
};

// The signal that asked the run to stop early, or 0: SIGINT (Ctrl-C), SIGTERM (`timeout`, a
// campaign's stop), SIGHUP, or SIGPIPE (the output piped into a program that has exited, such as
// `head`). The run then stops as at the end of its duration: its children are stopped, the final
// checks run on what it did, and its dbdb-powerfs mount is unmounted, where the default action
// would have left the mount (and the children, until they noticed) behind. Then the runner ends
// by the same signal (EndBySignal). The first signal is kept: `timeout` sends SIGTERM twice (to
// the command, then to its process group), and every write to a closed pipe raises SIGPIPE again.
volatile std::sig_atomic_t g_stop_signal = 0;
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};

extern "C" void OnStopSignal(int signal) {
  if (g_stop_signal == 0) g_stop_signal = signal;  // the others are blocked meanwhile (sa_mask)
}

void InstallStopHandlers() {
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  for (int signal : kStopSignals) sigaddset(&action.sa_mask, signal);
  // The loop's poll returns at the signal whatever the flags; the waits and writes after it are
  // restarted. A signal ignored on entry stays ignored (`nohup dbdb-stress ... &` must survive
  // the logout). SIGKILL, or Ctrl-\ (SIGQUIT), still ends a run at once, its mount left behind.
  action.sa_flags = SA_RESTART;
  for (int signal : kStopSignals) {
    struct sigaction old {};
    if (::sigaction(signal, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    ::sigaction(signal, &action, nullptr);
  }
}

// Forks a process that is about to exec a child or a tool. The stop signals are blocked across the
// fork, and the new process puts their handlers back to the default before it takes them again:
// a SIGTERM sent to it before its exec (StopChildren right after a respawn) must not be swallowed
// by a copy of the runner's handler. Then (ignored dispositions survive the exec):
// - a child ignores SIGINT and SIGHUP: Ctrl-C reaches the terminal's whole process group, but only
//   the runner stops the run (it stops the children with SIGTERM), so a child does not die of it
//   as of a crash (its own SIGPIPE it sets back to the default: stress/child.cc);
// - a tool (dbdb-powerfs mount, unmount) goes into a process group of its own, which neither a
//   Ctrl-C nor `timeout`'s signal to the group reaches, and ignores SIGPIPE: its output shares the
//   runner's, and a `dbdb-powerfs mount` that died printing to a pipe `head` had closed would fail
//   the run's set-up. (The daemon a mount leaves runs in a session of its own anyway.)
pid_t ForkToExec(bool tool) {
  sigset_t stops, old;
  sigemptyset(&stops);
  for (int signal : kStopSignals) sigaddset(&stops, signal);
  ::sigprocmask(SIG_BLOCK, &stops, &old);
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (int signal : kStopSignals) ::signal(signal, SIG_DFL);
    if (tool) {
      ::setpgid(0, 0);
      ::signal(SIGPIPE, SIG_IGN);
    } else {
      ::signal(SIGINT, SIG_IGN);
      ::signal(SIGHUP, SIG_IGN);
    }
  }
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  return pid;
}

// After a run stopped by `signal`, cleaned up and reported: ends the process by that signal, so
// that a shell sees it die of it (bash stops a script's loop at a Ctrl-C only if the command died
// of SIGINT) and its status is 128 + the signal. Returns only if the signal does not end it.
void EndBySignal(int signal) {
  std::cout.flush();
  std::cerr.flush();
  ::signal(signal, SIG_DFL);
  sigset_t unblock;
  sigemptyset(&unblock);
  sigaddset(&unblock, signal);
  ::sigprocmask(SIG_UNBLOCK, &unblock, nullptr);
  ::raise(signal);
}

void Runner::Violation(const std::string& what) {
  if (violations_.size() < 100) violations_.push_back(what);
  std::cerr << "\nVIOLATION: " << what << std::endl;
}

// Runs `command` (argv) and waits for it; its exit status, or -1.
int RunCommand(const std::vector<std::string>& command) {
  pid_t pid = ForkToExec(/*tool=*/true);
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool Runner::MountPowerFs() {
  std::error_code ec;
  mount_ = std::filesystem::absolute(o_.dir + "/powerfs", ec).lexically_normal().string();
  ::umount2(mount_.c_str(), MNT_DETACH);  // a mount a killed run left behind
  std::filesystem::create_directories(mount_, ec);
  if (::access(o_.powerfs_path.c_str(), X_OK) != 0) {
    std::cerr << "dbdb-stress: --power-cut needs " << o_.powerfs_path << " (build the dbdb-powerfs target)\n";
    return false;
  }
  int rc = RunCommand({o_.powerfs_path, "mount", mount_, "--seed", std::to_string(o_.seed)});
  if (rc != 0) {
    std::cerr << "dbdb-stress: dbdb-powerfs mount " << mount_ << " failed (exit " << rc
              << "): --power-cut needs FUSE (/dev/fuse, and root or fusermount3)\n";
    return false;
  }
  std::cout << "power cuts: on a dbdb-powerfs mount at " << mount_ << ", plan " << o_.cut_plan << ", every "
            << o_.cut_interval_ms << " ms on average" << std::endl;
  return true;
}

void Runner::UnmountPowerFs() {
  if (mount_.empty()) return;
  if (RunCommand({o_.powerfs_path, "unmount", mount_}) != 0) {
    std::cerr << "dbdb-stress: could not unmount " << mount_ << "\n";
  }
}

bool Runner::Setup() {
  std::error_code ec;
  std::filesystem::create_directories(o_.dir, ec);
  if (o_.power_cut && !MountPowerFs()) return false;
  path_ = (o_.power_cut ? mount_ : o_.dir) + "/stress.dbdb";
  for (const char* suffix : {"", ".lock", ".compact", ".compacting", ".compacting.lock", ".create"}) std::filesystem::remove(path_ + suffix, ec);
  dbdb::Options options;
  options.create_if_missing = true;
  auto db = dbdb::DB::Open(path_, options);
  if (!db.ok()) {
    std::cerr << "dbdb-stress: cannot create " << path_ << ": " << db.status().ToString() << "\n";
    return false;
  }
  auto txn = (*db)->BeginWrite();
  if (!txn.ok()) return false;
  setup_.name = "setup";
  setup_.commit_id = 1;
  auto put = [&](const std::string& key, const std::string& value) {
    (void)(*txn)->Put(key, value);
    setup_.writes.push_back({key, value});
  };
  for (int i = 0; i < kBankAccounts; i++) put(BankKey(i), MakeValue(kBankInitialBalance, "init"));
  for (int i = 0; i < kCounters; i++) put(CounterKey(i), MakeValue(0, "init"));
  dbdb::Status s = (*txn)->Commit();
  if (!s.ok()) {
    std::cerr << "dbdb-stress: setup commit failed: " << s.ToString() << "\n";
    return false;
  }
  for (int i = 0; i < o_.writers; i++) children_.emplace_back(i, true);
  for (int i = 0; i < o_.readers; i++) children_.emplace_back(o_.writers + i, false);
  return true;
}

void Runner::Spawn(Child& c) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    Violation(std::string("pipe: ") + std::strerror(errno));
    return;
  }
  uint64_t child_seed = o_.seed ^ (static_cast<uint64_t>(c.id + 1) * 0x9E3779B97F4A7C15ULL) ^ (c.incarnation << 40);
  std::vector<std::string> args;
  if (!o_.faults.empty()) {
    args = {"fiu-run", "-x", "-f", ""};
    for (const auto& f : o_.faults) {
      std::string command = "enable_random name=" + f.point + ",probability=" + std::to_string(f.probability);
      if (f.error_number != 0) command += ",failinfo=" + std::to_string(f.error_number);
      args.push_back("-c");
      args.push_back(command);
    }
  }
  for (std::string a : {o_.self_path, std::string("--child"), std::string(c.writer ? "writer" : "reader"),
                        std::string("--child-id"), std::to_string(c.id), std::string("--incarnation"),
                        std::to_string(c.incarnation), std::string("--workload"), o_.workload, std::string("--db"),
                        path_, std::string("--seed"), std::to_string(child_seed)}) {
    args.push_back(a);
  }
  pid_t pid = ForkToExec(/*tool=*/false);
  if (pid == 0) {
    ::dup2(fds[1], 3);  // the report pipe is fd 3 (dup2 clears close-on-exec)
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  c.pid = pid;
  c.fd = fds[0];
  c.buffer.clear();
  c.compacting = false;
}

void Runner::HandleLine(Child& c, const std::string& line) {
  auto w = SplitWords(line);
  if (w.empty()) return;
  std::string child_name = (c.writer ? "writer " : "reader ") + std::to_string(c.id) + "." + std::to_string(c.incarnation);
  auto parse_rw = [](const std::vector<std::string>& words, size_t from, model::RecordedTransaction* t) {
    bool writes = false;
    for (size_t i = from; i < words.size(); i++) {
      if (words[i] == "R") { writes = false; continue; }
      if (words[i] == "W") { writes = true; continue; }
      if (i + 1 >= words.size()) break;
      if (writes) t->writes.push_back({words[i], words[i + 1]});
      else t->reads.push_back({words[i], words[i + 1]});
      i++;
    }
  };
  if (w[0] == "B" && w.size() >= 4) {
    Op op;
    op.txn.name = child_name + " op " + w[1];
    op.txn.start = std::stoull(w[2]);
    op.txn.end = UINT64_MAX;
    op.intended_commit = std::stoull(w[3]);
    op.txn.snapshot_id = op.intended_commit - 1;
    parse_rw(w, 4, &op.txn);
    c.pending[w[1]] = ops_.size();
    ops_.push_back(std::move(op));
  } else if ((w[0] == "A" || w[0] == "F") && w.size() >= 3) {
    auto it = c.pending.find(w[1]);
    if (it == c.pending.end()) return Violation(child_name + " reported an operation it never began: " + line);
    Op& op = ops_[it->second];
    c.pending.erase(it);
    if (w[0] == "F") {
      // It may still take effect later (if its rollback failed too): its end stays unknown.
      op.state = Op::State::kMaybe;  // a failed commit may or may not have reached the file
      for (const auto& wr : op.txn.writes) {
        if (wr.key.rfind("counter/", 0) == 0) counter_maybe_[std::stoi(wr.key.substr(8))]++;
      }
      return;
    }
    op.txn.end = std::stoull(w[2]);
    op.state = Op::State::kAcknowledged;
    op.txn.commit_id = std::stoull(w[3]);
    op.txn.name += " (commit " + w[3] + ")";
    commits_++;
    for (const auto& wr : op.txn.writes) {
      if (wr.key.rfind("counter/", 0) == 0) counter_acknowledged_[std::stoi(wr.key.substr(8))]++;
      if (wr.key.rfind("ledger/", 0) == 0) ledger_acknowledged_.push_back(wr.key);
    }
  } else if (w[0] == "S" && w.size() >= 4) {
    model::RecordedTransaction t;
    t.name = child_name + " snapshot " + w[3];
    t.start = std::stoull(w[1]);
    t.end = std::stoull(w[2]);
    t.snapshot_id = std::stoull(w[3]);
    parse_rw(w, 4, &t);
    snapshots_.push_back(std::move(t));
    reads_++;
  } else if (w[0] == "C" && w.size() >= 2) {
    c.compacting = w[1] == "begin";
    if (w[1] == "end") compactions_++;
    // Compaction's rename and directory sync are the name operations a power cut tests best just
    // after they happen (or while they happen): half the time, cut now.
    if (o_.power_cut && rng_.OneIn(2)) cut_soon_ = true;
  } else if (w[0] == "X") {
    Violation(child_name + ": " + line.substr(2));
  } else {
    Violation(child_name + " sent an unreadable line: " + line);
  }
}

void Runner::Drain(Child& c, bool until_eof) {
  char buffer[65536];
  while (c.fd >= 0) {
    if (!until_eof) {
      pollfd p{c.fd, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return;
    }
    ssize_t n = ::read(c.fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(c.fd);
      c.fd = -1;
      return;
    }
    c.buffer.append(buffer, static_cast<size_t>(n));
    size_t newline;
    while ((newline = c.buffer.find('\n')) != std::string::npos) {
      std::string line = c.buffer.substr(0, newline);
      c.buffer.erase(0, newline + 1);
      HandleLine(c, line);
    }
    if (!until_eof) return;
  }
}

// After a child is gone: everything it had in flight may or may not have committed.
void Runner::Reap(Child& c, int status, bool killed_by_us, bool stopping) {
  Drain(c, true);
  for (const auto& [id, index] : c.pending) {
    Op& op = ops_[index];
    op.state = Op::State::kMaybe;
    for (const auto& wr : op.txn.writes) {
      if (wr.key.rfind("counter/", 0) == 0) counter_maybe_[std::stoi(wr.key.substr(8))]++;
    }
  }
  c.pending.clear();
  c.pid = -1;
  std::string name = (c.writer ? "writer " : "reader ") + std::to_string(c.id);
  if (killed_by_us) {
    if (!cutting_) kills_++;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kExitFault) {
    faults_++;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kExitViolation) {
    // the child already reported it (X)
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    Violation(name + " could not be started (is fiu-run installed?)");
  } else if ((stopping || g_stop_signal != 0) && WIFSIGNALED(status) &&
             (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGKILL)) {
    // stopped at the end of the run before it could finish cleanly; or, once the run is asked to
    // stop, by a SIGTERM sent to the process group (`timeout`) before the child could catch it
  } else if (WIFSIGNALED(status)) {
    Violation(name + " died of signal " + std::to_string(WTERMSIG(status)) + " (a crash, not a kill)");
  } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    Violation(name + " exited with status " + std::to_string(WEXITSTATUS(status)));
  }
  c.incarnation++;
}

void Runner::Verify(const char* when, bool record) {
  verifications_++;
  // Lower bounds come from what was acknowledged before the snapshot, upper bounds from what had
  // begun after it: a child announces a commit (B) before making it, so every commit the snapshot
  // holds is in the pipes by the time the second drain ends.
  for (auto& c : children_) Drain(c, false);
  const std::map<int, int64_t> acknowledged_before = counter_acknowledged_;
  const size_t ledger_before = ledger_acknowledged_.size();
  dbdb::Options options;
  options.read_only = true;
  auto db = dbdb::DB::Open(path_, options);
  if (!db.ok()) return Violation(std::string("open ") + when + ": " + db.status().ToString());
  auto report = (*db)->Check();
  if (!report.ok()) return Violation(std::string("check() ") + when + ": " + report.status().ToString());
  auto snapshot = (*db)->GetSnapshot();
  if (!snapshot.ok()) return Violation(std::string("snapshot ") + when + ": " + snapshot.status().ToString());
  auto rows = (*snapshot)->Scan(dbdb::ScanRange{});
  if (!rows.ok()) return Violation(std::string("scan ") + when + ": " + rows.status().ToString());
  for (auto& c : children_) Drain(c, false);
  int64_t total = 0;
  std::map<int, int64_t> counters;
  std::set<std::string> ledger;
  model::RecordedTransaction final_read;
  for (const auto& kv : *rows) {
    int64_t n = 0;
    if (kv.key.rfind("ledger/", 0) == 0) {
      ledger.insert(kv.key);
      continue;
    }
    if (!ParseNumber(kv.value, &n)) return Violation(std::string("malformed value of ") + kv.key + " " + when);
    if (kv.key.rfind("bank/", 0) == 0) total += n;
    if (kv.key.rfind("counter/", 0) == 0) counters[std::stoi(kv.key.substr(8))] = n;
    final_read.reads.push_back({kv.key, kv.value});
  }
  if (total != kBankAccounts * kBankInitialBalance) {
    Violation("bank total " + std::to_string(total) + " " + when + " (I1 atomic commit)");
  }
  for (int i = 0; i < kCounters; i++) {
    int64_t in_flight = 0;
    for (const auto& c : children_) {
      for (const auto& [id, index] : c.pending) {
        for (const auto& wr : ops_[index].txn.writes) in_flight += wr.key == CounterKey(i);
      }
    }
    auto acked = acknowledged_before.find(i);
    int64_t low = acked == acknowledged_before.end() ? 0 : acked->second;
    int64_t high = counter_acknowledged_[i] + counter_maybe_[i] + in_flight;
    if (counters[i] < low || counters[i] > high) {
      Violation("counter " + std::to_string(i) + " is " + std::to_string(counters[i]) + " " + when + ", expected " +
                std::to_string(low) + " acknowledged increments plus at most " + std::to_string(high - low) +
                " in flight (I4: a lost or invented update)");
    }
  }
  for (size_t i = 0; i < ledger_before; i++) {
    const std::string& key = ledger_acknowledged_[i];
    if (!ledger.count(key)) {
      Violation("acknowledged ledger entry " + key + " is missing " + when + " (I2 durability)");
      break;
    }
  }
  if (record) {
    final_read.name = std::string("the state ") + when;
    final_read.start = final_read.end = MonotonicNanos();
    final_read.snapshot_id = (*snapshot)->txn_id();
    snapshots_.push_back(std::move(final_read));
  }
}

void Runner::CheckHistory() {
  // Writes whose commit is unknown (killed or failed in flight) count as committed only if
  // someone read what they wrote and no acknowledged commit took their commit number.
  std::set<std::pair<std::string, std::string>> observed;
  std::set<uint64_t> acknowledged_ids;
  for (const auto& op : ops_) {
    if (op.state == Op::State::kAcknowledged) acknowledged_ids.insert(*op.txn.commit_id);
    for (const auto& r : op.txn.reads) observed.insert({r.key, r.value.value_or("")});
  }
  for (const auto& s : snapshots_) {
    for (const auto& r : s.reads) observed.insert({r.key, r.value.value_or("")});
  }
  std::vector<model::RecordedTransaction> history{setup_};
  for (const auto& op : ops_) {
    if (op.state == Op::State::kAcknowledged) {
      history.push_back(op.txn);
      continue;
    }
    bool seen = std::any_of(op.txn.writes.begin(), op.txn.writes.end(), [&](const model::Write& w) {
      return observed.count({w.key, w.value.value_or("")}) != 0;
    });
    if (seen && !acknowledged_ids.count(op.intended_commit)) {
      model::RecordedTransaction t = op.txn;
      t.commit_id = op.intended_commit;
      history.push_back(std::move(t));
    } else if (seen) {
      std::string taker;
      for (const auto& other : ops_) {
        if (other.state == Op::State::kAcknowledged && *other.txn.commit_id == op.intended_commit) taker = other.txn.name;
      }
      Violation(op.txn.name + (op.txn.end == UINT64_MAX ? " (killed or failed in flight)" : "") +
                " was read by someone, but its commit number " + std::to_string(op.intended_commit) +
                " went to the acknowledged " + taker + " (a commit seen, then lost)");
    }
  }
  history.insert(history.end(), snapshots_.begin(), snapshots_.end());
  auto verdict = model::CheckHistory(history);
  if (!verdict.ok) Violation("history: " + verdict.explanation);
  std::cout << "history:    " << history.size() << " transactions checked for serializability: "
            << (verdict.ok ? "serializable" : "NOT serializable") << "\n";
}

void Runner::ShowProgress() {
  progress_.Update(std::to_string(static_cast<int>(Elapsed())) + " s: " + std::to_string(commits_) + " commits, " +
                   std::to_string(reads_) + " snapshots, " + std::to_string(kills_) + " kills, " +
                   (o_.power_cut ? std::to_string(cuts_) + " power cuts, " : "") +
                   std::to_string(faults_) + " faults, " + std::to_string(compactions_) + " compactions, " +
                   std::to_string(violations_.size()) + " violations");
}

// A power cut under every child: the mount kills every process that has it open and resets itself
// to a crash state of the plan; children not yet on the mount are killed too (they started before
// the power went). Then the same checks as after a kill, now against what a power loss leaves:
// every commit acknowledged before the cut (durable mode) must be there.
void Runner::CutPower() {
  for (auto& c : children_) Drain(c, false);
  for (auto& c : children_) {  // children that stopped by themselves before the cut: judged as such
    int status;
    if (c.pid > 0 && ::waitpid(c.pid, &status, WNOHANG) == c.pid) Reap(c, status, false);
  }
  static const char* kPlans[] = {"drop", "prefix", "subset", "torn"};
  const std::string plan = o_.cut_plan == "mixed" ? kPlans[rng_.Uniform(4)] : o_.cut_plan;
  const uint64_t seed = rng_.Next();
  auto reply = faultfs::PowerFsCommand(mount_, "cut " + plan + " " + std::to_string(seed));
  cutting_ = true;
  for (auto& c : children_) {
    if (c.pid <= 0) continue;
    ::kill(c.pid, SIGKILL);
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    // Only a death by SIGKILL is the cut's; a child that crashed or exited meanwhile is judged.
    Reap(c, status, WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
  cutting_ = false;
  if (reply.ok() && reply->find("not yet gone") != std::string::npos) {
    Violation("power cut " + std::to_string(cuts_ + 1) + ": a process using the mount did not die: " +
              reply->substr(reply->rfind(';') + 1));
  }
  if (!reply.ok()) {
    Violation("power cut " + std::to_string(cuts_ + 1) + " (plan " + plan + " seed " + std::to_string(seed) +
              ") failed: " + reply.status().message());
  } else {
    cuts_++;
    cut_plans_[plan]++;
    cut_ledger_checked_ += ledger_acknowledged_.size();
    const std::string when = "after power cut " + std::to_string(cuts_) + " (plan " + plan + " seed " +
                             std::to_string(seed) + ")";
    const size_t before = violations_.size();
    Verify(when.c_str(), true);
    if (violations_.size() != before) {
      std::string state = *reply;
      if (state.size() > 2000) state = state.substr(0, 2000) + "...";
      Violation("the state of " + when + ": " + state);
    }
  }
  for (auto& c : children_) {
    restarts_++;
    Spawn(c);
  }
}

// Until the duration passes: drain the children, restart those that stopped, kill one at random
// every kill interval (checking the database after each kill), show progress every second.
void Runner::Loop() {
  const uint64_t end_ns = start_ns_ + static_cast<uint64_t>(o_.duration_seconds * 1e9);
  auto next_kill = [&] {
    if (o_.kill_interval_ms <= 0) return UINT64_MAX;
    double factor = 0.5 + static_cast<double>(rng_.Uniform(1000)) / 1000.0;  // 0.5x .. 1.5x
    return MonotonicNanos() + static_cast<uint64_t>(o_.kill_interval_ms * factor * 1e6);
  };
  auto next_cut = [&] {
    if (!o_.power_cut) return UINT64_MAX;
    double factor = 0.5 + static_cast<double>(rng_.Uniform(1000)) / 1000.0;  // 0.5x .. 1.5x
    return MonotonicNanos() + static_cast<uint64_t>(o_.cut_interval_ms * factor * 1e6);
  };
  uint64_t kill_at = next_kill(), cut_at = next_cut(), progress_at = start_ns_;
  while (MonotonicNanos() < end_ns && g_stop_signal == 0) {
    std::vector<pollfd> fds;
    for (auto& c : children_) {
      if (c.fd >= 0) fds.push_back(pollfd{c.fd, POLLIN, 0});
    }
    uint64_t now = MonotonicNanos();
    uint64_t wake = std::min({kill_at, cut_at, progress_at, end_ns});
    int timeout_ms = wake > now ? static_cast<int>((wake - now) / 1000000) + 1 : 0;
    ::poll(fds.data(), fds.size(), timeout_ms);
    if (g_stop_signal != 0) break;  // no kill, cut or respawn after it: StopChildren reaps them
    for (auto& c : children_) Drain(c, false);
    for (auto& c : children_) {  // children that stopped by themselves (faults, violations)
      int status;
      if (c.pid > 0 && ::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        Reap(c, status, false);
        restarts_++;
        Spawn(c);
      }
    }
    now = MonotonicNanos();
    if (now >= kill_at) {
      // A random victim; a third of the time the one compacting, if any.
      std::vector<Child*> compacting;
      for (auto& c : children_) {
        if (c.compacting && c.pid > 0) compacting.push_back(&c);
      }
      Child& victim = !compacting.empty() && rng_.OneIn(3) ? *compacting[rng_.Uniform(compacting.size())]
                                                           : children_[rng_.Uniform(children_.size())];
      if (victim.pid > 0) {
        ::kill(victim.pid, SIGKILL);
        int status;
        ::waitpid(victim.pid, &status, 0);
        Reap(victim, status, true);
        Verify("after a kill", false);
        restarts_++;
        Spawn(victim);
      }
      kill_at = next_kill();
    }
    if (MonotonicNanos() >= cut_at || cut_soon_) {
      CutPower();
      cut_soon_ = false;
      cut_at = next_cut();
    }
    if (now >= progress_at) {
      ShowProgress();
      progress_at = now + 1000000000ull;
    }
  }
}

// Children finish their current operation and exit; those that do not within 10 s are killed.
void Runner::StopChildren() {
  for (auto& c : children_) {
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
  }
  for (auto& c : children_) {
    if (c.pid <= 0) continue;
    int status = 0;
    for (int waited_ms = 0; waited_ms < 10000; waited_ms += 10) {
      Drain(c, false);
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) break;
      ::usleep(10000);
      if (waited_ms + 10 >= 10000) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, &status, 0);
      }
    }
    Reap(c, status, false, true);
  }
}

void Runner::PrintSummary(double seconds) {
  double ops_per_second = static_cast<double>(commits_ + reads_) / std::max(seconds, 1e-9);
  std::cout << "seed:       " << o_.seed << "\n"
            << "workload:   " << o_.workload << ", " << o_.writers << " writers, " << o_.readers << " readers, "
            << seconds << " s, faults: " << (o_.faults_text.empty() ? "none" : o_.faults_text) << "\n"
            << "commits:    " << commits_ << " acknowledged (" << ops_per_second << " ops/s with " << reads_
            << " snapshots read)\n"
            << "kills:      " << kills_ << " (each followed by check() and the invariants: " << verifications_
            << " verifications)\n"
            << (o_.power_cut ? "power cuts: " + std::to_string(cuts_) + " (" + std::to_string(cuts_ * 60.0 / std::max(seconds, 1e-9)) +
                                   " a minute), each followed by check() and the invariants (I1, I2, I4; the state left goes into the history, I3): " +
                                   std::to_string(cut_ledger_checked_) + " acknowledged ledger entries looked up after them\n"
                             : std::string())
            << "faults:     " << faults_ << " children failed cleanly on an injected I/O error and were restarted\n"
            << "compaction: " << compactions_ << " completed\n"
            << "violations: " << violations_.size() << "\n";
  for (const auto& v : violations_) std::cout << "  " << v << "\n";
}

nlohmann::json Runner::Figures() const {
  nlohmann::json figures = {{"commits", commits_},         {"snapshots", reads_},       {"kills", kills_},
                             {"faults_injected", faults_},  {"restarts", restarts_},     {"compactions", compactions_},
                             {"verifications", verifications_}};
  if (o_.power_cut) {
    figures["power_cuts"] = cuts_;
    figures["ledger_entries_checked_after_cuts"] = cut_ledger_checked_;
  }
  return figures;
}

void Runner::WriteReport(double seconds) {
  if (o_.report_path.empty()) return;
  nlohmann::json report = Figures();
  report.update({{"seed", o_.seed},
                 {"workload", o_.workload},
                 {"writers", o_.writers},
                 {"readers", o_.readers},
                 {"duration_seconds", seconds},
                 {"kill_interval_ms", o_.kill_interval_ms},
                 {"faults", o_.faults_text},
                 {"power_cut", o_.power_cut},
                 {"cut_interval_ms", o_.cut_interval_ms},
                 {"cut_plan", o_.cut_plan},
                 {"power_cut_plans", cut_plans_},
                 {"ops_per_second", static_cast<double>(commits_ + reads_) / std::max(seconds, 1e-9)},
                 {"violations", violations_},
                 {"stopped_by_signal", stopped_by_},
                 {"replay", replay_}});
  std::ofstream(o_.report_path) << report.dump(2) << "\n";
  std::cout << "report:     " << o_.report_path << "\n";
}

// The run as one case of a campaign (faultfs/campaign.h): case index = the shard index. The log
// is opened before the run (its clock times the case) and written after the final checks.
std::unique_ptr<faultfs::campaign::CaseLog> Runner::OpenCaseLog() const {
  if (o_.cases_path.empty()) return nullptr;
  nlohmann::json config = {{"workload", o_.workload}, {"writers", o_.writers}, {"readers", o_.readers},
                           {"duration_seconds", o_.duration_seconds}, {"kill_interval_ms", o_.kill_interval_ms},
                           {"faults", o_.faults_text}};
  if (o_.power_cut) config.update({{"power_cut", true}, {"cut_interval_ms", o_.cut_interval_ms}, {"cut_plan", o_.cut_plan}});
  // A power-cut run is a tool of its own in a campaign: a shard runs both, and merge counts each.
  return std::make_unique<faultfs::campaign::CaseLog>(o_.cases_path, o_.power_cut ? "dbdb-stress-power-cut" : "dbdb-stress",
                                                      o_.campaign_seed, o_.shard, config);
}

void Runner::LogCase(faultfs::campaign::CaseLog* log, double seconds) {
  if (log == nullptr) return;
  nlohmann::json extra = nlohmann::json::object();
  if (!violations_.empty()) {
    std::string all;
    for (const auto& v : violations_) all += v + "\n";
    extra["violation"] = {{"message", violations_.front()}, {"counterexample", all}, {"replay", replay_}};
  }
  log->Case(o_.shard.index, o_.seed, violations_.empty(), Figures(), seconds, replay_, extra);
  log->Finish(stopped_by_ != 0 ? "signal " + std::to_string(stopped_by_) : "duration");
}

int Runner::Run() {
  std::unique_ptr<faultfs::campaign::CaseLog> log = OpenCaseLog();
  if (log != nullptr && !log->ok()) {
    std::cerr << "dbdb-stress: cannot write " << o_.cases_path << "\n";
    return 2;
  }
  InstallStopHandlers();
  if (!Setup()) {
    UnmountPowerFs();
    return 2;
  }
  start_ns_ = MonotonicNanos();
  for (auto& c : children_) Spawn(c);
  Loop();
  const double run_seconds = Elapsed();  // the run itself, without the final checks below
  stopped_by_ = g_stop_signal;
  if (stopped_by_ != 0) {
    std::cerr << "\ndbdb-stress: stopped early by signal " << stopped_by_ << " (" << ::strsignal(stopped_by_) << ") after "
              << run_seconds << " s: stopping the children, checking what the run did"
              << (o_.power_cut ? ", unmounting " + mount_ : std::string()) << std::endl;
  }
  StopChildren();
  ShowProgress();
  progress_.Done();
  Verify("at the end", true);
  CheckHistory();
  UnmountPowerFs();
  PrintSummary(run_seconds);
  WriteReport(run_seconds);
  // A campaign's case is the run it asked for: one stopped early is not logged (the merge sees the
  // case missing, as when a shard dies), only reported above and in --report, unless it found a
  // violation (its shard line then says the signal stopped it).
  if (stopped_by_ == 0 || !violations_.empty()) LogCase(log.get(), run_seconds);
  if (!violations_.empty()) {
    std::cout << "replay:     " << replay_ << "\n";
    return 1;
  }
  // Checked, but not the whole run asked for (or asked to stop during the checks): not a pass.
  if (g_stop_signal != 0) {
    EndBySignal(g_stop_signal);
    return 128 + g_stop_signal;
  }
  return 0;
}

}  // namespace

bool ParseFaults(const std::string& spec_text, std::vector<FaultSpec>* faults, std::string* error) {
  static const std::map<std::string, std::string> kPoints = {
      {"pwrite", "posix/io/rw/pwrite"},       {"pwrite-short", "posix/io/rw/pwrite/reduce"},
      {"pread", "posix/io/rw/pread"},         {"fdatasync", "posix/io/sync/fdatasync"},
      {"fsync", "posix/io/sync/fsync"},       {"ftruncate", "posix/io/rw/ftruncate"},
      {"rename", "posix/io/dir/rename"},      {"open", "posix/io/oc/open"}};
  std::string spec = spec_text;
  if (spec == "default") spec = "pwrite=0.002,pwrite-short=0.002,fdatasync=0.005,fdatasync=0.002:ENOSPC,pread=0.0005";
  faults->clear();
  if (spec.empty() || spec == "none") return true;
  std::stringstream items(spec);
  for (std::string item; std::getline(items, item, ',');) {
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      *error = "fault '" + item + "' is not NAME=PROBABILITY[:ERRNO]";
      return false;
    }
    auto point = kPoints.find(item.substr(0, eq));
    if (point == kPoints.end()) {
      *error = "unknown fault '" + item.substr(0, eq) + "' (pwrite, pwrite-short, pread, fdatasync, fsync, ftruncate, rename, open)";
      return false;
    }
    std::string rest = item.substr(eq + 1), errno_text;
    size_t colon = rest.find(':');
    if (colon != std::string::npos) {
      errno_text = rest.substr(colon + 1);
      rest = rest.substr(0, colon);
    }
    FaultSpec f{point->second, 0, 0};
    try {
      f.probability = std::stod(rest);
    } catch (...) {
      f.probability = -1;
    }
    if (!(f.probability > 0 && f.probability <= 1)) {
      *error = "fault probability '" + rest + "' is not in (0, 1]";
      return false;
    }
    if (errno_text == "EIO") f.error_number = EIO;
    else if (errno_text == "ENOSPC") f.error_number = ENOSPC;
    else if (!errno_text.empty()) {
      try {
        f.error_number = std::stoi(errno_text);
      } catch (...) {
        *error = "unknown errno '" + errno_text + "'";
        return false;
      }
    }
    faults->push_back(f);
  }
  return true;
}

int RunStress(const RunOptions& options, const std::string& replay_command) {
  Runner runner(options, replay_command);
  return runner.Run();
}

}  // namespace stress
