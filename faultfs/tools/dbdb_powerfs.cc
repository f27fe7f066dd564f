// dbdb-powerfs: a FUSE filesystem whose semantics are the simulated filesystem's
// (docs/PERSISTENCE.md), for real, unmodified processes; and power cuts under them. See
// docs/POWERFS.md.
//
// The mount is served by one SimFileSystem: every write, truncate, sync, create, rename, remove and
// directory sync of any process becomes an operation of its trace, and the same PersistenceTracker
// that builds the simulator's crash states builds the mount's (faultfs::CutPower). There is one
// persistence model in the code, not two.
//
// A cut (a command written to the control file `.powerfs`, see faultfs/powerfs_client.h):
//   1. freezes the mount: it waits for the operations in flight; a process that calls into the
//      mount from now on is killed and its call fails;
//   2. kills (SIGKILL) every process that has the mount open: a file descriptor, a mapping, its
//      working or root directory on it; and waits until they are gone;
//   3. builds the crash state the plan and seed pick, replaces the machine with it (all durable,
//      every directory kept) and forgets every open file of the old machine;
//   4. resumes, and replies with the state's description (replayable: the same trace, plan and
//      seed give the same state).
// The kernel's caches cannot show the old machine afterwards: attributes and names are never
// cached (timeouts 0), pages are dropped at every open (no keep_cache), writes go through (no
// writeback cache), and a late write-back of a killed process's mapping carries a file handle of
// the old machine, which is refused.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse.h>

#include <dirent.h>
#include <fcntl.h>
#include <fiu.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "faultfs/crash_state.h"
#include "faultfs/powerfs_client.h"
#include "faultfs/sim_file_system.h"

namespace {

using faultfs::SimFileSystem;

const std::string kControlPath = std::string("/") + faultfs::kPowerFsControlName;

int Errno(const dbdb::Status& s) {
  switch (s.code()) {
    case dbdb::StatusCode::kOk: return 0;
    case dbdb::StatusCode::kNotFound: return ENOENT;
    case dbdb::StatusCode::kNoSpace: return ENOSPC;
    case dbdb::StatusCode::kInvalidArgument: return EINVAL;
    case dbdb::StatusCode::kBusy: return ENOTEMPTY;
    default: return EIO;
  }
}

// The thread group of a thread (FUSE names the calling thread).
pid_t Tgid(pid_t tid) {
  std::ifstream status("/proc/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Tgid:", 0) == 0) return static_cast<pid_t>(std::stol(line.substr(5)));
  }
  return tid;
}

// Whether a process is gone or a zombie (its files and mappings released).
bool Dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return true;
  size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return true;
  char state = text[paren + 2];
  return state == 'Z' || state == 'X';
}

bool UnderMount(const std::string& path, const std::string& mount) {
  return path == mount || path.rfind(mount + "/", 0) == 0;
}

std::string ReadLink(const std::string& path) {
  char buffer[PATH_MAX];
  ssize_t n = ::readlink(path.c_str(), buffer, sizeof(buffer) - 1);
  return n <= 0 ? std::string() : std::string(buffer, static_cast<size_t>(n));
}

// Every process (but `spare`) with the mount open: a descriptor, a mapping, its cwd or root.
std::set<pid_t> ProcessesOnMount(const std::string& mount, const std::set<pid_t>& spare) {
  std::set<pid_t> found;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* entry = ::readdir(proc)) {
    char* end;
    long value = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || value <= 0) continue;
    auto pid = static_cast<pid_t>(value);
    if (spare.count(pid) != 0) continue;
    const std::string base = "/proc/" + std::string(entry->d_name);
    bool on = UnderMount(ReadLink(base + "/cwd"), mount) || UnderMount(ReadLink(base + "/root"), mount);
    if (!on) {
      if (DIR* fds = ::opendir((base + "/fd").c_str())) {
        while (dirent* fd = ::readdir(fds)) {
          if (fd->d_name[0] != '.' && UnderMount(ReadLink(base + "/fd/" + fd->d_name), mount)) {
            on = true;
            break;
          }
        }
        ::closedir(fds);
      }
    }
    if (!on) {
      std::ifstream maps(base + "/maps");
      std::string line;
      while (!on && std::getline(maps, line)) {
        size_t slash = line.find('/');
        on = slash != std::string::npos && UnderMount(line.substr(slash), mount);
      }
    }
    if (on) found.insert(pid);
  }
  ::closedir(proc);
  return found;
}

