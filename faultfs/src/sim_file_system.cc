// SimFileSystem: live in-memory files plus a trace; durability is derived from the trace by a
// PersistenceTracker (crash_state.cc).
#include "faultfs/sim_file_system.h"

#include <fiu.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "faultfs/crash_state.h"

namespace faultfs {

using dbdb::Result;
using dbdb::Status;

namespace {

struct Inode {
  uint64_t id;
  std::string data;
  int links = 1;  // names referring to it
  // Once the file is mapped: a memfd holding the same bytes as `data`, kept equal by every write
  // and truncate, which the mappings map (so they see later writes, and fault past the end, as a
  // shared page cache does). -1 until then.
  int mirror_fd = -1;
  ~Inode() {
    if (mirror_fd >= 0) ::close(mirror_fd);
  }
  // Makes the mirror hold `data` from `offset` on (after a write or a truncate).
  void Mirror(uint64_t offset) {
    if (mirror_fd < 0) return;
    if (::ftruncate(mirror_fd, static_cast<off_t>(data.size())) != 0) std::abort();
    for (uint64_t at = offset; at < data.size();) {
      ssize_t n = ::pwrite(mirror_fd, data.data() + at, data.size() - at, static_cast<off_t>(at));
      if (n <= 0) std::abort();  // a memfd write fails only without memory
      at += static_cast<uint64_t>(n);
    }
  }
};

class SimMapping final : public dbdb::FileMapping {
 public:
  SimMapping(void* address, uint64_t length) : FileMapping(static_cast<const char*>(address), length) {}
  ~SimMapping() override { ::munmap(const_cast<char*>(data()), size()); }
};

Status InjectedError(const std::string& what, int error_number) {
  std::string name = error_number == ENOSPC ? "ENOSPC" : error_number == EACCES ? "EACCES"
                   : error_number == EMFILE ? "EMFILE" : "EIO";
  std::string message = "injected: " + what + " failed (" + name + ")";
  if (error_number == ENOSPC) return Status::NoSpace(message);
  return Status::IOError(message);
}

constexpr uint32_t kNoProcess = UINT32_MAX;

}  // namespace

struct SimFileSystem::State {
  struct Process {
    explicit Process(std::string process_name) : name(std::move(process_name)) {}
    std::string name;
    bool killed = false;
    uint64_t killed_at = 0;    // the trace's size when it was killed
    bool participant = false;  // in the current RunScheduled
    bool at_step = false;      // waiting for its turn
    bool finished = false;     // its body returned
    uint64_t waits_for_lock = 0;  // inode whose lock it waits for (0: none)
    bool waits_shared = false;    // ... in shared mode
    std::vector<ArmedFault> faults;
    uint64_t bytes_read = 0;
    uint64_t faults_fired = 0;
  };

  std::mutex mutex;
  std::condition_variable changed;
  uint64_t seed;
  uint64_t next_inode = 1;
  std::map<std::string, std::shared_ptr<Inode>> names;
  // Every inode still alive (named, or open somewhere), by number: for LookupInode and OpenInode.
  std::map<uint64_t, std::weak_ptr<Inode>> inodes;
  std::shared_ptr<Inode> NewInode(std::string data) {
    auto inode = std::make_shared<Inode>(Inode{next_inode++, std::move(data)});
    if (inodes.size() >= 64 && inodes.size() % 64 == 0) std::erase_if(inodes, [](const auto& i) { return i.second.expired(); });
    inodes[inode->id] = inode;
    return inode;
  }
  std::set<std::string> dirs{".", "/"};
  std::vector<TraceOp> trace;
  PersistenceTracker tracker;
  uint64_t flip_counter = 0;
  std::vector<Process> processes{Process("p0")};
  std::map<std::string, uint64_t> fired;

  // Locks (flock): inode -> its holders (lock object ids) and whether the one holder is
  // exclusive; each lock object's inode and process.
  struct Holders {
    bool exclusive = false;
    std::set<uint64_t> ids;
  };
  std::map<uint64_t, Holders> lock_holders;
  struct Held {
    uint64_t inode;
    uint32_t process;
  };
  std::map<uint64_t, Held> locks;
  uint64_t next_lock_id = 1;

