// SQLite as an engine under test (engine.h): a sqlite3_vfs onto dbdb::FileSystem, written to do
// what SQLite's own unix VFS (os_unix.c) does where it matters for power loss and for several
// processes:
//  - a journal, WAL or super-journal opened with SQLITE_OPEN_CREATE is marked DIRSYNC: its first
//    successful xSync also syncs its directory (errors of that directory sync ignored, as unixSync
//    does), once;
//  - xDelete syncs the directory only when asked (dirSync), and then reports a failure as
//    SQLITE_IOERR_DIR_FSYNC; a missing file is SQLITE_IOERR_DELETE_NOENT;
//  - a file opened with DELETEONCLOSE is unlinked right after it is opened;
//  - xAccess(EXISTS) is true only for a file that exists and is not empty;
//  - a short read fills the rest with zeros and returns SQLITE_IOERR_SHORT_READ;
//  - sector size 4096 and SQLITE_IOCAP_POWERSAFE_OVERWRITE (the Linux defaults);
//  - file locks are unixLock's byte-range locks (the PENDING byte, the RESERVED byte, the SHARED
//    range), kept in a lock table per simulated machine by file identity, as the kernel keeps fcntl
//    locks by inode: a connection (one per simulated process) that cannot have a lock gets
//    SQLITE_BUSY at once, never waits;
//  - WAL shared memory (the -shm file's contents) lives in memory per simulated machine, shared by
//    every connection on it and lost with the power: a machine built from a crash image starts
//    without it. Its eight locks follow unixShmLock; the first connection to open it when no other
//    has it open starts it empty, as the DMS lock makes os_unix truncate the -shm file;
//  - xSleep does not wait: it makes one filesystem call (an Exists on the database's directory),
//    where the simulated scheduler may run another process, and reports the time as slept, so a
//    busy handler's retries let the lock's holder go on. Taking a file lock or a WAL lock makes the
//    same call first, as fcntl is a system call another process may run beside.
// Where it is not faithful (docs/ENGINES.md): a killed simulated process keeps its locks until its
// connection has unwound and closed (every file call fails at once after the kill, and SQLite's
// error path may still touch the shared memory it has mapped, under the locks it holds), where the
// kernel would release them at once; time is fixed; no memory-mapped I/O (io_methods version 2: no
// xFetch); no -shm file. SQLite draws journal nonces and WAL salts from one process-wide generator
// (seeded from the default VFS, not this one): it is reseeded with a fixed seed when a machine's
// first connection opens, so a run checked on one thread replays byte for byte; with several
// checking threads those bytes may differ between runs.
#include <sqlite3.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <vector>

#include "faultfs/engine.h"

