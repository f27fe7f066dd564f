// dbdb_fuzz_structured: the input is a mutated dbdb file whose checksums are recomputed first
// (oracle.h, RecomputeChecksums): the header checksum, every record's checksum and every commit's
// body checksum. Mutations then get past verification to the commit and node decoders, the seal
// rule, the commit chain, the tree walks and check()'s invariants.
#include <fiu.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "oracle.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fiu_init(0);  // faultfs has fault points; none is ever enabled here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dbdb_fuzz::RunOracle(dbdb_fuzz::RecomputeChecksums(std::string(reinterpret_cast<const char*>(data), size)));
  return 0;
}