  // Scheduling (RunScheduled).
  bool scheduling = false;
  bool aborted = false;
  uint32_t running = kNoProcess;
  uint64_t steps = 0;

  void Record(TraceOp op, uint32_t process) {
    op.process = process;
    if (op.IsMutation()) tracker.Apply(op);
    trace.push_back(std::move(op));
  }

  bool LockFree(uint64_t inode, bool shared) const {
    auto it = lock_holders.find(inode);
    return it == lock_holders.end() || it->second.ids.empty() || (shared && !it->second.exclusive);
  }
  void Release(uint64_t id) {
    auto held = locks.find(id);
    if (held == locks.end()) return;
    auto holders = lock_holders.find(held->second.inode);
    holders->second.ids.erase(id);
    if (holders->second.ids.empty()) lock_holders.erase(holders);
    locks.erase(held);
    changed.notify_all();
  }

  void KillLocked(uint32_t process) {
    if (!processes[process].killed) processes[process].killed_at = trace.size();
    processes[process].killed = true;
    std::vector<uint64_t> ids;
    for (const auto& [id, held] : locks) {
      if (held.process == process) ids.push_back(id);
    }
    for (uint64_t id : ids) Release(id);
    changed.notify_all();
  }

  // Called at the start of every operation of `process`, with `mutex` held: waits for the
  // process's turn when a schedule runs, then fails if the process was killed.
  Status Enter(uint32_t process, std::unique_lock<std::mutex>& guard, uint64_t waits_for_lock = 0,
               bool waits_shared = false) {
    Process& p = processes[process];
    if (scheduling && p.participant && !aborted) {
      p.at_step = true;
      p.waits_for_lock = waits_for_lock;
      p.waits_shared = waits_shared;
      changed.notify_all();
      changed.wait(guard, [&] { return running == process && !p.at_step ? true : aborted; });
      p.at_step = false;
      p.waits_for_lock = 0;
    }
    if (p.killed) return Status::IOError("killed: process " + p.name + " is dead");
    return Status::Ok();
  }

  // Whether an armed fault (this process's own first, then libfiu's) fails this call of `point`.
  bool Fires(uint32_t process, const char* point, int* error_number) {
    *error_number = EIO;
    bool fire = false;
    auto& faults = processes[process].faults;
    for (auto it = faults.begin(); it != faults.end(); ++it) {
      if (it->point != point) continue;
      if (it->skip > 0) {
        it->skip--;
        continue;
      }
      if (it->error_number != 0) *error_number = it->error_number;
      faults.erase(it);
      fire = true;
      break;
    }
    if (!fire && fiu_fail(point)) {
      fire = true;
      if (void* info = fiu_failinfo()) *error_number = *static_cast<int*>(info);
    }
    if (fire) {
      fired[point]++;
      processes[process].faults_fired++;
    }
    return fire;
  }
};

namespace {

using State = SimFileSystem::State;

class SimLock final : public dbdb::FileLock {
 public:
  SimLock(std::shared_ptr<State> state, uint64_t id, std::shared_ptr<bool> file_locked)
      : state_(std::move(state)), id_(id), file_locked_(std::move(file_locked)) {}
  ~SimLock() override {
    std::lock_guard<std::mutex> guard(state_->mutex);
    // A killed process's locks were released at the kill (and may be held by another since).
    state_->Release(id_);
    if (file_locked_) *file_locked_ = false;
  }

