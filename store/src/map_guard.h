// Reading a file mapping without dying of it. A read of a mapped page that the disk cannot
// deliver (or that lies past the file's end, after a truncation) raises SIGBUS; inside ReadMapped
// that abandons the read and returns false, which the caller reports as an IOError. The handler
// is installed once per process (InstallMapFaultHandler) and passes every SIGBUS raised outside
// ReadMapped on to the handler installed before it (or the default action, which kills).
#pragma once

#include <setjmp.h>

#include <atomic>

namespace dbdb {

struct MapFaultGuard {
  sigjmp_buf env;
  MapFaultGuard* outer;
};

// The innermost ReadMapped of this thread (initial-exec: the signal handler reads it, and a
// dynamically allocated TLS block could allocate there).
extern thread_local MapFaultGuard* t_map_fault_guard __attribute__((tls_model("initial-exec")));

// Unblocks SIGBUS in this thread after a fault was caught (the handler runs with SA_NODEFER, but
// an interposed handler such as ThreadSanitizer's may block it while ours runs, and siglongjmp
// without a saved mask does not undo that).
void UnblockMapFaults();

// Installs the SIGBUS handler (SA_SIGINFO | SA_NODEFER | SA_ONSTACK) once; later calls do nothing.
// A handler another library installs after it replaces it (and mapped reads that fault then end
// the process); a program that installs its own SIGBUS handler should do so before opening a
// database, so that dbdb's passes foreign faults on to it.
void InstallMapFaultHandler();

// Runs fn(). If a read of mapped memory inside it raises SIGBUS, fn is abandoned at that point
// (siglongjmp) and ReadMapped returns false. So fn must own nothing while it reads mapped
// memory: no std::string or vector it builds, no lock it holds, nothing whose destructor must
// run (an abandoned fn's destructors do not). Views, integers and writes into storage the caller
// owns are fine; so is allocating before the mapped bytes are touched. Nestable.
template <typename Fn>
[[nodiscard]] bool ReadMapped(Fn&& fn) {
  MapFaultGuard guard;
  guard.outer = t_map_fault_guard;
  if (sigsetjmp(guard.env, 0) != 0) {  // 0: no signal mask saved, so no system call here
    t_map_fault_guard = guard.outer;
    UnblockMapFaults();
    return false;
  }
  t_map_fault_guard = &guard;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // the guard is up before fn reads
  fn();
  std::atomic_signal_fence(std::memory_order_seq_cst);  // and stays up until fn has read
  t_map_fault_guard = guard.outer;
  return true;
}

}  // namespace dbdb
