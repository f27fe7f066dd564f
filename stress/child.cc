// Writer and reader children of dbdb-stress.
#include "child.h"

#include <dbdb/db.h>
#include <faultfs/rng.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include "protocol.h"

namespace stress {
namespace {

volatile std::sig_atomic_t stop_requested = 0;
void OnTerm(int) { stop_requested = 1; }

class Reporter {
 public:
  explicit Reporter(int fd) : fd_(fd) {}
  void Send(const std::string& line) {
    std::string data = line + "\n";
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ::_exit(kExitReport);
      done += static_cast<size_t>(n);
    }
  }
  // Reports the error and exits. An error the injected faults explain is a clean failure: an I/O
  // error, a full disk, a file-size error (fiu-run may inject EFBIG), or a handle that failed
  // earlier. Anything else (Corruption above all) is a violation.
  [[noreturn]] void Die(const std::string& what, const dbdb::Status& status, const std::string& op_prefix) {
    if (status.IsIOError() || status.code() == dbdb::StatusCode::kLimitExceeded ||
        status.code() == dbdb::StatusCode::kFailed) {
      if (!op_prefix.empty()) Send(op_prefix + " " + status.ToString());
      ::_exit(kExitFault);
    }
    std::string message = what + ": " + status.ToString();
    for (char& c : message) {
      if (c == '\n') c = ' ';
    }
    Send("X " + message);
    ::_exit(kExitViolation);
  }

 private:
  int fd_;
};

std::string Tag(const ChildArgs& a, uint64_t op) {
  return "w" + std::to_string(a.id) + "." + std::to_string(a.incarnation) + "." + std::to_string(op);
}

int RunWriter(const ChildArgs& a, dbdb::DB& db, Reporter& out) {
  faultfs::Rng rng(a.seed);
  std::vector<std::string> kinds;
  if (HasBank(a.workload)) kinds.push_back("bank");
  if (HasCounter(a.workload)) kinds.push_back("counter");
  if (HasLedger(a.workload)) kinds.push_back("ledger");
  uint64_t ledger_seq = 0;
  for (uint64_t op = 0; !stop_requested; op++) {
    if (rng.OneIn(400)) {
      out.Send("C begin");
      dbdb::Status s = db.Compact();
      if (!s.ok()) out.Die("compact", s, "");
      out.Send("C end");
      continue;
    }
    const std::string& kind = kinds[rng.Uniform(kinds.size())];
    uint64_t start = MonotonicNanos();
    auto txn = db.BeginWrite();
    if (!txn.ok()) out.Die("begin", txn.status(), "");
    std::string reads, writes;
    auto get_number = [&](const std::string& key) -> int64_t {
      auto v = (*txn)->Get(key);
      if (!v.ok()) out.Die("read " + key, v.status(), "");
      int64_t n = 0;
      if (!v->has_value() || !ParseNumber(**v, &n)) {
        out.Send("X " + key + " is missing or malformed inside a write transaction");
        ::_exit(kExitViolation);
      }
      reads += " " + key + " " + **v;
      return n;
    };
    auto put = [&](const std::string& key, const std::string& value) {
      dbdb::Status s = (*txn)->Put(key, value);
      if (!s.ok()) out.Die("put " + key, s, "");
      writes += " " + key + " " + value;
    };
    std::string tag = Tag(a, op);
    if (kind == "bank") {
      int from = static_cast<int>(rng.Uniform(kBankAccounts));
      int to = static_cast<int>((from + 1 + rng.Uniform(kBankAccounts - 1)) % kBankAccounts);
      int64_t from_balance = get_number(BankKey(from));
      int64_t to_balance = get_number(BankKey(to));
      if (from_balance <= 0) continue;  // nothing to move; the transaction is dropped
      int64_t amount = 1 + static_cast<int64_t>(rng.Uniform(static_cast<uint64_t>(std::min<int64_t>(from_balance, 100))));
      put(BankKey(from), MakeValue(from_balance - amount, tag));
      put(BankKey(to), MakeValue(to_balance + amount, tag));
    } else if (kind == "counter") {
      int counter = static_cast<int>(rng.Uniform(kCounters));
      int64_t n = get_number(CounterKey(counter));
      put(CounterKey(counter), MakeValue(n + 1, tag));
    } else {
      put(LedgerKey(a.id, a.incarnation, ledger_seq), MakeValue(static_cast<int64_t>(ledger_seq), tag));
      ledger_seq++;
    }
    uint64_t intended = (*txn)->base_txn_id() + 1;
    std::string id = std::to_string(op);
    out.Send("B " + id + " " + std::to_string(start) + " " + std::to_string(intended) + " R" + reads + " W" + writes);
    dbdb::Status s = (*txn)->Commit();
    uint64_t end = MonotonicNanos();
    if (!s.ok()) out.Die("commit", s, "F " + id + " " + std::to_string(end));
    out.Send("A " + id + " " + std::to_string(end) + " " + std::to_string(intended));
  }
  return 0;
}

int RunReader(const ChildArgs& a, dbdb::DB& db, Reporter& out) {
  while (!stop_requested) {
    uint64_t start = MonotonicNanos();
    auto snapshot = db.GetSnapshot();
    if (!snapshot.ok()) out.Die("snapshot", snapshot.status(), "");
    std::string reads;
    int64_t total = 0;
    for (const char* prefix : {"bank/", "counter/"}) {
      if ((prefix[0] == 'b' && !HasBank(a.workload)) || (prefix[0] == 'c' && !HasCounter(a.workload))) continue;
      auto rows = (*snapshot)->Scan(dbdb::ScanRange::Prefix(prefix));
      if (!rows.ok()) out.Die("scan", rows.status(), "");
      for (const auto& kv : *rows) {
        int64_t n;
        if (!ParseNumber(kv.value, &n)) {
          out.Send("X malformed value of " + kv.key);
          ::_exit(kExitViolation);
        }
        if (prefix[0] == 'b') total += n;
        reads += " " + kv.key + " " + kv.value;
      }
    }
    uint64_t end = MonotonicNanos();
    // I1: every snapshot of the bank holds the same total.
    if (HasBank(a.workload) && total != kBankAccounts * kBankInitialBalance) {
      out.Send("X bank total " + std::to_string(total) + " in snapshot " + std::to_string((*snapshot)->txn_id()) +
               ", expected " + std::to_string(kBankAccounts * kBankInitialBalance));
      ::_exit(kExitViolation);
    }
    out.Send("S " + std::to_string(start) + " " + std::to_string(end) + " " + std::to_string((*snapshot)->txn_id()) +
             " R" + reads);
    ::usleep(3000);
  }
  return 0;
}

}  // namespace

