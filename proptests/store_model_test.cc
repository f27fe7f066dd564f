// Stateful property tests: the store against the model through every operation, reopenings,
// compactions, crashes (simulated filesystem, every crash plan) and injected faults.
// Guards I1 (atomic commit), I2 (durability), I3 (prefix), I4 (snapshots, newest base), I5
// (corrupt reads are errors), I6 (recovery), I7 (fail-stop), I8 (compaction).
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "store_harness.h"

namespace proptests {

RC_GTEST_PROP(StoreVsModel, SimulatedFilesystemSyncMode, ()) { RunStateful(true, dbdb::Durability::kSync); }

RC_GTEST_PROP(StoreVsModel, SimulatedFilesystemNoSyncMode, ()) { RunStateful(true, dbdb::Durability::kNoSync); }

RC_GTEST_PROP(StoreVsModel, RealFilesystemSyncMode, ()) { RunStateful(false, dbdb::Durability::kSync); }

RC_GTEST_PROP(StoreVsModel, RealFilesystemNoSyncMode, ()) { RunStateful(false, dbdb::Durability::kNoSync); }

}  // namespace proptests
