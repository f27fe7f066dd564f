// How many forks separate this process from the one that loaded dbdb: 0 there, one more in each
// child forked since (a pthread_atfork child handler, registered when the library is loaded).
//
// flock locks belong to open file descriptions, and a forked child shares its parent's: what the
// parent holds open (a handle's lock file, its database file) must not be locked through in the
// child, or parent and child would hold "one" lock together, and the child's unlock would release
// the parent's. Code that keeps descriptors open across calls compares the generation it opened
// them in with this one.
#pragma once

#include <cstdint>

namespace dbdb {

uint64_t ForkGeneration();

}  // namespace dbdb
