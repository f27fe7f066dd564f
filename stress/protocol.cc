// Keys, values and parsing shared by the parent and the children of dbdb-stress.
#include "protocol.h"

#include <charconv>
#include <ctime>
#include <sstream>

namespace stress {

std::string BankKey(int account) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "bank/acct/%02d", account);
  return buffer;
}

std::string CounterKey(int counter) { return "counter/" + std::to_string(counter); }

std::string LedgerKey(int writer, uint64_t incarnation, uint64_t seq) {
  return "ledger/w" + std::to_string(writer) + "/" + std::to_string(incarnation) + "/" + std::to_string(seq);
}

std::string MakeValue(int64_t number, const std::string& tag) { return std::to_string(number) + ":" + tag; }

bool ParseNumber(const std::string& value, int64_t* number) {
  size_t colon = value.find(':');
  if (colon == std::string::npos) return false;
  auto [p, ec] = std::from_chars(value.data(), value.data() + colon, *number);
  return ec == std::errc() && p == value.data() + colon;
}

bool HasBank(const std::string& w) { return w == "bank" || w == "mixed"; }
bool HasCounter(const std::string& w) { return w == "counter" || w == "mixed"; }
bool HasLedger(const std::string& w) { return w == "ledger" || w == "mixed"; }

uint64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::vector<std::string> SplitWords(const std::string& line) {
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string w; in >> w;) words.push_back(std::move(w));
  return words;
}

}  // namespace stress
