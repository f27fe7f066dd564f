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
//   1. freezes the mount: it waits for the operations in flight; a call that arrives from now on
//      fails with EIO (a process the cut kills, or any other: nothing waits inside the kernel
//      holding a lock a dying victim may need);
//   2. kills (SIGKILL) every process that has the mount open: a file descriptor, a mapping, its
//      working or root directory on it; and waits until they are gone;
//   3. builds the crash state the plan and seed pick, replaces the machine with it (all durable,
//      every directory kept) and forgets every open file of the old machine;
//   4. resumes, and replies with the state's description (replayable: the same trace, plan and
//      seed give the same state).
// The kernel's caches cannot show the old machine afterwards: attributes and names are never
// cached (timeouts 0), a file's inode number carries the machine's generation (so a file after a
// cut is a new inode to the kernel, with no cached pages), writes go through (no writeback cache),
// and a late write-back of a killed process's mapping carries a file handle of the old machine,
// which is refused. The low-level FUSE API serves inodes, not paths, so an open file keeps working
// after its name is removed or renamed over (fstat included), as on a disk.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>

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
#include <optional>
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

// Whether a thread is gone or a zombie.
bool TaskDead(const std::string& stat_path) {
  std::ifstream stat(stat_path);
  std::string text;
  if (!std::getline(stat, text)) return true;
  size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return true;
  char state = text[paren + 2];
  return state == 'Z' || state == 'X';
}

