// SQLite as an engine under test (engine.h): a sqlite3_vfs onto dbdb::FileSystem, written to do
// what SQLite's own unix VFS (os_unix.c) does where it matters for power loss:
//  - a journal, WAL or super-journal opened with SQLITE_OPEN_CREATE is marked DIRSYNC: its first
//    successful xSync also syncs its directory (errors of that directory sync ignored, as unixSync
//    does), once;
//  - xDelete syncs the directory only when asked (dirSync), and then reports a failure as
//    SQLITE_IOERR_DIR_FSYNC; a missing file is SQLITE_IOERR_DELETE_NOENT;
//  - a file opened with DELETEONCLOSE is unlinked right after it is opened;
//  - xAccess(EXISTS) is true only for a file that exists and is not empty;
//  - a short read fills the rest with zeros and returns SQLITE_IOERR_SHORT_READ;
//  - sector size 4096 and SQLITE_IOCAP_POWERSAFE_OVERWRITE (the Linux defaults);
//  - WAL shared memory lives in memory, shared by every connection of this VFS (one simulated
//    machine) and lost with it: a power cut (a new VFS over the crash image) starts without it.
// Where it is not faithful (docs/ENGINES.md): one connection per VFS at a time, so file locks and
// shared-memory locks always succeed; time is fixed; no memory-mapped I/O (io_methods version 2: no
// xFetch). SQLite draws journal nonces and WAL salts from one process-wide generator (seeded from
// the default VFS, not this one): every open reseeds it with a fixed seed, so a run checked on one
// thread replays byte for byte; with several checking threads those bytes may differ between runs.
#include <sqlite3.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "faultfs/engine.h"

namespace faultfs {
namespace {

struct Vfs;

// What SQLite holds per open file. SQLite allocates szOsFile bytes and hands them to xOpen, so
// this is a plain struct whose first member is the sqlite3_file; the C++ state lives behind it.
struct OpenFile {
  std::unique_ptr<dbdb::File> file;
  std::string path;
  Vfs* vfs = nullptr;
  bool dirsync = false;  // os_unix.c's UNIXFILE_DIRSYNC
};
struct SqliteFile {
  sqlite3_file base;
  OpenFile* state;
};

// One machine's WAL index: regions of shared memory by database path.
struct Shm {
  std::vector<std::unique_ptr<char[]>> regions;
  int region_size = 0;
};

struct Vfs {
  sqlite3_vfs base{};
  std::shared_ptr<dbdb::FileSystem> fs;
  std::string name;
  std::mutex mu;
  std::map<std::string, Shm> shm;
  uint64_t random_state = 0x5eed;
  uint64_t temp_files = 0;
};

Vfs* VfsOf(sqlite3_vfs* v) { return static_cast<Vfs*>(v->pAppData); }
OpenFile* StateOf(sqlite3_file* f) { return reinterpret_cast<SqliteFile*>(f)->state; }

int IoError(const dbdb::Status& s, int code) { return s.code() == dbdb::StatusCode::kNoSpace ? SQLITE_FULL : code; }

int Close(sqlite3_file* f) {
  delete StateOf(f);
  reinterpret_cast<SqliteFile*>(f)->state = nullptr;
  return SQLITE_OK;
}

int Read(sqlite3_file* f, void* buffer, int amount, sqlite3_int64 offset) {
  auto read = StateOf(f)->file->ReadAt(static_cast<uint64_t>(offset), {static_cast<char*>(buffer), size_t(amount)});
  if (!read.ok()) return SQLITE_IOERR_READ;
  if (*read < size_t(amount)) {
    std::memset(static_cast<char*>(buffer) + *read, 0, size_t(amount) - *read);
    return SQLITE_IOERR_SHORT_READ;
  }
  return SQLITE_OK;
}

int Write(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
  dbdb::Status s = StateOf(f)->file->WriteAt(static_cast<uint64_t>(offset),
                                              {static_cast<const char*>(data), size_t(amount)});
  return s.ok() ? SQLITE_OK : IoError(s, SQLITE_IOERR_WRITE);
}

int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  dbdb::Status s = StateOf(f)->file->Truncate(static_cast<uint64_t>(size));
  return s.ok() ? SQLITE_OK : IoError(s, SQLITE_IOERR_TRUNCATE);
}

// unixSync: the file first, then, once, its directory if the file is a new journal; an error
// syncing the directory is ignored.
int Sync(sqlite3_file* f, int) {
  OpenFile* state = StateOf(f);
  dbdb::Status s = state->file->Sync();
  if (!s.ok()) return SQLITE_IOERR_FSYNC;
  if (state->dirsync) {
    (void)state->vfs->fs->SyncDir(dbdb::DirName(state->path));
    state->dirsync = false;
  }
  return SQLITE_OK;
}

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  auto n = StateOf(f)->file->Size();
  if (!n.ok()) return SQLITE_IOERR_FSTAT;
  *size = static_cast<sqlite3_int64>(*n);
  return SQLITE_OK;
}