struct Handle {
  std::shared_ptr<dbdb::File> file;  // null for the control file and directories
  std::string reply;                  // the control file's last reply
  std::string dir;                    // an open directory's path
};

class PowerFs {
 public:
  PowerFs(std::string mount, uint64_t seed) : mount_(std::move(mount)), seed_(seed) {
    machine_ = std::make_shared<SimFileSystem>(seed_);
  }

  // Admission of one operation: the machine it runs on, or an errno. While the mount is frozen
  // for a cut, a caller other than the cut's is killed and fails.
  class Op {
   public:
    explicit Op(PowerFs& fs) : fs_(fs) {
      pid_t pid = fuse_get_context()->pid;
      std::unique_lock<std::mutex> guard(fs_.mutex_);
      if (!fs_.killed_.empty() && fs_.killed_.count(Tgid(pid)) != 0) {
        error_ = EIO;
        return;
      }
      while (fs_.frozen_) {
        pid_t tgid = Tgid(pid);
        if (tgid != fs_.controller_) {
          fs_.killed_.insert(tgid);
          ::kill(tgid, SIGKILL);
          error_ = EIO;
          return;
        }
        fs_.changed_.wait(guard);
      }
      fs_.active_++;
      machine_ = fs_.machine_;
    }
    ~Op() {
      if (machine_ == nullptr) return;
      std::lock_guard<std::mutex> guard(fs_.mutex_);
      if (--fs_.active_ == 0) fs_.changed_.notify_all();
    }
    int error() const { return error_; }
    SimFileSystem& machine() { return *machine_; }
    // The open file behind a handle of this machine, or null (EBADF: a handle of a machine a cut
    // replaced, or the control file).
    std::shared_ptr<dbdb::File> File(const fuse_file_info* fi) {
      std::lock_guard<std::mutex> guard(fs_.mutex_);
      auto it = fs_.handles_.find(fi->fh);
      return it == fs_.handles_.end() ? nullptr : it->second.file;
    }

   private:
    PowerFs& fs_;
    std::shared_ptr<SimFileSystem> machine_;
    int error_ = 0;
  };

