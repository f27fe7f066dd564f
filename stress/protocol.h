// What dbdb-stress children tell the parent, one line per event on a pipe, and the keys and values
// of the workloads. The parent is the oracle: it marks an operation pending when a child begins
// it and done when the child reports it acknowledged, so a kill in between is judged correctly.
//
//   B <op> <start_ns> <intended_commit> R <key> <value> ... W <key> <value> ...   a write begins
//   A <op> <end_ns> <commit_id>                   the commit returned OK (acknowledged)
//   F <op> <end_ns> <message...>                  the commit failed cleanly (the child then exits)
//   S <start_ns> <end_ns> <snapshot_id> R <key> <value> ...   a reader's snapshot and what it read
//   C begin | C end                               compaction starts / returned
//   X <message...>                                the child saw an invariant broken
// Keys and values never contain spaces.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace stress {

inline constexpr int kBankAccounts = 16;
inline constexpr int64_t kBankInitialBalance = 1000;
inline constexpr int kCounters = 8;

std::string BankKey(int account);     // "bank/acct/07"
std::string CounterKey(int counter);  // "counter/3"
std::string LedgerKey(int writer, uint64_t incarnation, uint64_t seq);

// Values are "<number>:<tag>" with a tag unique to the write, so a read names the write it saw.
std::string MakeValue(int64_t number, const std::string& tag);
// The number before the colon; false if malformed.
bool ParseNumber(const std::string& value, int64_t* number);

bool HasBank(const std::string& workload);
bool HasCounter(const std::string& workload);
bool HasLedger(const std::string& workload);

uint64_t MonotonicNanos();

std::vector<std::string> SplitWords(const std::string& line);

}  // namespace stress