// One connection per VFS at a time (see the top): every lock is granted.
int Lock(sqlite3_file*, int) { return SQLITE_OK; }
int Unlock(sqlite3_file*, int) { return SQLITE_OK; }
int CheckReservedLock(sqlite3_file*, int* reserved) {
  *reserved = 0;
  return SQLITE_OK;
}

int FileControl(sqlite3_file* f, int op, void* arg) {
  if (op == SQLITE_FCNTL_HAS_MOVED) {  // unix: the name was unlinked or now names another file
    auto stat = StateOf(f)->file->Stat();
    if (!stat.ok()) return SQLITE_IOERR_FSTAT;
    *static_cast<int*>(arg) = stat->unlinked ? 1 : 0;
    return SQLITE_OK;
  }
  return SQLITE_NOTFOUND;
}

int SectorSize(sqlite3_file*) { return 4096; }
int DeviceCharacteristics(sqlite3_file*) { return SQLITE_IOCAP_POWERSAFE_OVERWRITE; }

int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  OpenFile* state = StateOf(f);
  std::lock_guard<std::mutex> guard(state->vfs->mu);
  Shm& shm = state->vfs->shm[state->path];
  if (shm.region_size != 0 && shm.region_size != size) return SQLITE_IOERR_SHMSIZE;
  shm.region_size = size;
  if (size_t(region) >= shm.regions.size()) {
    if (!extend) {
      *out = nullptr;
      return SQLITE_OK;
    }
    while (shm.regions.size() <= size_t(region)) {
      shm.regions.push_back(std::make_unique<char[]>(size_t(size)));
      std::memset(shm.regions.back().get(), 0, size_t(size));
    }
  }
  *out = shm.regions[size_t(region)].get();
  return SQLITE_OK;
}
int ShmLock(sqlite3_file*, int, int, int) { return SQLITE_OK; }
void ShmBarrier(sqlite3_file*) { std::atomic_thread_fence(std::memory_order_seq_cst); }
int ShmUnmap(sqlite3_file* f, int delete_flag) {
  OpenFile* state = StateOf(f);
  std::lock_guard<std::mutex> guard(state->vfs->mu);
  if (delete_flag) state->vfs->shm.erase(state->path);
  return SQLITE_OK;
}

const sqlite3_io_methods kMethods = {
    2,           Close,     Read,       Write,           Truncate,   Sync,
    FileSize,    Lock,      Unlock,     CheckReservedLock, FileControl, SectorSize,
    DeviceCharacteristics, ShmMap, ShmLock, ShmBarrier, ShmUnmap,  nullptr,
    nullptr,
};

