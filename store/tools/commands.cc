// The commands of the `dbdb` tool.
#include "commands.h"

#include <algorithm>
#include <charconv>
#include <iomanip>
#include <iostream>

#include "dbdb/dump.h"

namespace dbdb::cli {

int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk: return kExitOk;
    case StatusCode::kNotFound: return kExitNotFound;
    case StatusCode::kInvalidArgument: return kExitUsage;
    case StatusCode::kCorruption: return kExitCorruption;
    case StatusCode::kIOError:
    case StatusCode::kNoSpace: return kExitIOError;
    case StatusCode::kBusy: return kExitLocked;
    default: return kExitOther;
  }
}

int Report(const Status& status, std::ostream& err) {
  err << "dbdb: " << status.ToString() << "\n";
  return ExitCodeFor(status);
}

std::string Escape(std::string_view bytes) { return EscapeBytes(bytes); }

std::optional<std::string> Unescape(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] != '\\') {
      out.push_back(text[i]);
      continue;
    }
    if (++i >= text.size()) return std::nullopt;
    switch (text[i]) {
      case '\\': out.push_back('\\'); break;
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'x': {
        if (i + 2 >= text.size()) return std::nullopt;  // needs two hex digits after the x
        unsigned value = 0;
        auto [p, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
        if (ec != std::errc() || p != text.data() + i + 3) return std::nullopt;
        out.push_back(static_cast<char>(value));
        i += 2;
        break;
      }
      default: return std::nullopt;
    }
  }
  return out;
}

int Get(DB& db, const std::string& key, std::ostream& out, std::ostream& err) {
  auto value = db.Get(key);
  if (!value.ok()) return Report(value.status(), err);
  if (!value->has_value()) return kExitNotFound;
  out << Escape(**value) << "\n";
  return kExitOk;
}

int Put(DB& db, const std::string& key, const std::string& value, std::ostream& err) {
  Status s = db.Put(key, value);
  return s.ok() ? kExitOk : Report(s, err);
}

int Del(DB& db, const std::string& key, std::ostream& err) {
  Status s = db.Del(key);
  return s.ok() ? kExitOk : Report(s, err);
}

int Scan(DB& db, const ScanArgs& args, std::ostream& out, std::ostream& err) {
  ScanRange range = args.prefix ? ScanRange::Prefix(*args.prefix) : ScanRange{};
  if (args.from && *args.from > range.begin) range.begin = *args.from;
  if (args.to && (!range.end || *args.to < *range.end)) range.end = args.to;
  range.limit = args.limit;
  auto snapshot = db.GetSnapshot();
  if (!snapshot.ok()) return Report(snapshot.status(), err);
  auto it = (*snapshot)->NewIterator();
  Status s = it->Seek(range.begin);
  uint64_t n = 0;
  while (s.ok() && it->Valid() && n < range.limit && (!range.end || it->key() < *range.end)) {
    out << Escape(it->key()) << "\t" << Escape(it->value()) << "\n";
    n++;
    s = it->Next();
  }
  return s.ok() ? kExitOk : Report(s, err);
}

int Incr(DB& db, const std::string& key, int64_t by, std::ostream& out, std::ostream& err) {
  auto txn = db.BeginWrite();
  if (!txn.ok()) return Report(txn.status(), err);
  auto current = (*txn)->Get(key);
  if (!current.ok()) return Report(current.status(), err);
  int64_t value = 0;
  if (current->has_value()) {
    const std::string& text = **current;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || p != text.data() + text.size()) {
      return Report(Status::InvalidArgument("the value of " + Escape(key) + " is not an integer: " + Escape(text)), err);
    }
  }
  if ((by > 0 && value > INT64_MAX - by) || (by < 0 && value < INT64_MIN - by)) {
    return Report(Status::InvalidArgument("incr would overflow a 64-bit integer"), err);
  }
  value += by;
  Status s = (*txn)->Put(key, std::to_string(value));
  if (s.ok()) s = (*txn)->Commit();
  if (!s.ok()) return Report(s, err);
  out << value << "\n";
  return kExitOk;
}

int Stat(DB& db, std::ostream& out, std::ostream& err) {
  auto stats = db.GetStats();
  if (!stats.ok()) return Report(stats.status(), err);
  out << "path            " << db.path() << "\n"
      << "keys            " << stats->keys << "\n"
      << "txn_id          " << stats->txn_id << "\n"
      << "commits_in_file " << stats->commits_in_file << "\n"
      << "file_size_bytes " << stats->file_size_bytes << "\n"
      << "allocated_bytes " << stats->allocated_bytes << "\n"
      << "live_bytes      " << stats->live_bytes << "\n"
      << "unfolded_bytes  " << stats->unfolded_bytes << "\n"
      << "garbage_ratio   " << std::fixed << std::setprecision(3) << stats->garbage_ratio << "\n"
      << "tree_height     " << stats->tree_height << "\n"
      << "generation      " << stats->generation << "\n";
  return kExitOk;
}

