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

namespace {

// Every option's value, filled in by CLI11.
struct Args {
  std::string path, key, value, prefix, from, to;
  bool create = false, no_sync = false, no_wait = false, show_values = false;
  int64_t by = 1;
  uint64_t limit = UINT64_MAX;
};

// The subcommands, to ask which one was parsed.
struct Commands {
  CLI::App *get, *put, *del, *incr, *scan, *stat, *check, *compact, *upgrade, *dump, *shell;
  bool Writes() const {
    return put->parsed() || del->parsed() || incr->parsed() || compact->parsed() || shell->parsed();
  }
};

Commands Declare(CLI::App& app, Args& a) {
  app.require_subcommand(1);
  auto add_common = [&](CLI::App* sub, bool writes) {
    sub->add_option("DB", a.path, "database file")->required();
    if (writes) {
      sub->add_flag("--create", a.create, "create the database if it does not exist");
      sub->add_flag("--no-sync", a.no_sync, "do not sync commits (NOT durable)");
    }
    sub->add_flag("--no-wait", a.no_wait, "fail with exit code 5 instead of waiting for another writer");
    return sub;
  };
  Commands c;
  c.get = add_common(app.add_subcommand("get", "print the value of KEY (exit 1 if absent)"), false);
  c.get->add_option("KEY", a.key)->required();
  c.put = add_common(app.add_subcommand("put", "set KEY to VALUE in one durable commit"), true);
  c.put->add_option("KEY", a.key)->required();
  c.put->add_option("VALUE", a.value)->required();
  c.del = add_common(app.add_subcommand("del", "delete KEY (absent is not an error)"), true);
  c.del->add_option("KEY", a.key)->required();
  c.incr = add_common(
      app.add_subcommand("incr", "atomically add --by (default 1) to the integer at KEY; prints it"), true);
  c.incr->add_option("KEY", a.key)->required();
  c.incr->add_option("--by", a.by, "amount, may be negative");
  c.scan = add_common(app.add_subcommand("scan", "print keys and values in order (tab-separated)"), false);
  c.scan->add_option("--prefix", a.prefix, "only keys with this prefix");
  c.scan->add_option("--from", a.from, "only keys >= FROM");
  c.scan->add_option("--to", a.to, "only keys < TO");
  c.scan->add_option("--limit", a.limit, "at most N pairs")->check(CLI::PositiveNumber);
  c.stat = add_common(app.add_subcommand("stat", "keys, commits, file size, live bytes, garbage ratio"), false);
  c.check =
      add_common(app.add_subcommand("check", "verify every record and tree invariant (exit 3 on corruption)"), false);
  c.compact = add_common(app.add_subcommand("compact", "rewrite the newest commit into a fresh file"), true);
  c.upgrade = app.add_subcommand("upgrade", "convert a file of an older format (1 to 4) to the current one (a compaction)");
  c.upgrade->add_option("DB", a.path, "database file")->required();
  c.upgrade->add_flag("--no-wait", a.no_wait, "fail with exit code 5 instead of waiting for another writer");
  c.dump = app.add_subcommand("dump", "print every record of the file: nodes, batches, checkpoints, commits, seals, tail");
  c.dump->add_option("DB", a.path, "database file")->required();
  c.dump->add_flag("--values", a.show_values, "print values, not only their sizes");
  c.shell = add_common(app.add_subcommand("shell", "interactive prompt (reads commands from stdin; try help)"), true);
  return c;
}

// Turns the \xNN escapes of every byte argument into bytes; false if one is malformed.
bool UnescapeAll(Args& a) {
  for (std::string* text : {&a.key, &a.value, &a.prefix, &a.from, &a.to}) {
    auto bytes = cli::Unescape(*text);
    if (!bytes) return false;
    *text = *bytes;
  }
  return true;
}

int Upgrade(const Args& a, std::shared_ptr<FileSystem> fs) {
  Options options;
  options.file_system = std::move(fs);
  options.wait_for_writer = !a.no_wait;
  Status s = DB::Upgrade(a.path, options);
  if (!s.ok()) return cli::Report(s, std::cerr);
  std::cout << a.path << ": upgraded (or already) in the current format\n";
  return cli::kExitOk;
}

// The commands that run on an open handle.
int RunOnHandle(const Commands& c, const Args& a, DB& db) {
  if (c.get->parsed()) return cli::Get(db, a.key, std::cout, std::cerr);
  if (c.put->parsed()) return cli::Put(db, a.key, a.value, std::cerr);
  if (c.del->parsed()) return cli::Del(db, a.key, std::cerr);
  if (c.incr->parsed()) return cli::Incr(db, a.key, a.by, std::cout, std::cerr);
  if (c.scan->parsed()) {
    cli::ScanArgs args;
    if (c.scan->count("--prefix")) args.prefix = a.prefix;
    if (c.scan->count("--from")) args.from = a.from;
    if (c.scan->count("--to")) args.to = a.to;
    args.limit = a.limit;
    return cli::Scan(db, args, std::cout, std::cerr);
  }
  if (c.stat->parsed()) return cli::Stat(db, std::cout, std::cerr);
  if (c.check->parsed()) return cli::Check(db, std::cout, std::cerr);
  if (c.compact->parsed()) return cli::Compact(db, std::cout, std::cerr);
  if (c.shell->parsed()) return cli::Shell(db, std::cin, std::cout, std::cerr, ::isatty(0) != 0);
  return cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dbdb: an embedded, ordered, transactional key/value store in one append-only file.\n"
      "Keys and values are bytes; arguments take \\xNN escapes and output escapes non-printables.\n"
      "Exit codes: 0 ok (get: found), 1 not found, 2 usage, 3 corruption, 4 I/O error, 5 locked,\n"
      "6 other error (limits, read-only, failed handle)."};
  Args a;
  const Commands c = Declare(app, a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? cli::kExitOk : cli::kExitUsage;
  }
  if (!UnescapeAll(a)) {
    std::cerr << "dbdb: bad escape in an argument (use \\xNN, \\\\, \\n or \\t)\n";
    return cli::kExitUsage;
  }
  auto fs = NewPosixFileSystem();
  if (c.dump->parsed()) return cli::Dump(a.path, *fs, a.show_values, std::cout, std::cerr);
  if (c.upgrade->parsed()) return Upgrade(a, fs);
  Options options;
  options.file_system = fs;
  options.create_if_missing = a.create;
  options.read_only = !c.Writes();
  options.wait_for_writer = !a.no_wait;
  options.durability = a.no_sync ? Durability::kNoSync : Durability::kSync;
  auto db = DB::Open(a.path, options);
  if (!db.ok()) return cli::Report(db.status(), std::cerr);
  return RunOnHandle(c, a, **db);
}
