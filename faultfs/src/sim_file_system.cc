// SimFileSystem: live in-memory files plus a trace; durability is derived from the trace by a
// PersistenceTracker (crash_state.cc).
#include "faultfs/sim_file_system.h"

#include <fiu.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <set>

#include "faultfs/crash_state.h"

namespace faultfs {

using dbdb::Result;
using dbdb::Status;

namespace {

struct Inode {
  uint64_t id;
  std::string data;
  int links = 1;  // names referring to it
};

Status Injected(const std::string& what) {
  int error_number = EIO;
  if (void* info = fiu_failinfo()) error_number = *static_cast<int*>(info);
  std::string message = "injected: " + what + " failed (" + (error_number == ENOSPC ? "ENOSPC" : "EIO") + ")";
  if (error_number == ENOSPC) return Status::NoSpace(message);
  return Status::IOError(message);
}

}  // namespace

struct SimFileSystem::State {
  std::mutex mutex;
  uint64_t seed;
  uint64_t next_inode = 1;
  std::map<std::string, std::shared_ptr<Inode>> names;
  std::set<std::string> dirs{".", "/"};
  std::vector<TraceOp> trace;
  PersistenceTracker tracker;
  uint64_t flip_counter = 0;

  std::mutex lock_mutex;
  std::condition_variable lock_released;
  std::set<std::string> locked;

  void Record(TraceOp op) {
    if (op.IsMutation()) tracker.Apply(op);
    trace.push_back(std::move(op));
  }
};

namespace {

class SimFile final : public dbdb::File {
 public:
  SimFile(std::shared_ptr<SimFileSystem::State> state, std::shared_ptr<Inode> inode, bool read_only)
      : state_(std::move(state)), inode_(std::move(inode)), read_only_(read_only) {}

  Result<size_t> ReadAt(uint64_t offset, std::span<char> dst) override {
    std::lock_guard<std::mutex> guard(state_->mutex);
    if (fiu_fail("faultfs/read")) return Injected("read");
    const std::string& data = inode_->data;
    size_t n = offset >= data.size() ? 0 : std::min<uint64_t>(dst.size(), data.size() - offset);
    std::copy_n(data.data() + offset, n, dst.data());
    if (n > 0 && fiu_fail("faultfs/read/corrupt")) {
      uint64_t bit = (state_->seed + state_->flip_counter++) % (n * 8);
      dst[bit / 8] = static_cast<char>(dst[bit / 8] ^ (1 << (bit % 8)));
    }
    state_->Record(TraceOp{TraceOp::Kind::kRead, inode_->id, "", "", offset, n, ""});
    return n;
  }

  Status WriteAt(uint64_t offset, std::span<const char> data) override {
    if (read_only_) return Status::InvalidArgument("write to a read-only file");
    std::lock_guard<std::mutex> guard(state_->mutex);
    if (fiu_fail("faultfs/write")) return Injected("write");
    bool short_write = fiu_fail("faultfs/write/short");
    if (fiu_fail("faultfs/write/misdirect")) offset += 4096;
    std::string bytes(data.data(), short_write ? data.size() / 2 : data.size());
    if (!bytes.empty()) {
      std::string& file = inode_->data;
      if (file.size() < offset + bytes.size()) file.resize(offset + bytes.size(), '\0');
      std::copy(bytes.begin(), bytes.end(), file.begin() + static_cast<long>(offset));
      state_->Record(TraceOp{TraceOp::Kind::kWrite, inode_->id, "", "", offset, bytes.size(), std::move(bytes)});
    }
    if (short_write) return Injected("write (short)");
    return Status::Ok();
  }

  Result<uint64_t> Size() override {
    std::lock_guard<std::mutex> guard(state_->mutex);
    return static_cast<uint64_t>(inode_->data.size());
  }

  Result<dbdb::FileStat> Stat() override {
    std::lock_guard<std::mutex> guard(state_->mutex);
    return dbdb::FileStat{static_cast<uint64_t>(inode_->data.size()), inode_->links == 0};
  }