  uint64_t AddHandle(Handle handle) {
    std::lock_guard<std::mutex> guard(mutex_);
    uint64_t fh = next_handle_++;
    handles_[fh] = std::move(handle);
    return fh;
  }
  void DropHandle(uint64_t fh) {
    std::lock_guard<std::mutex> guard(mutex_);
    handles_.erase(fh);
  }
  bool IsControl(uint64_t fh) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = handles_.find(fh);
    return it != handles_.end() && it->second.file == nullptr && it->second.dir.empty();
  }
  std::string DirPath(uint64_t fh) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = handles_.find(fh);
    return it == handles_.end() ? std::string() : it->second.dir;
  }
  std::string Reply(uint64_t fh) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = handles_.find(fh);
    return it == handles_.end() ? std::string() : it->second.reply;
  }

  // Runs one control command for the calling process; the reply goes to the handle.
  int Control(uint64_t fh, const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    std::string reply;
    int error = 0;
    if (words.empty()) {
      error = EINVAL, reply = "empty command";
    } else if (words[0] == "cut" || words[0] == "reset") {
      error = Cut(words, &reply);
    } else if (words[0] == "count" && words.size() == 2) {
      faultfs::CrashPlan plan;
      if (!faultfs::ParseCrashPlan(words[1], &plan)) {
        error = EINVAL, reply = "unknown plan " + words[1] + " (drop, prefix, subset, torn, all)";
      } else {
        std::lock_guard<std::mutex> guard(mutex_);
        machine_->WithTracker([&](const faultfs::PersistenceTracker& t) { reply = std::to_string(t.CountStates(plan)); });
      }
    } else if (words[0] == "stats" && words.size() == 1) {
      std::lock_guard<std::mutex> guard(mutex_);
      size_t writes = 0, names = 0;
      machine_->WithTracker([&](const faultfs::PersistenceTracker& t) {
        writes = t.volatile_write_count();
        names = t.volatile_name_op_count();
      });
      reply = "cuts " + std::to_string(cuts_) + " killed " + std::to_string(killed_total_) + " trace_ops " +
              std::to_string(machine_->TraceSize()) + " volatile_writes " + std::to_string(writes) +
              " volatile_name_ops " + std::to_string(names);
    } else if (words[0] == "trace" && words.size() == 1) {
      std::shared_ptr<SimFileSystem> machine;
      {
        std::lock_guard<std::mutex> guard(mutex_);
        machine = machine_;
      }
      for (const auto& op : machine->Trace()) reply += op.ToString() + "\n";
    } else {
      error = EINVAL, reply = "unknown command '" + text + "' (cut PLAN SEED [STATE], count PLAN, reset, stats, trace)";
    }
    if (!reply.empty() && reply.back() != '\n') reply += "\n";
    std::lock_guard<std::mutex> guard(mutex_);
    if (auto it = handles_.find(fh); it != handles_.end()) it->second.reply = reply;
    return error;
  }

 private:
  // cut PLAN SEED [STATE] | reset
  int Cut(const std::vector<std::string>& words, std::string* reply) {
    const bool reset = words[0] == "reset";
    faultfs::CrashPlan plan = faultfs::CrashPlan::kDrop;
    uint64_t seed = 0, state = 0;
    bool has_state = false;
    if (reset ? words.size() != 1 : words.size() < 3 || words.size() > 4) {
      *reply = "usage: cut PLAN SEED [STATE] | reset";
      return EINVAL;
    }
    if (!reset) {
      if (!faultfs::ParseCrashPlan(words[1], &plan)) {
        *reply = "unknown plan " + words[1] + " (drop, prefix, subset, torn, all)";
        return EINVAL;
      }
      char* end;
      seed = std::strtoull(words[2].c_str(), &end, 10);
      if (*end != '\0' || words[2].empty()) {
        *reply = "seed must be a number: " + words[2];
        return EINVAL;
      }
      if (words.size() == 4) {
        has_state = true;
        state = std::strtoull(words[3].c_str(), &end, 10);
        if (*end != '\0' || words[3].empty()) {
          *reply = "state must be a number: " + words[3];
          return EINVAL;
        }
      }
    }
    const pid_t controller = Tgid(fuse_get_context()->pid);
    std::unique_lock<std::mutex> guard(mutex_);
    if (frozen_) {
      *reply = "a cut is already running";
      return EBUSY;
    }
    // 1. Freeze: no operation runs from here on; the ones in flight finish.
    frozen_ = true;
    controller_ = controller;
    changed_.wait(guard, [&] { return active_ == 0; });
    // 2. Kill every process with the mount open (and any that calls in meanwhile: Op).
    guard.unlock();
    std::set<pid_t> victims = ProcessesOnMount(mount_, {::getpid(), controller});
    guard.lock();
    for (pid_t pid : victims) {
      killed_.insert(pid);
      ::kill(pid, SIGKILL);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::vector<pid_t> alive;
    do {
      alive.clear();
      for (pid_t pid : killed_) {
        if (!Dead(pid)) alive.push_back(pid);
      }
      if (alive.empty()) break;
      guard.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      guard.lock();
    } while (std::chrono::steady_clock::now() < deadline);
    const size_t killed_now = killed_.size();
    killed_total_ += killed_now;
    // 3. The crash state, as the simulator builds it.
    std::string outcome;
    int error = 0;
    if (reset) {
      machine_ = std::make_shared<SimFileSystem>(seed_);
      outcome = "reset: an empty filesystem";
    } else {
      auto cut = faultfs::CutPower(*machine_, plan, seed, has_state ? &state : nullptr);
      if (!cut.ok()) {
        error = EINVAL;
        outcome = cut.status().message() + "; nothing was reset (the processes are killed)";
      } else {
        outcome = "cut " + std::to_string(++cuts_) + ": plan " + faultfs::CrashPlanName(plan) + " seed " +
                  std::to_string(seed) + (has_state ? " state " + std::to_string(state) : "") + " of " +
                  std::to_string(cut->states) + " states after " + std::to_string(machine_->TraceSize()) +
                  " operations: " + cut->choice.Describe();
        machine_ = cut->rebooted;
      }
    }
    if (error == 0) {  // files of the old machine: every later use fails (EBADF); control files stay
      for (auto it = handles_.begin(); it != handles_.end();) {
        it = it->second.file || !it->second.dir.empty() ? handles_.erase(it) : std::next(it);
      }
    }
    // Processes that are gone cannot call in again; one still dying stays refused.
    for (auto it = killed_.begin(); it != killed_.end();) it = Dead(*it) ? killed_.erase(it) : std::next(it);
    *reply = outcome + "; killed " + std::to_string(killed_now) + " processes" +
             (alive.empty() ? "" : " (" + std::to_string(alive.size()) + " not yet gone after 30 s)");
    // 4. Resume.
    frozen_ = false;
    controller_ = 0;
    changed_.notify_all();
    std::clog << "dbdb-powerfs: " << *reply << std::endl;
    return error;
  }

  const std::string mount_;
  const uint64_t seed_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::shared_ptr<SimFileSystem> machine_;
  bool frozen_ = false;
  pid_t controller_ = 0;
  int active_ = 0;
  std::set<pid_t> killed_;
  uint64_t killed_total_ = 0;
  uint64_t cuts_ = 0;
  std::map<uint64_t, Handle> handles_;
  uint64_t next_handle_ = 1;
};

