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
  if (MapFaultGuard* guard = t_map_fault_guard) {
    // SA_NODEFER left SIGBUS unblocked, so jumping out without restoring a mask is safe.
    siglongjmp(guard->env, 1);
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
  // Default action: restore it and return; the faulting instruction runs again and the kernel
  // delivers SIGBUS to the default action, which ends the process as if we had never been here.
  struct sigaction fallback = {};
  fallback.sa_handler = SIG_DFL;
  sigemptyset(&fallback.sa_mask);
  sigaction(SIGBUS, &fallback, nullptr);
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
    struct sigaction action = {};
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &g_previous);
  });
}

}  // namespace dbdb
