// ReadBytes: a buffer for bytes read from the file, never zero-filled first. Opening a 1M-key
// database reads a 3 MB checkpoint; filling a std::string with zeros before each read of it cost
// as many instructions as hashing it. A large buffer is a large block (large_alloc.h): one
// freed while a handle was open is taken again, its pages already faulted in.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

#include "large_alloc.h"

namespace dbdb {

class ReadBytes {
 public:
  ReadBytes() = default;
  ~ReadBytes() { FreeLarge(data_, capacity_); }
  // A moved-from buffer is empty, with no capacity: reusing it allocates again.
  ReadBytes(ReadBytes&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  ReadBytes& operator=(ReadBytes&& other) noexcept {
    if (this != &other) {
      FreeLarge(data_, capacity_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  ReadBytes(const ReadBytes&) = delete;
  ReadBytes& operator=(const ReadBytes&) = delete;

  // Makes it `size` bytes long, contents unspecified until read into (reallocates only to grow;
  // what the old bytes held is lost then, and any view into them dangles).
  void Resize(size_t size) {
    if (size > capacity_) {
      char* grown = static_cast<char*>(AllocateLarge(size));  // may throw: then nothing changed
      FreeLarge(data_, capacity_);
      data_ = grown;
      capacity_ = size;
    }
    size_ = size;
  }
  std::span<char> span() { return {data_, size_}; }
  std::string_view view() const { return {data_, size_}; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;  // AllocateLarge(capacity_)
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace dbdb
