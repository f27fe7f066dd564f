// dbdb: the command-line tool and shell for dbdb databases.
//
//   dbdb get DB KEY | put DB KEY VALUE | del DB KEY | incr DB KEY [--by N]
//   dbdb scan DB [--prefix P] [--from A] [--to B] [--limit N]
//   dbdb stat DB | check DB | compact DB | upgrade DB | dump DB [--values] | shell DB
// Exit codes: see commands.h (0 ok/found, 1 not found, 2 usage, 3 corruption, 4 I/O, 5 locked,
// 6 other).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"

using namespace dbdb;

int main(int argc, char** argv) {
  CLI::App app{
      "dbdb: an embedded, ordered, transactional key/value store in one append-only file.\n"
      "Keys and values are bytes; arguments take \\xNN escapes and output escapes non-printables.\n"
      "Exit codes: 0 ok (get: found), 1 not found, 2 usage, 3 corruption, 4 I/O error, 5 locked,\n"
      "6 other error (limits, read-only, failed handle)."};
  app.require_subcommand(1);
  std::string path, key, value, prefix, from, to;
  bool create = false, no_sync = false, no_wait = false, show_values = false;
  int64_t by = 1;
  uint64_t limit = UINT64_MAX;
  auto add_common = [&](CLI::App* sub, bool writes) {
    sub->add_option("DB", path, "database file")->required();
    if (writes) {
      sub->add_flag("--create", create, "create the database if it does not exist");
      sub->add_flag("--no-sync", no_sync, "do not sync commits (NOT durable)");
    }
    sub->add_flag("--no-wait", no_wait, "fail with exit code 5 instead of waiting for another writer");
  };
  auto* get = app.add_subcommand("get", "print the value of KEY (exit 1 if absent)");
  add_common(get, false);
  get->add_option("KEY", key)->required();
  auto* put = app.add_subcommand("put", "set KEY to VALUE in one durable commit");
  add_common(put, true);
  put->add_option("KEY", key)->required();
  put->add_option("VALUE", value)->required();
  auto* del = app.add_subcommand("del", "delete KEY (absent is not an error)");
  add_common(del, true);
  del->add_option("KEY", key)->required();
  auto* incr = app.add_subcommand("incr", "atomically add --by (default 1) to the integer at KEY; prints it");
  add_common(incr, true);
  incr->add_option("KEY", key)->required();
  incr->add_option("--by", by, "amount, may be negative");
  auto* scan = app.add_subcommand("scan", "print keys and values in order (tab-separated)");
  add_common(scan, false);
  scan->add_option("--prefix", prefix, "only keys with this prefix");
  scan->add_option("--from", from, "only keys >= FROM");
  scan->add_option("--to", to, "only keys < TO");
  scan->add_option("--limit", limit, "at most N pairs")->check(CLI::PositiveNumber);
  auto* stat = app.add_subcommand("stat", "keys, commits, file size, live bytes, garbage ratio");
  add_common(stat, false);
  auto* check = app.add_subcommand("check", "verify every record and tree invariant (exit 3 on corruption)");
  add_common(check, false);
  auto* compact = app.add_subcommand("compact", "rewrite the newest commit into a fresh file");
  add_common(compact, true);
  auto* upgrade = app.add_subcommand("upgrade", "convert a format-1 file to the current format (a compaction)");
  upgrade->add_option("DB", path, "database file")->required();
  upgrade->add_flag("--no-wait", no_wait, "fail with exit code 5 instead of waiting for another writer");
  auto* dump = app.add_subcommand("dump", "print every record of the file: nodes, commits, tail");
  dump->add_option("DB", path, "database file")->required();
  dump->add_flag("--values", show_values, "print values, not only their sizes");
  auto* shell = app.add_subcommand("shell", "interactive prompt (reads commands from stdin; try help)");
  add_common(shell, true);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? cli::kExitOk : cli::kExitUsage;
  }

  auto unescape = [](const std::string& text, std::string* out) {
    auto u = cli::Unescape(text);
    if (!u) return false;
    *out = *u;
    return true;
  };
  if (!unescape(key, &key) || !unescape(value, &value) || !unescape(prefix, &prefix) || !unescape(from, &from) ||
      !unescape(to, &to)) {
    std::cerr << "dbdb: bad escape in an argument (use \\xNN, \\\\, \\n or \\t)\n";
    return cli::kExitUsage;
  }
  auto fs = NewPosixFileSystem();
  if (dump->parsed()) return cli::Dump(path, *fs, show_values, std::cout, std::cerr);
  if (upgrade->parsed()) {
    Options options;
    options.file_system = fs;
    options.wait_for_writer = !no_wait;
    Status s = DB::Upgrade(path, options);
    if (!s.ok()) return cli::Report(s, std::cerr);
    std::cout << path << ": upgraded (or already) in the current format\n";
    return cli::kExitOk;
  }

  bool writes = put->parsed() || del->parsed() || incr->parsed() || compact->parsed() || shell->parsed();
  Options options;
  options.file_system = fs;
  options.create_if_missing = create;
  options.read_only = !writes;
  options.wait_for_writer = !no_wait;
  options.durability = no_sync ? Durability::kNoSync : Durability::kSync;
  auto db = DB::Open(path, options);
  if (!db.ok()) return cli::Report(db.status(), std::cerr);
  DB& d = **db;
  if (get->parsed()) return cli::Get(d, key, std::cout, std::cerr);
  if (put->parsed()) return cli::Put(d, key, value, std::cerr);
  if (del->parsed()) return cli::Del(d, key, std::cerr);
  if (incr->parsed()) return cli::Incr(d, key, by, std::cout, std::cerr);
  if (scan->parsed()) {
    cli::ScanArgs args;
    if (scan->count("--prefix")) args.prefix = prefix;
    if (scan->count("--from")) args.from = from;
    if (scan->count("--to")) args.to = to;
    args.limit = limit;
    return cli::Scan(d, args, std::cout, std::cerr);
  }
  if (stat->parsed()) return cli::Stat(d, std::cout, std::cerr);
  if (check->parsed()) return cli::Check(d, std::cout, std::cerr);
  if (compact->parsed()) return cli::Compact(d, std::cout, std::cerr);
  if (shell->parsed()) return cli::Shell(d, std::cin, std::cout, std::cerr, ::isatty(0) != 0);
  return cli::kExitUsage;
}