// Whether every thread of a process is gone or a zombie: its main thread exits first, while
// another may still be inside a call to the mount.
bool Dead(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return true;
  bool dead = true;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    if (!TaskDead(tasks + "/" + entry->d_name + "/stat")) {
      dead = false;
      break;
    }
  }
  ::closedir(dir);
  return dead;
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
          const std::string target = fd->d_name[0] == '.' ? "" : ReadLink(base + "/fd/" + fd->d_name);
          // The control file alone does not make a victim: its holder talks to the daemon.
          if (UnderMount(target, mount) && target != mount + "/" + faultfs::kPowerFsControlName) {
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

// Inode numbers. The root is FUSE's 1, the control file 2, other directories 3 and up (they
// outlive cuts, as directories do in the model). A file's number carries the machine's generation
// (bumped by every cut) and the simulator's inode number, so a number the kernel still holds from
// before a cut names nothing after it (ESTALE), and a file at the same path after a cut is a new
// inode to the kernel, with no cached pages.
constexpr fuse_ino_t kControlIno = 2;
constexpr uint64_t kFileTag = uint64_t{1} << 62;

struct DirEntry {
  std::string name;
  fuse_ino_t ino;
  bool dir;
};

struct Handle {
  std::shared_ptr<dbdb::File> file;  // an open file
  fuse_ino_t ino = 0;
  bool control = false;              // the control file: `reply` is its content, read from `read_at`
  std::string reply;
  size_t read_at = 0;
  bool dir = false;                  // an open directory: `entries` as of opendir, `path`
  std::string path;
  std::vector<DirEntry> entries;
};

class PowerFs {
 public:
  PowerFs(std::string mount, uint64_t seed) : mount_(std::move(mount)), seed_(seed) {
    machine_ = std::make_shared<SimFileSystem>(seed_);
    dir_paths_[FUSE_ROOT_ID] = "/";
    dir_inos_["/"] = FUSE_ROOT_ID;
  }

  // Admission of one operation: the machine it runs on (and its generation), or an errno. While the
  // mount is frozen for a cut, a caller other than the cut's is killed and fails.
  class Op {
   public:
    Op(PowerFs& fs, fuse_req_t req) : fs_(fs) {
      std::unique_lock<std::mutex> guard(fs_.mutex_);
      // During a cut every call fails: a victim's (so that it can die), the kernel's own (pid 0:
      // the write-back of a mapping of the machine going away), and anyone else's, since a call
      // that waited would hold kernel locks (a directory's, a file's) that a dying victim may need.
      // A process a cut killed fails until every one of its threads is gone: a call it was in when
      // the cut came must not reach the machine after it. (Its thread group is looked up only
      // then: reading /proc on every call would cost every call.)
      if (!fs_.frozen_ && !fs_.killed_.empty()) {
        guard.unlock();
        const pid_t tgid = Tgid(fuse_req_ctx(req)->pid);
        guard.lock();
        if (fs_.killed_.count(tgid) != 0) {
          error_ = EIO;
          return;
        }
      }
      if (fs_.frozen_) {
        error_ = EIO;
        return;
      }
      fs_.active_++;
      machine_ = fs_.machine_;
      generation_ = fs_.generation_;
    }
    ~Op() {
      if (machine_ == nullptr) return;
      std::lock_guard<std::mutex> guard(fs_.mutex_);
      if (--fs_.active_ == 0) fs_.changed_.notify_all();
    }
    int error() const { return error_; }
    SimFileSystem& machine() { return *machine_; }
    fuse_ino_t FileIno(uint64_t inode) const { return kFileTag | (generation_ << 32) | inode; }
    // The simulator's inode number behind a file's number, or 0 (not a file, or from before a cut).
    uint64_t Inode(fuse_ino_t ino) const {
      if ((ino & kFileTag) == 0 || ((ino >> 32) & 0x3fffffff) != (generation_ & 0x3fffffff)) return 0;
      return ino & 0xffffffff;
    }
    // The open file behind a handle of this machine, or null (a handle a cut made stale).
    std::shared_ptr<dbdb::File> File(const fuse_file_info* fi) {
      std::lock_guard<std::mutex> guard(fs_.mutex_);
      auto it = fs_.handles_.find(fi->fh);
      return it == fs_.handles_.end() ? nullptr : it->second.file;
    }
    // Keeps the inode of a file number the kernel was just given (lookup, create) alive until the
    // kernel forgets it: an open after its name was renamed over or removed still opens it, as on
    // a disk (PERSISTENCE.md item 12).
    void Pin(fuse_ino_t ino) {
      uint64_t inode = Inode(ino);
      if (inode == 0) return;
      std::unique_lock<std::mutex> guard(fs_.mutex_);
      if (auto it = fs_.pins_.find(ino); it != fs_.pins_.end()) {
        it->second.lookups++;
        return;
      }
      guard.unlock();
      auto file = machine_->HoldInode(inode);
      guard.lock();
      if (!file.ok()) return;
      auto [it, added] = fs_.pins_.try_emplace(ino, Pinned{std::shared_ptr<dbdb::File>(std::move(*file)), 1});
      if (!added) it->second.lookups++;  // another lookup pinned it meanwhile
    }

   private:
    PowerFs& fs_;
    std::shared_ptr<SimFileSystem> machine_;
    uint64_t generation_ = 0;
    int error_ = 0;
  };

  // A directory's path by number ("" if unknown), and the number of a directory's path.
  std::string DirPath(fuse_ino_t ino) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = dir_paths_.find(ino);
    return it == dir_paths_.end() ? std::string() : it->second;
  }
  fuse_ino_t DirIno(const std::string& path) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto [it, added] = dir_inos_.emplace(path, next_dir_ino_);
    if (added) dir_paths_[next_dir_ino_++] = path;
    return it->second;
  }

  void Forget(fuse_ino_t ino, uint64_t lookups) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = pins_.find(ino);
    if (it == pins_.end()) return;
    if (it->second.lookups <= lookups) {
      pins_.erase(it);
    } else {
      it->second.lookups -= lookups;
    }
  }
  // After rmdir: a directory made later at the same path is a new inode to the kernel.
  void DropDir(const std::string& path) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = dir_inos_.find(path);
    if (it == dir_inos_.end()) return;
    dir_paths_.erase(it->second);
    dir_inos_.erase(it);
  }

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
    return it != handles_.end() && it->second.control;
  }
  // A copy of an open directory's handle (entries and path), or nullopt.
  std::optional<Handle> Dir(uint64_t fh) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = handles_.find(fh);
    if (it == handles_.end() || !it->second.dir) return std::nullopt;
    return it->second;
  }
  // The next `size` bytes of the control file's reply: a cursor that each command sets back to
  // the start, so `echo cmd >&3; cat <&3` reads the whole reply whatever the descriptor's offset.
  std::string ReadReply(uint64_t fh, size_t size) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = handles_.find(fh);
    if (it == handles_.end()) return "";
    Handle& h = it->second;
    std::string out = h.reply.substr(std::min(h.read_at, h.reply.size()), size);
    h.read_at += out.size();
    return out;
  }

  // Runs one control command for the calling process; the reply goes to the handle.
  int Control(fuse_req_t req, uint64_t fh, const std::string& text) {
    std::istringstream in(text);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    std::string reply;
    int error = 0;
    if (words.empty()) {
      error = EINVAL, reply = "empty command";
    } else if (words[0] == "cut" || words[0] == "reset") {
      error = Cut(Tgid(fuse_req_ctx(req)->pid), words, &reply);
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
              " volatile_name_ops " + std::to_string(names) + " held_writes " + std::to_string(held_writes_);
    } else if (words[0] == "fault" && words.size() >= 2 && words.size() <= 4) {
      error = ArmFault(words, &reply);
    } else if (words[0] == "hold" && words.size() == 2 && words[1] == "write") {
      std::lock_guard<std::mutex> guard(mutex_);
      if (frozen_) {
        error = EBUSY, reply = "a cut is running";
      } else {
        hold_next_write_ = true;
        reply = "holding the next write";
      }
    } else if (words[0] == "release" && words.size() == 1) {
      std::lock_guard<std::mutex> guard(mutex_);
      hold_next_write_ = false;
      releases_++;
      changed_.notify_all();
      reply = "released " + std::to_string(held_writes_) + " writes";
    } else if (words[0] == "trace" && words.size() == 1) {
      std::shared_ptr<SimFileSystem> machine;
      {
        std::lock_guard<std::mutex> guard(mutex_);
        machine = machine_;
      }
      for (const auto& op : machine->Trace()) reply += op.ToString() + "\n";
    } else {
      error = EINVAL, reply = "unknown command '" + text +
                              "' (cut PLAN SEED [STATE], count PLAN, fault POINT [SKIP [ERRNO]], hold write, release, reset, stats, "
                              "trace)";
    }
    if (!reply.empty() && reply.back() != '\n') reply += "\n";
    std::lock_guard<std::mutex> guard(mutex_);
    if (auto it = handles_.find(fh); it != handles_.end()) {
      it->second.reply = reply;
      it->second.read_at = 0;
    }
    return error;
  }

  // hold write | release: the next write to a file (after `hold write`) waits, before it reaches
  // the machine, until `release`, a cut, or a minute (so that no hold keeps the daemon from
  // exiting: its threads are joined). The kernel has copied a buffered write into its page cache
  // by then, and other processes see it there: a test holds a write in that window to see what the
  // kernel does meanwhile (PowerFs.AnOpenDuringAWriteInFlightLeavesNoStalePage). Not an operation:
  // the cut that ends the wait finds nothing in flight, and the write then fails as any call
  // during or after a cut of its machine does.
  void MaybeHoldWrite() {
    std::unique_lock<std::mutex> guard(mutex_);
    if (!hold_next_write_ || frozen_) return;
    hold_next_write_ = false;
    held_writes_++;
    const uint64_t released = releases_, freezes = freezes_;
    changed_.wait_for(guard, std::chrono::minutes(1), [&] { return releases_ != released || freezes_ != freezes; });
    held_writes_--;
  }

 private:
  // fault POINT [SKIP [ERRNO]]: the SKIP-th next call (0: the next) that reaches POINT fails, once,
  // with ERRNO (EIO or ENOSPC; default EIO): the simulator's fault points
  // (sim_file_system.h), armed on the machine the mount serves until the next cut.
  int ArmFault(const std::vector<std::string>& words, std::string* reply) {
    static const std::set<std::string> kPoints = {
        "faultfs/open",          "faultfs/read",       "faultfs/read/corrupt", "faultfs/write",
        "faultfs/write/short",   "faultfs/write/misdirect", "faultfs/truncate", "faultfs/allocate", "faultfs/sync",
        "faultfs/sync/lose",     "faultfs/rename",     "faultfs/remove",       "faultfs/syncdir"};
    faultfs::ArmedFault fault;
    fault.point = words[1];
    if (kPoints.count(fault.point) == 0) {
      *reply = "unknown fault point " + fault.point + " (faultfs/open, read, read/corrupt, write, write/short, "
               "write/misdirect, truncate, sync, sync/lose, rename, remove, syncdir)";
      return EINVAL;
    }
    char* end = nullptr;
    if (words.size() >= 3) {
      fault.skip = static_cast<uint32_t>(std::strtoul(words[2].c_str(), &end, 10));
      if (*end != '\0' || words[2].empty()) {
        *reply = "skip must be a number: " + words[2];
        return EINVAL;
      }
    }
    if (words.size() == 4) {
      const std::string& e = words[3];
      if (e != "EIO" && e != "ENOSPC") {
        *reply = "errno must be EIO or ENOSPC: " + e;
        return EINVAL;
      }
      fault.error_number = e == "ENOSPC" ? ENOSPC : EIO;
    }
    std::lock_guard<std::mutex> guard(mutex_);
    machine_->ArmFault(fault);
    *reply = "armed " + fault.point + " skip " + std::to_string(fault.skip);
    return 0;
  }

  // The words of "cut PLAN SEED [STATE]" or "reset", parsed; 0, or EINVAL with the reply set.
  static int ParseCut(const std::vector<std::string>& words, faultfs::CrashPlan* plan, uint64_t* seed,
                      std::optional<uint64_t>* state, std::string* reply) {
    const bool reset = words[0] == "reset";
    if (reset ? words.size() != 1 : words.size() < 3 || words.size() > 4) {
      *reply = "usage: cut PLAN SEED [STATE] | reset";
      return EINVAL;
    }
    if (reset) return 0;
    if (!faultfs::ParseCrashPlan(words[1], plan)) {
      *reply = "unknown plan " + words[1] + " (drop, prefix, subset, torn, all)";
      return EINVAL;
    }
    char* end;
    *seed = std::strtoull(words[2].c_str(), &end, 10);
    if (*end != '\0' || words[2].empty()) {
      *reply = "seed must be a number: " + words[2];
      return EINVAL;
    }
    if (words.size() == 4) {
      *state = std::strtoull(words[3].c_str(), &end, 10);
      if (*end != '\0' || words[3].empty()) {
        *reply = "state must be a number: " + words[3];
        return EINVAL;
      }
    }
    return 0;
  }

  // 2. Kills every process with the mount open but this one and the controller, scanning again
  // until a scan finds no one new (a victim may have forked before it died; the child holds the
  // same descriptors), and waits up to 30 s for them to be gone. How many it killed; those not
  // yet gone in `alive`. REQUIRES: `guard` holds mutex_ (let go of while it scans and waits).
  size_t KillEveryProcessOnTheMount(std::unique_lock<std::mutex>& guard, pid_t controller, std::vector<pid_t>* alive) {
    for (bool found = true; found;) {
      guard.unlock();
      std::set<pid_t> victims = ProcessesOnMount(mount_, {::getpid(), controller});
      guard.lock();
      found = false;
      for (pid_t pid : victims) {
        if (!victims_now_.insert(pid).second) continue;
        killed_.insert(pid);
        found = true;
        ::kill(pid, SIGKILL);
      }
      changed_.notify_all();
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    do {
      alive->clear();
      for (pid_t pid : victims_now_) {
        if (!Dead(pid)) alive->push_back(pid);
      }
      if (alive->empty()) break;
      guard.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      guard.lock();
    } while (std::chrono::steady_clock::now() < deadline);
    const size_t killed_now = victims_now_.size();
    killed_total_ += killed_now;
    victims_now_.clear();
    return killed_now;
  }

  // 3. The crash state, as the simulator builds it (or, for a reset, an empty filesystem), made
  // the machine; what happened in `outcome`. 0, or EINVAL if the cut could not be made (nothing
  // is reset then). REQUIRES: mutex_ held.
  int NewMachine(bool reset, faultfs::CrashPlan plan, uint64_t seed, std::optional<uint64_t> state,
                 std::string* outcome) {
    if (reset) {
      machine_ = std::make_shared<SimFileSystem>(seed_);
      *outcome = "reset: an empty filesystem";
    } else {
      auto cut = faultfs::CutPower(*machine_, plan, seed, state ? &*state : nullptr);
      if (!cut.ok()) {
        *outcome = cut.status().message() + "; nothing was reset (the processes are killed)";
        return EINVAL;
      }
      *outcome = "cut " + std::to_string(++cuts_) + ": plan " + faultfs::CrashPlanName(plan) + " seed " +
                 std::to_string(seed) + (state ? " state " + std::to_string(*state) : "") + " of " +
                 std::to_string(cut->states) + " states after " + std::to_string(machine_->TraceSize()) +
                 " operations: " + cut->choice.Describe();
      machine_ = cut->rebooted;
    }
    generation_++;  // every file number and handle of the old machine now names nothing
    pins_.clear();
    for (auto it = handles_.begin(); it != handles_.end();) it = it->second.control ? std::next(it) : handles_.erase(it);
    if (reset) {  // a new disk: only the root directory
      std::erase_if(dir_inos_, [](const auto& d) { return d.first != "/"; });
      std::erase_if(dir_paths_, [](const auto& d) { return d.first != FUSE_ROOT_ID; });
    }
    return 0;
  }

  // cut PLAN SEED [STATE] | reset
  int Cut(pid_t controller, const std::vector<std::string>& words, std::string* reply) {
    const bool reset = words[0] == "reset";
    faultfs::CrashPlan plan = faultfs::CrashPlan::kDrop;
    uint64_t seed = 0;
    std::optional<uint64_t> state;
    if (int error = ParseCut(words, &plan, &seed, &state, reply); error != 0) return error;
    std::unique_lock<std::mutex> guard(mutex_);
    if (frozen_) {
      *reply = "a cut is already running";
      return EBUSY;
    }
    // 1. Freeze: no operation starts from here on; the ones in flight finish (a held write, not
    // one yet, goes on to fail).
    frozen_ = true;
    freezes_++;
    hold_next_write_ = false;
    changed_.notify_all();
    changed_.wait(guard, [&] { return active_ == 0; });
    std::vector<pid_t> alive;
    const size_t killed_now = KillEveryProcessOnTheMount(guard, controller, &alive);
    std::string outcome;
    const int error = NewMachine(reset, plan, seed, state, &outcome);
    // Processes wholly gone leave the set; one with a thread still inside a call stays refused.
    for (auto it = killed_.begin(); it != killed_.end();) it = Dead(*it) ? killed_.erase(it) : std::next(it);
    *reply = outcome + "; killed " + std::to_string(killed_now) + " processes" +
             (alive.empty() ? "" : " (" + std::to_string(alive.size()) + " not yet gone after 30 s)");
    // 4. Resume.
    frozen_ = false;
    changed_.notify_all();
    if (!reset) std::clog << "dbdb-powerfs: " << reply->substr(0, 300) << (reply->size() > 300 ? "..." : "") << std::endl;
    return error;
  }

  const std::string mount_;
  const uint64_t seed_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::shared_ptr<SimFileSystem> machine_;
  uint64_t generation_ = 1;
  bool frozen_ = false;
  int active_ = 0;
  std::set<pid_t> killed_;       // killed by a cut, not yet wholly gone
  std::set<pid_t> victims_now_;  // killed by the cut running
  uint64_t killed_total_ = 0;
  uint64_t cuts_ = 0;
  bool hold_next_write_ = false;  // hold write
  int held_writes_ = 0;           // waiting for a release
  uint64_t releases_ = 0;
  uint64_t freezes_ = 0;  // cuts and resets begun
  std::map<uint64_t, Handle> handles_;
  uint64_t next_handle_ = 1;
  struct Pinned {
    std::shared_ptr<dbdb::File> file;
    uint64_t lookups;
  };
  std::map<fuse_ino_t, Pinned> pins_;  // file numbers the kernel holds (lookup count)
  std::map<fuse_ino_t, std::string> dir_paths_;
  std::map<std::string, fuse_ino_t> dir_inos_;
  fuse_ino_t next_dir_ino_ = 3;
};

