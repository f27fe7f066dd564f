// SimFileSystem: an in-memory dbdb::FileSystem that implements the persistence model of
// docs/PERSISTENCE.md exactly, records a trace of every operation, and can build the filesystem a
// power cut would leave at any operation boundary (crash_state.h).
//
// It keeps, per file, the live bytes (what reads see) and nothing else: which writes are durable
// is derived from the trace by a PersistenceTracker, so the live filesystem and the crash model
// cannot drift apart. Deterministic: the same calls with the same seed give the same trace and
// the same crash states. Thread-safe (one mutex); many instances run side by side.
//
// PROCESSES. One SimFileSystem is one machine. NewProcess() gives another view of the same machine
// for one simulated process: its own open files and locks, sharing the files and their page cache
// with every other process (file_system.h, item 6). Locks behave like flock on the inode: a lock
// taken through a name that was renamed away is not the lock of the file the name holds now, and
// two Lock calls exclude each other even in one process; File::Lock takes the same lock through
// an open file (one at a time per File, as one open file description's flock), and it outlives
// the File until it is released. Kill() kills a process: its later calls
// fail (IOError "killed"), its locks are released, what it wrote stays exactly as written
// (volatile until someone syncs it), as after SIGKILL. A power cut is a crash state built from a
// prefix of the trace (crash_state.h), after which no process survives.
//
// SCHEDULING. RunScheduled runs one body per process, each in its own thread, but one filesystem
// operation at a time: before every operation a process waits for its turn, and the scheduler
// picks the next process among those waiting (a process waiting for a lock another holds is not
// eligible) from a list of choices. The same choices give the same interleaving, the same trace
// and the same results; a schedule is data, so it shrinks like any other part of a counterexample.
// The schedule can kill the process it picks at a given step, before that operation runs.
//
// Fault points (libfiu; enable with fiu_enable* in tests, or fiu-ctrl on a running process), and
// the same points armed per simulated process with ArmFault:
//   faultfs/open, faultfs/read, faultfs/write, faultfs/truncate, faultfs/allocate, faultfs/sync,
//   faultfs/rename, faultfs/remove, faultfs/syncdir, faultfs/lock: the call fails with EIO, or with the errno
//     pointed to by the failinfo (an int*, e.g. ENOSPC, EACCES, EMFILE) when one is given.
//     Nothing happens.
//   faultfs/write/short: half of the data is written, then the call fails with EIO.
//   faultfs/sync/lose: the sync fails AND its volatile writes are lost for good (fsyncgate): they
//     stay readable until a crash but no later sync makes them durable.
//   faultfs/read/corrupt: the read succeeds but one bit of the returned data is flipped.
//   faultfs/write/misdirect: the data lands 4096 bytes further than asked; the call succeeds.
//   faultfs/map: File::Map fails with EIO (or the failinfo's errno).
//   faultfs/map/fault: File::Map succeeds, but every read of the mapping raises SIGBUS (pages
//     the disk cannot deliver).
//   faultfs/map/corrupt: File::Map succeeds, but one bit of a whole page below the end of the
//     file is flipped in this mapping only (a private copy of that page, which no longer follows
//     the file's writes: hence a whole page, which appends never reach). Does not fire for a file
//     shorter than a page.
// Mappings (File::Map) are real: a memfd mirrors each mapped file's bytes, updated by every write
// and truncate, so a mapping sees later writes from any process and faults past the end of the
// file, as a shared page cache does. Reads of a mapping are not operations (no scheduling point,
// no trace entry): only Map is.
// Every injected error message starts with "injected:" so a test can tell it from a real one.
// FiredFaults() counts, per point, how often a fault fired.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dbdb/file_system.h"

namespace faultfs {

class PersistenceTracker;

// One operation as the trace records it. Reads are recorded for the record; only mutations
// change what a crash can leave.
struct TraceOp {
  enum class Kind : uint8_t {
    kCreate,      // path names new inode
    kWrite,       // data at offset of inode
    kTruncate,    // inode to size
    kSync,        // inode: every earlier write of it is durable
    kSyncLost,    // inode: a failed sync; its volatile writes so far are lost for good
    kRename,      // path -> path2
    kRemove,      // path
    kSyncDir,     // path (a directory): its earlier name operations are durable
    kRead,        // inode, offset, size (no effect)
  };
  Kind kind;
  uint64_t inode = 0;
  std::string path;
  std::string path2;
  uint64_t offset = 0;
  uint64_t size = 0;
  std::string data;
  uint32_t process = 0;  // the simulated process that made the call (0: the machine's first view)
  // A write or truncate through a handle opened with OpenOptions::transient: it changes what
  // reads see, but no crash state keeps it (the file's contents after a crash are its durable
  // ones), so it is not a mutation of the crash model and adds no crash point. The trace keeps
  // a transient write's offset and size, not its bytes.
  bool transient = false;