 private:
  std::shared_ptr<State> state_;
  uint64_t id_;
  std::shared_ptr<bool> file_locked_;  // the File's "holds a lock" flag, if taken through a File
};

// flock of the inode `inode` for `process` (the caller has entered, under `guard`): waits, or
// Busy, while another holder excludes it. `file_locked`: the flag of the File it is taken through
// (set by the caller), cleared when the lock is released.
Result<std::unique_ptr<dbdb::FileLock>> TakeLock(const std::shared_ptr<State>& state, uint32_t process, uint64_t inode,
                                                 dbdb::LockOptions options, std::unique_lock<std::mutex>& guard,
                                                 const std::string& what, std::shared_ptr<bool> file_locked) {
  State& s = *state;
  if (!s.LockFree(inode, options.shared)) {
    if (!options.wait) return Status::Busy(what + " is held by another process");
    if (s.scheduling && s.processes[process].participant) {
      DBDB_RETURN_IF_ERROR(s.Enter(process, guard, inode, options.shared));  // granted once the lock is free
    } else {
      s.changed.wait(guard, [&] { return s.LockFree(inode, options.shared) || s.processes[process].killed; });
    }
    if (s.processes[process].killed) return Status::IOError("killed: process " + s.processes[process].name + " is dead");
  }
  uint64_t id = s.next_lock_id++;
  State::Holders& holders = s.lock_holders[inode];
  holders.exclusive = !options.shared;
  holders.ids.insert(id);
  s.locks[id] = State::Held{inode, process};
  return std::unique_ptr<dbdb::FileLock>(new SimLock(state, id, std::move(file_locked)));
}

class SimFile final : public dbdb::File {
 public:
  SimFile(std::shared_ptr<State> state, std::shared_ptr<Inode> inode, bool read_only, bool transient, uint32_t process)
      : state_(std::move(state)), inode_(std::move(inode)), read_only_(read_only), transient_(transient),
        process_(process) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/read", &error_number)) return InjectedError("read", error_number);
    const std::string& data = inode_->data;
    size_t n = offset >= data.size() ? 0 : std::min<uint64_t>(dst.size(), data.size() - offset);
    std::copy_n(data.data() + offset, n, dst.data());
    if (n > 0 && state_->Fires(process_, "faultfs/read/corrupt", &error_number)) {
      uint64_t bit = (state_->seed + state_->flip_counter++) % (n * 8);
      dst[bit / 8] = static_cast<char>(dst[bit / 8] ^ (1 << (bit % 8)));
    }
    state_->processes[process_].bytes_read += n;
    state_->Record(TraceOp{TraceOp::Kind::kRead, inode_->id, "", "", offset, n, ""}, process_);
    return n;
  }

  Status WriteAt(uint64_t offset, std::span<const char> data) override {
    if (read_only_) return Status::InvalidArgument("write to a read-only file");
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/write", &error_number)) return InjectedError("write", error_number);
    bool short_write = state_->Fires(process_, "faultfs/write/short", &error_number);
    if (state_->Fires(process_, "faultfs/write/misdirect", &error_number)) offset += 4096;
    std::string bytes(data.data(), short_write ? data.size() / 2 : data.size());
    if (!bytes.empty()) {
      std::string& file = inode_->data;
      if (file.size() < offset + bytes.size()) file.resize(offset + bytes.size(), '\0');
      std::copy(bytes.begin(), bytes.end(), file.begin() + static_cast<long>(offset));
      inode_->Mirror(std::min<uint64_t>(offset, file.size()));
      // A transient write's bytes are in no crash state, so the trace keeps only where it went
      // (they may differ from run to run: a change counter's random values).
      const uint64_t size = bytes.size();
      TraceOp op{TraceOp::Kind::kWrite, inode_->id, "", "", offset, size, transient_ ? std::string() : std::move(bytes)};
      op.transient = transient_;
      state_->Record(std::move(op), process_);
    }
    if (short_write) return InjectedError("write (short)", EIO);
    return Status::Ok();
  }

  Result<uint64_t> Size() override {
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    return static_cast<uint64_t>(inode_->data.size());
  }

  Result<dbdb::FileStat> Stat() override {
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    return dbdb::FileStat{static_cast<uint64_t>(inode_->data.size()), inode_->links == 0};
  }

  Status Truncate(uint64_t size_bytes) override {
    if (read_only_) return Status::InvalidArgument("truncate of a read-only file");
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/truncate", &error_number)) return InjectedError("truncate", error_number);
    uint64_t old_size = inode_->data.size();
    inode_->data.resize(size_bytes, '\0');
    inode_->Mirror(std::min<uint64_t>(old_size, size_bytes));
    TraceOp op{TraceOp::Kind::kTruncate, inode_->id, "", "", size_bytes, 0, ""};
    op.transient = transient_;
    state_->Record(std::move(op), process_);
    return Status::Ok();
  }

