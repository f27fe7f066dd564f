// The SIGBUS handler behind ReadMapped (map_guard.h).
#include "map_guard.h"

#include <pthread.h>
#include <signal.h>

#include <mutex>

namespace dbdb {

thread_local MapFaultGuard* t_map_fault_guard __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

struct sigaction g_previous;

void OnSigbus(int signal_number, siginfo_t* info, void* context) {
  // Only a fault the kernel raised for a memory access (si_code > 0), and not a machine-check
  // warning about a page nobody is reading (BUS_MCEERR_AO), abandons a guarded read; a SIGBUS
  // another process or thread sent (kill, tgkill: si_code <= 0) is not the read's.
  bool access_fault = info != nullptr && info->si_code > 0;
#ifdef BUS_MCEERR_AO
  if (access_fault && info->si_code == BUS_MCEERR_AO) access_fault = false;
#endif
  if (MapFaultGuard* guard = t_map_fault_guard; guard != nullptr && access_fault) {
    siglongjmp(guard->env, 1);  // ReadMapped unblocks SIGBUS (see UnblockMapFaults)
  }
  // Not a read under ReadMapped: what would have happened without us.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(signal_number, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(signal_number);
    return;
  }
  if (g_previous.sa_handler == SIG_IGN && !access_fault) return;  // a sent SIGBUS, ignored before us
  // The default action, which ends the process as if we had never been here: restore it, then
  // for a fault return (the faulting instruction runs again and faults again), for a sent signal
  // raise it again.
  struct sigaction fallback = {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  sigaction(SIGBUS, &fallback, nullptr);
  if (!access_fault) raise(SIGBUS);
}

}  // namespace

void UnblockMapFaults() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void InstallMapFaultHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    // The previous handler is read before ours is installed, so a SIGBUS in between finds it.
    sigaction(SIGBUS, nullptr, &g_previous);
    struct sigaction action = {};
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, nullptr);
  });
}

}  // namespace dbdb
