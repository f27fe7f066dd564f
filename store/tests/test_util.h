// Helpers shared by the store's unit tests: a mapping's advice (VmFlags), a temporary directory
// removed at the end, a file's bytes, a forked child's wait, and a filesystem whose compaction
// files refuse writes.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <span>
#include <string>
#include <thread>

#include "dbdb/db.h"
#include "dbdb/file_system.h"

namespace dbdb::testing {

// The VmFlags line of the mapping of this process that holds `p` ("" if none does).
inline std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long long lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (line.find("VmFlags:") == 0) {
      if (inside) return line;
      continue;
    }
    if ((head >> std::hex >> lo >> dash >> hi) && dash == '-' && line.find(':') > line.find(' ')) {
      inside = lo <= at && at < hi;
    }
  }
  return "";
}

// Whether the mapping holding `p` was advised MADV_HUGEPAGE, or MADV_NOHUGEPAGE.
inline bool AdvisedHuge(const void* p) { return VmFlagsOf(p).find(" hg") != std::string::npos; }
inline bool AdvisedSmall(const void* p) { return VmFlagsOf(p).find(" nh") != std::string::npos; }

// Whether this kernel records MADV_NOHUGEPAGE (it refuses it without transparent huge pages),
// asked as dbdb asks it, of a fresh anonymous mapping, and seen as the tests see it: in the
// mapping's flags (a sandbox may return 0 without recording the advice).
inline bool KernelTakesNoHugePageAdvice() {
  const size_t bytes = size_t{4} << 20;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool taken = ::madvise(p, bytes, MADV_NOHUGEPAGE) == 0 && AdvisedSmall(p);
  ::munmap(p, bytes);
  return taken;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "dbdb-test-XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Path(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Where `db`'s data ends: its file's size less the zeros allocated ahead of the next commit.
inline uint64_t DataSize(DB& db) {
  auto stats = db.GetStats();
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  return stats.ok() ? stats->file_size_bytes - stats->allocated_bytes : 0;
}

// Every byte of the file at `path` ("" if it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Waits for the child `pid` (again after a signal); its wait status, or -1 if it cannot be waited
// for (a failed fork's -1 among them).
inline int WaitForChild(pid_t pid) {
  if (pid <= 0) return -1;
  int status = 0;
  pid_t waited;
  do {
    waited = ::waitpid(pid, &status, 0);
  } while (waited < 0 && errno == EINTR);
  return waited == pid ? status : -1;
}

// True for the file a compaction writes ("<path>.compacting"), which test file systems single out.
inline bool IsCompactionFile(const std::string& path) {
  const std::string suffix = ".compacting";
  return path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The real filesystem, except that a compaction's file refuses every write after its header with
// `status` (a full disk for it only, with NoSpace; a damaged device, with another error). While
// `hold` is set, such a write first waits for it to be cleared (`held` counts the writes waiting).
class RefusingCompactionFs final : public FileSystemWrapper {
 public:
  explicit RefusingCompactionFs(Status status) : FileSystemWrapper(NewPosixFileSystem()), status_(std::move(status)) {}
  std::atomic<int> refused{0};  // writes refused
  std::atomic<bool> hold{false};
  std::atomic<int> held{0};
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenOptions options) override {
    DBDB_ASSIGN_OR_RETURN(auto file, FileSystemWrapper::Open(path, options));
    if (!IsCompactionFile(path)) return file;
    return std::unique_ptr<File>(new Refusing(this, std::move(file)));
  }

 private:
  class Refusing final : public FileWrapper {
   public:
    Refusing(RefusingCompactionFs* fs, std::unique_ptr<File> base) : FileWrapper(std::move(base)), fs_(fs) {}
    Status WriteAt(uint64_t offset, std::span<const char> data) override {
      if (offset == 0) return FileWrapper::WriteAt(offset, data);  // the header
      if (fs_->hold.load()) {
        fs_->held++;
        while (fs_->hold.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        fs_->held--;
      }
      fs_->refused++;
      return fs_->status_;
    }

   private:
    RefusingCompactionFs* fs_;
  };
  const Status status_;
};

}  // namespace dbdb::testing
