// The change counter (change_counter.h).
#include "change_counter.h"

#include <pthread.h>
#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>

#include "coding.h"
#include "map_guard.h"

namespace dbdb {

namespace {

constexpr uint64_t kCounterBytes = 8;

uint64_t Mix(uint64_t z) {  // splitmix64's finalizer
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The process's key for marks: 64 bits from the kernel's random source (never blocking), mixed
// with the clock and the process id, so that if the kernel has no random bytes to give yet the
// rest still makes two processes' keys differ. Drawn once per process, and again in a forked
// child (it must not repeat its parent's values: the child handler, which runs before any other
// thread exists in the child, forgets the parent's key), not at every mark: a mark is a
// commit's cost.
std::atomic<uint64_t> mark_key{0};  // 0: none drawn yet
std::atomic<uint64_t> marks{0};     // this process's marks so far

void ForgetMarkKeyInChild() { mark_key.store(0, std::memory_order_relaxed); }

// Registered when the library is loaded (a function-local static could race a fork).
const bool mark_key_forgotten_in_children = ::pthread_atfork(nullptr, nullptr, ForgetMarkKeyInChild) == 0;

uint64_t MarkKey() {
  uint64_t key = mark_key.load(std::memory_order_acquire);
  if (key != 0) return key;
  key = Mix(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
            (static_cast<uint64_t>(::getpid()) << 40));
  uint64_t random = 0;
  if (::getrandom(&random, sizeof(random), GRND_NONBLOCK) == static_cast<ssize_t>(sizeof(random))) key ^= random;
  key |= 1;  // never 0
  uint64_t expected = 0;
  // Two threads drawing at once: the first one's key is everyone's.
  if (!mark_key.compare_exchange_strong(expected, key, std::memory_order_acq_rel)) key = expected;
  return key;
}

// A fresh value: the key plus this process's count of marks, mixed (Mix is a bijection, so two
// marks with one key differ before the odd bit is set; after it, two values coincide with a
// chance of 2^-63 per pair, as two processes' do).
uint64_t FreshValue() {
  (void)mark_key_forgotten_in_children;
  return Mix(MarkKey() + marks.fetch_add(1, std::memory_order_relaxed));
}

}  // namespace

Result<std::unique_ptr<ChangeMark>> ChangeMark::Take(File& lock_file) {
  // A fresh random value, never one derived from what the file holds: a bad read of the counter
  // (or a page of it the kernel lost and read back) would otherwise move it back to a value a
  // reader still trusts. One process's marks never repeat a value; two processes' marks coincide
  // with a chance of about 2^-63 a pair, and a torn read of one matches what a reader kept with a
  // chance of about 2^-56.
  const uint64_t odd = FreshValue() | 1;
  char bytes[kCounterBytes];
  coding::EncodeFixed64(bytes, odd);
  Status written = lock_file.WriteAt(0, std::span<const char>(bytes, kCounterBytes));
  if (written.ok()) return std::unique_ptr<ChangeMark>(new ChangeMark(lock_file, odd, true));
  // The counter could not be written (a full disk, a quota, a file system that allocates to
  // overwrite). Taking the lock must not need space, so the counter is removed instead: cutting
  // the file to nothing needs none, readers that mapped it fault (and look at the file every
  // time), and new readers map nothing. Only if that fails too is the writer refused.
  Status cut = lock_file.Truncate(0);
  if (!cut.ok()) {
    return Status(written.code(), written.message() + "; removing the counter failed too: " + cut.ToString());
  }
  return std::unique_ptr<ChangeMark>(new ChangeMark(lock_file, odd, false));
}

ChangeMark::~ChangeMark() {
  if (!written_) return;  // removed: the next writer that can write one puts it back
  char bytes[kCounterBytes];
  coding::EncodeFixed64(bytes, value_ + 1);
  (void)file_.WriteAt(0, std::span<const char>(bytes, kCounterBytes));  // failed: stays odd (safe)
}

bool ChangeCounterView::Map(FileSystem& fs, const std::string& lock_path) {
  if (mapped()) return true;
  auto file = fs.Open(lock_path, OpenOptions{.create = false, .read_only = true, .transient = true});
  if (!file.ok() || !MapOpen(**file)) return false;
  file_ = std::move(file).value();
  return true;
}

bool ChangeCounterView::MapOpen(File& lock_file) {
  if (mapped()) return true;
  auto size = lock_file.Size();
  if (!size.ok() || *size < kCounterBytes) return false;
  InstallMapFaultHandler();
  auto mapping = lock_file.Map(kCounterBytes);
  if (!mapping.ok() || *mapping == nullptr || (*mapping)->size() < kCounterBytes) return false;
  mapping_ = std::move(mapping).value();
  return true;
}

std::optional<uint64_t> ChangeCounterView::Read() {
  if (!mapped()) return std::nullopt;
  char bytes[kCounterBytes];
  const char* data = mapping_->data();
  if (!ReadMapped([&] { std::memcpy(bytes, data, kCounterBytes); })) {
    // The file was cut (a writer could not write the counter): drop the mapping rather than
    // fault on every read; Map makes a new one once a writer has put a counter back.
    mapping_.reset();
    file_.reset();
    return std::nullopt;
  }
  // The counter is read before anything of the database file this look reads.
  std::atomic_thread_fence(std::memory_order_acquire);
  return coding::DecodeFixed64(bytes);
}

}  // namespace dbdb