PowerFs* Fs(fuse_req_t req) { return static_cast<PowerFs*>(fuse_req_userdata(req)); }

struct timespec g_mount_time;

struct stat Attr(fuse_ino_t ino, bool dir, uint64_t size, nlink_t links, mode_t mode) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = (dir ? S_IFDIR : S_IFREG) | mode;
  st.st_nlink = links;
  st.st_size = static_cast<off_t>(size);
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
  st.st_uid = ::getuid();
  st.st_gid = ::getgid();
  st.st_atim = st.st_mtim = st.st_ctim = g_mount_time;
  return st;
}

std::string Join(const std::string& dir, const char* name) { return dir == "/" ? "/" + std::string(name) : dir + "/" + name; }

// The attributes of any inode; an errno if it names nothing.
int AttrOf(PowerFs& fs, PowerFs::Op& op, fuse_ino_t ino, struct stat* st) {
  if (ino == kControlIno) {
    *st = Attr(ino, false, 0, 1, 0600);
    return 0;
  }
  if (uint64_t inode = op.Inode(ino)) {
    auto info = op.machine().LookupInode(inode);
    if (!info.exists) return ENOENT;
    *st = Attr(ino, false, info.size, static_cast<nlink_t>(info.links), 0644);
    return 0;
  }
  if (ino & kFileTag) return ESTALE;  // a file of the machine before a cut
  std::string path = fs.DirPath(ino);
  if (path.empty() || !op.machine().Lookup(path).is_dir) return ENOENT;
  *st = Attr(ino, true, 0, 2, 0755);
  return 0;
}