int Open(sqlite3_vfs* v, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  Vfs* vfs = VfsOf(v);
  auto* file = reinterpret_cast<SqliteFile*>(f);
  file->base.pMethods = nullptr;
  file->state = nullptr;
  std::string path;
  if (name != nullptr) {
    path = name;
  } else {  // a temporary file: a fresh name, unlinked at once below
    std::lock_guard<std::mutex> guard(vfs->mu);
    path = "etilqs_" + std::to_string(vfs->temp_files++);
  }
  bool create = flags & SQLITE_OPEN_CREATE;
  bool read_only = flags & SQLITE_OPEN_READONLY;
  bool delete_on_close = flags & SQLITE_OPEN_DELETEONCLOSE;
  if ((flags & SQLITE_OPEN_EXCLUSIVE) != 0) {
    auto exists = vfs->fs->Exists(path);
    if (!exists.ok() || *exists) return SQLITE_CANTOPEN;
  }
  auto opened = vfs->fs->Open(path, dbdb::OpenOptions{.create = create, .read_only = read_only});
  if (!opened.ok()) return SQLITE_CANTOPEN;
  if (delete_on_close) (void)vfs->fs->Remove(path);
  int type = flags & 0x0FFFFF00;
  bool new_journal = create && (type == SQLITE_OPEN_SUPER_JOURNAL || type == SQLITE_OPEN_MAIN_JOURNAL ||
                                type == SQLITE_OPEN_WAL);
  file->state = new OpenFile{std::move(opened).value(), path, vfs, new_journal};
  file->base.pMethods = &kMethods;
  if (out_flags != nullptr) *out_flags = flags;
  return SQLITE_OK;
}

int Delete(sqlite3_vfs* v, const char* name, int dir_sync) {
  Vfs* vfs = VfsOf(v);
  dbdb::Status s = vfs->fs->Remove(name);
  if (s.code() == dbdb::StatusCode::kNotFound) return SQLITE_IOERR_DELETE_NOENT;
  if (!s.ok()) return SQLITE_IOERR_DELETE;
  if ((dir_sync & 1) != 0 && !vfs->fs->SyncDir(dbdb::DirName(name)).ok()) return SQLITE_IOERR_DIR_FSYNC;
  return SQLITE_OK;
}

int Access(sqlite3_vfs* v, const char* name, int flags, int* result) {
  Vfs* vfs = VfsOf(v);
  *result = 0;
  auto exists = vfs->fs->Exists(name);
  if (!exists.ok()) return SQLITE_IOERR_ACCESS;
  if (!*exists) return SQLITE_OK;
  if (flags == SQLITE_ACCESS_EXISTS) {  // unixAccess: a regular file counts only if not empty
    auto file = vfs->fs->Open(name, dbdb::OpenOptions{.read_only = true});
    if (!file.ok()) return SQLITE_IOERR_ACCESS;
    auto size = (*file)->Size();
    if (!size.ok()) return SQLITE_IOERR_ACCESS;
    *result = *size > 0;
  } else {
    *result = 1;
  }
  return SQLITE_OK;
}

int FullPathname(sqlite3_vfs*, const char* name, int size, char* out) {
  if (std::strlen(name) + 1 > size_t(size)) return SQLITE_CANTOPEN;
  std::strcpy(out, name);
  return SQLITE_OK;
}

// Deterministic; SQLite asks it only when this is the default VFS (see the top).
int Randomness(sqlite3_vfs* v, int size, char* out) {
  Vfs* vfs = VfsOf(v);
  std::lock_guard<std::mutex> guard(vfs->mu);
  for (int i = 0; i < size; i++) {
    vfs->random_state = vfs->random_state * 6364136223846793005ULL + 1442695040888963407ULL;
    out[i] = static_cast<char>(vfs->random_state >> 56);
  }
  return size;
}

int Sleep(sqlite3_vfs*, int microseconds) { return microseconds; }
constexpr sqlite3_int64 kFixedTimeMs = 212'263'344'000'000LL;  // a fixed instant (Julian day, in ms)
int CurrentTime(sqlite3_vfs*, double* now) {
  *now = double(kFixedTimeMs) / 86'400'000.0;
  return SQLITE_OK;
}
int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* now) {
  *now = kFixedTimeMs;
  return SQLITE_OK;
}
int GetLastError(sqlite3_vfs*, int, char*) { return 0; }

std::atomic<uint64_t> vfs_counter{0};