  Result<bool> Allocate(uint64_t offset, uint64_t length) override {
    // posix_fallocate's mode 0: the file grows to the range's end (zeros), as a truncate that grows
    // it does, and is volatile as that is (the trace records it as one). Space is not modelled, so
    // only the fault point can make it fail.
    if (read_only_) return Status::InvalidArgument("allocate in a read-only file");
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/allocate", &error_number)) return InjectedError("allocate", error_number);
    const uint64_t old_size = inode_->data.size();
    if (length > UINT64_MAX - offset || offset + length <= old_size) return true;
    inode_->data.resize(offset + length, '\0');
    inode_->Mirror(old_size);
    TraceOp op{TraceOp::Kind::kTruncate, inode_->id, "", "", offset + length, 0, ""};
    op.transient = transient_;
    state_->Record(std::move(op), process_);
    return true;
  }

  Result<std::shared_ptr<const dbdb::FileMapping>> Map(uint64_t length) override {
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/map", &error_number)) return InjectedError("mmap", error_number);
    bool fault = state_->Fires(process_, "faultfs/map/fault", &error_number);
    // A flip lands only in a whole page below the end of the file (and of the mapping): a page
    // no append reaches, since a private page no longer follows the file's later writes.
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t corruptible = std::min<uint64_t>(inode_->data.size(), length) / page * page;
    bool corrupt = !fault && corruptible > 0 && state_->Fires(process_, "faultfs/map/corrupt", &error_number);
    int fd;
    if (fault) {
      // An empty file of its own: every read of this mapping raises SIGBUS, as reads of pages the
      // disk cannot deliver do.
      fd = ::memfd_create("faultfs-map-fault", MFD_CLOEXEC);
    } else {
      if (inode_->mirror_fd < 0) {
        inode_->mirror_fd = ::memfd_create("faultfs-mirror", MFD_CLOEXEC);
        if (inode_->mirror_fd < 0) return Status::IOError("memfd_create failed");
        inode_->Mirror(0);
      }
      fd = inode_->mirror_fd;
    }
    if (fd < 0) return Status::IOError("memfd_create failed");
    // A corrupt mapping is private, so the flipped bit is this mapping's alone (one bad read of
    // a page, not damage to the file).
    void* address = ::mmap(nullptr, length, PROT_READ, corrupt ? MAP_PRIVATE : MAP_SHARED, fd, 0);
    if (fault) ::close(fd);
    if (address == MAP_FAILED) return Status::IOError("mmap failed");
    if (corrupt) {
      uint64_t bit = (state_->seed + state_->flip_counter++) % (corruptible * 8);
      char* at = static_cast<char*>(address) + bit / 8;
      char* page_start = static_cast<char*>(address) + (bit / 8) / page * page;
      if (::mprotect(page_start, page, PROT_READ | PROT_WRITE) != 0) std::abort();
      *at = static_cast<char>(*at ^ (1 << (bit % 8)));
      if (::mprotect(page_start, page, PROT_READ) != 0) std::abort();
    }
    state_->Record(TraceOp{TraceOp::Kind::kRead, inode_->id, "", "", 0, 0, ""}, process_);
    return std::shared_ptr<const dbdb::FileMapping>(std::make_shared<SimMapping>(address, length));
  }

  Status Sync() override {
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/sync/lose", &error_number)) {
      state_->Record(TraceOp{TraceOp::Kind::kSyncLost, inode_->id, "", "", 0, 0, ""}, process_);
      return InjectedError("sync (volatile writes lost)", error_number);
    }
    if (state_->Fires(process_, "faultfs/sync", &error_number)) return InjectedError("sync", error_number);
    state_->Record(TraceOp{TraceOp::Kind::kSync, inode_->id, "", "", 0, 0, ""}, process_);
    return Status::Ok();
  }

  Result<uint64_t> Identity() override { return inode_->id; }

  Result<std::unique_ptr<dbdb::FileLock>> Lock(dbdb::LockOptions options) override {
    std::unique_lock<std::mutex> guard(state_->mutex);
    DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
    int error_number;
    if (state_->Fires(process_, "faultfs/lock", &error_number)) return InjectedError("lock", error_number);
    // As flock through one open file description: a second lock would convert the first (refused
    // from the first call on, granted or still waiting, as PosixFile refuses it).
    if (*locked_) return Status::InvalidArgument("lock: this handle holds a lock already");
    *locked_ = true;
    auto lock = TakeLock(state_, process_, inode_->id, options, guard, "lock of inode " + std::to_string(inode_->id), locked_);
    if (!lock.ok()) *locked_ = false;
    return lock;
  }

