// ReadBytes: a buffer for bytes read from the file, never zero-filled first. Opening a 1M-key
// database reads a 3 MB checkpoint; filling a std::string with zeros before each read of it cost
// as many instructions as hashing it.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <utility>

namespace dbdb {

class ReadBytes {
 public:
  ReadBytes() = default;
  // A moved-from buffer is empty, with no capacity: reusing it allocates again.
  ReadBytes(ReadBytes&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  ReadBytes& operator=(ReadBytes&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
    return *this;
  }

  // Makes it `size` bytes long, contents unspecified until read into (reallocates only to grow;
  // what the old bytes held is lost then, and any view into them dangles).
  void Resize(size_t size) {
    if (size > capacity_) {
      data_ = std::make_unique_for_overwrite<char[]>(size);
      capacity_ = size;
    }
    size_ = size;
  }
  std::span<char> span() { return {data_.get(), size_}; }
  std::string_view view() const { return {data_.get(), size_}; }
  size_t size() const { return size_; }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace dbdb
