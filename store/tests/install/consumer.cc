// A program outside the dbdb tree, built against an installed dbdb (install_test.sh).
#include <dbdb/db.h>
#include <dbdb/dump.h>

#include <cstdio>
#include <sstream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto db = dbdb::DB::Open(std::string(argv[1]) + "/consumer.dbdb", dbdb::Options{.create_if_missing = true});
  if (!db.ok()) {
    std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
    return 1;
  }
  if (!(*db)->Put("installed", "yes").ok()) return 1;
  auto value = (*db)->Get("installed");
  if (!value.ok() || !value->has_value() || **value != "yes") return 1;
  // The listing of the installed dump.h names the batch's put.
  std::ostringstream listing;
  dbdb::Status dumped = dbdb::DumpFile(std::string(argv[1]) + "/consumer.dbdb", {.show_values = true}, listing);
  if (!dumped.ok() || listing.str().find("put installed = yes") == std::string::npos) {
    std::fprintf(stderr, "dump: %s\n%s", dumped.ToString().c_str(), listing.str().c_str());
    return 1;
  }
  std::printf("consumer: ok\n");
  return 0;
}
