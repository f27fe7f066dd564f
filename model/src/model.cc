// The reference store semantics.
#include "model/model.h"

#include <cassert>
#include <string_view>

namespace model {

State Apply(const State& state, const Changes& changes) {
  State next = state;
  for (const auto& [key, value] : changes) {
    if (value) next[key] = *value;
    else next.erase(key);
  }
  return next;
}

std::vector<std::pair<std::string, std::string>> Scan(const State& state, const std::string& begin,
                                                      const std::optional<std::string>& end, uint64_t limit) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = state.lower_bound(begin); it != state.end() && out.size() < limit; ++it) {
    if (end && it->first >= *end) break;
    out.emplace_back(it->first, it->second);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ScanPrefix(const State& state, const std::string& prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = state.lower_bound(prefix); it != state.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    out.emplace_back(it->first, it->second);
  }
  return out;
}

namespace {
// Keys and values are any bytes: printable ASCII as is, the rest as \xNN, so that a description is
// text (a report's JSON needs valid UTF-8).
std::string Printable(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}
}  // namespace

std::string Describe(const State& state, size_t max_keys) {
  std::string out = "{";
  size_t n = 0;
  for (const auto& [k, v] : state) {
    if (n == max_keys) {
      out += ", ... (" + std::to_string(state.size()) + " keys)";
      break;
    }
    if (n++ > 0) out += ", ";
    out += Printable(k) + "=" +
           (v.size() > 12 ? Printable(v.substr(0, 12)) + "…(" + std::to_string(v.size()) + ")" : Printable(v));
  }
  return out + "}";
}

void Store::Begin() {
  assert(!open_ && "a transaction is already open");
  open_ = Changes{};
}

void Store::Put(const std::string& key, const std::string& value) {
  assert(open_);
  (*open_)[key] = value;
}

void Store::Del(const std::string& key) {
  assert(open_);
  (*open_)[key] = std::nullopt;
}

std::optional<std::string> Store::Get(const std::string& key) const {
  if (open_) {
    auto it = open_->find(key);
    if (it != open_->end()) return it->second;
  }
  auto it = committed().find(key);
  if (it == committed().end()) return std::nullopt;
  return it->second;
}

State Store::View() const { return open_ ? Apply(committed(), *open_) : committed(); }

bool Store::Commit() {
  assert(open_);
  Changes changes = std::move(*open_);
  open_.reset();
  if (changes.empty()) return false;
  history_.push_back(Apply(committed(), changes));
  return true;
}

void Store::Abort() { open_.reset(); }

void Store::ResetTo(uint64_t txn_id, const State& state) {
  open_.reset();
  history_.resize(std::min<uint64_t>(history_.size(), txn_id + 1));
  while (history_.size() < txn_id + 1) history_.push_back(state);
  history_.back() = state;
}

}  // namespace model
