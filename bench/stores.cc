// Adapters for dbdb, LMDB, LevelDB, RocksDB and SQLite.
#include "stores.h"

#include <dbdb/db.h>
#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/write_batch.h>
#include <lmdb.h>
#include <rocksdb/db.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sqlite3.h>

#include <mutex>

#include <filesystem>
#include <iostream>

namespace bench {

constexpr uint64_t kCacheBytes = 64ull << 20;

void Die(const std::string& what) {
  std::cerr << "dbdb-bench: " << what << std::endl;
  std::exit(3);
}

namespace {

class DbdbStore final : public Store {
 public:
  std::string name() const override { return "dbdb"; }
  void Open(const std::string& dir) override {
    dbdb::Options o;
    o.create_if_missing = true;
    o.node_cache_bytes = kCacheBytes;
    std::filesystem::create_directories(dir);
    auto db = dbdb::DB::Open(dir + "/data.dbdb", o);
    if (!db.ok()) Die("dbdb open: " + db.status().ToString());
    db_ = std::move(db).value();
  }
  void Close() override { db_.reset(); }
  void WriteBatch(const KeyValues& batch) override {
    // DB::Write, as LevelDB's and RocksDB's adapters use theirs: blind writes, group committed.
    dbdb::WriteBatch b;
    for (const auto& [k, v] : batch) b.Put(k, v);
    if (auto s = db_->Write(b); !s.ok()) Die("dbdb write: " + s.ToString());
  }
  bool Get(const std::string& key, std::string* value) override {
    // Into the caller's string, as the other adapters read (its capacity reused from get to get).
    auto found = db_->Get(key, value);
    if (!found.ok()) Die("dbdb get: " + found.status().ToString());
    return *found;
  }
  uint64_t Scan() override {
    auto snapshot = db_->GetSnapshot();
    if (!snapshot.ok()) Die("dbdb snapshot: " + snapshot.status().ToString());
    auto it = (*snapshot)->NewIterator();
    uint64_t n = 0;
    for (auto s = it->SeekToFirst(); it->Valid(); s = it->Next()) {
      if (!s.ok()) Die("dbdb scan: " + s.ToString());
      n++;
    }
    return n;
  }
  bool Compact() override {
    if (auto s = db_->Compact(); !s.ok()) Die("dbdb compact: " + s.ToString());
    return true;
  }
  std::vector<std::pair<std::string, double>> Counters() override {
    auto stats = db_->GetStats();
    if (!stats.ok()) Die("dbdb stats: " + stats.status().ToString());
    return {{"writer_stalls", static_cast<double>(stats->writer_stalls)},
            {"writer_stall_s", static_cast<double>(stats->writer_stall_micros) / 1e6},
            {"background_compactions", static_cast<double>(stats->background_compactions)}};
  }

