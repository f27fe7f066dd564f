// The crash oracle (I1, I2, I3).
#include "model/crash_oracle.h"

#include <algorithm>
#include <cassert>

namespace model {

std::pair<uint64_t, uint64_t> AllowedAt(const std::vector<CommitTiming>& commits, uint64_t point, uint64_t floor) {
  uint64_t lowest = floor, highest = floor;
  for (const auto& c : commits) {
    if (c.begun_at < point) highest = std::max(highest, c.k);
    if (c.durable && c.acknowledged_at <= point) lowest = std::max(lowest, c.k);
  }
  return {std::min(lowest, highest), highest};
}

uint64_t CrashOracle::Begin(State after) {
  states_.push_back(std::move(after));
  return states_.size() - 1;
}

void CrashOracle::Acknowledge(uint64_t k, bool durable) {
  assert(k < states_.size());
  if (durable && k > durable_floor_) durable_floor_ = k;
}

std::optional<uint64_t> CrashOracle::Match(const State& recovered) const {
  for (uint64_t k = highest_allowed() + 1; k-- > durable_floor_;) {
    if (states_[k] == recovered) return k;
  }
  return std::nullopt;
}

std::string CrashOracle::Explain(const State& recovered) const {
  std::string out = "recovered " + Describe(recovered) + ", but recovery may only produce the state after commit " +
                    std::to_string(durable_floor_) + " (the last acknowledged durable commit) through " +
                    std::to_string(highest_allowed()) + " (the last commit started):";
  for (uint64_t k = durable_floor_; k <= highest_allowed(); k++) {
    out += "\n  commit " + std::to_string(k) + ": " + Describe(states_[k]);
  }
  for (uint64_t k = 0; k < durable_floor_; k++) {
    if (states_[k] == recovered) {
      out += "\n  it equals commit " + std::to_string(k) + ", older than the acknowledged durable commit " +
             std::to_string(durable_floor_) + " (I2: durability)";
    }
  }
  return out;
}

std::optional<std::string> CrashOracle::Check(uint64_t txn_id, const State& recovered) const {
  if (txn_id < durable_floor_ || txn_id > highest_allowed()) {
    return "recovered commit " + std::to_string(txn_id) + " outside the allowed range [" +
           std::to_string(durable_floor_) + ", " + std::to_string(highest_allowed()) + "]; " + Explain(recovered);
  }
  if (states_[txn_id] != recovered) {
    return "recovered commit " + std::to_string(txn_id) + " holds " + Describe(recovered) + " but commit " +
           std::to_string(txn_id) + " is " + Describe(states_[txn_id]) + " (I1: atomic commit)";
  }
  return std::nullopt;
}

void CrashOracle::Recovered(uint64_t k) {
  assert(k < states_.size());
  states_.resize(k + 1);
  durable_floor_ = k;
}

}  // namespace model

namespace model {

void CrashOracle::Truncate(uint64_t k) {
  assert(k < states_.size());
  states_.resize(k + 1);
  if (durable_floor_ > k) durable_floor_ = k;
}

}  // namespace model
