// dbdb_fuzz_raw: the input, as it is, is the database file (oracle.h). Checksums stop almost
// every mutation at the first record it touches, so this target exercises framing, the header,
// the backward scan for the newest commit, recovery and the checksum paths themselves.
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
  dbdb_fuzz::RunOracle(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