// Registers a VFS (under a unique name) for one machine's filesystem; unregistered when destroyed.
std::unique_ptr<Vfs> NewVfs(std::shared_ptr<dbdb::FileSystem> fs) {
  auto vfs = std::make_unique<Vfs>();
  vfs->fs = std::move(fs);
  vfs->name = "dbdb-sim-" + std::to_string(vfs_counter++);
  sqlite3_vfs& b = vfs->base;
  b.iVersion = 2;
  b.szOsFile = sizeof(SqliteFile);
  b.mxPathname = 512;
  b.zName = vfs->name.c_str();
  b.pAppData = vfs.get();
  b.xOpen = Open;
  b.xDelete = Delete;
  b.xAccess = Access;
  b.xFullPathname = FullPathname;
  b.xRandomness = Randomness;
  b.xSleep = Sleep;
  b.xCurrentTime = CurrentTime;
  b.xGetLastError = GetLastError;
  b.xCurrentTimeInt64 = CurrentTimeInt64;
  sqlite3_vfs_register(&b, 0);
  return vfs;
}

dbdb::Status FromSqlite(sqlite3* db, int rc, const std::string& what) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return dbdb::Status::Ok();
  std::string message = "sqlite: " + what + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return dbdb::Status::Corruption(message);
    case SQLITE_FULL: return dbdb::Status::NoSpace(message);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: return dbdb::Status::IOError(message);
    default: return dbdb::Status::IOError(message);
  }
}

class SqliteHandle final : public EngineHandle {
 public:
  ~SqliteHandle() override {
    for (sqlite3_stmt* s : {put_, del_, get_, scan_}) sqlite3_finalize(s);
    if (db_ != nullptr) sqlite3_close(db_);
    if (vfs_) sqlite3_vfs_unregister(&vfs_->base);
  }

  static dbdb::Result<std::unique_ptr<EngineHandle>> Open(std::shared_ptr<dbdb::FileSystem> fs,
                                                          const std::string& dir, const std::string& pragmas) {
    if (dbdb::Status s = fs->CreateDir(dir); !s.ok()) return s;
    auto h = std::unique_ptr<SqliteHandle>(new SqliteHandle);
    h->vfs_ = NewVfs(std::move(fs));
    sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, 0x5eed, nullptr);  // see the top
    std::string path = dir + "/db.sqlite";
    int rc = sqlite3_open_v2(path.c_str(), &h->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, h->vfs_->name.c_str());
    if (dbdb::Status s = FromSqlite(h->db_, rc, "open " + path); !s.ok()) return s;
    std::string setup = pragmas + "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;";
    if (dbdb::Status s = h->Exec(setup); !s.ok()) return s;
    const std::pair<sqlite3_stmt**, const char*> statements[] = {
        {&h->put_, "INSERT OR REPLACE INTO kv(k, v) VALUES(?1, ?2)"},
        {&h->del_, "DELETE FROM kv WHERE k = ?1"},
        {&h->get_, "SELECT v FROM kv WHERE k = ?1"},
        {&h->scan_, "SELECT k, v FROM kv ORDER BY k"}};
    for (const auto& [stmt, sql] : statements) {
      rc = sqlite3_prepare_v2(h->db_, sql, -1, stmt, nullptr);
      if (dbdb::Status s = FromSqlite(h->db_, rc, sql); !s.ok()) return s;
    }
    return std::unique_ptr<EngineHandle>(std::move(h));
  }

  dbdb::Status Commit(const EngineBatch& batch) override {
    if (dbdb::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
    dbdb::Status s;
    for (const auto& [key, value] : batch) {
      sqlite3_stmt* stmt = value ? put_ : del_;
      sqlite3_bind_blob(stmt, 1, key.data(), int(key.size()), SQLITE_TRANSIENT);
      if (value) sqlite3_bind_blob(stmt, 2, value->data(), int(value->size()), SQLITE_TRANSIENT);
      int rc = sqlite3_step(stmt);
      sqlite3_reset(stmt);
      s = FromSqlite(db_, rc, value ? "put" : "delete");
      if (!s.ok()) break;
    }
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok() && !sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK");
    return s;
  }

  dbdb::Result<std::optional<std::string>> Get(const std::string& key) override {
    sqlite3_bind_blob(get_, 1, key.data(), int(key.size()), SQLITE_TRANSIENT);
    int rc = sqlite3_step(get_);
    std::optional<std::string> value;
    if (rc == SQLITE_ROW) value = Column(get_, 0);
    sqlite3_reset(get_);
    if (dbdb::Status s = FromSqlite(db_, rc, "get"); !s.ok()) return s;
    return value;
  }

  dbdb::Result<std::map<std::string, std::string>> ScanAll() override {
    std::map<std::string, std::string> all;
    int rc;
    while ((rc = sqlite3_step(scan_)) == SQLITE_ROW) all.emplace(Column(scan_, 0), Column(scan_, 1));
    sqlite3_reset(scan_);
    if (dbdb::Status s = FromSqlite(db_, rc, "scan"); !s.ok()) return s;
    return all;
  }

  // WAL: a checkpoint that copies every frame back and truncates the log; rollback: VACUUM.
  dbdb::Status Compact() override {
    auto mode = Query("PRAGMA journal_mode");
    if (!mode.ok()) return mode.status();
    return Exec(*mode == "wal" ? "PRAGMA wal_checkpoint(TRUNCATE)" : "VACUUM");
  }

  dbdb::Status Check() override {
    auto verdict = Query("PRAGMA integrity_check");
    if (!verdict.ok()) return verdict.status();
    if (*verdict != "ok") return dbdb::Status::Corruption("sqlite: integrity_check: " + *verdict);
    return dbdb::Status::Ok();
  }

 private:
  SqliteHandle() = default;

  static std::string Column(sqlite3_stmt* stmt, int i) {
    const char* data = static_cast<const char*>(sqlite3_column_blob(stmt, i));
    return std::string(data != nullptr ? data : "", size_t(sqlite3_column_bytes(stmt, i)));
  }

  dbdb::Status Exec(const std::string& sql) {
    char* error = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error);
    sqlite3_free(error);
    return FromSqlite(db_, rc, sql);
  }

  // The first column of the first row of `sql`.
  dbdb::Result<std::string> Query(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr);
    std::string out;
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(stmt);
      if (rc == SQLITE_ROW) {
        const unsigned char* text = sqlite3_column_text(stmt, 0);
        out = text != nullptr ? reinterpret_cast<const char*>(text) : "";
      }
    }
    sqlite3_finalize(stmt);
    if (dbdb::Status s = FromSqlite(db_, rc, sql); !s.ok()) return s;
    return out;
  }

  std::unique_ptr<Vfs> vfs_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt *put_ = nullptr, *del_ = nullptr, *get_ = nullptr, *scan_ = nullptr;
};

}  // namespace

