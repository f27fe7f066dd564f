// Status and Result<T>: dbdb reports every error as a value. No exception crosses the API.
//
// A Status is a code plus a human-readable message with context ("checksum mismatch in node
// at offset 8192"). Success carries no message and costs one enum. Result<T> holds either a
// value or a non-OK Status.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dbdb {

enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound,         // the key, file or directory does not exist
  kCorruption,       // bytes on disk failed a checksum or a structural check (I5)
  kIOError,          // the operating system (or the injected fault layer) reported an error
  kNoSpace,          // the device is full (ENOSPC); a kind of I/O error
  kInvalidArgument,  // the caller passed something dbdb cannot accept
  kLimitExceeded,    // a key, value or the file would exceed a configured limit
  kBusy,             // the writer lock is held by someone else and waiting was not allowed
  kReadOnly,         // a write on a read-only handle
  kFailed,           // the handle saw an I/O error earlier and refuses writes until reopened (I7)
  kAborted,          // the transaction was aborted or already finished
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  static Status NoSpace(std::string m) { return {StatusCode::kNoSpace, std::move(m)}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status LimitExceeded(std::string m) { return {StatusCode::kLimitExceeded, std::move(m)}; }
  static Status Busy(std::string m) { return {StatusCode::kBusy, std::move(m)}; }
  static Status ReadOnly(std::string m) { return {StatusCode::kReadOnly, std::move(m)}; }
  static Status Failed(std::string m) { return {StatusCode::kFailed, std::move(m)}; }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }
  // An I/O error of any kind, including a full device.
  bool IsIOError() const { return code_ == StatusCode::kIOError || code_ == StatusCode::kNoSpace; }

  // "Corruption: checksum mismatch in node at offset 8192".
  std::string ToString() const;

  // Returns a copy with `context` prepended to the message: "opening db: <message>".
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a T or a non-OK Status. Accessing value() of an error is a programmer error (asserts).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(data_).ok() && "Result<T> built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(data_);
  }
  T& value() & {
    assert(ok());
    return std::get<T>(data_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(data_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(data_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace dbdb

// Propagates a non-OK Status from an expression returning Status.
#define DBDB_RETURN_IF_ERROR(expr)           \
  do {                                       \
    ::dbdb::Status dbdb_status_ = (expr);    \
    if (!dbdb_status_.ok()) return dbdb_status_; \
  } while (0)

#define DBDB_CONCAT_INNER(a, b) a##b
#define DBDB_CONCAT(a, b) DBDB_CONCAT_INNER(a, b)
// DBDB_ASSIGN_OR_RETURN(auto x, ExprReturningResult()); returns the Status on error.
#define DBDB_ASSIGN_OR_RETURN(lhs, expr)                          \
  auto DBDB_CONCAT(dbdb_result_, __LINE__) = (expr);              \
  if (!DBDB_CONCAT(dbdb_result_, __LINE__).ok())                  \
    return DBDB_CONCAT(dbdb_result_, __LINE__).status();          \
  lhs = std::move(DBDB_CONCAT(dbdb_result_, __LINE__)).value()