namespace faultfs {
namespace {

// What the processes of one machine share through this VFS (EngineMachine, key "sqlite").
struct OpenFile;
struct SqliteMachine {
  std::mutex mu;
  // unixLock's bytes of one database file: who holds the PENDING and RESERVED bytes, and the SHARED
  // range (shared by several or exclusive to one).
  struct FileLocks {
    OpenFile* pending = nullptr;
    OpenFile* reserved = nullptr;
    OpenFile* exclusive = nullptr;
    std::set<OpenFile*> shared;
  };
  std::map<uint64_t, FileLocks> locks;  // by file identity
  // One database's WAL index: its regions, the connections that have it open, and each one's
  // shared and exclusive lock masks over the eight WAL locks.
  struct Shm {
    std::vector<std::unique_ptr<char[]>> regions;
    int region_size = 0;
    std::map<OpenFile*, std::pair<uint32_t, uint32_t>> users;
  };
  std::map<uint64_t, Shm> shm;  // by the database file's identity
  bool seeded = false;
};

struct Vfs;

// What SQLite holds per open file. SQLite allocates szOsFile bytes and hands them to xOpen, so
// this is a plain struct whose first member is the sqlite3_file; the C++ state lives behind it.
struct OpenFile {
  std::unique_ptr<dbdb::File> file;
  std::string path;
  Vfs* vfs = nullptr;
  uint64_t identity = 0;
  bool dirsync = false;  // os_unix.c's UNIXFILE_DIRSYNC
  int level = SQLITE_LOCK_NONE;
  bool shm_open = false;
};
struct SqliteFile {
  sqlite3_file base;
  OpenFile* state;
};

struct Vfs {
  sqlite3_vfs base{};
  std::shared_ptr<dbdb::FileSystem> fs;
  std::shared_ptr<SqliteMachine> machine;
  std::string name;
  std::string dir;  // the database's directory (xSleep's filesystem call)
  std::mutex mu;
  uint64_t random_state = 0x5eed;
  uint64_t temp_files = 0;
};

Vfs* VfsOf(sqlite3_vfs* v) { return static_cast<Vfs*>(v->pAppData); }
OpenFile* StateOf(sqlite3_file* f) { return reinterpret_cast<SqliteFile*>(f)->state; }

int IoError(const dbdb::Status& s, int code) { return s.code() == dbdb::StatusCode::kNoSpace ? SQLITE_FULL : code; }

int Unlock(sqlite3_file* f, int level);
int ShmUnmap(sqlite3_file* f, int delete_flag);

int Close(sqlite3_file* f) {
  (void)ShmUnmap(f, 0);
  (void)Unlock(f, SQLITE_LOCK_NONE);
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

// A scheduling point without a wait: one cheap filesystem call (see the top).
void Yield(Vfs* vfs) { (void)vfs->fs->Exists(vfs->dir); }

// unixLock: SHARED needs the PENDING byte free and the SHARED range not exclusive; RESERVED needs
// the RESERVED byte; EXCLUSIVE takes the PENDING byte (so no new reader comes in), then the whole
// SHARED range once no other connection holds it (until then it stays PENDING and is busy).
int Lock(sqlite3_file* f, int level) {
  OpenFile* me = StateOf(f);
  if (me->level >= level) return SQLITE_OK;
  Yield(me->vfs);  // fcntl is a system call: another process may run first
  SqliteMachine& m = *me->vfs->machine;
  std::lock_guard<std::mutex> guard(m.mu);
  SqliteMachine::FileLocks& locks = m.locks[me->identity];
  auto other = [me](const OpenFile* holder) { return holder != nullptr && holder != me; };
  if (level == SQLITE_LOCK_SHARED) {
    if (other(locks.pending) || other(locks.exclusive)) return SQLITE_BUSY;
    locks.shared.insert(me);
    me->level = SQLITE_LOCK_SHARED;
    return SQLITE_OK;
  }
  if (level == SQLITE_LOCK_RESERVED) {
    if (other(locks.reserved)) return SQLITE_BUSY;
    locks.reserved = me;
    me->level = SQLITE_LOCK_RESERVED;
    return SQLITE_OK;
  }
  if (me->level < SQLITE_LOCK_PENDING) {
    if (other(locks.pending)) return SQLITE_BUSY;
    locks.pending = me;
    me->level = SQLITE_LOCK_PENDING;
  }
  for (const OpenFile* holder : locks.shared) {
    if (holder != me) return SQLITE_BUSY;
  }
  locks.exclusive = me;
  me->level = SQLITE_LOCK_EXCLUSIVE;
  return SQLITE_OK;
}

// Down to SHARED or NONE.
int Unlock(sqlite3_file* f, int level) {
  OpenFile* me = StateOf(f);
  if (me == nullptr || me->level <= level) return SQLITE_OK;
  SqliteMachine& m = *me->vfs->machine;
  std::lock_guard<std::mutex> guard(m.mu);
  SqliteMachine::FileLocks& locks = m.locks[me->identity];
  if (locks.exclusive == me) locks.exclusive = nullptr;
  if (locks.pending == me) locks.pending = nullptr;
  if (locks.reserved == me) locks.reserved = nullptr;
  if (level == SQLITE_LOCK_NONE) locks.shared.erase(me);
  if (locks.shared.empty() && locks.reserved == nullptr && locks.pending == nullptr) m.locks.erase(me->identity);
  me->level = level;
  return SQLITE_OK;
}

// unixCheckReservedLock: whether any connection holds the RESERVED byte.
int CheckReservedLock(sqlite3_file* f, int* reserved) {
  OpenFile* me = StateOf(f);
  SqliteMachine& m = *me->vfs->machine;
  std::lock_guard<std::mutex> guard(m.mu);
  auto it = m.locks.find(me->identity);
  *reserved = it != m.locks.end() && it->second.reserved != nullptr;
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

// The WAL index a connection shares: its database file's, as os_unix keeps one per inode.
uint64_t ShmKey(const OpenFile* me) { return me->identity; }

// unixShmMap: the first call of a connection opens the WAL index (empty if no other connection has
// it open: the DMS lock), then maps regions, adding them if `extend`.
int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  OpenFile* me = StateOf(f);
  SqliteMachine& m = *me->vfs->machine;
  std::lock_guard<std::mutex> guard(m.mu);
  SqliteMachine::Shm& shm = m.shm[ShmKey(me)];
  if (!me->shm_open) {
    if (shm.users.empty()) shm.regions.clear();
    shm.users[me] = {0, 0};
    me->shm_open = true;
  }
  if (!shm.regions.empty() && shm.region_size != size) return SQLITE_IOERR_SHMSIZE;
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

// unixShmLock: a shared lock is busy while another connection holds the slot exclusively, an
// exclusive one while another holds it at all.
int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
  OpenFile* me = StateOf(f);
  Yield(me->vfs);  // as in Lock: SQLite's WAL read protocol re-checks the header after its lock
  SqliteMachine& m = *me->vfs->machine;
  std::lock_guard<std::mutex> guard(m.mu);
  auto shm = m.shm.find(ShmKey(me));
  if (!me->shm_open || shm == m.shm.end()) return SQLITE_IOERR_SHMLOCK;
  uint32_t mask = ((1u << (offset + n)) - 1) & ~((1u << offset) - 1);
  auto& [shared, exclusive] = shm->second.users[me];
  if ((flags & SQLITE_SHM_UNLOCK) != 0) {
    shared &= ~mask;
    exclusive &= ~mask;
    return SQLITE_OK;
  }
  uint32_t others_shared = 0, others_exclusive = 0;
  for (const auto& [user, masks] : shm->second.users) {
    if (user == me) continue;
    others_shared |= masks.first;
    others_exclusive |= masks.second;
  }
  if ((flags & SQLITE_SHM_SHARED) != 0) {
    if ((others_exclusive & mask) != 0) return SQLITE_BUSY;
    shared |= mask;
  } else {
    if (((others_shared | others_exclusive) & mask) != 0) return SQLITE_BUSY;
    exclusive |= mask;
  }
  return SQLITE_OK;
}

void ShmBarrier(sqlite3_file*) { std::atomic_thread_fence(std::memory_order_seq_cst); }

int ShmUnmap(sqlite3_file* f, int delete_flag) {
  OpenFile* me = StateOf(f);
  if (me == nullptr || !me->shm_open) return SQLITE_OK;
  SqliteMachine& m = *me->vfs->machine;
  std::lock_guard<std::mutex> guard(m.mu);
  me->shm_open = false;
  auto shm = m.shm.find(ShmKey(me));
  if (shm == m.shm.end()) return SQLITE_OK;
  shm->second.users.erase(me);
  if (delete_flag && shm->second.users.empty()) m.shm.erase(shm);
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
  auto identity = (*opened)->Identity();
  if (!identity.ok()) return SQLITE_CANTOPEN;
  if (delete_on_close) (void)vfs->fs->Remove(path);
  int type = flags & 0x0FFFFF00;
  bool new_journal = create && (type == SQLITE_OPEN_SUPER_JOURNAL || type == SQLITE_OPEN_MAIN_JOURNAL ||
                                type == SQLITE_OPEN_WAL);
  file->state = new OpenFile{std::move(opened).value(), path, vfs, *identity, new_journal};
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

// unixAccess is one stat(): here one open (another process may remove the file at any filesystem
// call, so Exists and then Open would be two observations).
int Access(sqlite3_vfs* v, const char* name, int flags, int* result) {
  Vfs* vfs = VfsOf(v);
  *result = 0;
  auto file = vfs->fs->Open(name, dbdb::OpenOptions{.read_only = true});
  if (!file.ok()) {
    if (file.status().code() == dbdb::StatusCode::kNotFound) return SQLITE_OK;
    return SQLITE_IOERR_ACCESS;
  }
  if (flags == SQLITE_ACCESS_EXISTS) {  // a regular file counts only if not empty
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

// A scheduling point, not a wait (see the top).
int Sleep(sqlite3_vfs* v, int microseconds) {
  Yield(VfsOf(v));
  return microseconds;
}
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

// Registers a VFS (under a unique name) for one process's view of a machine; unregistered when
// destroyed.
std::unique_ptr<Vfs> NewVfs(std::shared_ptr<dbdb::FileSystem> fs, std::shared_ptr<SqliteMachine> machine,
                            const std::string& dir) {
  auto vfs = std::make_unique<Vfs>();
  vfs->fs = std::move(fs);
  vfs->machine = std::move(machine);
  vfs->dir = dir;
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
  std::string message = "sqlite: " + what + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) +
                        " (code " + std::to_string(db != nullptr ? sqlite3_extended_errcode(db) : rc) + ")";
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL: return dbdb::Status::Busy(message);
    case SQLITE_READONLY: return dbdb::Status::ReadOnly(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return dbdb::Status::Corruption(message);
    case SQLITE_FULL: return dbdb::Status::NoSpace(message);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: return dbdb::Status::IOError(message);
    default: return dbdb::Status::IOError(message);
  }
}

// How long SQLite's busy handler retries a lock (in the simulated time xSleep reports: about 20
// retries, each a scheduling point) before a statement fails with SQLITE_BUSY.
constexpr int kBusyTimeoutMs = 1000;

// What SQLite says when a statement names a table its cached schema does not have.
constexpr std::string_view kNoTable = "no such table: kv";

class SqliteHandle final : public EngineHandle {
 public:
  ~SqliteHandle() override {
    for (sqlite3_stmt* s : {put_, del_, get_, scan_}) sqlite3_finalize(s);
    if (db_ != nullptr) sqlite3_close(db_);
    if (vfs_) sqlite3_vfs_unregister(&vfs_->base);
  }

  static dbdb::Result<std::unique_ptr<EngineHandle>> Open(std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                                          const std::string& pragmas, const EngineOpenOptions& options) {
    std::string path = dir + "/db.sqlite";
    if (options.read_only) {
      auto exists = fs->Exists(path);
      if (!exists.ok()) return exists.status();
      if (!*exists) return dbdb::Status::NotFound("sqlite: open " + path + " read-only: no database");
    } else if (dbdb::Status s = fs->CreateDir(dir); !s.ok()) {
      return s;
    }
    auto machine = options.machine ? options.machine->Shared<SqliteMachine>("sqlite") : std::make_shared<SqliteMachine>();
    {
      static std::mutex seeding;  // the generator is process-wide: one machine seeds it at a time
      std::lock_guard<std::mutex> guard(seeding);
      std::lock_guard<std::mutex> machine_guard(machine->mu);
      if (!machine->seeded) sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, 0x5eed, nullptr);  // see the top
      machine->seeded = true;
    }
    auto h = std::unique_ptr<SqliteHandle>(new SqliteHandle);
    h->read_only_ = options.read_only;
    h->vfs_ = NewVfs(std::move(fs), std::move(machine), dir);
    int flags = options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(path.c_str(), &h->db_, flags, h->vfs_->name.c_str());
    if (dbdb::Status s = FromSqlite(h->db_, rc, "open " + path); !s.ok()) return s;
    sqlite3_busy_timeout(h->db_, kBusyTimeoutMs);
    // A read-only connection neither changes the journal mode nor creates the table: until a writer
    // has created it, the database reads as empty.
    std::string setup = options.read_only ? ""
                                          : pragmas + "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) "
                                                      "WITHOUT ROWID;";
    if (dbdb::Status s = h->Exec(setup); !s.ok()) return s;
    if (!options.read_only) {
      if (dbdb::Status s = h->Prepare(); !s.ok()) return s;
    }
    return std::unique_ptr<EngineHandle>(std::move(h));
  }

  dbdb::Status Commit(const EngineBatch& batch) override {
    return CommitOnBase([&batch](const EngineView&) { return std::optional<EngineBatch>(batch); });
  }

  // BEGIN IMMEDIATE takes the write lock (RESERVED, or the WAL's write lock) before the base is read.
  dbdb::Status CommitOnBase(const BatchBuilder& build) override {
    if (dbdb::Status s = Prepare(); !s.ok()) return s;
    if (dbdb::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
    dbdb::Status s;
    std::optional<EngineBatch> batch;
    auto base = ScanAll();
    if (!base.ok()) {
      s = base.status();
    } else if (!(batch = build(EngineView{std::move(base).value(), std::nullopt}))) {
      s = dbdb::Status::Aborted("the caller abandoned the commit");
    }
    for (size_t i = 0; s.ok() && i < batch->size(); i++) {
      const auto& [key, value] = (*batch)[i];
      sqlite3_stmt* stmt = value ? put_ : del_;
      sqlite3_bind_blob(stmt, 1, key.data(), int(key.size()), SQLITE_TRANSIENT);
      if (value) sqlite3_bind_blob(stmt, 2, value->data(), int(value->size()), SQLITE_TRANSIENT);
      int rc = sqlite3_step(stmt);
      sqlite3_reset(stmt);
      s = FromSqlite(db_, rc, value ? "put" : "delete");
    }
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok() && !sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK");
    return s;
  }

  dbdb::Result<std::optional<std::string>> Get(const std::string& key) override {
    if (dbdb::Status s = Prepare(); !s.ok()) {
      if (NoTable(s)) return std::optional<std::string>();
      return s;
    }
    sqlite3_bind_blob(get_, 1, key.data(), int(key.size()), SQLITE_TRANSIENT);
    int rc = sqlite3_step(get_);
    std::optional<std::string> value;
    if (rc == SQLITE_ROW) value = Column(get_, 0);
    sqlite3_reset(get_);
    if (dbdb::Status s = FromSqlite(db_, rc, "get"); !s.ok()) return s;
    return value;
  }

  // One statement: one read transaction, so one consistent view.
  dbdb::Result<std::map<std::string, std::string>> ScanAll() override {
    std::map<std::string, std::string> all;
    if (dbdb::Status s = Prepare(); !s.ok()) {
      if (NoTable(s)) return all;
      return s;
    }
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

  // Prepares the statements once the table exists (a read-only handle may come before it does).
  // SQLite prepares against the schema it last read: after "no such table", a query of the schema
  // reads it again (and says whether the table exists now), and a second try sees a table another
  // process has created since.
  dbdb::Status Prepare() {
    dbdb::Status s = PrepareOnce();
    if (s.ok() || s.message().find(kNoTable) == std::string::npos) return s;
    auto count = Query("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'kv'");
    if (!count.ok()) return count.status();
    if (*count == "0") return s;
    return PrepareOnce();
  }

  dbdb::Status PrepareOnce() {
    if (scan_ != nullptr) return dbdb::Status::Ok();
    const std::pair<sqlite3_stmt**, const char*> statements[] = {
        {&put_, "INSERT OR REPLACE INTO kv(k, v) VALUES(?1, ?2)"},
        {&del_, "DELETE FROM kv WHERE k = ?1"},
        {&get_, "SELECT v FROM kv WHERE k = ?1"},
        {&scan_, "SELECT k, v FROM kv ORDER BY k"}};
    for (const auto& [stmt, sql] : statements) {
      int rc = sqlite3_prepare_v2(db_, sql, -1, stmt, nullptr);
      if (rc != SQLITE_OK) {
        dbdb::Status s = FromSqlite(db_, rc, sql);
        for (sqlite3_stmt** made : {&put_, &del_, &get_, &scan_}) {
          sqlite3_finalize(*made);
          *made = nullptr;
        }
        return s;
      }
    }
    return dbdb::Status::Ok();
  }

  // A read-only handle on a database whose table no writer has created yet (Prepare has read the
  // schema again to be sure).
  bool NoTable(const dbdb::Status& s) const {
    return read_only_ && s.message().find(kNoTable) != std::string::npos;
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
  bool read_only_ = false;
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
  info.multi_process = true;
  info.read_only_may_refuse_recovery = true;
  // docs/findings/sqlite-wal-killed-writer-frames-recovered.md and sqlite-failed-directory-sync.md.
  info.killed_writers_commit_visible_before_durable = true;
  return MakeEngine(std::move(info), [pragmas](std::shared_ptr<dbdb::FileSystem> fs, const std::string& dir,
                                               const EngineOpenOptions& options) {
    return SqliteHandle::Open(std::move(fs), dir, pragmas, options);
  });
}

}  // namespace faultfs
