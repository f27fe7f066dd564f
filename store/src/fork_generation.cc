// The fork generation (fork_generation.h).
#include "fork_generation.h"

#include <pthread.h>

#include <atomic>

namespace dbdb {
namespace {

std::atomic<uint64_t> generation{0};

void CountForkInChild() { generation.fetch_add(1, std::memory_order_relaxed); }

// At load time, not on first use: a function-local static's first use could be racing a fork in
// another thread, and a child that inherits its initialisation "in progress" would wait forever.
const int registered = ::pthread_atfork(nullptr, nullptr, CountForkInChild);

}  // namespace

uint64_t ForkGeneration() {
  (void)registered;
  return generation.load(std::memory_order_relaxed);
}

}  // namespace dbdb
