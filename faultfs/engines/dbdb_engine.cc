// dbdb itself as an engine under test (engine.h): the store on the simulated filesystem directly
// (it already speaks dbdb::FileSystem), numbering its commits, with its own check() and the tail
// truncation check (I6) after the first write that follows a recovery.
#include <dbdb/db.h>

#include <algorithm>

#include "faultfs/engine.h"

namespace faultfs {
namespace {

class DbdbHandle final : public EngineHandle {
 public:
  explicit DbdbHandle(std::unique_ptr<dbdb::DB> db) : db_(std::move(db)) {}

  dbdb::Status Commit(const EngineBatch& batch) override {
    auto txn = db_->BeginWrite();
    dbdb::Status s = txn.status();
    for (const auto& [key, value] : batch) {
      if (s.ok()) s = value ? (*txn)->Put(key, *value) : (*txn)->Del(key);
    }
    return s.ok() ? (*txn)->Commit() : s;
  }

  dbdb::Result<std::optional<std::string>> Get(const std::string& key) override { return db_->Get(key); }

  dbdb::Result<std::map<std::string, std::string>> ScanAll() override {
    auto view = Read();
    if (!view.ok()) return view.status();
    return std::move(view->state);
  }

  dbdb::Result<EngineView> Read() override {
    auto snapshot = db_->GetSnapshot();
    if (!snapshot.ok()) return snapshot.status();
    return ViewOf(**snapshot, (*snapshot)->txn_id());
  }

  // A change the transaction refuses to buffer is InvalidArgument, whatever dbdb said: the harness
  // keeps keys and values within the configured limits, so it is a defect, never an answer.
  dbdb::Status CommitOnBase(const BatchBuilder& build) override {
    auto txn = db_->BeginWrite();
    if (!txn.ok()) return txn.status();
    auto base = ViewOf(**txn, (*txn)->base_txn_id());
    if (!base.ok()) return base.status();
    std::optional<EngineBatch> batch = build(*base);
    if (!batch) {
      (*txn)->Abort();
      return dbdb::Status::Aborted("the caller abandoned the commit");
    }
    for (const auto& [key, value] : *batch) {
      dbdb::Status s = value ? (*txn)->Put(key, *value) : (*txn)->Del(key);
      if (!s.ok()) return dbdb::Status::InvalidArgument("buffering a change failed: " + s.ToString());
    }
    return (*txn)->Commit();
  }

  // I7: a handle whose commit failed on the write path (writing, syncing or sealing it) refuses
  // writes until reopened.
  std::string CheckAfterFailedCommit(const dbdb::Status& failure) override {
    const std::string& m = failure.message();
    bool write_path = m.find("writing commit") != std::string::npos || m.find("syncing commit") != std::string::npos ||
                      m.find("sealing commit") != std::string::npos;
    if (!write_path) return "";
    auto again = db_->BeginWrite();
    if (!again.ok() && again.status().code() == dbdb::StatusCode::kFailed) return "";
    return "after a failed commit (" + failure.ToString() + ") the handle still accepts writes (I7)";
  }

  dbdb::Status Compact() override { return db_->Compact(); }

  dbdb::Status Check() override { return db_->Check().status(); }

  dbdb::Result<std::optional<uint64_t>> CommitNumber() override {
    auto snapshot = db_->GetSnapshot();
    if (!snapshot.ok()) return snapshot.status();
    return std::optional<uint64_t>((*snapshot)->txn_id());
  }

  // I6: the first writer truncates whatever follows the newest commit before appending.
  dbdb::Status CheckAfterFirstWrite() override {
    auto report = db_->Check();
    if (!report.ok()) return report.status();
    if (report->tail_bytes != 0) {
      return dbdb::Status::Corruption("after the first write the tail is not truncated: " +
                                      std::to_string(report->tail_bytes) + " bytes remain (I6)");
    }
    return dbdb::Status::Ok();
  }

 private:
  // Everything a snapshot or a transaction shows.
  template <typename View>
  static dbdb::Result<EngineView> ViewOf(View& view, uint64_t number) {
    auto all = view.Scan(dbdb::ScanRange{});
    if (!all.ok()) return all.status();
    EngineView out;
    for (auto& kv : *all) out.state.emplace(std::move(kv.key), std::move(kv.value));
    out.number = number;
    return out;
  }

