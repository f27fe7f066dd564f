// The crash oracle: given the commits issued, which returned, and which were durable, the states
// recovery may legally produce. With commits numbered 1..n and commit 0 the initial state, after a
// crash the recovered state must be the state after commit k for some k with
//   last acknowledged durable commit <= k <= last commit started
// (I1: a whole commit or none; I2: acknowledged durable commits survive; I3: a prefix, nothing
// skipped). A commit that failed or was in flight may or may not be there.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/model.h"

namespace model {

// When commit k began and was acknowledged, in some monotonic count of operations (a trace
// position), so that a crash at any earlier point knows which commits had started and which were
// acknowledged.
struct CommitTiming {
  uint64_t k = 0;
  uint64_t begun_at = 0;
  uint64_t acknowledged_at = UINT64_MAX;  // never, if it failed or was in flight
  bool durable = false;                   // acknowledged in a sync mode
};

// The commits a crash after `point` operations may recover to: [lowest, highest], where `floor`
// is the commit known durable before the first of `commits` began.
std::pair<uint64_t, uint64_t> AllowedAt(const std::vector<CommitTiming>& commits, uint64_t point, uint64_t floor);

// The crash oracle's verdict on a recovery: nullopt if recovering to commit `txn_id` with the
// contents `recovered` is allowed when commits [lowest, highest] are (states[k] is the state after
// commit k), else why not, naming the invariant (I1 atomic commit, I2 durability, I3 prefix).
std::optional<std::string> CheckRecovery(const std::vector<State>& states, uint64_t lowest, uint64_t highest,
                                         uint64_t txn_id, const State& recovered);

class CrashOracle {
 public:
  explicit CrashOracle(State initial = {}) { states_.push_back(std::move(initial)); }

  // A commit is about to be written; `after` is the state it produces. Returns its number. (A
  // commit that then fails may or may not reach the disk: it stays begun, never acknowledged.)
  uint64_t Begin(State after);
  // Commit k returned OK; `durable` in a sync mode.
  void Acknowledge(uint64_t k, bool durable);

  uint64_t lowest_allowed() const { return durable_floor_; }
  uint64_t highest_allowed() const { return states_.size() - 1; }
  const State& state(uint64_t k) const { return states_.at(k); }

  // CheckRecovery over the range this oracle allows now, or over [lowest, highest] (from
  // AllowedAt, for a crash at an earlier point).
  std::optional<std::string> Check(uint64_t txn_id, const State& recovered) const;
  std::optional<std::string> Check(uint64_t txn_id, const State& recovered, uint64_t lowest, uint64_t highest) const;

  // Recovery after a crash produced commit k: later commits are gone for good; k is durable
  // (it came off the disk).
  void Recovered(uint64_t k);
  // A reopen without a crash showed commit k (a failed commit after it did not happen): later
  // commits are forgotten, durability is unchanged.
  void Truncate(uint64_t k);

 private:
  std::vector<State> states_;
  uint64_t durable_floor_ = 0;
};

}  // namespace model