  Status Truncate(uint64_t size_bytes) override {
    if (read_only_) return Status::InvalidArgument("truncate of a read-only file");
    std::lock_guard<std::mutex> guard(state_->mutex);
    if (fiu_fail("faultfs/truncate")) return Injected("truncate");
    inode_->data.resize(size_bytes, '\0');
    state_->Record(TraceOp{TraceOp::Kind::kTruncate, inode_->id, "", "", size_bytes, 0, ""});
    return Status::Ok();
  }

  Status Sync() override {
    std::lock_guard<std::mutex> guard(state_->mutex);
    if (fiu_fail("faultfs/sync/lose")) {
      state_->Record(TraceOp{TraceOp::Kind::kSyncLost, inode_->id, "", "", 0, 0, ""});
      return Injected("sync (volatile writes lost)");
    }
    if (fiu_fail("faultfs/sync")) return Injected("sync");
    state_->Record(TraceOp{TraceOp::Kind::kSync, inode_->id, "", "", 0, 0, ""});
    return Status::Ok();
  }

  Result<uint64_t> Identity() override { return inode_->id; }

 private:
  std::shared_ptr<SimFileSystem::State> state_;
  std::shared_ptr<Inode> inode_;
  bool read_only_;
};

class SimLock final : public dbdb::FileLock {
 public:
  SimLock(std::shared_ptr<SimFileSystem::State> state, std::string path)
      : state_(std::move(state)), path_(std::move(path)) {}
  ~SimLock() override {
    std::lock_guard<std::mutex> guard(state_->lock_mutex);
    state_->locked.erase(path_);
    state_->lock_released.notify_all();
  }

 private:
  std::shared_ptr<SimFileSystem::State> state_;
  std::string path_;
};

}  // namespace

SimFileSystem::SimFileSystem(uint64_t seed) : state_(std::make_shared<State>()) { state_->seed = seed; }
SimFileSystem::~SimFileSystem() = default;

std::shared_ptr<SimFileSystem> SimFileSystem::FromImage(const CrashImage& image, uint64_t seed) {
  auto fs = std::make_shared<SimFileSystem>(seed);
  for (const auto& [path, bytes] : image.files) {
    auto inode = std::make_shared<Inode>(Inode{fs->state_->next_inode++, bytes});
    fs->state_->names[path] = inode;
    fs->state_->dirs.insert(dbdb::DirName(path));
    // The rebooted disk holds these bytes durably: the trace starts with them created and synced.
    fs->state_->Record(TraceOp{TraceOp::Kind::kCreate, inode->id, path, "", 0, 0, ""});
    if (!bytes.empty()) fs->state_->Record(TraceOp{TraceOp::Kind::kWrite, inode->id, "", "", 0, bytes.size(), bytes});
    fs->state_->Record(TraceOp{TraceOp::Kind::kSync, inode->id, "", "", 0, 0, ""});
    fs->state_->Record(TraceOp{TraceOp::Kind::kSyncDir, 0, dbdb::DirName(path), "", 0, 0, ""});
  }
  return fs;
}

Result<std::unique_ptr<dbdb::File>> SimFileSystem::Open(const std::string& path, dbdb::OpenOptions options) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (fiu_fail("faultfs/open")) return Injected("open " + path);
  auto it = state_->names.find(path);
  if (it == state_->names.end()) {
    if (!options.create) return Status::NotFound("open " + path + ": no such file");
    if (state_->dirs.count(dbdb::DirName(path)) == 0) {
      return Status::NotFound("open " + path + ": no such directory");
    }
    auto inode = std::make_shared<Inode>(Inode{state_->next_inode++, ""});
    it = state_->names.emplace(path, inode).first;
    state_->Record(TraceOp{TraceOp::Kind::kCreate, inode->id, path, "", 0, 0, ""});
  }
  return std::unique_ptr<dbdb::File>(new SimFile(state_, it->second, options.read_only));
}

Status SimFileSystem::Rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (fiu_fail("faultfs/rename")) return Injected("rename " + from);
  auto it = state_->names.find(from);
  if (it == state_->names.end()) return Status::NotFound("rename " + from + ": no such file");
  if (from == to) return Status::Ok();
  auto replaced = state_->names.find(to);
  if (replaced != state_->names.end()) replaced->second->links--;
  state_->names[to] = it->second;
  state_->names.erase(from);
  state_->Record(TraceOp{TraceOp::Kind::kRename, 0, from, to, 0, 0, ""});
  return Status::Ok();
}

