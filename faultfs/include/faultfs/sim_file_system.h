// SimFileSystem: an in-memory dbdb::FileSystem that implements the persistence model of
// docs/PERSISTENCE.md exactly, records a trace of every operation, and can build the filesystem a
// power cut would leave at any operation boundary (crash_state.h).
//
// It keeps, per file, the live bytes (what reads see) and nothing else: which writes are durable
// is derived from the trace by a PersistenceTracker, so the live filesystem and the crash model
// cannot drift apart. Deterministic: the same calls with the same seed give the same trace and
// the same crash states. Thread-safe (one mutex); many instances run side by side.
//
// Fault points (libfiu; enable with fiu_enable* in tests, or fiu-ctrl on a running process):
//   faultfs/open, faultfs/read, faultfs/write, faultfs/truncate, faultfs/sync, faultfs/rename,
//   faultfs/remove, faultfs/syncdir: the call fails with EIO, or with the errno pointed to by the
//     failinfo (an int*, e.g. ENOSPC) when one is given. Nothing happens.
//   faultfs/write/short: half of the data is written, then the call fails with EIO.
//   faultfs/sync/lose: the sync fails AND its volatile writes are lost for good (fsyncgate): they
//     stay readable until a crash but no later sync makes them durable.
//   faultfs/read/corrupt: the read succeeds but one bit of the returned data is flipped.
//   faultfs/write/misdirect: the data lands 4096 bytes further than asked; the call succeeds.
// Every injected error message starts with "injected:" so a test can tell it from a real one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dbdb/file_system.h"

namespace faultfs {

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

  bool IsMutation() const { return kind != Kind::kRead; }
  std::string ToString() const;
};

// What a crash left: every file's bytes by path. Directories are not modelled as entries.
struct CrashImage {
  std::map<std::string, std::string> files;
  uint64_t Hash() const;
};

class SimFileSystem final : public dbdb::FileSystem {
 public:
  explicit SimFileSystem(uint64_t seed);
  // A filesystem whose files are exactly those of `image`, all durable (as after a reboot).
  static std::shared_ptr<SimFileSystem> FromImage(const CrashImage& image, uint64_t seed);
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
  dbdb::Result<std::unique_ptr<dbdb::FileLock>> Lock(const std::string& path, bool wait) override;

  uint64_t seed() const;
  // A copy of the trace so far, and its length.
  std::vector<TraceOp> Trace() const;
  size_t TraceSize() const;
  // The live contents (what reads see now), by path.
  CrashImage LiveImage() const;
  // The contents a crash right now would leave if every volatile operation were lost.
  CrashImage DurableImage() const;

  struct State;  // shared with open files

 private:
  std::shared_ptr<State> state_;
};

}  // namespace faultfs