PowerFs* Fs() { return static_cast<PowerFs*>(fuse_get_context()->private_data); }

std::string Path(const char* path) { return path == nullptr ? std::string() : std::string(path); }

struct timespec g_mount_time;

void FillStat(struct stat* st, bool dir, uint64_t size, mode_t mode) {
  std::memset(st, 0, sizeof(*st));
  st->st_mode = (dir ? S_IFDIR : S_IFREG) | mode;
  st->st_nlink = dir ? 2 : 1;
  st->st_size = static_cast<off_t>(size);
  st->st_blksize = 4096;
  st->st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
  st->st_uid = ::getuid();
  st->st_gid = ::getgid();
  st->st_atim = st->st_mtim = st->st_ctim = g_mount_time;
}

void* Init(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->hard_remove = 1;   // an unlinked open file keeps no hidden name
  cfg->nullpath_ok = 1;   // ... and is reached through its handle
  cfg->kernel_cache = 0;  // pages dropped at every open
  cfg->direct_io = 0;     // shared mappings work
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  return fuse_get_context()->private_data;
}

int GetAttr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (Path(path) == kControlPath) {
    FillStat(st, false, 0, 0600);
    return 0;
  }
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  if (fi != nullptr) {
    if (auto file = op.File(fi)) {
      auto size = file->Size();
      if (!size.ok()) return -Errno(size.status());
      FillStat(st, false, *size, 0644);
      return 0;
    }
    if (path == nullptr) {
      if (Fs()->DirPath(fi->fh).empty()) return -EBADF;
      FillStat(st, true, 0, 0755);
      return 0;
    }
  }
  auto info = op.machine().Lookup(Path(path));
  if (!info.exists) return -ENOENT;
  FillStat(st, info.is_dir, info.size, info.is_dir ? 0755 : 0644);
  return 0;
}

int OpenFile(const char* path, fuse_file_info* fi, bool create) {
  const std::string p = Path(path);
  if (p == kControlPath) {
    fi->direct_io = 1;
    fi->fh = Fs()->AddHandle(Handle{});
    return 0;
  }
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto info = op.machine().Lookup(p);
  if (info.is_dir) return -EISDIR;
  if (info.exists && create && (fi->flags & O_EXCL)) return -EEXIST;
  if (!info.exists && !create) return -ENOENT;
  const bool read_only = (fi->flags & O_ACCMODE) == O_RDONLY;
  auto file = op.machine().Open(p, dbdb::OpenOptions{.create = create, .read_only = read_only});
  if (!file.ok()) return -Errno(file.status());
  if ((fi->flags & O_TRUNC) && !read_only && info.exists && info.size > 0) {
    dbdb::Status s = (*file)->Truncate(0);
    if (!s.ok()) return -Errno(s);
  }
  fi->fh = Fs()->AddHandle(Handle{std::shared_ptr<dbdb::File>(std::move(*file)), ""});
  return 0;
}

int Open(const char* path, fuse_file_info* fi) { return OpenFile(path, fi, false); }
int Create(const char* path, mode_t, fuse_file_info* fi) { return OpenFile(path, fi, true); }

int Read(const char*, char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  if (Fs()->IsControl(fi->fh)) {
    std::string reply = Fs()->Reply(fi->fh);
    if (static_cast<uint64_t>(offset) >= reply.size()) return 0;
    size_t n = std::min(size, reply.size() - static_cast<size_t>(offset));
    std::memcpy(buf, reply.data() + offset, n);
    return static_cast<int>(n);
  }
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto file = op.File(fi);
  if (file == nullptr) return -EBADF;
  auto n = file->ReadAt(static_cast<uint64_t>(offset), std::span<char>(buf, size));
  if (!n.ok()) return -Errno(n.status());
  return static_cast<int>(*n);
}