// The entry of `path` (which exists), for lookup, create and mkdir.
int EntryOf(PowerFs& fs, PowerFs::Op& op, const std::string& path, fuse_entry_param* e) {
  *e = fuse_entry_param{};
  auto info = op.machine().Lookup(path);
  if (!info.exists) return ENOENT;
  e->ino = info.is_dir ? fs.DirIno(path) : op.FileIno(info.inode);
  e->attr = info.is_dir ? Attr(e->ino, true, 0, 2, 0755) : Attr(e->ino, false, info.size, 1, 0644);
  e->attr_timeout = 0;
  e->entry_timeout = 0;
  return 0;
}

void Init(void*, fuse_conn_info* conn) {
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;  // writes go through: each one reaches the machine
  // The kernel's page cache of a file is dropped by a cut (whose files are new inodes: FileIno), a
  // truncate and an attribute refresh that finds the size changed, never by an open (keep_cache,
  // Open and Create). A write through the cache is visible to other processes once its pages are
  // copied, before the machine has it; dropping the cache in that window (an open of the file by
  // anyone) let a read refill a page from the machine without the write, and the cache kept the
  // stale page after the write returned: a reader of a commit another process was writing found
  // zeros or old bytes where the commit's records were ("record length 0 does not match",
  // "checksum mismatch"), as no disk does (docs/POWERFS.md;
  // PowerFs.AnOpenDuringAWriteInFlightLeavesNoStalePage). Every size change goes through the kernel
  // (but an injected short or misdirected write at the end of a file, which no harness arms on a
  // mount), so the size never differs. Nor does the time (Attr's is the mount's): auto_inval_data,
  // which drops the cache when it does, is off so that this stays true if Attr changes.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  PowerFs& fs = *Fs(req);
  if (parent == FUSE_ROOT_ID && std::strcmp(name, faultfs::kPowerFsControlName) == 0) {
    fuse_entry_param e{};
    e.ino = kControlIno;
    e.attr = Attr(kControlIno, false, 0, 1, 0600);
    fuse_reply_entry(req, &e);
    return;
  }
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  std::string dir = fs.DirPath(parent);
  if (dir.empty()) return (void)fuse_reply_err(req, ENOENT);
  fuse_entry_param e;
  if (int error = EntryOf(fs, op, Join(dir, name), &e)) return (void)fuse_reply_err(req, error);
  op.Pin(e.ino);
  fuse_reply_entry(req, &e);
}