int Check(DB& db, std::ostream& out, std::ostream& err) {
  auto report = db.Check();
  if (!report.ok()) return Report(report.status(), err);
  out << "ok: " << report->commits << " commits, " << report->records << " records, " << report->nodes
      << " nodes, " << report->keys << " keys, height " << report->tree_height << ", "
      << report->bytes_verified << " bytes verified, " << report->tail_bytes << " tail bytes\n";
  return kExitOk;
}

int Compact(DB& db, std::ostream& out, std::ostream& err) {
  auto before = db.GetStats();
  if (!before.ok()) return Report(before.status(), err);
  Status s = db.Compact();
  if (!s.ok()) return Report(s, err);
  auto after = db.GetStats();
  if (!after.ok()) return Report(after.status(), err);
  // The data, not the zeros allocated ahead of the next commit.
  out << "compacted: " << before->file_size_bytes - before->allocated_bytes << " -> "
      << after->file_size_bytes - after->allocated_bytes << " bytes\n";
  return kExitOk;
}

int Dump(const std::string& path, FileSystem& fs, bool show_values, std::ostream& out, std::ostream& err) {
  std::shared_ptr<FileSystem> borrowed(std::shared_ptr<FileSystem>(), &fs);  // not owned: outlives the call
  Status s = DumpFile(path, DumpOptions{.show_values = show_values, .file_system = borrowed}, out);
  return s.ok() ? kExitOk : Report(s, err);
}

namespace {

std::vector<std::string> Tokenize(const std::string& line, bool* ok) {
  std::vector<std::string> tokens;
  std::string current;
  bool in_quotes = false, has_token = false;
  for (size_t i = 0; i < line.size(); i++) {
    char c = line[i];
    if (in_quotes) {
      if (c == '"') in_quotes = false;
      else if (c == '\\' && i + 1 < line.size() && line[i + 1] == '"') current.push_back(line[++i]);
      else current.push_back(c);
    } else if (c == '"') {
      in_quotes = has_token = true;
    } else if (c == ' ' || c == '\t') {
      if (has_token) tokens.push_back(current);
      current.clear();
      has_token = false;
    } else {
      current.push_back(c);
      has_token = true;
    }
  }
  if (has_token) tokens.push_back(current);
  *ok = !in_quotes;
  return tokens;
}

const char* kShellHelp =
    "commands (keys and values take \\xNN escapes; quote them to include spaces):\n"
    "  get KEY | put KEY VALUE | del KEY | incr KEY [BY]\n"
    "  scan [PREFIX]            keys and values in order, all or with a prefix\n"
    "  range FROM TO            keys in [FROM, TO)\n"
    "  begin | commit | abort   a write transaction: get/put/del/scan then act inside it\n"
    "  stat | check | compact | help | quit\n";

// One shell session: the open transaction (if any) and the exit status of the last command.
class ShellSession {
 public:
  ShellSession(DB& db, std::ostream& out, std::ostream& err) : db_(db), out_(out), err_(err) {}
  ~ShellSession() {
    if (txn_) {
      txn_->Abort();
      err_ << "the open transaction was aborted\n";
    }
  }
  bool in_transaction() const { return txn_ != nullptr; }
  int last() const { return last_; }

  // Runs one input line; false on quit.
  bool Line(const std::string& line) {
    bool ok;
    auto raw = Tokenize(line, &ok);
    if (!ok) {
      err_ << "error: unterminated quote\n";
      last_ = kExitUsage;
      return true;
    }
    if (raw.empty() || raw[0][0] == '#') return true;
    std::vector<std::string> args;
    for (size_t i = 1; i < raw.size(); i++) {
      auto u = Unescape(raw[i]);
      if (!u) {
        last_ = Usage("bad escape (use \\xNN, \\\\, \\n or \\t)");
        return true;
      }
      args.push_back(*u);
    }
    const std::string& cmd = raw[0];
    if (cmd == "quit" || cmd == "exit") return false;
    last_ = Command(cmd, args);
    return true;
  }

 private:
  int Usage(const char* text) {
    err_ << "usage: " << text << "\n";
    return kExitUsage;
  }
  int Fail(const Status& s) { return Report(s, err_); }

