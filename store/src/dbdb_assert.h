// DBDB_ASSERT: an invariant check that stays on in release builds. A failed one prints where and
// what, then aborts: continuing past a broken invariant of a store risks writing wrong data, which
// is worse than stopping (TigerBeetle's rule). Used in pairs where it matters: a fact asserted
// before it is written is asserted again after it is read back (docs/FORMAT.md's checks).
#pragma once

#include <cstdio>
#include <cstdlib>

#define DBDB_ASSERT(condition)                                                                 \
  do {                                                                                         \
    if (!(condition)) {                                                                        \
      std::fprintf(stderr, "dbdb: assertion failed at %s:%d: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)
