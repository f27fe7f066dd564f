// The change counter (change_counter.h).
#include "change_counter.h"

#include <atomic>
#include <cstring>

#include "coding.h"
#include "map_guard.h"

namespace dbdb {

namespace {
constexpr uint64_t kCounterBytes = 8;
}  // namespace

Result<std::unique_ptr<ChangeMark>> ChangeMark::Take(File& lock_file) {
  char bytes[kCounterBytes] = {};
  DBDB_ASSIGN_OR_RETURN(size_t n, lock_file.ReadAt(0, std::span<char>(bytes, kCounterBytes)));
  const uint64_t now = n == kCounterBytes ? coding::DecodeFixed64(bytes) : 0;
  // Even: the last writer let go. Odd: it died holding the lock; the next odd value is then two on.
  const uint64_t odd = now % 2 == 0 ? now + 1 : now + 2;
  coding::EncodeFixed64(bytes, odd);
  DBDB_RETURN_IF_ERROR(lock_file.WriteAt(0, std::span<const char>(bytes, kCounterBytes)));
  return std::unique_ptr<ChangeMark>(new ChangeMark(lock_file, odd));
}

ChangeMark::~ChangeMark() {
  char bytes[kCounterBytes];
  coding::EncodeFixed64(bytes, value_ + 1);
  (void)file_.WriteAt(0, std::span<const char>(bytes, kCounterBytes));  // failed: stays odd (safe)
}

bool ChangeCounterView::Map(FileSystem& fs, const std::string& lock_path) {
  if (mapped()) return true;
  auto file = fs.Open(lock_path, OpenOptions{.create = false, .read_only = true, .transient = true});
  if (!file.ok()) return false;
  auto size = (*file)->Size();
  if (!size.ok() || *size < kCounterBytes) return false;
  InstallMapFaultHandler();
  auto mapping = (*file)->Map(kCounterBytes);
  if (!mapping.ok() || *mapping == nullptr || (*mapping)->size() < kCounterBytes) return false;
  file_ = std::move(file).value();
  mapping_ = std::move(mapping).value();
  return true;
}

std::optional<uint64_t> ChangeCounterView::Read() const {
  if (!mapped()) return std::nullopt;
  char bytes[kCounterBytes];
  const char* data = mapping_->data();
  if (!ReadMapped([&] { std::memcpy(bytes, data, kCounterBytes); })) return std::nullopt;
  // The counter is read before anything of the database file this look reads.
  std::atomic_thread_fence(std::memory_order_acquire);
  return coding::DecodeFixed64(bytes);
}

}  // namespace dbdb