 private:
  std::shared_ptr<State> state_;
  std::shared_ptr<Inode> inode_;
  std::shared_ptr<bool> locked_ = std::make_shared<bool>(false);  // under state_->mutex
  bool read_only_;
  bool transient_;
  uint32_t process_;
};


}  // namespace

SimFileSystem::SimFileSystem(uint64_t seed) : state_(std::make_shared<State>()) { state_->seed = seed; }
SimFileSystem::SimFileSystem(std::shared_ptr<State> state, uint32_t process)
    : state_(std::move(state)), process_(process) {}
SimFileSystem::~SimFileSystem() = default;

std::shared_ptr<SimFileSystem> SimFileSystem::FromImage(const CrashImage& image, uint64_t seed,
                                                        const std::vector<std::string>& dirs) {
  auto fs = std::make_shared<SimFileSystem>(seed);
  fs->state_->dirs.insert(dirs.begin(), dirs.end());
  for (const auto& [path, bytes] : image.files) {
    auto inode = fs->state_->NewInode(bytes);
    fs->state_->names[path] = inode;
    fs->state_->dirs.insert(dbdb::DirName(path));
    // The rebooted disk holds these bytes durably: the trace starts with them created and synced.
    fs->state_->Record(TraceOp{TraceOp::Kind::kCreate, inode->id, path, "", 0, 0, ""}, 0);
    if (!bytes.empty()) {
      fs->state_->Record(TraceOp{TraceOp::Kind::kWrite, inode->id, "", "", 0, bytes.size(), bytes}, 0);
    }
    fs->state_->Record(TraceOp{TraceOp::Kind::kSync, inode->id, "", "", 0, 0, ""}, 0);
    fs->state_->Record(TraceOp{TraceOp::Kind::kSyncDir, 0, dbdb::DirName(path), "", 0, 0, ""}, 0);
  }
  return fs;
}

std::shared_ptr<SimFileSystem> SimFileSystem::NewProcess(const std::string& name) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  state_->processes.emplace_back(name);
  auto id = static_cast<uint32_t>(state_->processes.size() - 1);
  return std::shared_ptr<SimFileSystem>(new SimFileSystem(state_, id));
}

void SimFileSystem::Kill() {
  std::lock_guard<std::mutex> guard(state_->mutex);
  state_->KillLocked(process_);
}

bool SimFileSystem::killed() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->processes[process_].killed;
}

std::optional<uint64_t> SimFileSystem::KilledAt() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  const State::Process& p = state_->processes[process_];
  return p.killed ? std::optional<uint64_t>(p.killed_at) : std::nullopt;
}

uint64_t SimFileSystem::FaultsFired() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->processes[process_].faults_fired;
}

void SimFileSystem::ArmFault(ArmedFault fault) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  state_->processes[process_].faults.push_back(std::move(fault));
}

std::string SimFileSystem::RunScheduled(const std::vector<std::shared_ptr<SimFileSystem>>& processes,
                                        const std::vector<std::function<void()>>& bodies,
                                        const Schedule& schedule) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  State& s = *state_;
  std::vector<uint32_t> ids;
  for (const auto& p : processes) {
    ids.push_back(p->process_);
    s.processes[p->process_].participant = true;
    s.processes[p->process_].finished = false;
  }
  s.scheduling = true;
  s.aborted = false;
  s.running = kNoProcess;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < bodies.size(); i++) {
    uint32_t id = ids[i];
    threads.emplace_back([this, id, body = bodies[i]] {
      {
        std::unique_lock<std::mutex> g(state_->mutex);
        (void)state_->Enter(id, g);  // its first turn: nothing runs before the schedule says so
      }
      body();
      std::lock_guard<std::mutex> g(state_->mutex);
      state_->processes[id].finished = true;
      state_->changed.notify_all();
    });
  }
  std::string outcome = DriveSchedule(guard, ids, schedule);
  s.scheduling = false;
  s.running = kNoProcess;
  for (uint32_t id : ids) s.processes[id].participant = false;
  guard.unlock();
  for (auto& t : threads) t.join();
  return outcome;
}

