// The property tests' main: sets RapidCheck's budget from the test tier unless RC_PARAMS already
// names one, so `RC_PARAMS="seed=…"` and `RC_PARAMS="reproduce=…"` replay a failure as printed.
//   DBDB_TEST_TIER=quick (default): 300 cases a property; long: 3000.
#include <fiu.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

int main(int argc, char** argv) {
  const char* tier = ::getenv("DBDB_TEST_TIER");
  bool long_tier = tier != nullptr && std::string(tier) == "long";
  const char* existing = ::getenv("RC_PARAMS");
  std::string params = existing != nullptr ? existing : "";
  if (params.find("max_success") == std::string::npos && params.find("reproduce") == std::string::npos) {
    params += long_tier ? " max_success=3000" : " max_success=300";
  }
  if (params.find("max_size") == std::string::npos) params += " max_size=120";
  ::setenv("RC_PARAMS", params.c_str(), 1);
  fiu_init(0);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