int Write(const char*, const char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  if (Fs()->IsControl(fi->fh)) {
    int error = Fs()->Control(fi->fh, std::string(buf, size));
    return error != 0 ? -error : static_cast<int>(size);
  }
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto file = op.File(fi);
  if (file == nullptr) return -EBADF;
  dbdb::Status s = file->WriteAt(static_cast<uint64_t>(offset), std::span<const char>(buf, size));
  if (!s.ok()) return -Errno(s);
  return static_cast<int>(size);
}

int Truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (Path(path) == kControlPath || (fi != nullptr && Fs()->IsControl(fi->fh))) return 0;
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  std::shared_ptr<dbdb::File> file = fi != nullptr ? op.File(fi) : nullptr;
  if (file == nullptr) {
    if (path == nullptr) return -EBADF;
    if (!op.machine().Lookup(path).exists) return -ENOENT;
    auto opened = op.machine().Open(path, dbdb::OpenOptions{});
    if (!opened.ok()) return -Errno(opened.status());
    file = std::move(*opened);
  }
  dbdb::Status s = file->Truncate(static_cast<uint64_t>(size));
  return s.ok() ? 0 : -Errno(s);
}

int Fsync(const char*, int, fuse_file_info* fi) {
  if (Fs()->IsControl(fi->fh)) return 0;
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto file = op.File(fi);
  if (file == nullptr) return -EBADF;
  dbdb::Status s = file->Sync();
  return s.ok() ? 0 : -Errno(s);
}

int FsyncDir(const char*, int, fuse_file_info* fi) {
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  std::string dir = Fs()->DirPath(fi->fh);
  if (dir.empty()) return -EBADF;
  dbdb::Status s = op.machine().SyncDir(dir);
  return s.ok() ? 0 : -Errno(s);
}

int Flush(const char*, fuse_file_info*) { return 0; }

int Release(const char*, fuse_file_info* fi) {
  Fs()->DropHandle(fi->fh);
  return 0;
}

int Unlink(const char* path) {
  if (Path(path) == kControlPath) return -EPERM;
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto info = op.machine().Lookup(path);
  if (info.is_dir) return -EISDIR;
  dbdb::Status s = op.machine().Remove(path);
  return s.ok() ? 0 : -Errno(s);
}

int Rename(const char* from, const char* to, unsigned int flags) {
  if (Path(from) == kControlPath || Path(to) == kControlPath) return -EPERM;
  if (flags & RENAME_EXCHANGE) return -EINVAL;
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto source = op.machine().Lookup(from);
  auto target = op.machine().Lookup(to);
  if (!source.exists) return -ENOENT;
  if (source.is_dir) return -EXDEV;  // directories are not in the crash model: not renamed
  if (target.is_dir) return -EISDIR;
  if (target.exists && (flags & RENAME_NOREPLACE)) return -EEXIST;
  if (!op.machine().Lookup(dbdb::DirName(to)).is_dir) return -ENOENT;
  dbdb::Status s = op.machine().Rename(from, to);
  return s.ok() ? 0 : -Errno(s);
}

int MkDir(const char* path, mode_t) {
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  if (op.machine().Lookup(path).exists || Path(path) == kControlPath) return -EEXIST;
  if (!op.machine().Lookup(dbdb::DirName(path)).is_dir) return -ENOENT;
  dbdb::Status s = op.machine().CreateDir(path);
  return s.ok() ? 0 : -Errno(s);
}

int RmDir(const char* path) {
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto info = op.machine().Lookup(path);
  if (info.exists && !info.is_dir) return -ENOTDIR;
  dbdb::Status s = op.machine().RemoveDir(path);
  return s.ok() ? 0 : -Errno(s);
}

int OpenDir(const char* path, fuse_file_info* fi) {
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto info = op.machine().Lookup(Path(path));
  if (!info.exists) return -ENOENT;
  if (!info.is_dir) return -ENOTDIR;
  fi->fh = Fs()->AddHandle(Handle{nullptr, "", Path(path)});
  return 0;
}

int ReleaseDir(const char*, fuse_file_info* fi) {
  Fs()->DropHandle(fi->fh);
  return 0;
}