std::string SimFileSystem::DriveSchedule(std::unique_lock<std::mutex>& guard, const std::vector<uint32_t>& ids,
                                         const Schedule& schedule) {
  State& s = *state_;
  std::string outcome;
  size_t next_kill = 0;
  while (true) {
    s.changed.wait(guard, [&] {
      for (uint32_t id : ids) {
        if (!s.processes[id].at_step && !s.processes[id].finished) return false;
      }
      return true;
    });
    std::vector<uint32_t> eligible;
    bool all_finished = true;
    for (uint32_t id : ids) {
      const State::Process& p = s.processes[id];
      if (p.finished) continue;
      all_finished = false;
      if (p.waits_for_lock == 0 || s.LockFree(p.waits_for_lock, p.waits_shared)) eligible.push_back(id);
    }
    if (all_finished) break;
    if (eligible.empty()) {
      outcome = "deadlock: every live process waits for a lock after " + std::to_string(s.steps) + " steps";
      for (uint32_t id : ids) s.KillLocked(id);
      s.aborted = true;
      s.changed.notify_all();
      s.changed.wait(guard, [&] {
        for (uint32_t id : ids) {
          if (!s.processes[id].finished) return false;
        }
        return true;
      });
      break;
    }
    uint8_t choice = s.steps < schedule.choices.size() ? schedule.choices[s.steps] : 0;
    uint32_t picked = eligible[choice % eligible.size()];
    while (next_kill < schedule.kills.size() && schedule.kills[next_kill] < s.steps) next_kill++;
    if (next_kill < schedule.kills.size() && schedule.kills[next_kill] == s.steps) s.KillLocked(picked);
    s.steps++;
    s.running = picked;
    s.processes[picked].at_step = false;
    s.changed.notify_all();
  }
  return outcome;
}

uint64_t SimFileSystem::ScheduledSteps() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->steps;
}

Result<std::unique_ptr<dbdb::File>> SimFileSystem::Open(const std::string& path, dbdb::OpenOptions options) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  int error_number;
  if (state_->Fires(process_, "faultfs/open", &error_number)) return InjectedError("open " + path, error_number);
  auto it = state_->names.find(path);
  if (it == state_->names.end()) {
    if (!options.create) return Status::NotFound("open " + path + ": no such file");
    if (state_->dirs.count(dbdb::DirName(path)) == 0) {
      return Status::NotFound("open " + path + ": no such directory");
    }
    auto inode = state_->NewInode("");
    it = state_->names.emplace(path, inode).first;
    state_->Record(TraceOp{TraceOp::Kind::kCreate, inode->id, path, "", 0, 0, ""}, process_);
  }
  return std::unique_ptr<dbdb::File>(new SimFile(state_, it->second, options.read_only, options.transient, process_));
}

Status SimFileSystem::Rename(const std::string& from, const std::string& to) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  int error_number;
  if (state_->Fires(process_, "faultfs/rename", &error_number)) return InjectedError("rename " + from, error_number);
  auto it = state_->names.find(from);
  if (it == state_->names.end()) return Status::NotFound("rename " + from + ": no such file");
  if (from == to) return Status::Ok();
  auto replaced = state_->names.find(to);
  if (replaced != state_->names.end()) replaced->second->links--;
  state_->names[to] = it->second;
  state_->names.erase(from);
  state_->Record(TraceOp{TraceOp::Kind::kRename, 0, from, to, 0, 0, ""}, process_);
  return Status::Ok();
}

Status SimFileSystem::Remove(const std::string& path) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  int error_number;
  if (state_->Fires(process_, "faultfs/remove", &error_number)) return InjectedError("remove " + path, error_number);
  auto it = state_->names.find(path);
  if (it == state_->names.end()) return Status::NotFound("remove " + path + ": no such file");
  it->second->links--;
  state_->names.erase(it);
  state_->Record(TraceOp{TraceOp::Kind::kRemove, 0, path, "", 0, 0, ""}, process_);
  return Status::Ok();
}

Result<bool> SimFileSystem::Exists(const std::string& path) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  return state_->names.count(path) != 0;
}

