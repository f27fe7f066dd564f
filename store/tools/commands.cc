// The commands of the `dbdb` tool.
#include "commands.h"

#include <algorithm>
#include <charconv>
#include <iomanip>
#include <iostream>

#include "checksum.h"
#include "coding.h"
#include "format.h"
#include "node.h"

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

std::string Escape(std::string_view bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    auto u = static_cast<uint8_t>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out.push_back(c);
    } else {
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

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
  out << "compacted: " << before->file_size_bytes << " -> " << after->file_size_bytes << " bytes\n";
  return kExitOk;
}

namespace {

// Reads a file front to back through a window, so that dumping it costs about one pread per window
// and holds at most one window (or one verified record, if larger) in memory.
class WindowReader {
 public:
  static constexpr uint64_t kWindowBytes = 1 << 20;

  WindowReader(File& file, uint64_t size) : file_(file), size_(size) {}

  // The bytes [offset, offset + n), fewer if the file ends first. Valid until the next Read.
  Result<std::string_view> Read(uint64_t offset, uint64_t n) {
    if (offset < start_ || offset + n > start_ + filled_) {
      uint64_t want = std::max(n, kWindowBytes);
      if (buffer_.size() != want) std::string(want, '\0').swap(buffer_);  // a big record's buffer is freed
      start_ = offset;
      filled_ = 0;
      auto got = file_.ReadAt(offset, buffer_);
      if (!got.ok()) return got.status();
      filled_ = *got;
      // A short read inside the size seen at the start: the file was cut meanwhile (a writer's
      // rollback). Its end is here now.
      if (*got < want && offset + *got < size_) size_ = offset + *got;
    }
    uint64_t available = start_ + filled_ - std::min(offset, start_ + filled_);
    return std::string_view(buffer_).substr(offset - start_, std::min(n, available));
  }

  uint64_t size() const { return size_; }

 private:
  File& file_;
  uint64_t size_;  // the file's size when the dump started, lowered if reads find it shorter
  std::string buffer_;
  uint64_t start_ = 0, filled_ = 0;
};

using MaybeRecord = std::optional<format::RecordView>;

// The record at `offset` if one that verifies starts there; nullopt if not (too few bytes left, a
// length running past the end or above the format's limit, a checksum that does not match): that
// is where the records end and the tail, if any, begins. An error only for a failed read.
// A record larger than the window is verified piecewise before it is read whole, so garbage that
// looks like the header of a huge record costs reading it, never holding it.
Result<MaybeRecord> ReadRecordAt(WindowReader& reader, uint64_t offset) {
  if (offset + format::kRecordOverheadBytes > reader.size()) return MaybeRecord();
  auto header = reader.Read(offset, format::kRecordHeaderSizeBytes);
  if (!header.ok()) return header.status();
  if (header->size() < format::kRecordHeaderSizeBytes) return MaybeRecord();
  uint64_t length = coding::DecodeFixed32(header->data()) + format::kRecordOverheadBytes;
  if (length > format::kRecordPayloadSizeMaxBytes + format::kRecordOverheadBytes) return MaybeRecord();
  if (offset + length > reader.size()) return MaybeRecord();
  if (length > WindowReader::kWindowBytes) {
    BodyHasher hasher(offset);  // the record checksum: XXH3-64 seeded with the record's offset
    uint64_t hashed_end = offset + length - format::kRecordTrailerSizeBytes;
    for (uint64_t at = offset; at < hashed_end;) {
      auto piece = reader.Read(at, std::min(WindowReader::kWindowBytes, hashed_end - at));
      if (!piece.ok()) return piece.status();
      if (piece->empty()) return MaybeRecord();
      hasher.Update(*piece);
      at += piece->size();
    }
    auto trailer = reader.Read(hashed_end, format::kRecordTrailerSizeBytes);
    if (!trailer.ok()) return trailer.status();
    if (trailer->size() < format::kRecordTrailerSizeBytes || coding::DecodeFixed64(trailer->data()) != hasher.Digest()) {
      return MaybeRecord();
    }
  }
  auto bytes = reader.Read(offset, length);
  if (!bytes.ok()) return bytes.status();
  auto record = format::VerifyRecord(offset, *bytes);  // also rejects a short read
  if (!record.ok()) return MaybeRecord();
  return MaybeRecord(*record);
}

// Prints verified records as `dbdb dump` shows them: a line per record, then a batch's changes,
// a leaf's entries or a branch's children.
class RecordPrinter {
 public:
  RecordPrinter(std::ostream& out, uint32_t version, bool show_values)
      : out_(out), version_(version), show_values_(show_values) {}

  void Print(uint64_t offset, const format::RecordView& record) {
    uint64_t length = record.payload.size() + format::kRecordOverheadBytes;
    out_ << format::RecordTypeName(record.type) << " offset " << offset << " length " << length;
    if (record.type == format::RecordType::kCommit) {
      Commit(offset, record);
    } else if (record.type == format::RecordType::kBatch) {
      Batch(offset, record);
    } else if (record.type == format::RecordType::kSeal) {
      auto seal = format::DecodeSeal(record);
      out_ << ": seals the commit at " << seal.commit_offset
           << (seal.durable ? " (it is durable)" : " (written with it, not synced: no-sync mode)") << "\n";
    } else {
      Node(offset, record);
    }
  }

