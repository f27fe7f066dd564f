// The engine under test: one interface through which the harness (the crash-state explorer, the
// crash oracle, the reference model, dbdb-crash campaigns) drives any key/value engine whose every
// file access goes through a dbdb::FileSystem, and so through the simulated power-loss filesystem.
//
// An engine is a library plus a configuration ("sqlite/wal-full", "leveldb/sync"); each
// configuration states what its documentation promises after a power loss (docs/ENGINES.md), and
// that promise is the oracle the explorer holds it to:
//   durable      every acknowledged commit survives, the recovered state is a whole prefix of the
//                commits (I1 atomic, I2 durable, I3 prefix);
//   non-durable  a suffix of acknowledged commits may be lost, but what recovers is a whole prefix,
//                without a corruption error (I1, I3).
// Anything else is a finding.
//
// Adapters (faultfs/engines/): a sqlite3_vfs, a leveldb::Env and a rocksdb::FileSystem onto
// dbdb::FileSystem, each written to do what the engine's own POSIX code does (which files it syncs,
// when it syncs a directory); where one cannot, docs/ENGINES.md says so.
#pragma once

#include <dbdb/file_system.h>
#include <dbdb/status.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace faultfs {

// A batch of puts (a value) and deletes (nullopt), committed atomically; the last change to a key
// wins.
using EngineBatch = std::vector<std::pair<std::string, std::optional<std::string>>>;

// One consistent view of the whole database: every key and value, and the number of the newest
// commit it shows for an engine that numbers its commits (dbdb), nullopt otherwise.
struct EngineView {
  std::map<std::string, std::string> state;
  std::optional<uint64_t> number;
};

// What the processes of one simulated machine share outside its files: memory an engine maps
// between processes (SQLite's WAL index) and what the kernel keeps for them (SQLite's byte-range
// lock table). One per machine boot, lost with the power: a machine built from a crash image gets a
// new one. An adapter keeps its own object under its own key.
class EngineMachine {
 public:
  template <typename T>
  std::shared_ptr<T> Shared(const std::string& key) {
    std::lock_guard<std::mutex> guard(mutex_);
    std::shared_ptr<void>& slot = slots_[key];
    if (!slot) slot = std::make_shared<T>();
    return std::static_pointer_cast<T>(slot);
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<void>> slots_;
};

struct EngineOpenOptions {
  // A read-only handle (only for engines whose info().multi_process is true): never writes the
  // database; NotFound if it does not exist.
  bool read_only = false;
  // The machine this handle's process runs on; null: a machine of its own (nothing shared).
  std::shared_ptr<EngineMachine> machine;
};

// One open handle on an engine's database.
class EngineHandle {
 public:
  virtual ~EngineHandle() = default;
  // Commits the batch atomically, as durably as the configuration says.
  virtual dbdb::Status Commit(const EngineBatch& batch) = 0;
  // The value of `key`, nullopt if absent.
  virtual dbdb::Result<std::optional<std::string>> Get(const std::string& key) = 0;
  // Every key and value, in key order.
  virtual dbdb::Result<std::map<std::string, std::string>> ScanAll() = 0;
  // The engine's own maintenance, synchronously: dbdb compacts, LevelDB and RocksDB flush and
  // compact their whole key range, SQLite checkpoints its WAL (or vacuums a rollback database).
  virtual dbdb::Status Compact() = 0;
  // The engine's own integrity check (dbdb check(), SQLite integrity_check, RocksDB checksums).
  virtual dbdb::Status Check() = 0;
  // The number of the newest commit this handle sees, for an engine that numbers its commits
  // (dbdb); nullopt otherwise (the explorer then writes a marker key in every commit).
  virtual dbdb::Result<std::optional<uint64_t>> CommitNumber() { return std::optional<uint64_t>(); }
  // Extra checks after the first write following recovery (dbdb: the torn tail was truncated, I6).
  virtual dbdb::Status CheckAfterFirstWrite() { return dbdb::Status::Ok(); }