void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t lookups) {
  Fs(req)->Forget(ino, lookups);
  fuse_reply_none(req);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  PowerFs::Op op(*Fs(req), req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  struct stat st;
  if (int error = AttrOf(*Fs(req), op, ino, &st)) return (void)fuse_reply_err(req, error);
  fuse_reply_attr(req, &st, 0);
}

// Only the size is kept (a truncate); modes, owners and times are accepted and not kept.
void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  if ((to_set & FUSE_SET_ATTR_SIZE) && ino != kControlIno) {
    std::shared_ptr<dbdb::File> file = fi != nullptr ? op.File(fi) : nullptr;
    if (file == nullptr) {
      uint64_t inode = op.Inode(ino);
      if (inode == 0) return (void)fuse_reply_err(req, (ino & kFileTag) ? ESTALE : EISDIR);
      auto opened = op.machine().OpenInode(inode, false);
      if (!opened.ok()) return (void)fuse_reply_err(req, Errno(opened.status()));
      file = std::move(*opened);
    }
    dbdb::Status s = file->Truncate(static_cast<uint64_t>(attr->st_size));
    if (!s.ok()) return (void)fuse_reply_err(req, Errno(s));
  }
  struct stat st;
  if (int error = AttrOf(fs, op, ino, &st)) return (void)fuse_reply_err(req, error);
  fuse_reply_attr(req, &st, 0);
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  if (ino == kControlIno) {
    fi->direct_io = 1;
    fi->noflush = 1;  // its close takes no inode lock: a write to it may be a cut in progress
    Handle handle;
    handle.control = true;
    handle.ino = ino;
    fi->fh = fs.AddHandle(std::move(handle));
    fuse_reply_open(req, fi);
    return;
  }
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  uint64_t inode = op.Inode(ino);
  if (inode == 0) return (void)fuse_reply_err(req, (ino & kFileTag) ? ESTALE : EISDIR);
  const bool read_only = (fi->flags & O_ACCMODE) == O_RDONLY;
  auto file = op.machine().OpenInode(inode, read_only);
  if (!file.ok()) return (void)fuse_reply_err(req, Errno(file.status()));
  if ((fi->flags & O_TRUNC) && !read_only && op.machine().LookupInode(inode).size > 0) {
    dbdb::Status s = (*file)->Truncate(0);
    if (!s.ok()) return (void)fuse_reply_err(req, Errno(s));
  }
  Handle handle;
  handle.file = std::move(*file);
  handle.ino = ino;
  fi->fh = fs.AddHandle(std::move(handle));
  fi->keep_cache = 1;  // the cache is the file's, as the kernel keeps it (Init)
  fuse_reply_open(req, fi);
}