 private:
  std::string Show(std::string_view s) const { return show_values_ ? Escape(s) : std::to_string(s.size()) + " bytes"; }

  void Commit(uint64_t offset, const format::RecordView& record) {
    auto c = format::DecodeCommitPayload(offset, record.payload, version_);
    if (!c.ok()) return;  // not reached: the scan stopped before a commit that does not decode
    out_ << ": txn " << c->txn_id << ", prev " << c->prev_commit_offset << ", body [" << c->body_offset << ", "
         << offset << ") checksum " << std::hex << c->body_checksum << std::dec << ", synced_through "
         << c->synced_through << ", root " << c->root_offset << "+" << c->root_length << ", height "
         << c->tree_height << ", keys " << c->key_count << ", tree_bytes " << c->tree_bytes;
    if (version_ >= 2) {
      if (c->folded()) out_ << ", folds";
      else out_ << ", fold " << c->fold_offset;
      if (c->batch_offset != 0) out_ << ", batch " << c->batch_offset;
    }
    out_ << "\n";
  }

  void Batch(uint64_t offset, const format::RecordView& record) {
    auto batch = format::DecodeBatch(offset, record.payload);
    if (!batch.ok()) {
      out_ << ": " << batch.status().ToString() << "\n";
      return;
    }
    out_ << ": " << batch->size() << " changes\n";
    for (const auto& change : *batch) {
      if (change.value) out_ << "    put " << Escape(change.key) << " = " << Show(*change.value) << "\n";
      else out_ << "    del " << Escape(change.key) << "\n";
    }
  }

  void Node(uint64_t offset, const format::RecordView& record) {
    auto node = DecodeNode(offset, record.type, std::string(record.payload));
    if (!node.ok()) {
      out_ << ": " << node.status().ToString() << "\n";
    } else if ((*node)->is_leaf) {
      out_ << ": " << (*node)->size() << " entries\n";
      for (size_t i = 0; i < (*node)->size(); i++) {
        out_ << "    " << Escape((*node)->keys[i]) << " = " << Show((*node)->values[i]) << "\n";
      }
    } else {
      out_ << ": " << (*node)->children.size() << " children\n";
      for (size_t i = 0; i < (*node)->children.size(); i++) {
        out_ << "    " << (i == 0 ? std::string("(first)") : ">= " + Escape((*node)->keys[i])) << " -> "
             << (*node)->children[i].offset << "+" << (*node)->children[i].length << "\n";
      }
    }
  }

  std::ostream& out_;
  uint32_t version_;
  bool show_values_;
};

// Prints every record a commit or a seal covers and returns where they end (the tail, if any,
// starts there). Nodes after the last commit or seal are part of the tail, so the scan verifies
// records up to the next commit or seal, then goes back and prints them (usually from the same
// window), holding no more than one record at a time.
Result<uint64_t> PrintCommittedRecords(WindowReader& reader, uint32_t version, RecordPrinter& printer) {
  uint64_t committed_end = format::kFileHeaderSizeBytes;  // printed up to here
  uint64_t offset = committed_end;
  while (true) {
    DBDB_ASSIGN_OR_RETURN(MaybeRecord record, ReadRecordAt(reader, offset));
    if (!record) break;
    uint64_t end = offset + record->payload.size() + format::kRecordOverheadBytes;
    if (record->type == format::RecordType::kCommit &&
        !format::DecodeCommitPayload(offset, record->payload, version).ok()) {
      break;
    }
    if (record->type == format::RecordType::kCommit || record->type == format::RecordType::kSeal) {
      for (uint64_t at = committed_end; at < end;) {
        DBDB_ASSIGN_OR_RETURN(MaybeRecord again, ReadRecordAt(reader, at));
        if (!again) break;  // the file was cut meanwhile; the tail starts here
        printer.Print(at, *again);
        at += again->payload.size() + format::kRecordOverheadBytes;
        committed_end = at;
      }
      if (committed_end != end) break;
    }
    offset = end;
  }
  return committed_end;
}

}  // namespace

int Dump(const std::string& path, FileSystem& fs, bool show_values, std::ostream& out, std::ostream& err) {
  auto file = fs.Open(path, OpenOptions{.read_only = true});
  if (!file.ok()) return Report(file.status(), err);
  auto size = (*file)->Size();
  if (!size.ok()) return Report(size.status(), err);
  WindowReader reader(**file, *size);
  auto header_bytes = reader.Read(0, format::kFileHeaderSizeBytes);
  if (!header_bytes.ok()) return Report(header_bytes.status(), err);
  auto header = format::DecodeFileHeader(*header_bytes);
  if (!header.ok()) return Report(header.status().WithContext(path), err);
  out << "header  offset 0 length " << format::kFileHeaderSizeBytes << ": dbdb format " << header->version
      << ", generation " << header->generation << "\n";
  RecordPrinter printer(out, header->version, show_values);
  auto committed_end = PrintCommittedRecords(reader, header->version, printer);
  if (!committed_end.ok()) return Report(committed_end.status().WithContext(path), err);
  if (*committed_end < reader.size()) {
    out << "tail    offset " << *committed_end << " length " << reader.size() - *committed_end
        << ": not covered by a valid commit (ignored by readers, truncated by the next writer)\n";
  }
  return kExitOk;
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