 private:
  std::unique_ptr<dbdb::DB> db_;
};

void CheckMdb(int rc, const char* what) {
  if (rc != 0) Die(std::string("lmdb ") + what + ": " + mdb_strerror(rc));
}

class LmdbStore final : public Store {
 public:
  std::string name() const override { return "lmdb"; }
  void Open(const std::string& dir) override {
    std::filesystem::create_directories(dir);
    CheckMdb(mdb_env_create(&env_), "env_create");
    CheckMdb(mdb_env_set_mapsize(env_, 64ull << 30), "set_mapsize");
    CheckMdb(mdb_env_open(env_, dir.c_str(), 0, 0644), "env_open");  // default: sync on commit
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    CheckMdb(mdb_dbi_open(txn, nullptr, 0, &dbi_), "dbi_open");
    CheckMdb(mdb_txn_commit(txn), "txn_commit");
  }
  void Close() override {
    if (env_) mdb_env_close(env_);
    env_ = nullptr;
  }
  void WriteBatch(const KeyValues& batch) override {
    MDB_txn* txn;
    CheckMdb(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    for (const auto& [k, v] : batch) {
      MDB_val key{k.size(), const_cast<char*>(k.data())}, value{v.size(), const_cast<char*>(v.data())};
      CheckMdb(mdb_put(txn, dbi_, &key, &value, 0), "put");
    }
    CheckMdb(mdb_txn_commit(txn), "commit");
  }
  bool Get(const std::string& k, std::string* out) override {
    if (!read_txn_) CheckMdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &read_txn_), "read txn");
    else CheckMdb(mdb_txn_renew(read_txn_), "renew");
    MDB_val key{k.size(), const_cast<char*>(k.data())}, value;
    int rc = mdb_get(read_txn_, dbi_, &key, &value);
    bool found = rc == 0;
    if (rc != 0 && rc != MDB_NOTFOUND) CheckMdb(rc, "get");
    if (found) out->assign(static_cast<const char*>(value.mv_data), value.mv_size);
    mdb_txn_reset(read_txn_);
    return found;
  }
  uint64_t Scan() override {
    MDB_txn* txn;
    MDB_cursor* cursor;
    CheckMdb(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "read txn");
    CheckMdb(mdb_cursor_open(txn, dbi_, &cursor), "cursor");
    MDB_val key, value;
    uint64_t n = 0;
    for (int rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) n++;
    mdb_cursor_close(cursor);
    mdb_txn_abort(txn);
    return n;
  }
  ~LmdbStore() override {
    if (read_txn_) mdb_txn_abort(read_txn_);
    Close();
  }

 private:
  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  MDB_txn* read_txn_ = nullptr;
};

class LeveldbStore final : public Store {
 public:
  std::string name() const override { return "leveldb"; }
  void Open(const std::string& dir) override {
    cache_.reset(leveldb::NewLRUCache(kCacheBytes));
    leveldb::Options o;
    o.create_if_missing = true;
    o.block_cache = cache_.get();
    leveldb::DB* db;
    auto s = leveldb::DB::Open(o, dir, &db);
    if (!s.ok()) Die("leveldb open: " + s.ToString());
    db_.reset(db);
  }
  void Close() override { db_.reset(); }
  void WriteBatch(const KeyValues& batch) override {
    leveldb::WriteBatch b;
    for (const auto& [k, v] : batch) b.Put(k, v);
    leveldb::WriteOptions w;
    w.sync = true;
    auto s = db_->Write(w, &b);
    if (!s.ok()) Die("leveldb write: " + s.ToString());
  }
  bool Get(const std::string& k, std::string* v) override {
    auto s = db_->Get(leveldb::ReadOptions(), k, v);
    if (s.IsNotFound()) return false;
    if (!s.ok()) Die("leveldb get: " + s.ToString());
    return true;
  }
  uint64_t Scan() override {
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(leveldb::ReadOptions()));
    uint64_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) n++;
    return n;
  }

 private:
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<leveldb::DB> db_;
};

class RocksdbStore final : public Store {
 public:
  std::string name() const override { return "rocksdb"; }
  void Open(const std::string& dir) override {
    rocksdb::Options o;
    o.create_if_missing = true;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = rocksdb::NewLRUCache(kCacheBytes);
    o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    rocksdb::DB* db;
    auto s = rocksdb::DB::Open(o, dir, &db);
    if (!s.ok()) Die("rocksdb open: " + s.ToString());
    db_.reset(db);
  }
  void Close() override { db_.reset(); }
  void WriteBatch(const KeyValues& batch) override {
    rocksdb::WriteBatch b;
    for (const auto& [k, v] : batch) b.Put(k, v);
    rocksdb::WriteOptions w;
    w.sync = true;
    auto s = db_->Write(w, &b);
    if (!s.ok()) Die("rocksdb write: " + s.ToString());
  }
  bool Get(const std::string& k, std::string* v) override {
    auto s = db_->Get(rocksdb::ReadOptions(), k, v);
    if (s.IsNotFound()) return false;
    if (!s.ok()) Die("rocksdb get: " + s.ToString());
    return true;
  }
  uint64_t Scan() override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    uint64_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) n++;
    return n;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
};

