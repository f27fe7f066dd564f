// Clang's thread-safety analysis (-Wthread-safety, on for clang builds of the store): which mutex
// guards which member, and which functions must hold or must not hold it. The annotations are
// checked at compile time by clang (the fuzz build, ci/fuzz.sh) and are comments to gcc.
// libstdc++'s std::mutex is not annotated, so the store's mutexes that guard state are dbdb::Mutex.
#pragma once

#include <mutex>

#if defined(__clang__)
#define DBDB_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define DBDB_THREAD_ANNOTATION(x)
#endif

// Abseil's legacy header (absl/base/internal/thread_annotations.h, which its B-tree includes)
// defines GUARDED_BY too, to the same attribute: included before this header, its definition is
// replaced here; included after, it replaces ours with the same thing (no warning: a system
// header). The other names are undefined too, in case another library defines them.
#undef CAPABILITY
#undef SCOPED_CAPABILITY
#undef GUARDED_BY
#undef REQUIRES
#undef EXCLUDES
#undef ACQUIRE
#undef RELEASE
#define CAPABILITY(x) DBDB_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY DBDB_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) DBDB_THREAD_ANNOTATION(guarded_by(x))
#define REQUIRES(...) DBDB_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) DBDB_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) DBDB_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) DBDB_THREAD_ANNOTATION(release_capability(__VA_ARGS__))

namespace dbdb {

class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mutex_.lock(); }
  void Unlock() RELEASE() { mutex_.unlock(); }
  // BasicLockable, for std::condition_variable_any's wait alone, which lets go of the mutex and
  // takes it again inside the wait, where the analysis does not look. The store locks a Mutex
  // through Lock or a MutexLock, never through these.
  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  std::mutex mutex_;
};

// Holds a Mutex for its scope; Unlock and Lock let go of it for a while within the scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mutex) ACQUIRE(mutex) : mutex_(mutex) { mutex_->Lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mutex_->Unlock();
  }
  void Unlock() RELEASE() {
    held_ = false;
    mutex_->Unlock();
  }
  void Lock() ACQUIRE() {
    mutex_->Lock();
    held_ = true;
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mutex_;
  bool held_ = true;
};

}  // namespace dbdb
