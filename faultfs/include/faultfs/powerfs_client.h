// Talking to a dbdb-powerfs mount (faultfs/tools/dbdb_powerfs.cc, docs/POWERFS.md) from a test, a
// stress runner or the dbdb-powerfs command itself: one command written to the mount's control
// file `.powerfs`, one reply read back. The caller of a command is never killed by the cut it asks
// for (every other process with the mount open is).
#pragma once

#include <string>

#include "dbdb/status.h"

namespace faultfs {

inline constexpr const char* kPowerFsControlName = ".powerfs";

// Commands (each reply is one line of text):
//   cut PLAN SEED [STATE]  freeze the mount, kill every process that has it open, reset it to the
//                          crash state PLAN (drop|prefix|subset|torn|all) picks with SEED, or to
//                          state STATE of the plan's list; the reply describes the state
//   count PLAN             how many crash states PLAN allows now (saturating)
//   fault POINT [SKIP [ERRNO]]  the SKIP-th next call reaching one of the simulator's fault points
//                          (faultfs/sync/lose, faultfs/write, ...) fails, once (EIO or ENOSPC)
//   reset                  kill as for a cut, then an empty filesystem (a new disk)
//   stats                  cuts so far, the trace since the last cut, the volatile operations
//   trace                  the trace since the last cut (reset, or mount), one operation a line
// A command that fails returns an error whose message is the daemon's reply.
dbdb::Result<std::string> PowerFsCommand(const std::string& mount, const std::string& command);

}  // namespace faultfs