Result<uint64_t> SimFileSystem::Identity(const std::string& path) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  auto it = state_->names.find(path);
  if (it == state_->names.end()) return Status::NotFound("stat " + path + ": no such file");
  return it->second->id;
}

Result<std::vector<std::string>> SimFileSystem::List(const std::string& dir) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  if (state_->dirs.count(dir) == 0) return Status::NotFound("list " + dir + ": no such directory");
  std::vector<std::string> out;
  for (const auto& [path, inode] : state_->names) {
    if (dbdb::DirName(path) == dir) out.push_back(path.substr(path.find_last_of('/') + 1));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status SimFileSystem::CreateDir(const std::string& dir) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  // Directories are not part of the crash model: once created they exist (docs/PERSISTENCE.md).
  for (std::string d = dir; d != "." && d != "/" && !d.empty(); d = dbdb::DirName(d)) state_->dirs.insert(d);
  return Status::Ok();
}

Status SimFileSystem::SyncDir(const std::string& dir) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  int error_number;
  if (state_->Fires(process_, "faultfs/syncdir", &error_number)) {
    return InjectedError("sync directory " + dir, error_number);
  }
  if (state_->dirs.count(dir) == 0) return Status::NotFound("sync directory " + dir + ": no such directory");
  state_->Record(TraceOp{TraceOp::Kind::kSyncDir, 0, dir, "", 0, 0, ""}, process_);
  return Status::Ok();
}

Result<std::unique_ptr<dbdb::FileLock>> SimFileSystem::Lock(const std::string& path, dbdb::LockOptions options) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  State& s = *state_;
  DBDB_RETURN_IF_ERROR(s.Enter(process_, guard));
  int error_number;
  if (s.Fires(process_, "faultfs/lock", &error_number)) return InjectedError("lock " + path, error_number);
  // flock semantics: the lock is the inode's, found (or created) through the name.
  auto it = s.names.find(path);
  if (it == s.names.end()) {
    if (!options.create) return Status::NotFound("lock " + path + ": no such file");
    if (s.dirs.count(dbdb::DirName(path)) == 0) return Status::NotFound("lock " + path + ": no such directory");
    auto inode = s.NewInode("");
    it = s.names.emplace(path, inode).first;
    s.Record(TraceOp{TraceOp::Kind::kCreate, inode->id, path, "", 0, 0, ""}, process_);
  }
  return TakeLock(state_, process_, it->second->id, options, guard, "lock " + path, nullptr);
}

SimFileSystem::PathInfo SimFileSystem::Lookup(const std::string& path) const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  PathInfo info;
  if (auto it = state_->names.find(path); it != state_->names.end()) {
    info.exists = true;
    info.size = it->second->data.size();
    info.inode = it->second->id;
  } else if (state_->dirs.count(path) != 0) {
    info.exists = true;
    info.is_dir = true;
  }
  return info;
}

SimFileSystem::PathInfo SimFileSystem::LookupInode(uint64_t inode) const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  PathInfo info;
  auto it = state_->inodes.find(inode);
  if (auto node = it == state_->inodes.end() ? nullptr : it->second.lock()) {
    info.exists = true;
    info.size = node->data.size();
    info.inode = inode;
    info.links = node->links;
  }
  return info;
}

Result<std::unique_ptr<dbdb::File>> SimFileSystem::OpenInode(uint64_t inode, bool read_only) {
  std::unique_lock<std::mutex> guard(state_->mutex);
  DBDB_RETURN_IF_ERROR(state_->Enter(process_, guard));
  int error_number;
  if (state_->Fires(process_, "faultfs/open", &error_number)) {
    return InjectedError("open inode " + std::to_string(inode), error_number);
  }
  auto it = state_->inodes.find(inode);
  if (auto node = it == state_->inodes.end() ? nullptr : it->second.lock()) {
    return std::unique_ptr<dbdb::File>(new SimFile(state_, node, read_only, /*transient=*/false, process_));
  }
  return Status::NotFound("open inode " + std::to_string(inode) + ": no such inode");
}