std::unique_ptr<Engine> NewSqliteEngine(const std::string& config) {
  EngineInfo info;
  info.engine = "sqlite";
  info.config = config;
  info.version = sqlite3_libversion();
  std::string pragmas;
  if (config == "wal-full") {
    pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;";
    info.promise = "WAL, synchronous=FULL: \"the WAL file is synchronized before each transaction commit\": "
                   "a committed transaction survives power loss (pragma.html#pragma_synchronous)";
  } else if (config == "wal-normal") {
    pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
    info.durable = false;
    info.promise = "WAL, synchronous=NORMAL: \"a transaction committed in WAL mode with synchronous=NORMAL might "
                   "roll back following a power loss\"; the database is never corrupted (pragma.html, wal.html)";
  } else if (config == "rollback-full") {
    pragmas = "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;";
    info.durable = false;
    info.durable_after = 1;
    info.promise = "DELETE journal, synchronous=FULL: no corruption on power loss, but only EXTRA syncs the "
                   "directory after the journal is unlinked, which \"provides additional durability if the commit "
                   "is followed closely by a power loss\": the last commit may roll back (pragma.html)";
  } else if (config == "rollback-extra") {
    pragmas = "PRAGMA journal_mode=DELETE; PRAGMA synchronous=EXTRA;";
    info.promise = "DELETE journal, synchronous=EXTRA: FULL plus a directory sync after the journal is unlinked: "
                   "a committed transaction survives power loss (pragma.html#pragma_synchronous)";
  } else {
    return nullptr;
  }
  return MakeEngine(std::move(info), [pragmas](std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir) {
    return SqliteHandle::Open(std::move(fs), dir, pragmas);
  });
}

}  // namespace faultfs