void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  std::string dir = fs.DirPath(parent);
  if (dir.empty()) return (void)fuse_reply_err(req, ENOENT);
  if (parent == FUSE_ROOT_ID && std::strcmp(name, faultfs::kPowerFsControlName) == 0) {
    return (void)fuse_reply_err(req, EEXIST);
  }
  const std::string path = Join(dir, name);
  auto info = op.machine().Lookup(path);
  if (info.is_dir) return (void)fuse_reply_err(req, EISDIR);
  if (info.exists && (fi->flags & O_EXCL)) return (void)fuse_reply_err(req, EEXIST);
  const bool read_only = (fi->flags & O_ACCMODE) == O_RDONLY;
  auto file = op.machine().Open(path, dbdb::OpenOptions{.create = true, .read_only = read_only});
  if (!file.ok()) return (void)fuse_reply_err(req, Errno(file.status()));
  if ((fi->flags & O_TRUNC) && !read_only && info.exists && info.size > 0) {
    dbdb::Status s = (*file)->Truncate(0);
    if (!s.ok()) return (void)fuse_reply_err(req, Errno(s));
  }
  fuse_entry_param e;
  if (int error = EntryOf(fs, op, path, &e)) return (void)fuse_reply_err(req, error);
  Handle handle;
  handle.file = std::move(*file);
  handle.ino = e.ino;
  fi->fh = fs.AddHandle(std::move(handle));
  fi->keep_cache = 1;  // as Open
  op.Pin(e.ino);
  fuse_reply_create(req, &e, fi);
}

void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t offset, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  if (fs.IsControl(fi->fh)) {
    std::string reply = fs.ReadReply(fi->fh, size);
    fuse_reply_buf(req, reply.data(), reply.size());
    return;
  }
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  auto file = op.File(fi);
  if (file == nullptr) return (void)fuse_reply_err(req, EBADF);
  std::vector<char> buffer(size);
  auto n = file->ReadAt(static_cast<uint64_t>(offset), std::span<char>(buffer.data(), size));
  if (!n.ok()) return (void)fuse_reply_err(req, Errno(n.status()));
  fuse_reply_buf(req, buffer.data(), *n);
}

void Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  if (fs.IsControl(fi->fh)) {
    int error = fs.Control(req, fi->fh, std::string(buf, size));
    if (error != 0) return (void)fuse_reply_err(req, error);
    fuse_reply_write(req, size);
    return;
  }
  fs.MaybeHoldWrite();
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  auto file = op.File(fi);
  if (file == nullptr) return (void)fuse_reply_err(req, EBADF);
  dbdb::Status s = file->WriteAt(static_cast<uint64_t>(offset), std::span<const char>(buf, size));
  if (!s.ok()) return (void)fuse_reply_err(req, Errno(s));
  fuse_reply_write(req, size);
}

void Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  if (fs.IsControl(fi->fh)) return (void)fuse_reply_err(req, 0);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  auto file = op.File(fi);
  if (file == nullptr) return (void)fuse_reply_err(req, EBADF);
  fuse_reply_err(req, Errno(file->Sync()));
}

void Flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Fs(req)->DropHandle(fi->fh);
  fuse_reply_err(req, 0);
}

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  if (ino & kFileTag || ino == kControlIno) return (void)fuse_reply_err(req, ENOTDIR);
  std::string path = fs.DirPath(ino);
  auto entries = path.empty() ? dbdb::Result<std::vector<std::pair<std::string, bool>>>(dbdb::Status::NotFound(""))
                              : op.machine().ListEntries(path);
  if (!entries.ok()) return (void)fuse_reply_err(req, ENOENT);
  Handle handle;
  handle.dir = true;
  handle.ino = ino;
  handle.path = path;
  handle.entries.push_back(DirEntry{".", ino, true});
  handle.entries.push_back(DirEntry{"..", path == "/" ? ino : fs.DirIno(dbdb::DirName(path)), true});
  for (const auto& [name, dir] : *entries) {
    const std::string child = Join(path, name.c_str());
    fuse_ino_t child_ino = dir ? fs.DirIno(child) : op.FileIno(op.machine().Lookup(child).inode);
    handle.entries.push_back(DirEntry{name, child_ino, dir});
  }
  fi->fh = fs.AddHandle(std::move(handle));
  fuse_reply_open(req, fi);
}

void ReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t offset, fuse_file_info* fi) {
  auto handle = Fs(req)->Dir(fi->fh);
  if (!handle) return (void)fuse_reply_err(req, EBADF);
  std::vector<char> buffer(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(offset); i < handle->entries.size(); i++) {
    const DirEntry& e = handle->entries[i];
    struct stat st {};
    st.st_ino = e.ino;
    st.st_mode = e.dir ? S_IFDIR : S_IFREG;
    size_t n = fuse_add_direntry(req, buffer.data() + used, size - used, e.name.c_str(), &st, static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buffer.data(), used);
}

void ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Fs(req)->DropHandle(fi->fh);
  fuse_reply_err(req, 0);
}

void FsyncDir(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  PowerFs& fs = *Fs(req);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  auto handle = fs.Dir(fi->fh);
  if (!handle) return (void)fuse_reply_err(req, EBADF);
  fuse_reply_err(req, Errno(op.machine().SyncDir(handle->path)));
}

void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t) {
  PowerFs& fs = *Fs(req);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  std::string dir = fs.DirPath(parent);
  if (dir.empty() || !op.machine().Lookup(dir).is_dir) return (void)fuse_reply_err(req, ENOENT);
  const std::string path = Join(dir, name);
  if (op.machine().Lookup(path).exists || (parent == FUSE_ROOT_ID && std::strcmp(name, faultfs::kPowerFsControlName) == 0)) {
    return (void)fuse_reply_err(req, EEXIST);
  }
  dbdb::Status s = op.machine().CreateDir(path);
  if (!s.ok()) return (void)fuse_reply_err(req, Errno(s));
  fuse_entry_param e;
  if (int error = EntryOf(fs, op, path, &e)) return (void)fuse_reply_err(req, error);
  fuse_reply_entry(req, &e);
}

void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  PowerFs& fs = *Fs(req);
  if (parent == FUSE_ROOT_ID && std::strcmp(name, faultfs::kPowerFsControlName) == 0) return (void)fuse_reply_err(req, EPERM);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  std::string dir = fs.DirPath(parent);
  if (dir.empty()) return (void)fuse_reply_err(req, ENOENT);
  const std::string path = Join(dir, name);
  if (op.machine().Lookup(path).is_dir) return (void)fuse_reply_err(req, EISDIR);
  fuse_reply_err(req, Errno(op.machine().Remove(path)));
}

void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  PowerFs& fs = *Fs(req);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  std::string dir = fs.DirPath(parent);
  if (dir.empty()) return (void)fuse_reply_err(req, ENOENT);
  const std::string path = Join(dir, name);
  auto info = op.machine().Lookup(path);
  if (info.exists && !info.is_dir) return (void)fuse_reply_err(req, ENOTDIR);
  dbdb::Status removed = op.machine().RemoveDir(path);
  if (removed.ok()) fs.DropDir(path);
  fuse_reply_err(req, Errno(removed));
}