  int Command(const std::string& cmd, const std::vector<std::string>& args) {
    if (cmd == "help") {
      out_ << kShellHelp;
      return kExitOk;
    }
    if (cmd == "begin") return Begin();
    if (cmd == "commit" || cmd == "abort") return End(cmd == "commit");
    if (cmd == "get") return GetKey(args);
    if (cmd == "put" || cmd == "del") return Change(cmd == "put", args);
    if (cmd == "incr") return Increment(args);
    if (cmd == "scan" || cmd == "range") return ScanKeys(cmd == "scan", args);
    if (cmd == "stat" || cmd == "check" || cmd == "compact") {
      if (txn_) return Usage("commit or abort the open transaction first");
      return cmd == "stat" ? Stat(db_, out_, err_) : cmd == "check" ? Check(db_, out_, err_) : Compact(db_, out_, err_);
    }
    err_ << "unknown command '" << Escape(cmd) << "' (try help)\n";
    return kExitUsage;
  }

  int Begin() {
    if (txn_) return Usage("a transaction is already open (commit or abort it)");
    auto t = db_.BeginWrite();
    if (!t.ok()) return Fail(t.status());
    txn_ = std::move(t).value();
    return kExitOk;
  }

  int End(bool commit) {
    if (!txn_) return Usage("no transaction is open (begin one)");
    Status s = commit ? txn_->Commit() : Status::Ok();
    if (!commit) txn_->Abort();
    txn_.reset();
    return s.ok() ? kExitOk : Fail(s);
  }

  int GetKey(const std::vector<std::string>& args) {
    if (args.size() != 1) return Usage("get KEY");
    if (!txn_) {
      int rc = Get(db_, args[0], out_, err_);
      if (rc == kExitNotFound) out_ << "(not found)\n";
      return rc;
    }
    auto v = txn_->Get(args[0]);
    if (!v.ok()) return Fail(v.status());
    if (!v->has_value()) {
      out_ << "(not found)\n";
      return kExitNotFound;
    }
    out_ << Escape(**v) << "\n";
    return kExitOk;
  }

  int Change(bool put, const std::vector<std::string>& args) {
    if (put && args.size() != 2) return Usage("put KEY VALUE");
    if (!put && args.size() != 1) return Usage("del KEY");
    Status s = put ? (txn_ ? txn_->Put(args[0], args[1]) : db_.Put(args[0], args[1]))
                   : (txn_ ? txn_->Del(args[0]) : db_.Del(args[0]));
    return s.ok() ? kExitOk : Fail(s);
  }

  int Increment(const std::vector<std::string>& args) {
    if (args.empty() || args.size() > 2) return Usage("incr KEY [BY]");
    int64_t by = 1;
    if (args.size() == 2) {
      auto [p, ec] = std::from_chars(args[1].data(), args[1].data() + args[1].size(), by);
      if (ec != std::errc() || p != args[1].data() + args[1].size()) return Usage("incr KEY [BY]: BY is an integer");
    }
    if (txn_) return Usage("incr runs as its own transaction: commit or abort first");
    return Incr(db_, args[0], by, out_, err_);
  }

  int ScanKeys(bool prefix, const std::vector<std::string>& args) {
    ScanRange range;
    if (prefix) {
      if (args.size() > 1) return Usage("scan [PREFIX]");
      if (args.size() == 1) range = ScanRange::Prefix(args[0]);
    } else {
      if (args.size() != 2) return Usage("range FROM TO");
      range.begin = args[0];
      range.end = args[1];
    }
    Result<std::vector<KeyValue>> rows = Status::Aborted("unset");
    if (txn_) {
      rows = txn_->Scan(range);
    } else {
      auto snapshot = db_.GetSnapshot();
      rows = snapshot.ok() ? (*snapshot)->Scan(range) : Result<std::vector<KeyValue>>(snapshot.status());
    }
    if (!rows.ok()) return Fail(rows.status());
    for (const auto& kv : *rows) out_ << Escape(kv.key) << "\t" << Escape(kv.value) << "\n";
    return kExitOk;
  }

  DB& db_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<WriteTransaction> txn_;
  int last_ = kExitOk;
};

}  // namespace

int Shell(DB& db, std::istream& in, std::ostream& out, std::ostream& err, bool interactive) {
  ShellSession session(db, out, err);
  std::string line;
  while (true) {
    if (interactive) out << (session.in_transaction() ? "dbdb(txn)> " : "dbdb> ") << std::flush;
    if (!std::getline(in, line) || !session.Line(line)) break;
  }
  int last = session.last();
  return last;  // the session's destructor aborts an open transaction (and says so)
}

}  // namespace dbdb::cli
