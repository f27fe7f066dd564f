// The history checker for concurrent runs: is there a serial order of the recorded transactions,
// consistent with real time, that explains every value they read?
//
// Each write gives its key a value no other write gives it (the runners make values unique), so
// a read names the write it saw. Writers are serialized by the store, so each committed write
// transaction carries its commit number (txn_id), which orders the versions of every key (ww).
// From those: wr edges (writer -> reader of its value), rw anti-dependencies (reader of a version
// -> the writer of the next version), ww edges (consecutive commits), and real-time edges (A ended
// before B started). The history is serializable iff that graph has no cycle; the checker reports
// the shortest cycle it finds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace model {

struct Read {
  std::string key;
  std::optional<std::string> value;  // nullopt: the key was absent
};

struct Write {
  std::string key;
  std::optional<std::string> value;  // nullopt: delete
};

struct RecordedTransaction {
  std::string name;             // for reports, e.g. "writer 2 #17"
  uint64_t start = 0, end = 0;  // real-time order: any monotonic clock or sequence number
  std::vector<Read> reads;
  std::vector<Write> writes;    // empty for read-only transactions
  std::optional<uint64_t> commit_id;  // set for committed write transactions: the store's txn_id
  // The commit the transaction read from, when the store reports it (Snapshot::txn_id). Needed
  // only to place reads of absent keys: a present value names its writer by itself.
  std::optional<uint64_t> snapshot_id;
};

struct HistoryVerdict {
  bool ok = true;
  std::vector<std::string> cycle;  // the transactions of the shortest cycle and the edges between
  std::string explanation;
};

// `initial` holds the values present before the first transaction (commit 0).
HistoryVerdict CheckHistory(const std::vector<RecordedTransaction>& transactions,
                            const std::vector<Write>& initial = {});

}  // namespace model