  // One consistent view (one snapshot) of everything. The default reads ScanAll and CommitNumber
  // one after the other, which is one view only while no other process writes.
  virtual dbdb::Result<EngineView> Read();
  // Commits on the newest state, as a read-modify-write transaction would: inside the write
  // transaction (once no other writer can commit), reads the state it builds on and calls `build`
  // with it, once, before writing anything; commits the batch `build` returns, or abandons the
  // transaction (Aborted) without writing if it returns nullopt. The default (Read, then Commit) is
  // that only while no other process writes: an engine that supports several processes overrides
  // it.
  using BatchBuilder = std::function<std::optional<EngineBatch>(const EngineView& base)>;
  virtual dbdb::Status CommitOnBase(const BatchBuilder& build);
  // What the engine promises about this handle after Commit failed with `failure`, checked: a
  // description of the broken promise, or "" (dbdb: after a failure on the write path the handle
  // refuses writes until reopened, I7).
  virtual std::string CheckAfterFailedCommit(const dbdb::Status& failure) {
    (void)failure;
    return "";
  }
};

struct EngineInfo {
  std::string engine;   // "sqlite"
  std::string config;   // "wal-full"
  std::string version;  // the library's, at run time
  bool durable = true;  // the documentation promises every acknowledged commit survives power loss
  // For a configuration that is not durable: an acknowledged commit is promised to survive once
  // this many later commits were acknowledged (SQLite's rollback journal under synchronous=FULL:
  // 1, the next commit syncs the directory that the last one's journal unlink left volatile);
  // 0: never (a suffix of any length may be lost).
  uint64_t durable_after = 0;
  std::string promise;  // what the documentation says, in short, with where it says it
  // Several processes may open the database at once, read-write and read-only, and writers are
  // serialized among them (dbdb, SQLite): the multi-process simulation (multiprocess.h) runs it.
  bool multi_process = false;
  // A read-only handle may refuse, with ReadOnly, a database that only a writer can recover
  // (SQLite: a hot journal, SQLITE_READONLY_ROLLBACK); dbdb's read-only handles recover alone.
  bool read_only_may_refuse_recovery = false;
  // A commit whose writer was killed before it returned may be seen by other processes before it
  // is durable, and a power cut then takes it back (SQLite: WAL recovery takes a dead writer's
  // frames from the page cache before any sync; under EXTRA, a writer killed between its journal's
  // unlink and the directory sync). Its findings say so; a workload held to the promise excuses
  // exactly that (multiprocess.h).
  bool killed_writers_commit_visible_before_durable = false;
  std::string name() const { return engine + "/" + config; }
};

// An engine in one configuration: opens handles on a filesystem.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual const EngineInfo& info() const = 0;
  // Opens (creating if missing, unless read-only) the database in directory `dir` of `fs`, the
  // filesystem as one process sees it. Every file the engine touches must go through `fs`.
  virtual dbdb::Result<std::unique_ptr<EngineHandle>> Open(std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                                           const EngineOpenOptions& options) = 0;
  dbdb::Result<std::unique_ptr<EngineHandle>> Open(std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir) {
    return Open(std::move(fs), dir, EngineOpenOptions{});
  }
};

// An engine from its description and how it opens a handle: what every adapter's engine is.
using EngineOpener = std::function<dbdb::Result<std::unique_ptr<EngineHandle>>(
    std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir, const EngineOpenOptions& options)>;
std::unique_ptr<Engine> MakeEngine(EngineInfo info, EngineOpener open);

// dbdb's own tuning, for the explorer's small-node, fold-often stores.
struct DbdbTuning {
  bool sync = true;
  uint64_t file_size_max_bytes = uint64_t{1} << 40;
  uint32_t node_size_target_bytes = 512;
  uint64_t fold_threshold_bytes = 1024;
  uint64_t auto_compact_slack_bytes = 4096;
  // 1: each handle merges its in-memory index of the unfolded log (Options::overlay_merge_keys)
  // as often as it may, every few commits of a small workload, so that merges are explored.
  uint32_t overlay_merge_keys = 1;
  // A close folds a log past this many bytes (Options::fold_on_close_bytes): small, so that the
  // small workloads' closes fold and close folds are explored (crash states, other processes).
  uint64_t fold_on_close_bytes = 512;
};

// Whether `name` ("engine/config", "engine", or "" for the default) names dbdb.
inline bool IsDbdbEngine(const std::string& name) {
  return name.empty() || name == "dbdb" || name.rfind("dbdb/", 0) == 0;
}

// Every configuration, "engine/config", in a fixed order (docs/ENGINES.md).
std::vector<std::string> EngineConfigurations();
// The engine for "engine/config" (or "engine" alone: its first configuration); InvalidArgument
// naming the known ones otherwise. `dbdb` tunes the dbdb configurations (its `sync` is ignored: the
// configuration says).
dbdb::Result<std::unique_ptr<Engine>> NewEngine(const std::string& name, const DbdbTuning& dbdb = {});

// The same engine held to the durable promise whatever its configuration says (info().durable
// true, the promise text saying so): a check that the explorer sees a non-durable configuration
// lose acknowledged commits (dbdb-crash --hold-to-durable).
std::unique_ptr<Engine> HoldToDurable(std::shared_ptr<Engine> engine);

// The adapters' factories (faultfs/engines/*.cc), for NewEngine.
std::unique_ptr<Engine> NewDbdbEngine(const std::string& config, const DbdbTuning& tuning);
std::unique_ptr<Engine> NewSqliteEngine(const std::string& config);
std::unique_ptr<Engine> NewLevelDbEngine(const std::string& config);
std::unique_ptr<Engine> NewRocksDbEngine(const std::string& config);

}  // namespace faultfs