  bool IsMutation() const { return kind != Kind::kRead && !transient; }
  std::string ToString() const;
};

// What a crash left: every file's bytes by path. Directories are not modelled as entries.
struct CrashImage {
  std::map<std::string, std::string> files;
  uint64_t Hash() const;
};

// A fault armed for one simulated process: the `skip`-th next call (0: the next) of that process
// that reaches `point` fails, once.
struct ArmedFault {
  std::string point;
  uint32_t skip = 0;
  int error_number = 0;  // 0: EIO
};

// A schedule for RunScheduled. At step i (counting every operation of every process from 0) the
// process picked is the (choices[i] mod eligible)-th eligible one, in process order (choices past
// the end count as 0). kills lists the steps at which the picked process is killed instead.
struct Schedule {
  std::vector<uint8_t> choices;
  std::vector<uint64_t> kills;  // sorted step numbers
};

class SimFileSystem final : public dbdb::FileSystem {
 public:
  explicit SimFileSystem(uint64_t seed);
  // A filesystem whose files are exactly those of `image`, all durable (as after a reboot).
  // `dirs`: directories that exist besides the files' parents (directories are not in the crash
  // model: once created they exist).
  static std::shared_ptr<SimFileSystem> FromImage(const CrashImage& image, uint64_t seed,
                                                  const std::vector<std::string>& dirs = {});
  ~SimFileSystem() override;

  // dbdb::FileSystem
  dbdb::Result<std::unique_ptr<dbdb::File>> Open(const std::string& path, dbdb::OpenOptions options) override;
  dbdb::Status Rename(const std::string& from, const std::string& to) override;
  dbdb::Status Remove(const std::string& path) override;
  dbdb::Result<bool> Exists(const std::string& path) override;
  dbdb::Result<uint64_t> Identity(const std::string& path) override;
  dbdb::Result<std::vector<std::string>> List(const std::string& dir) override;
  dbdb::Status CreateDir(const std::string& dir) override;
  dbdb::Status SyncDir(const std::string& dir) override;
  dbdb::Result<std::unique_ptr<dbdb::FileLock>> Lock(const std::string& path, dbdb::LockOptions options) override;
  // One thread per simulated process: the store compacts inline, never on a thread of its own.
  bool AllowsBackgroundThreads() const override { return false; }

  // Another process on this machine (see PROCESSES above), named for reports.
  std::shared_ptr<SimFileSystem> NewProcess(const std::string& name);
  uint32_t process() const { return process_; }
  // Kills this view's process (see PROCESSES). Idempotent.
  void Kill();
  bool killed() const;
  // The trace position of the kill (the trace's size then), or nullopt while alive.
  std::optional<uint64_t> KilledAt() const;
  // Arms a fault for this view's process; FaultsFired counts the faults that fired in it (armed
  // here or through libfiu).
  void ArmFault(ArmedFault fault);
  uint64_t FaultsFired() const;

  // Runs bodies[i] on processes[i], one filesystem operation at a time in the order `schedule`
  // picks (see SCHEDULING). Returns when every body has returned; "" or why the run could not go
  // on (every live process waits for a lock: a deadlock). REQUIRES: no other RunScheduled at once.
  std::string RunScheduled(const std::vector<std::shared_ptr<SimFileSystem>>& processes,
                           const std::vector<std::function<void()>>& bodies, const Schedule& schedule);
  // The operations RunScheduled granted so far (its step count), for reports.
  uint64_t ScheduledSteps() const;

  uint64_t seed() const;
  // A copy of the trace so far, and its length.
  std::vector<TraceOp> Trace() const;
  size_t TraceSize() const;
  // Bytes read by each process so far (by process number).
  std::map<uint32_t, uint64_t> BytesRead() const;
  // How often each fault point fired.
  std::map<std::string, uint64_t> FiredFaults() const;
  // The live contents (what reads see now), by path.
  CrashImage LiveImage() const;
  // The contents a crash right now would leave if every volatile operation were lost.
  CrashImage DurableImage() const;

  // For a front end that serves this machine to real processes (dbdb-powerfs, FUSE). Not
  // operations: no trace entry, no scheduling point, no fault.
  struct PathInfo {
    bool exists = false;
    bool is_dir = false;
    uint64_t size = 0;
    uint64_t inode = 0;  // files only
    int links = 1;       // LookupInode: 0 once the file has no name (it is open somewhere)
  };
  PathInfo Lookup(const std::string& path) const;
  // The file with this inode number while it is alive (it has a name, or a File is open on it):
  // its size and links, or a File open on it (an operation, like Open of an existing file: no
  // trace entry). A front end keeps a File open on every inode the kernel may still name.
  PathInfo LookupInode(uint64_t inode) const;
  dbdb::Result<std::unique_ptr<dbdb::File>> OpenInode(uint64_t inode, bool read_only);
  // A read-only File that only keeps the inode alive, for the front end itself: no fault point,
  // no trace entry, no scheduling point.
  dbdb::Result<std::unique_ptr<dbdb::File>> HoldInode(uint64_t inode);
  // The entries of `dir`, sorted: names and whether each is a directory.
  dbdb::Result<std::vector<std::pair<std::string, bool>>> ListEntries(const std::string& dir) const;
  // Removes an empty directory (ENOTEMPTY: Busy; no such directory: NotFound).
  dbdb::Status RemoveDir(const std::string& dir);
  std::vector<std::string> Dirs() const;
  // Calls f with the persistence tracker of the trace so far, under the filesystem's lock.
  void WithTracker(const std::function<void(const PersistenceTracker&)>& f) const;

  struct State;  // shared with open files and other processes

 private:
  // RunScheduled's scheduler, under `guard` (state_'s mutex): grants one step at a time to a
  // process of `ids` once each is at a step or finished, as `schedule` picks and kills; returns
  // once all have finished, or a deadlock's outcome after killing them all.
  std::string DriveSchedule(std::unique_lock<std::mutex>& guard, const std::vector<uint32_t>& ids,
                            const Schedule& schedule);
  SimFileSystem(std::shared_ptr<State> state, uint32_t process);
  std::shared_ptr<State> state_;
  uint32_t process_ = 0;
};

}  // namespace faultfs
