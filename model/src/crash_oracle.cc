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

namespace {

// "; first difference at key K: V expected, W recovered" (a state's description shows only its
// first keys and the heads of its values).
std::string FirstDifference(const State& expected, const State& recovered) {
  auto show = [](const State& s, const std::string& key) {
    auto it = s.find(key);
    return it == s.end() ? std::string("absent") : std::to_string(it->second.size()) + " bytes";
  };
  auto first_byte = [](const std::string& a, const std::string& b) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) i++;
    return "; the values first differ at byte " + std::to_string(i);
  };
  for (const State* from : {&expected, &recovered}) {
    for (const auto& [key, value] : *from) {
      const State& other = from == &expected ? recovered : expected;
      auto it = other.find(key);
      if (it == other.end() || it->second != value) {
        return "; first difference at key " + key + ": " + show(expected, key) + " expected, " + show(recovered, key) +
               " recovered" + (it == other.end() ? "" : first_byte(value, it->second));
      }
    }
  }
  return "";
}

}  // namespace

std::optional<std::string> CheckRecovery(const std::vector<State>& states, uint64_t lowest, uint64_t highest,
                                         uint64_t txn_id, const State& recovered) {
  // Whole first: a recovered state that is not exactly the commit it names breaks I1 wherever that
  // commit lies; a whole one outside the allowed range breaks I2 or I3.
  if (txn_id < states.size() && states[txn_id] != recovered) {
    return "recovered commit " + std::to_string(txn_id) + " holds " + Describe(recovered) + ", but that commit is " +
           Describe(states[txn_id]) + FirstDifference(states[txn_id], recovered) + " (I1 atomic commit)";
  }
  if (txn_id < lowest || txn_id > highest) {
    std::string why = "recovered commit " + std::to_string(txn_id) + " holding " + Describe(recovered) +
                      ", but only commits " + std::to_string(lowest) + " (the last acknowledged durable one) to " +
                      std::to_string(highest) + " (the last one begun) are allowed";
    why += txn_id < lowest ? " (I2 durability)" : " (I3 prefix: a commit that never began)";
    return why;
  }
  return std::nullopt;
}

std::optional<std::string> CrashOracle::Check(uint64_t txn_id, const State& recovered) const {
  return CheckRecovery(states_, durable_floor_, highest_allowed(), txn_id, recovered);
}

std::optional<std::string> CrashOracle::Check(uint64_t txn_id, const State& recovered, uint64_t lowest,
                                              uint64_t highest) const {
  return CheckRecovery(states_, lowest, highest, txn_id, recovered);
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