int ReadDir(const char*, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info* fi, fuse_readdir_flags) {
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  std::string dir = Fs()->DirPath(fi->fh);
  if (dir.empty()) return -EBADF;
  auto entries = op.machine().ListEntries(dir);
  if (!entries.ok()) return -Errno(entries.status());
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  for (const auto& [name, dir] : *entries) {
    if (fill(buf, name.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  return 0;
}

int Utimens(const char* path, const struct timespec*, fuse_file_info* fi) {
  if (Path(path) == kControlPath || fi != nullptr) return 0;
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  return op.machine().Lookup(Path(path)).exists ? 0 : -ENOENT;
}
int Chmod(const char* path, mode_t, fuse_file_info* fi) { return Utimens(path, nullptr, fi); }
int Chown(const char* path, uid_t, gid_t, fuse_file_info* fi) { return Utimens(path, nullptr, fi); }

int StatFs(const char*, struct statvfs* st) {
  std::memset(st, 0, sizeof(*st));
  st->f_bsize = st->f_frsize = 4096;
  st->f_blocks = st->f_bfree = st->f_bavail = uint64_t{1} << 28;  // 1 TiB: memory is the limit
  st->f_files = st->f_ffree = st->f_favail = uint64_t{1} << 24;
  st->f_namemax = 255;
  return 0;
}

// posix_fallocate's mode 0 only: the file grows, as a truncate up would.
int Fallocate(const char*, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  if (mode != 0) return -EOPNOTSUPP;
  PowerFs::Op op(*Fs());
  if (op.error()) return -op.error();
  auto file = op.File(fi);
  if (file == nullptr) return -EBADF;
  auto size = file->Size();
  if (!size.ok()) return -Errno(size.status());
  uint64_t end = static_cast<uint64_t>(offset) + static_cast<uint64_t>(length);
  if (end <= *size) return 0;
  dbdb::Status s = file->Truncate(end);
  return s.ok() ? 0 : -Errno(s);
}

int Link(const char*, const char*) { return -EPERM; }
int Symlink(const char*, const char*) { return -EPERM; }
int MkNod(const char*, mode_t, dev_t) { return -EPERM; }

fuse_operations Operations() {
  fuse_operations ops{};
  ops.init = Init;
  ops.getattr = GetAttr;
  ops.open = Open;
  ops.create = Create;
  ops.read = Read;
  ops.write = Write;
  ops.truncate = Truncate;
  ops.fsync = Fsync;
  ops.fsyncdir = FsyncDir;
  ops.flush = Flush;
  ops.release = Release;
  ops.unlink = Unlink;
  ops.rename = Rename;
  ops.mkdir = MkDir;
  ops.rmdir = RmDir;
  ops.opendir = OpenDir;
  ops.releasedir = ReleaseDir;
  ops.readdir = ReadDir;
  ops.utimens = Utimens;
  ops.chmod = Chmod;
  ops.chown = Chown;
  ops.statfs = StatFs;
  ops.fallocate = Fallocate;
  ops.link = Link;
  ops.symlink = Symlink;
  ops.mknod = MkNod;
  return ops;
}

std::string AbsolutePath(const std::string& dir) {
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) return "";
  return resolved;
}

int Mount(const std::string& dir, uint64_t seed, bool foreground, bool debug) {
  std::string mount = AbsolutePath(dir);
  if (mount.empty()) {
    std::cerr << "dbdb-powerfs: mount point " << dir << ": " << std::strerror(errno) << "\n";
    return 2;
  }
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    std::cerr << "dbdb-powerfs: /dev/fuse: " << std::strerror(errno) << " (FUSE is needed: modprobe fuse)\n";
    return 2;
  }
  std::cout << "seed: " << seed << std::endl;
  ::clock_gettime(CLOCK_REALTIME, &g_mount_time);
  fiu_init(0);
  PowerFs fs(mount, seed);
  std::vector<std::string> args = {"dbdb-powerfs", "-o", "fsname=dbdb-powerfs,subtype=powerfs"};
  if (::getuid() == 0) args.insert(args.end(), {"-o", "allow_other"});
  if (debug) args.push_back("-d");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_operations ops = Operations();
  fuse* f = fuse_new(&fargs, &ops, sizeof(ops), &fs);
  if (f == nullptr) {
    std::cerr << "dbdb-powerfs: fuse_new failed\n";
    return 2;
  }
  if (fuse_mount(f, mount.c_str()) != 0) {
    std::cerr << "dbdb-powerfs: cannot mount on " << mount << "\n";
    fuse_destroy(f);
    return 2;
  }
  std::cout << "dbdb-powerfs: mounted on " << mount << std::endl;
  if (fuse_daemonize(foreground ? 1 : 0) != 0 || fuse_set_signal_handlers(fuse_get_session(f)) != 0) {
    fuse_unmount(f);
    fuse_destroy(f);
    return 2;
  }
  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(config, 64);
  int rc = fuse_loop_mt(f, config);
  fuse_loop_cfg_destroy(config);
  fuse_remove_signal_handlers(fuse_get_session(f));
  fuse_unmount(f);
  fuse_destroy(f);
  return rc == 0 ? 0 : 1;
}

int Unmount(const std::string& dir) {
  std::string mount = AbsolutePath(dir);
  if (mount.empty()) mount = dir;
  if (::umount2(mount.c_str(), 0) == 0) return 0;
  if (errno == EPERM) {
    pid_t child = ::fork();
    if (child == 0) {
      ::execlp("fusermount3", "fusermount3", "-u", mount.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
  }
  std::cerr << "dbdb-powerfs: unmount " << mount << ": " << std::strerror(errno) << "\n";
  return 1;
}

int Command(const std::string& dir, const std::string& command) {
  auto reply = faultfs::PowerFsCommand(dir, command);
  if (!reply.ok()) {
    std::cerr << "dbdb-powerfs: " << reply.status().message() << "\n";
    return 1;
  }
  std::cout << *reply << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dbdb-powerfs: a FUSE filesystem with the simulated filesystem's persistence model "
               "(docs/PERSISTENCE.md), and power cuts under the real processes that use it (docs/POWERFS.md)"};
  app.require_subcommand(1);
  std::string dir, plan = "prefix";
  uint64_t seed = 0, state = 0;
  bool foreground = false, debug = false;

  auto* mount = app.add_subcommand("mount", "mount on DIR (returns once it is mounted, unless --foreground)");
  mount->add_option("dir", dir, "mount point")->required();
  auto* seed_option = mount->add_option("--seed", seed, "the simulated machine's seed (default: random, printed first)");
  mount->add_flag("--foreground,-f", foreground, "stay in the foreground");
  mount->add_flag("--debug,-d", debug, "print every FUSE request");

  auto* cut = app.add_subcommand("cut", "cut the power under DIR: kill every process using it and reset it to a crash state");
  cut->add_option("dir", dir, "mount point")->required();
  cut->add_option("--plan", plan, "drop, prefix, subset, torn or all")
      ->check(CLI::IsMember({"drop", "prefix", "subset", "torn", "all"}));
  cut->add_option("--seed", seed, "which crash state the plan picks")->required();
  auto* state_option = cut->add_option("--state", state, "the STATE-th of the plan's states instead (at most 4096)");

  auto* count = app.add_subcommand("count", "how many crash states --plan allows now");
  count->add_option("dir", dir, "mount point")->required();
  count->add_option("--plan", plan, "drop, prefix, subset, torn or all")
      ->check(CLI::IsMember({"drop", "prefix", "subset", "torn", "all"}));
  auto* reset = app.add_subcommand("reset", "kill every process using DIR and empty it (a new disk)");
  reset->add_option("dir", dir, "mount point")->required();
  auto* stats = app.add_subcommand("stats", "cuts, processes killed, operations since the last cut");
  stats->add_option("dir", dir, "mount point")->required();
  auto* trace = app.add_subcommand("trace", "print the trace since the last cut");
  trace->add_option("dir", dir, "mount point")->required();
  auto* unmount = app.add_subcommand("unmount", "unmount DIR");
  unmount->add_option("dir", dir, "mount point")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (mount->parsed()) {
    if (seed_option->count() == 0) seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
    return Mount(dir, seed, foreground, debug);
  }
  if (cut->parsed()) {
    return Command(dir, "cut " + plan + " " + std::to_string(seed) +
                            (state_option->count() > 0 ? " " + std::to_string(state) : ""));
  }
  if (count->parsed()) return Command(dir, "count " + plan);
  if (reset->parsed()) return Command(dir, "reset");
  if (stats->parsed()) return Command(dir, "stats");
  if (trace->parsed()) return Command(dir, "trace");
  if (unmount->parsed()) return Unmount(dir);
  return 2;
}
