// The writer and reader processes of dbdb-stress. Each opens the database itself, works until
// SIGTERM, and reports every event to the parent on a pipe (protocol.h). On an I/O error (an
// injected fault) it reports the failure and exits with kExitFault; the parent restarts it.
#pragma once

#include <cstdint>
#include <string>

namespace stress {

inline constexpr int kExitFault = 3;      // failed cleanly on an I/O error
inline constexpr int kExitViolation = 4;  // saw something that must not happen
inline constexpr int kExitReport = 5;     // could not report to the parent

struct ChildArgs {
  std::string role;  // "writer" or "reader"
  int id = 0;
  uint64_t incarnation = 0;
  std::string workload;
  std::string path;
  uint64_t seed = 0;
  int report_fd = 3;
};

int RunChild(const ChildArgs& args);

}  // namespace stress