void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent, const char* new_name,
            unsigned int flags) {
  PowerFs& fs = *Fs(req);
  auto is_control = [](fuse_ino_t p, const char* n) {
    return p == FUSE_ROOT_ID && std::strcmp(n, faultfs::kPowerFsControlName) == 0;
  };
  if (is_control(parent, name) || is_control(new_parent, new_name)) return (void)fuse_reply_err(req, EPERM);
  if (flags & RENAME_EXCHANGE) return (void)fuse_reply_err(req, EINVAL);
  PowerFs::Op op(fs, req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  std::string from_dir = fs.DirPath(parent), to_dir = fs.DirPath(new_parent);
  if (from_dir.empty() || to_dir.empty()) return (void)fuse_reply_err(req, ENOENT);
  const std::string from = Join(from_dir, name), to = Join(to_dir, new_name);
  auto source = op.machine().Lookup(from);
  auto target = op.machine().Lookup(to);
  if (!source.exists) return (void)fuse_reply_err(req, ENOENT);
  if (source.is_dir) return (void)fuse_reply_err(req, EXDEV);  // directories are not in the crash model
  if (target.is_dir) return (void)fuse_reply_err(req, EISDIR);
  if (target.exists && (flags & RENAME_NOREPLACE)) return (void)fuse_reply_err(req, EEXIST);
  fuse_reply_err(req, Errno(op.machine().Rename(from, to)));
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  struct statvfs st {};
  st.f_bsize = st.f_frsize = 4096;
  st.f_blocks = st.f_bfree = st.f_bavail = uint64_t{1} << 28;  // 1 TiB: memory is the limit
  st.f_files = st.f_ffree = st.f_favail = uint64_t{1} << 24;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

// posix_fallocate's mode 0 only: the file grows, as a truncate up would (the simulator's
// Allocate, and its fault point faultfs/allocate).
void Fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  if (mode != 0) return (void)fuse_reply_err(req, EOPNOTSUPP);
  PowerFs::Op op(*Fs(req), req);
  if (op.error()) return (void)fuse_reply_err(req, op.error());
  auto file = op.File(fi);
  if (file == nullptr) return (void)fuse_reply_err(req, EBADF);
  auto allocated = file->Allocate(static_cast<uint64_t>(offset), static_cast<uint64_t>(length));
  if (!allocated.ok()) return (void)fuse_reply_err(req, Errno(allocated.status()));
  fuse_reply_err(req, *allocated ? 0 : EOPNOTSUPP);
}

fuse_lowlevel_ops Operations() {
  fuse_lowlevel_ops ops{};
  ops.init = Init;
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.getattr = GetAttr;
  ops.setattr = SetAttr;
  ops.open = Open;
  ops.create = Create;
  ops.read = Read;
  ops.write = Write;
  ops.fsync = Fsync;
  ops.flush = Flush;
  ops.release = Release;
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;
  ops.releasedir = ReleaseDir;
  ops.fsyncdir = FsyncDir;
  ops.mkdir = MkDir;
  ops.unlink = Unlink;
  ops.rmdir = RmDir;
  ops.rename = Rename;
  ops.statfs = StatFs;
  ops.fallocate = Fallocate;
  return ops;  // link, symlink, mknod, xattrs: ENOSYS; locks: the kernel's own (flock, fcntl)
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
  if (debug) args.push_back("-odebug");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_lowlevel_ops ops = Operations();
  fuse_session* se = fuse_session_new(&fargs, &ops, sizeof(ops), &fs);
  if (se == nullptr) {
    std::cerr << "dbdb-powerfs: fuse_session_new failed\n";
    return 2;
  }
  if (fuse_session_mount(se, mount.c_str()) != 0) {
    std::cerr << "dbdb-powerfs: cannot mount on " << mount << "\n";
    fuse_session_destroy(se);
    return 2;
  }
  std::cout << "dbdb-powerfs: mounted on " << mount << std::endl;
  if (fuse_daemonize(foreground ? 1 : 0) != 0 || fuse_set_signal_handlers(se) != 0) {
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return 2;
  }
  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(config, 64);
  int rc = fuse_session_loop_mt(se, config);
  fuse_loop_cfg_destroy(config);
  fuse_remove_signal_handlers(se);
  fuse_session_unmount(se);
  fuse_session_destroy(se);
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
  std::string point, error_name;
  uint32_t skip = 0;
  auto* fault = app.add_subcommand("fault", "arm one of the simulator's fault points for the next call that reaches it");
  fault->add_option("dir", dir, "mount point")->required();
  fault->add_option("point", point, "faultfs/sync/lose, faultfs/sync, faultfs/write, faultfs/write/short, ...")->required();
  fault->add_option("--skip", skip, "let this many calls through first");
  fault->add_option("--errno", error_name, "EIO (default) or ENOSPC")->check(CLI::IsMember({"EIO", "ENOSPC"}));
  auto* reset = app.add_subcommand("reset", "kill every process using DIR and empty it (a new disk)");
  reset->add_option("dir", dir, "mount point")->required();
  auto* stats = app.add_subcommand("stats", "cuts, processes killed, operations since the last cut, writes held");
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
  if (fault->parsed()) {
    return Command(dir, "fault " + point + " " + std::to_string(skip) + (error_name.empty() ? "" : " " + error_name));
  }
  if (reset->parsed()) return Command(dir, "reset");
  if (stats->parsed()) return Command(dir, "stats");
  if (trace->parsed()) return Command(dir, "trace");
  if (unmount->parsed()) return Unmount(dir);
  return 2;
}