class SqliteStore final : public Store {
 public:
  std::string name() const override { return "sqlite"; }
  void Open(const std::string& dir) override {
    std::filesystem::create_directories(dir);
    Check(sqlite3_open((dir + "/data.sqlite").c_str(), &db_), "open");
    Exec("PRAGMA journal_mode=WAL");
    Exec("PRAGMA synchronous=FULL");
    Exec("PRAGMA cache_size=-65536");  // 64 MiB
    Exec("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID");
    Check(sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO kv VALUES (?, ?)", -1, &put_, nullptr), "prepare put");
    Check(sqlite3_prepare_v2(db_, "SELECT v FROM kv WHERE k = ?", -1, &get_, nullptr), "prepare get");
  }
  void Close() override {
    if (put_) sqlite3_finalize(put_);
    if (get_) sqlite3_finalize(get_);
    put_ = get_ = nullptr;
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
  }
  void WriteBatch(const KeyValues& batch) override {
    std::lock_guard<std::mutex> guard(write_mutex_);  // one connection: its statements are not shared
    Exec("BEGIN");
    for (const auto& [k, v] : batch) {
      sqlite3_bind_blob(put_, 1, k.data(), static_cast<int>(k.size()), SQLITE_STATIC);
      sqlite3_bind_blob(put_, 2, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
      if (sqlite3_step(put_) != SQLITE_DONE) Die(std::string("sqlite put: ") + sqlite3_errmsg(db_));
      sqlite3_reset(put_);
    }
    Exec("COMMIT");
  }
  bool Get(const std::string& k, std::string* v) override {
    sqlite3_bind_blob(get_, 1, k.data(), static_cast<int>(k.size()), SQLITE_STATIC);
    int rc = sqlite3_step(get_);
    bool found = rc == SQLITE_ROW;
    if (found) v->assign(static_cast<const char*>(sqlite3_column_blob(get_, 0)), sqlite3_column_bytes(get_, 0));
    else if (rc != SQLITE_DONE) Die(std::string("sqlite get: ") + sqlite3_errmsg(db_));
    sqlite3_reset(get_);
    return found;
  }
  uint64_t Scan() override {
    sqlite3_stmt* scan;
    Check(sqlite3_prepare_v2(db_, "SELECT k, v FROM kv ORDER BY k", -1, &scan, nullptr), "prepare scan");
    uint64_t n = 0;
    while (sqlite3_step(scan) == SQLITE_ROW) {
      (void)sqlite3_column_blob(scan, 1);
      n++;
    }
    sqlite3_finalize(scan);
    return n;
  }
  ~SqliteStore() override { Close(); }

 private:
  void Check(int rc, const char* what) {
    if (rc != SQLITE_OK) Die(std::string("sqlite ") + what + ": " + (db_ ? sqlite3_errmsg(db_) : "?"));
  }
  void Exec(const char* sql) { Check(sqlite3_exec(db_, sql, nullptr, nullptr, nullptr), sql); }
  sqlite3* db_ = nullptr;
  std::mutex write_mutex_;
  sqlite3_stmt* put_ = nullptr;
  sqlite3_stmt* get_ = nullptr;
};

}  // namespace

const std::vector<std::string>& StoreNames() {
  static const std::vector<std::string> names = {"dbdb", "lmdb", "leveldb", "rocksdb", "sqlite"};
  return names;
}

std::unique_ptr<Store> MakeStore(const std::string& name) {
  if (name == "dbdb") return std::make_unique<DbdbStore>();
  if (name == "lmdb") return std::make_unique<LmdbStore>();
  if (name == "leveldb") return std::make_unique<LeveldbStore>();
  if (name == "rocksdb") return std::make_unique<RocksdbStore>();
  if (name == "sqlite") return std::make_unique<SqliteStore>();
  Die("unknown store " + name);
}

}  // namespace bench
