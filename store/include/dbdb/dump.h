// dbdb/dump.h: the record listing of `dbdb dump`, for tools and tests that inspect a file.
//
//   dbdb::Status s = dbdb::DumpFile("data.dbdb", {.show_values = true}, std::cout);
//
// DumpFile reads the file directly and read-only, with no DB handle and no lock: every record in
// order with its fields (commits, batches, seals, nodes), then what follows the newest commit or
// seal as the tail. It streams: the file is read front to back through a 1 MiB window, holding at
// most one window or one verified record if larger, whatever the file's size. A record whose
// length runs past the end or above the format's limit, or whose checksum fails, is where the tail
// starts. The listing's lines are docs/FORMAT.md's worked example.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>

#include "dbdb/file_system.h"
#include "dbdb/status.h"

namespace dbdb {

struct DumpOptions {
  bool show_values = false;  // print keys and values; values' sizes only when false
  std::shared_ptr<FileSystem> file_system;  // default: the POSIX filesystem
};

// Writes the listing to `out`. Errors: NotFound, IOError (a failed read), Corruption (a header
// that is not a dbdb header); nothing is written to the file.
Status DumpFile(const std::string& path, const DumpOptions& options, std::ostream& out);

// Bytes as text, as the listing and the `dbdb` tool print keys and values: printable ASCII as is,
// backslash and everything else as \xNN.
std::string EscapeBytes(std::string_view bytes);

}  // namespace dbdb