Status SimFileSystem::Remove(const std::string& path) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (fiu_fail("faultfs/remove")) return Injected("remove " + path);
  auto it = state_->names.find(path);
  if (it == state_->names.end()) return Status::NotFound("remove " + path + ": no such file");
  it->second->links--;
  state_->names.erase(it);
  state_->Record(TraceOp{TraceOp::Kind::kRemove, 0, path, "", 0, 0, ""});
  return Status::Ok();
}

Result<bool> SimFileSystem::Exists(const std::string& path) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->names.count(path) != 0;
}

Result<uint64_t> SimFileSystem::Identity(const std::string& path) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  auto it = state_->names.find(path);
  if (it == state_->names.end()) return Status::NotFound("stat " + path + ": no such file");
  return it->second->id;
}

Result<std::vector<std::string>> SimFileSystem::List(const std::string& dir) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (state_->dirs.count(dir) == 0) return Status::NotFound("list " + dir + ": no such directory");
  std::vector<std::string> out;
  for (const auto& [path, inode] : state_->names) {
    if (dbdb::DirName(path) == dir) out.push_back(path.substr(path.find_last_of('/') + 1));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status SimFileSystem::CreateDir(const std::string& dir) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  // Directories are not part of the crash model: once created they exist (docs/PERSISTENCE.md).
  for (std::string d = dir; d != "." && d != "/" && !d.empty(); d = dbdb::DirName(d)) state_->dirs.insert(d);
  return Status::Ok();
}

Status SimFileSystem::SyncDir(const std::string& dir) {
  std::lock_guard<std::mutex> guard(state_->mutex);
  if (fiu_fail("faultfs/syncdir")) return Injected("sync directory " + dir);
  if (state_->dirs.count(dir) == 0) return Status::NotFound("sync directory " + dir + ": no such directory");
  state_->Record(TraceOp{TraceOp::Kind::kSyncDir, 0, dir, "", 0, 0, ""});
  return Status::Ok();
}

Result<std::unique_ptr<dbdb::FileLock>> SimFileSystem::Lock(const std::string& path, bool wait) {
  std::unique_lock<std::mutex> guard(state_->lock_mutex);
  if (!wait && state_->locked.count(path) != 0) return Status::Busy("lock " + path + " is held by another writer");
  state_->lock_released.wait(guard, [&] { return state_->locked.count(path) == 0; });
  state_->locked.insert(path);
  return std::unique_ptr<dbdb::FileLock>(new SimLock(state_, path));
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

CrashImage SimFileSystem::LiveImage() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  CrashImage image;
  for (const auto& [path, inode] : state_->names) image.files[path] = inode->data;
  return image;
}

CrashImage SimFileSystem::DurableImage() const {
  std::lock_guard<std::mutex> guard(state_->mutex);
  return state_->tracker.Build(CrashChoice{
      std::vector<WriteFate>(state_->tracker.volatile_write_count()),
      std::vector<bool>(state_->tracker.volatile_name_op_count(), false), 0});
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
  auto n = [](uint64_t v) { return std::to_string(v); };
  switch (kind) {
    case Kind::kCreate: return "create " + path + " (inode " + n(inode) + ")";
    case Kind::kWrite: return "write inode " + n(inode) + " [" + n(offset) + ", " + n(offset + size) + ")";
    case Kind::kTruncate: return "truncate inode " + n(inode) + " to " + n(offset);
    case Kind::kSync: return "sync inode " + n(inode);
    case Kind::kSyncLost: return "sync inode " + n(inode) + " FAILED (volatile writes lost)";
    case Kind::kRename: return "rename " + path + " -> " + path2;
    case Kind::kRemove: return "remove " + path;
    case Kind::kSyncDir: return "syncdir " + path;
    case Kind::kRead: return "read inode " + n(inode) + " [" + n(offset) + ", " + n(offset + size) + ")";
  }
  return "?";
}

}  // namespace faultfs
