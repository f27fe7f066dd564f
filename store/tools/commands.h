// The commands of the `dbdb` tool, shared by the command line and the interactive shell.
//
// Exit codes (documented in README.md and `dbdb --help`):
//   0 success (for get: found)   1 not found   2 usage error   3 corruption
//   4 I/O error (including a full disk)        5 locked by another writer (Busy)
//   6 any other error (a limit, a read-only handle, a failed handle)
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dbdb/db.h"

namespace dbdb::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitNotFound = 1,
  kExitUsage = 2,
  kExitCorruption = 3,
  kExitIOError = 4,
  kExitLocked = 5,
  kExitOther = 6,
};

int ExitCodeFor(const Status& status);
// Prints "dbdb: <status>" to err and returns its exit code.
int Report(const Status& status, std::ostream& err);

// Bytes as text: printable ASCII as is, backslash and everything else as \xNN.
std::string Escape(std::string_view bytes);
// The inverse of Escape for user input: \xNN, \\, \n, \t; nullopt if malformed.
std::optional<std::string> Unescape(std::string_view text);

struct ScanArgs {
  std::optional<std::string> prefix, from, to;
  uint64_t limit = UINT64_MAX;
};

int Get(DB& db, const std::string& key, std::ostream& out, std::ostream& err);
int Put(DB& db, const std::string& key, const std::string& value, std::ostream& err);
int Del(DB& db, const std::string& key, std::ostream& err);
int Scan(DB& db, const ScanArgs& args, std::ostream& out, std::ostream& err);
int Incr(DB& db, const std::string& key, int64_t by, std::ostream& out, std::ostream& err);
int Stat(DB& db, std::ostream& out, std::ostream& err);
int Check(DB& db, std::ostream& out, std::ostream& err);
int Compact(DB& db, std::ostream& out, std::ostream& err);
// `dbdb dump`: the library's DumpFile (dbdb/dump.h), its errors reported as exit codes.
int Dump(const std::string& path, FileSystem& fs, bool show_values, std::ostream& out, std::ostream& err);
// The interactive shell: one command a line (see `help`), a prompt when `interactive`.
int Shell(DB& db, std::istream& in, std::ostream& out, std::ostream& err, bool interactive);

}  // namespace dbdb::cli