  std::unique_ptr<dbdb::DB> db_;
};

// Opens dbdb with the explorer's tuning.
dbdb::Result<std::unique_ptr<EngineHandle>> OpenDbdb(const DbdbTuning& tuning, std::shared_ptr<dbdb::FileSystem> fs,
                                                     const std::string& dir, const EngineOpenOptions& options) {
  dbdb::Options o;
  o.file_system = std::move(fs);
  o.create_if_missing = !options.read_only;
  o.read_only = options.read_only;
  o.file_size_max_bytes = tuning.file_size_max_bytes;
  o.durability = tuning.sync ? dbdb::Durability::kSync : dbdb::Durability::kNoSync;
  o.node_size_target_bytes = tuning.node_size_target_bytes;
  o.key_size_max_bytes = std::min<uint32_t>(64, tuning.node_size_target_bytes / 4);
  o.fold_threshold_bytes = tuning.fold_threshold_bytes;
  o.auto_compact_slack_bytes = tuning.auto_compact_slack_bytes;
  o.overlay_merge_keys = tuning.overlay_merge_keys;
  o.fold_on_close_bytes = tuning.fold_on_close_bytes;
  o.value_size_max_bytes = 1 << 16;
  o.node_cache_bytes = 1 << 20;
  // dbdb is one file: the engine's "directory" is that file's path.
  auto db = dbdb::DB::Open(dir, o);
  if (!db.ok()) return db.status();
  return std::unique_ptr<EngineHandle>(new DbdbHandle(std::move(db).value()));
}

class FunctionEngine final : public Engine {
 public:
  FunctionEngine(EngineInfo info, EngineOpener open) : info_(std::move(info)), open_(std::move(open)) {}
  const EngineInfo& info() const override { return info_; }
  using Engine::Open;
  dbdb::Result<std::unique_ptr<EngineHandle>> Open(std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                                   const EngineOpenOptions& options) override {
    if (options.read_only && !info_.multi_process) {
      return dbdb::Status::InvalidArgument(info_.name() + " does not open read-only handles beside a writer");
    }
    return open_(std::move(fs), dir, options);
  }

 private:
  EngineInfo info_;
  EngineOpener open_;
};

}  // namespace

dbdb::Result<EngineView> EngineHandle::Read() {
  auto state = ScanAll();
  if (!state.ok()) return state.status();
  auto number = CommitNumber();
  if (!number.ok()) return number.status();
  return EngineView{std::move(state).value(), *number};
}

dbdb::Status EngineHandle::CommitOnBase(const BatchBuilder& build) {
  auto base = Read();
  if (!base.ok()) return base.status();
  std::optional<EngineBatch> batch = build(*base);
  if (!batch) return dbdb::Status::Aborted("the caller abandoned the commit");
  return Commit(*batch);
}

std::unique_ptr<Engine> MakeEngine(EngineInfo info, EngineOpener open) {
  return std::make_unique<FunctionEngine>(std::move(info), std::move(open));
}

std::unique_ptr<Engine> HoldToDurable(std::shared_ptr<Engine> engine) {
  EngineInfo info = engine->info();
  info.promise = "held to the durable promise for this run; its own: " + info.promise;
  info.durable = true;
  info.durable_after = 0;
  return MakeEngine(std::move(info), [engine](std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                               const EngineOpenOptions& options) {
    return engine->Open(std::move(fs), dir, options);
  });
}

std::unique_ptr<Engine> NewDbdbEngine(const std::string& config, const DbdbTuning& tuning) {
  if (config != "sync" && config != "nosync") return nullptr;
  EngineInfo info;
  info.engine = "dbdb";
  info.config = config;
  info.version = "format 3";
  DbdbTuning t = tuning;
  t.sync = config == "sync";
  info.durable = t.sync;
  info.multi_process = true;
  info.promise = t.sync ? "Durability::kSync: a returned commit survives power loss (db.h; DESIGN.md I2)"
                        : "Durability::kNoSync: a crash may lose any suffix of recent commits, never a part of one, "
                          "never a commit without the ones before it (db.h)";
  return MakeEngine(std::move(info), [t](std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                          const EngineOpenOptions& options) {
    return OpenDbdb(t, std::move(fs), dir, options);
  });
}

std::vector<std::string> EngineConfigurations() {
#ifdef DBDB_NO_FOREIGN_ENGINES
  return {"dbdb/sync", "dbdb/nosync"};
#else
  return {"dbdb/sync",         "dbdb/nosync",      "sqlite/wal-full", "sqlite/wal-normal", "sqlite/rollback-full",
          "sqlite/rollback-extra", "leveldb/sync", "leveldb/nosync",  "rocksdb/sync",      "rocksdb/nowal"};
#endif
}

dbdb::Result<std::unique_ptr<Engine>> NewEngine(const std::string& name, const DbdbTuning& dbdb) {
  std::string engine = name, config;
  bool has_config = false;
  if (auto slash = name.find('/'); slash != std::string::npos) {
    engine = name.substr(0, slash);
    config = name.substr(slash + 1);
    has_config = true;
  }
  if (!has_config) {
    for (const std::string& known : EngineConfigurations()) {
      if (known.rfind(engine + "/", 0) == 0) {
        config = known.substr(engine.size() + 1);
        break;
      }
    }
  }
  std::unique_ptr<Engine> e;
  if (engine == "dbdb") e = NewDbdbEngine(config, dbdb);
#ifdef DBDB_NO_FOREIGN_ENGINES
  if (engine != "dbdb") {
    return dbdb::Status::InvalidArgument("engine '" + engine + "' is not built in this tree (DBDB_FOREIGN_ENGINES=OFF)");
  }
#else
  if (engine == "sqlite") e = NewSqliteEngine(config);
  if (engine == "leveldb") e = NewLevelDbEngine(config);
  if (engine == "rocksdb") e = NewRocksDbEngine(config);
#endif
  if (!e) {
    std::string known;
    for (const std::string& k : EngineConfigurations()) known += (known.empty() ? "" : ", ") + k;
    return dbdb::Status::InvalidArgument("unknown engine configuration '" + name + "' (known: " + known + ")");
  }
  return e;
}

}  // namespace faultfs
