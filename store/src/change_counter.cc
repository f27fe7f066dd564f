// The change counter (change_counter.h).
#include "change_counter.h"

#include <atomic>
#include <cstring>
#include <random>

#include "coding.h"
#include "map_guard.h"

namespace dbdb {

namespace {
constexpr uint64_t kCounterBytes = 8;
}  // namespace

Result<std::unique_ptr<ChangeMark>> ChangeMark::Take(File& lock_file) {
  // A fresh random value, never one derived from what the file holds: a bad read of the counter
  // (or a page of it the kernel lost and read back) would otherwise move it back to a value a
  // reader still trusts. Two marks' values coincide, or a torn read of one matches what a reader
  // kept, with a chance of about 2^-56.
  std::random_device random;
  const uint64_t odd = ((uint64_t{random()} << 32) ^ uint64_t{random()}) | 1;
  char bytes[kCounterBytes];
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