int RunChild(const ChildArgs& a) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the parent
  std::signal(SIGTERM, OnTerm);
  std::signal(SIGPIPE, SIG_DFL);
  Reporter out(a.report_fd);
  dbdb::Options options;
  options.durability = dbdb::Durability::kSync;
  // Small thresholds for most children, so that folds and automatic compactions (on a thread of
  // the child's own: background_compaction) happen within a run and are killed midway; the
  // defaults for the rest. Drawn from the child's seed, so a run replays.
  static constexpr uint64_t kFoldThresholds[] = {4 * 1024, 64 * 1024, 4 * 1024 * 1024};
  static constexpr uint64_t kSlacks[] = {16 * 1024, 256 * 1024, 1024 * 1024};
  faultfs::Rng knobs(a.seed ^ 0x6b6e6f6273ull);
  options.fold_threshold_bytes = kFoldThresholds[knobs.Uniform(3)];
  options.auto_compact_slack_bytes = kSlacks[knobs.Uniform(3)];
  // The log's index in memory merged as often as it may, or at the default.
  if (knobs.OneIn(2)) options.overlay_merge_keys = 1;
  // A close folds any unfolded log, one past 16 KiB, or one past the default.
  static const uint64_t kCloseFolds[] = {0, 16 * 1024, dbdb::Options{}.fold_on_close_bytes};
  options.fold_on_close_bytes = kCloseFolds[knobs.Uniform(3)];
  auto db = dbdb::DB::Open(a.path, options);
  if (!db.ok()) out.Die("open", db.status(), "");
  return a.role == "writer" ? RunWriter(a, **db, out) : RunReader(a, **db, out);
}

}  // namespace stress
