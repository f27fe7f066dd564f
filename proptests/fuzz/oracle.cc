// The fuzz oracle (oracle.h). Every check that fails calls Violation, which names the broken rule.
#include "oracle.h"

#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coding.h"
#include "dbdb/db.h"
#include "faultfs/sim_file_system.h"
#include "format.h"

namespace dbdb_fuzz {
namespace {

using dbdb::DB;
using dbdb::KeyValue;
using dbdb::Options;
using dbdb::Result;
using dbdb::Status;
namespace format = dbdb::format;

[[noreturn]] void Violation(const std::string& what) {
  std::fprintf(stderr, "\nDBDB FUZZ VIOLATION: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string Escape(std::string_view bytes, size_t max = 40) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < max; i++) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[5];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  if (bytes.size() > max) out += "...(" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

// A real pread/pwrite fails with EINVAL when the offset, or the offset plus the length, does not
// fit in off_t (Linux rw_verify_area); dbdb reports that as an I/O error. The simulated filesystem
// just returns nothing past the end, which would hide a reference whose offset + length wraps past
// 2^64. This layer gives the simulated file the kernel's limits, so such a read is the IOError it
// would be on a real disk, and the oracle sees it.
constexpr uint64_t kOffsetMax = static_cast<uint64_t>(INT64_MAX);

bool PastOffsetMax(uint64_t offset, uint64_t length) {
  return offset > kOffsetMax || length > kOffsetMax - offset;
}

class KernelLimitsFile final : public dbdb::FileWrapper {
 public:
  using FileWrapper::FileWrapper;
  Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
    if (PastOffsetMax(offset, dst.size())) return Invalid("pread", offset, dst.size());
    return FileWrapper::ReadAt(offset, dst);
  }
  Status WriteAt(uint64_t offset, std::span<const char> data) override {
    if (PastOffsetMax(offset, data.size())) return Invalid("pwrite", offset, data.size());
    return FileWrapper::WriteAt(offset, data);
  }
  Status Truncate(uint64_t size_bytes) override {
    if (size_bytes > kOffsetMax) return Invalid("ftruncate", size_bytes, 0);
    return FileWrapper::Truncate(size_bytes);
  }

 private:
  static Status Invalid(const char* call, uint64_t offset, uint64_t length) {
    return Status::IOError(std::string(call) + " db at offset " + std::to_string(offset) + " length " +
                           std::to_string(length) + ": Invalid argument (past the largest file offset)");
  }
};

class KernelLimitsFileSystem final : public dbdb::FileSystemWrapper {
 public:
  using FileSystemWrapper::FileSystemWrapper;
  Result<std::unique_ptr<dbdb::File>> Open(const std::string& path, dbdb::OpenOptions options) override {
    auto file = FileSystemWrapper::Open(path, options);
    if (!file.ok()) return file.status();
    return std::unique_ptr<dbdb::File>(new KernelLimitsFile(std::move(file).value()));
  }
};

std::shared_ptr<dbdb::FileSystem> MakeFileSystem(const std::string& image) {
  faultfs::CrashImage crash_image;
  crash_image.files["db"] = image;
  return std::make_shared<KernelLimitsFileSystem>(faultfs::SimFileSystem::FromImage(crash_image, 1));
}

// (a): a damaged file gives Corruption. Opening may also say the file is no database at all.
enum class Call { kRead, kOpen, kCommit };
void ExpectClean(const Status& s, const std::string& what, Call call = Call::kRead) {
  if (s.ok() || s.IsCorruption()) return;
  if (call == Call::kOpen && (s.IsNotFound() || s.code() == dbdb::StatusCode::kInvalidArgument)) return;
  if (call == Call::kCommit && s.code() == dbdb::StatusCode::kLimitExceeded) return;  // e.g. txn ids run out
  Violation(what + " failed with " + s.ToString() +
            " (on the simulated filesystem, which injects no fault, damage must be Corruption)");
}

std::string Describe(const Status& s) { return s.ok() ? "succeeded" : "failed with " + s.ToString(); }

// Everything one handle reads: the snapshot's commit, a full scan, and a Get of every scanned key.
struct Reads {
  bool snapshot_ok = false;
  uint64_t txn_id = 0;
  bool scan_ok = false;
  std::vector<KeyValue> rows;
  std::string get_mismatch;  // the first Get that disagreed with the scan ("" if none)

  std::string Summary() const {
    if (!snapshot_ok) return "no snapshot";
    std::string s = "txn " + std::to_string(txn_id) + ", ";
    s += scan_ok ? std::to_string(rows.size()) + " keys" : "scan failed";
    if (!get_mismatch.empty()) s += ", " + get_mismatch;
    return s;
  }
};

Reads ReadAll(DB& db, const std::string& who) {
  Reads r;
  auto snapshot = db.GetSnapshot();
  ExpectClean(snapshot.status(), who + " GetSnapshot");
  if (!snapshot.ok()) return r;
  r.snapshot_ok = true;
  r.txn_id = (*snapshot)->txn_id();
  auto rows = (*snapshot)->Scan(dbdb::ScanRange{});
  ExpectClean(rows.status(), who + " Scan");
  if (!rows.ok()) return r;
  r.scan_ok = true;
  r.rows = std::move(rows).value();
  for (const KeyValue& row : r.rows) {
    auto got = (*snapshot)->Get(row.key);
    ExpectClean(got.status(), who + " Get");
    if (!r.get_mismatch.empty()) continue;
    if (!got.ok()) {
      r.get_mismatch = "Get(\"" + Escape(row.key) + "\") " + Describe(got.status());
    } else if (!got->has_value()) {
      r.get_mismatch = "Get(\"" + Escape(row.key) + "\") finds nothing";
    } else if (**got != row.value) {
      r.get_mismatch = "Get(\"" + Escape(row.key) + "\") = \"" + Escape(**got) + "\", the scan says \"" +
                       Escape(row.value) + "\"";
    }
  }
  return r;
}

// (b): two handles on the same committed bytes read the same.
void ExpectSameReads(const Reads& a, const std::string& a_name, const Reads& b, const std::string& b_name) {
  bool same = a.snapshot_ok == b.snapshot_ok && a.txn_id == b.txn_id && a.scan_ok == b.scan_ok &&
              a.get_mismatch.empty() == b.get_mismatch.empty();
  if (same && a.scan_ok) {
    same = a.rows.size() == b.rows.size();
    for (size_t i = 0; same && i < a.rows.size(); i++) {
      same = a.rows[i].key == b.rows[i].key && a.rows[i].value == b.rows[i].value;
    }
  }
  if (!same) Violation("the " + a_name + " (" + a.Summary() + ") and the " + b_name + " (" + b.Summary() + ") disagree");
}

// (c): what check() accepts reads back whole and in order.
void ExpectCheckedReads(const Reads& r, const dbdb::CheckReport& report) {
  std::string why;
  if (!r.snapshot_ok || !r.scan_ok) {
    why = "the full scan failed";
  } else if (!r.get_mismatch.empty()) {
    why = r.get_mismatch;
  } else if (r.rows.size() != report.keys) {
    why = "the scan returns " + std::to_string(r.rows.size()) + " keys, check() counted " + std::to_string(report.keys);
  } else {
    for (size_t i = 1; i < r.rows.size(); i++) {
      if (!(r.rows[i - 1].key < r.rows[i].key)) {
        why = "the scan returns \"" + Escape(r.rows[i].key) + "\" after \"" + Escape(r.rows[i - 1].key) + "\"";
        break;
      }
    }
  }
  if (!why.empty()) Violation("check() is OK but " + why + " (" + r.Summary() + ")");
}

// (e): a header that opens is exactly the encoding of what it decodes to; no byte of it is ignored.
void ExpectCanonicalHeader(const std::string& image) {
  if (image.size() < format::kFileHeaderSizeBytes) Violation("a file shorter than its header opened");
  format::FileHeader header;
  header.version = dbdb::coding::DecodeFixed32(image.data() + 8);
  header.generation = dbdb::coding::DecodeFixed64(image.data() + 16);
  std::string canonical = format::EncodeFileHeader(header);
  for (size_t i = 0; i < canonical.size(); i++) {
    if (canonical[i] != image[i]) {
      char byte[64];
      std::snprintf(byte, sizeof(byte), "0x%02x where the encoder writes 0x%02x", static_cast<unsigned char>(image[i]),
                    static_cast<unsigned char>(canonical[i]));
      Violation("the file opened with a header whose byte " + std::to_string(i) + " is " + byte +
                ": the header decoder accepts a header that is not the encoding of what it decodes to (it ignores a byte)");
    }
  }
}

// (e): on a file check() accepts, every byte of the header and of the committed region is verified:
// flip one (the position comes from the input, so the fuzzer explores them) and open, recovery or
// check() must notice. Only the newest commit's seal may be lost silently (the commit is still
// taken when no writer is active), and the tail and the zeros allocated ahead are ignored by design.
void ExpectFlipNoticed(const std::string& image, uint64_t txn_id, const dbdb::CheckReport& report) {
  uint64_t end = image.size() - report.tail_bytes - report.allocated_bytes;
  uint64_t verified_end = end;
  if (txn_id != 0 && end >= format::kFileHeaderSizeBytes + format::kSealRecordSizeBytes) {
    uint64_t at = end - format::kSealRecordSizeBytes;
    auto seal = format::VerifyRecord(at, std::string_view(image).substr(at, format::kSealRecordSizeBytes));
    if (seal.ok() && seal->type == format::RecordType::kSeal) verified_end = at;
  }
  uint64_t hash = XXH3_64bits(image.data(), image.size());
  uint64_t positions[2] = {hash % std::min<uint64_t>(verified_end, format::kFileHeaderSizeBytes),
                           (hash >> 20) % verified_end};
  auto bit = static_cast<char>(1 << ((hash >> 61) & 7));
  for (uint64_t position : positions) {
    std::string flipped = image;
    flipped[position] = static_cast<char>(flipped[position] ^ bit);
    Options options;
    options.file_system = MakeFileSystem(flipped);
    options.read_only = true;
    auto db = DB::Open("db", options);
    ExpectClean(db.status(), "read-only Open of the file with a flipped byte", Call::kOpen);
    if (!db.ok()) continue;
    Reads reads = ReadAll(**db, "read-only handle of the file with a flipped byte");
    if (!reads.snapshot_ok || reads.txn_id != txn_id) continue;  // recovery fell back: noticed
    auto check = (*db)->Check();
    ExpectClean(check.status(), "Check of the file with a flipped byte");
    // Recovery fell back to an earlier commit that restates the same txn id (an unsealed close
    // fold or checkpoint, whose body the flip broke, dropped as a torn tail): noticed too.
    if (check.ok() && check->commits < report.commits) continue;
    if (check.ok()) {
      char what[128];
      std::snprintf(what, sizeof(what), "byte %" PRIu64 " (of %" PRIu64 " verified) flipped from 0x%02x to 0x%02x",
                    position, verified_end, static_cast<unsigned char>(image[position]),
                    static_cast<unsigned char>(flipped[position]));
      Violation(std::string(what) + " went unnoticed: the file still opens at txn " + std::to_string(txn_id) +
                " and check() is OK" + (position < format::kFileHeaderSizeBytes ? " (a header byte)" : ""));
    }
  }
}

// A key the tree does not hold, in the middle of its keys (so the commit descends an inner path).
std::string NewKey(const Reads& reads) {
  std::set<std::string> keys;
  for (const KeyValue& row : reads.rows) keys.insert(row.key);
  std::string key = reads.rows.empty() ? "fuzz" : reads.rows[reads.rows.size() / 2].key.substr(0, 64) + "\x01" "fuzz";
  while (keys.count(key) != 0) key += 'x';
  return key;
}

// What the first, read-only look at a file found: whether it opened, what it read, and check()'s
// report if check() passed.
struct FirstLook {
  Status open;
  Reads reads;
  std::optional<dbdb::CheckReport> report;
};

// 1. Read-only: open, read everything, check().
FirstLook ReadOnlyLook(const std::string& image, const Options& ro_options) {
  FirstLook look;
  auto db = DB::Open("db", ro_options);
  ExpectClean(db.status(), "read-only Open", Call::kOpen);
  look.open = db.status();
  if (!db.ok()) return look;
  ExpectCanonicalHeader(image);
  look.reads = ReadAll(**db, "read-only handle");
  auto check = (*db)->Check();
  ExpectClean(check.status(), "read-only Check");
  if (check.ok()) {
    look.report = check.value();
    ExpectCheckedReads(look.reads, *look.report);
  }
  return look;
}

// 1b. A file of an older version (1 to 4) opens read-only only (ReadOnly for writing, saying to
// upgrade), and DB::Upgrade converts it: Ok or Corruption, never anything else; the steps after
// then run on the converted file, which must read exactly as the older file did. Whether they
// run; `converted` says whether the file was an older one, converted.
bool OlderVersion(const std::string& image, const FirstLook& look, const Options& rw_options, bool* converted) {
  auto header = format::DecodeFileHeader(image.substr(0, format::kFileHeaderSizeBytes));
  const bool older = header.ok() && header->version < format::kFormatVersion;
  *converted = look.open.ok() && older;
  if (older && !look.open.ok()) {
    // An older file that does not open even read-only (damaged): a read-write Open refuses it for
    // its version before reading anything else (ReadOnly), or fails cleanly; nothing after
    // applies. (Found by the fuzzer on a damaged format-2 seed.)
    auto refused = DB::Open("db", rw_options);
    if (refused.ok()) Violation("read-write Open of an older-version file that fails read-only succeeded");
    if (refused.status().code() != dbdb::StatusCode::kReadOnly) {
      ExpectClean(refused.status(), "read-write Open", Call::kOpen);
    }
    return false;
  }
  if (!*converted) return true;
  auto refused = DB::Open("db", rw_options);
  if (refused.ok() || refused.status().code() != dbdb::StatusCode::kReadOnly) {
    Violation("read-write Open of an older-version file " + Describe(refused.status()) + ", not ReadOnly");
  }
  Status upgraded = DB::Upgrade("db", rw_options);
  ExpectClean(upgraded, "Upgrade of an older-version file");
  return upgraded.ok();
}

// 2. Read-write: open, start a write transaction and abort it (recovery: the tail is cut and a
// commit whose writer died is settled), read everything again, check() again. The handle (null if
// it did not open), and what it read in `reads`.
std::unique_ptr<DB> ReadWriteLook(const FirstLook& look, bool converted, const Options& rw_options, Reads* reads) {
  auto db = DB::Open("db", rw_options);
  ExpectClean(db.status(), "read-write Open", Call::kOpen);
  if (db.ok() != look.open.ok()) {
    Violation("read-only Open " + Describe(look.open) + " but read-write Open " + Describe(db.status()));
  }
  if (!db.ok()) return nullptr;
  std::unique_ptr<DB> rw = std::move(db).value();
  auto txn = rw->BeginWrite();
  ExpectClean(txn.status(), "BeginWrite");
  if (!txn.ok()) Violation("BeginWrite failed on a file that opens: " + txn.status().ToString());
  (*txn)->Abort();
  *reads = ReadAll(*rw, "read-write handle");
  ExpectSameReads(look.reads, "read-only view", *reads, "read-write view after recovery");
  auto check = rw->Check();
  ExpectClean(check.status(), "read-write Check");
  // (A converted older file is checked afresh: the conversion left its garbage behind.)
  if (!converted && check.ok() != look.report.has_value()) {
    Violation("check() " + std::string(look.report ? "succeeded" : "failed") + " read-only but " +
              Describe(check.status()) + " read-write after recovery");
  }
  return rw;
}

// 3. Read-only again, after the read-write handle's recovery: the same view (recovery is stable).
void ReadOnlyAgain(const FirstLook& look, const Reads& rw_reads, const Options& ro_options) {
  auto db = DB::Open("db", ro_options);
  ExpectClean(db.status(), "second read-only Open", Call::kOpen);
  if (db.ok() != look.open.ok()) {
    Violation("read-only Open " + Describe(look.open) + " at first but " + Describe(db.status()) +
              " after the read-write handle's recovery");
  }
  if (db.ok()) {
    Reads again = ReadAll(**db, "second read-only handle");
    ExpectSameReads(rw_reads, "read-write view", again, "second read-only view");
  }
}

// The rows in key order, then value order.
std::vector<KeyValue> Sorted(std::vector<KeyValue> rows) {
  std::sort(rows.begin(), rows.end(), [](const KeyValue& a, const KeyValue& b) {
    return a.key != b.key ? a.key < b.key : a.value < b.value;
  });
  return rows;
}

// After a commit of (key, value) on a file read as `before`: the file reads back as the new commit,
// with the new key and, if the scan worked before, the same pairs plus the new one; on a sound file
// (`report`), check() passes on what the commit wrote.
void ExpectCommitReadBack(const Reads& before, const std::string& key, const std::string& value, bool sound,
                          const Options& ro_options) {
  auto db = DB::Open("db", ro_options);
  if (!db.ok()) Violation("after a successful commit the file does not open: " + db.status().ToString());
  Reads after = ReadAll(**db, "read-only handle after the commit");
  std::string what = "after a commit of \"" + Escape(key) + "\" on a file read as (" + before.Summary() +
                     "), it reads back as (" + after.Summary() + ")";
  if (!after.snapshot_ok || after.txn_id != before.txn_id + 1) Violation(what + ": not the new commit");
  auto got = (*db)->Get(key);
  if (!got.ok() || !got->has_value() || **got != value) {
    Violation(what + ": Get of the new key " + (got.ok() ? "does not return its value" : Describe(got.status())));
  }
  if (before.scan_ok) {
    // The same pairs plus the new one. (Their order is the tree's: a damaged tree may hold a key
    // where the scan does not expect it, and the commit leaves it there.)
    std::vector<KeyValue> expected = before.rows;
    expected.push_back(KeyValue{key, value});
    expected = Sorted(std::move(expected));
    std::vector<KeyValue> got_rows = Sorted(after.rows);
    bool same = after.scan_ok && got_rows.size() == expected.size();
    for (size_t i = 0; same && i < expected.size(); i++) {
      same = got_rows[i].key == expected[i].key && got_rows[i].value == expected[i].value;
    }
    if (!same) Violation(what + ": not the previous contents plus the new key");
  }
  if (sound) {
    // On a sound file the commit writes a sound file.
    auto check = (*db)->Check();
    if (!check.ok()) Violation(what + ": check() fails on what the commit wrote: " + check.status().ToString());
    ExpectCheckedReads(after, check.value());
  }
}

// 4. A commit on the (possibly damaged) file: fails cleanly, or reads back with what was there.
// Closes `rw`.
void CommitOnIt(std::unique_ptr<DB> rw, const Reads& rw_reads, bool sound, size_t image_size,
                const Options& ro_options) {
  std::string key = NewKey(rw_reads);
  std::string value = "fuzz value " + std::to_string(image_size);
  Status put = rw->Put(key, value);
  ExpectClean(put, "Put of a new key", Call::kCommit);
  if (sound && !put.ok() && put.code() != dbdb::StatusCode::kLimitExceeded) {
    Violation("a commit on a file check() accepts failed: " + put.ToString());
  }
  rw.reset();
  if (put.ok()) ExpectCommitReadBack(rw_reads, key, value, sound, ro_options);
}

}  // namespace

void RunOracle(const std::string& image) {
  auto fs = MakeFileSystem(image);
  Options ro_options;
  ro_options.file_system = fs;
  ro_options.read_only = true;
  Options rw_options = ro_options;
  rw_options.read_only = false;

  const FirstLook look = ReadOnlyLook(image, ro_options);
  bool converted = false;
  if (!OlderVersion(image, look, rw_options, &converted)) return;
  Reads rw_reads;
  std::unique_ptr<DB> rw = ReadWriteLook(look, converted, rw_options, &rw_reads);
  ReadOnlyAgain(look, rw_reads, ro_options);
  if (rw) CommitOnIt(std::move(rw), rw_reads, look.report.has_value(), image.size(), ro_options);
  // 5. Every verified byte is verified.
  if (look.report) ExpectFlipNoticed(image, look.reads.txn_id, *look.report);
}

std::string RecomputeChecksums(std::string f) {
  using dbdb::coding::DecodeFixed32;
  using dbdb::coding::DecodeFixed64;
  using dbdb::coding::EncodeFixed64;
  if (f.size() >= format::kFileHeaderChecksumOffset + 8) {
    EncodeFixed64(f.data() + format::kFileHeaderChecksumOffset, XXH3_64bits(f.data(), format::kFileHeaderChecksumOffset));
  }
  uint64_t offset = format::kFileHeaderSizeBytes;
  while (offset <= f.size() && f.size() - offset >= format::kRecordOverheadBytes) {
    uint64_t length = DecodeFixed32(f.data() + offset);
    if (length > f.size() - offset - format::kRecordOverheadBytes) break;
    char* payload = f.data() + offset + format::kRecordHeaderSizeBytes;
    if (static_cast<uint8_t>(f[offset + 4]) == static_cast<uint8_t>(format::RecordType::kCommit) &&
        (length == format::kCommitPayloadSizeBytes || length == format::kCommitPayloadSizeBytesV1)) {
      uint64_t body_offset = DecodeFixed64(payload + 16);
      if (body_offset <= offset) {
        uint64_t body = format::BodyChecksum(body_offset, std::string_view(f).substr(body_offset, offset - body_offset));
        EncodeFixed64(payload + 24, body);
      }
    }
    uint64_t checksum = format::RecordChecksum(offset, std::string_view(f).substr(offset, format::kRecordHeaderSizeBytes + length));
    EncodeFixed64(payload + length, checksum);
    offset += format::kRecordOverheadBytes + length;
  }
  return f;
}

}  // namespace dbdb_fuzz
