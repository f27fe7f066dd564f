// The reference semantics of a dbdb store, in memory and without I/O: an ordered map, write
// transactions with read-your-writes and abort, and snapshots. Everything the harness compares
// the store against. Depends on nothing.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace model {

using State = std::map<std::string, std::string>;

// A transaction's changes: key -> new value, or nullopt for a delete.
using Changes = std::map<std::string, std::optional<std::string>>;

State Apply(const State& state, const Changes& changes);

// Keys in [begin, end) (no end: to the last key), at most `limit`.
std::vector<std::pair<std::string, std::string>> Scan(const State& state, const std::string& begin,
                                                      const std::optional<std::string>& end, uint64_t limit);
std::vector<std::pair<std::string, std::string>> ScanPrefix(const State& state, const std::string& prefix);

// A short, readable description of a state (for failure messages).
std::string Describe(const State& state, size_t max_keys = 8);

// The store as the user sees it: committed states in order, one open write transaction at most.
class Store {
 public:
  const State& committed() const { return history_.back(); }
  uint64_t txn_id() const { return history_.size() - 1; }  // 0: nothing committed yet
  const State& state_at(uint64_t txn_id) const { return history_.at(txn_id); }

  // Write transactions.
  void Begin();
  bool in_transaction() const { return open_.has_value(); }
  void Put(const std::string& key, const std::string& value);
  void Del(const std::string& key);
  std::optional<std::string> Get(const std::string& key) const;  // read-your-writes in a transaction
  State View() const;                                           // the transaction's view, or committed
  // Commits the open transaction; returns whether it made a commit (an empty one does not).
  bool Commit();
  void Abort();

  // After a crash or a failed commit, the store may hold another (allowed) state: adopt it.
  void ResetTo(uint64_t txn_id, const State& state);

 private:
  std::vector<State> history_{State{}};
  std::optional<Changes> open_;
};

}  // namespace model