Result<std::unique_ptr<dbdb::File>> SimFileSystem::HoldInode(uint64_t inode) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  auto it = state_->inodes.find(inode);
  if (auto node = it == state_->inodes.end() ? nullptr : it->second.lock()) {
    return std::unique_ptr<dbdb::File>(new SimFile(state_, node, true, /*transient=*/false, process_));
  }
  return Status::NotFound("inode " + std::to_string(inode) + ": no such inode");
}

Result<std::vector<std::pair<std::string, bool>>> SimFileSystem::ListEntries(const std::string& dir) const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (state_->dirs.count(dir) == 0) return Status::NotFound("list " + dir + ": no such directory");
  std::vector<std::pair<std::string, bool>> out;
  auto base = [](const std::string& p) { return p.substr(p.find_last_of('/') + 1); };
  for (const auto& [path, inode] : state_->names) {
    if (dbdb::DirName(path) == dir) out.emplace_back(base(path), false);
  }
  for (const auto& d : state_->dirs) {
    if (d != dir && d != "." && d != "/" && dbdb::DirName(d) == dir) out.emplace_back(base(d), true);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status SimFileSystem::RemoveDir(const std::string& dir) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (state_->dirs.count(dir) == 0 || dir == "/" || dir == ".") return Status::NotFound("rmdir " + dir + ": no such directory");
  for (const auto& [path, inode] : state_->names) {
    if (dbdb::DirName(path) == dir) return Status::Busy("rmdir " + dir + ": not empty");
  }
  for (const auto& d : state_->dirs) {
    if (d != dir && dbdb::DirName(d) == dir) return Status::Busy("rmdir " + dir + ": not empty");
  }
  state_->dirs.erase(dir);
  return Status::Ok();
}

std::vector<std::string> SimFileSystem::Dirs() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return {state_->dirs.begin(), state_->dirs.end()};
}

void SimFileSystem::WithTracker(const std::function<void(const PersistenceTracker&)>& f) const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  f(state_->tracker);
}

uint64_t SimFileSystem::seed() const { return state_->seed; }

std::vector<TraceOp> SimFileSystem::Trace() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->trace;
}

size_t SimFileSystem::TraceSize() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->trace.size();
}

std::map<uint32_t, uint64_t> SimFileSystem::BytesRead() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  std::map<uint32_t, uint64_t> out;
  for (size_t i = 0; i < state_->processes.size(); i++) out[static_cast<uint32_t>(i)] = state_->processes[i].bytes_read;
  return out;
}

std::map<std::string, uint64_t> SimFileSystem::FiredFaults() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->fired;
}

CrashImage SimFileSystem::LiveImage() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  CrashImage image;
  for (const auto& [path, inode] : state_->names) image.files[path] = inode->data;
  return image;
}

CrashImage SimFileSystem::DurableImage() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->tracker.Build(state_->tracker.NothingKept(0));
}

uint64_t CrashImage::Hash() const {
  uint64_t h = 0x243F6A8885A308D3ULL;
  for (const auto& [path, bytes] : files) {
    h = XXH3_64bits_withSeed(path.data(), path.size(), h);
    h = XXH3_64bits_withSeed(bytes.data(), bytes.size(), h ^ bytes.size());
  }
  return h;
}

std::string TraceOp::ToString() const {
  std::string who = process == 0 ? "" : "p" + std::to_string(process) + ": ";
  auto n = [](uint64_t v) { return std::to_string(v); };
  switch (kind) {
    case Kind::kCreate: return who + "create " + path + " (inode " + n(inode) + ")";
    case Kind::kWrite:
      return who + "write inode " + n(inode) + " [" + n(offset) + ", " + n(offset + size) + ")" +
             (transient ? " (transient)" : "");
    case Kind::kTruncate: return who + "truncate inode " + n(inode) + " to " + n(offset) + (transient ? " (transient)" : "");
    case Kind::kSync: return who + "sync inode " + n(inode);
    case Kind::kSyncLost: return who + "sync inode " + n(inode) + " FAILED (volatile writes lost)";
    case Kind::kRename: return who + "rename " + path + " -> " + path2;
    case Kind::kRemove: return who + "remove " + path;
    case Kind::kSyncDir: return who + "syncdir " + path;
    case Kind::kRead: return who + "read inode " + n(inode) + " [" + n(offset) + ", " + n(offset + size) + ")";
  }
  return "?";
}

}  // namespace faultfs
