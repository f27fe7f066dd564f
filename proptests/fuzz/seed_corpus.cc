// dbdb_fuzz_seed: writes the seed corpus of the fuzz targets, small valid dbdb files made by the
// store itself on the simulated filesystem (deterministic: the same files every run).
//
//   build-fuzz/bin/dbdb_fuzz_seed proptests/fuzz/corpus/raw proptests/fuzz/corpus/structured
//
//   build-fuzz/bin/dbdb_fuzz_seed --normalize IN OUT
//     writes IN with its checksums recomputed as dbdb_fuzz_structured sees it (oracle.h), for
//     `dbdb dump` and `dbdb check` to look at a structured finding.
//
// Each seed stays under 16 KiB so that libFuzzer's default -max_len (the largest seed) keeps
// executions fast.
#include <fiu.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "dbdb/db.h"
#include "faultfs/sim_file_system.h"
#include "oracle.h"

namespace {

constexpr size_t kSeedSizeMaxBytes = 16 * 1024;

void Must(const dbdb::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "dbdb_fuzz_seed: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

// One database on a fresh simulated filesystem.
struct Maker {
  std::shared_ptr<faultfs::SimFileSystem> fs = std::make_shared<faultfs::SimFileSystem>(1);
  std::unique_ptr<dbdb::DB> db;

  dbdb::Options options;

  explicit Maker(dbdb::Options o = {}) : options(std::move(o)) {
    options.file_system = fs;
    // No space allocated ahead (Options::allocate_ahead_bytes, since these seeds were first
    // made): the image is taken with the handle open, and the zeros ahead of its next commit
    // (64 KiB by default) would put every seed over 16 KiB.
    options.allocate_ahead_bytes = 0;
    options.create_if_missing = true;
    Reopen();
  }
  // Closes the handle (which may write: a checkpoint, a close fold) and opens a new one.
  void Reopen() {
    db.reset();
    auto opened = dbdb::DB::Open("db", options);
    Must(opened.status(), "open");
    db = std::move(opened).value();
  }
  void Put(const std::string& key, const std::string& value) { Must(db->Put(key, value), "put"); }
  void Del(const std::string& key) { Must(db->Del(key), "del"); }
  void Txn(const std::map<std::string, std::string>& puts, const std::vector<std::string>& dels = {}) {
    auto txn = db->BeginWrite();
    Must(txn.status(), "begin");
    for (const auto& [k, v] : puts) Must((*txn)->Put(k, v), "txn put");
    for (const auto& k : dels) Must((*txn)->Del(k), "txn del");
    Must((*txn)->Commit(), "commit");
  }
  std::string Image() const { return fs->LiveImage().files.at("db"); }
};

std::string Key(int i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "key%05d", i);
  return buf;
}

std::map<std::string, std::string> Seeds() {
  std::map<std::string, std::string> seeds;
  {
    Maker m;
    seeds["empty"] = m.Image();  // the header only: no commit
  }
  {
    Maker m;
    m.Put("apple", "red");
    seeds["one-commit"] = m.Image();
  }
  {
    Maker m;
    m.Put("apple", "red");
    m.Put("banana", "yellow");
    m.Txn({{"cherry", "dark red"}, {"date", "brown"}, {"elder", "black"}});
    m.Del("banana");
    m.Put("apple", "green");
    seeds["several-commits"] = m.Image();
  }
  {
    // Small nodes and long keys (few entries a node): a tree of height 3, in two transactions.
    dbdb::Options options;
    options.node_size_target_bytes = 512;
    options.key_size_max_bytes = 128;
    Maker m(options);
    auto long_key = [](int i) { return Key(i) + std::string(88, '.'); };
    std::map<std::string, std::string> first, second;
    for (int i = 0; i < 56; i += 1) first[long_key(i)] = "v" + std::to_string(i);
    for (int i = 1; i < 56; i += 16) second[long_key(i)] = "w" + std::to_string(i);
    m.Txn(first);
    m.Txn(second, {long_key(10), long_key(12)});
    seeds["deep-tree"] = m.Image();
  }
  {
    Maker m;
    for (int i = 0; i < 6; i++) m.Put(Key(i), std::string(40, static_cast<char>('a' + i)));
    m.Del(Key(2));
    Must(m.db->Compact(), "compact");  // generation 1: one commit, prev 0
    m.Put(Key(100), "after compaction");
    seeds["compacted"] = m.Image();
  }
  {
    Maker m;
    m.Put("a", "1");
    m.Put("b", "2");
    std::string before = m.Image();
    m.Txn({{"c", std::string(300, 'c')}, {"d", "4"}});
    std::string after = m.Image();
    // A crash in the middle of the third transaction: part of its nodes, no commit.
    seeds["torn-tail"] = after.substr(0, before.size() + (after.size() - before.size()) / 2);
    // Its commit record arrived but not its seal: a writer that died before sealing.
    seeds["unsealed"] = after.substr(0, after.size() - 24);
    // Garbage after the newest commit (an abandoned write).
    seeds["tail-garbage"] = after + std::string(100, '\xff');
  }
  {
    // Version 2's log: a small fold threshold, so the file holds a fold in the middle, batches
    // replayed over it, deletes of folded keys, and an unfolded tail of batches.
    dbdb::Options options;
    options.fold_threshold_bytes = 200;
    options.auto_compact = false;
    Maker m(options);
    for (int i = 0; i < 8; i++) m.Put(Key(i), "logged" + std::to_string(i));
    m.Del(Key(1));
    m.Txn({{Key(2), "changed"}, {Key(20), "new"}});
    seeds["folds-and-batches"] = m.Image();
    // (format 4) A checkpoint of that log (a delete and a put in it), then one more batch after it.
    Must(m.db->Checkpoint(), "checkpoint");
    m.Put(Key(3), "after the checkpoint");
    seeds["checkpoint"] = m.Image();
  }
  {
    // (format 5) A close fold: the log of a few commits (a delete of a folded key among them)
    // folded when the handle closed, restating the newest txn id; then one more batch after it.
    dbdb::Options options;
    options.fold_threshold_bytes = 1000;
    options.auto_compact = false;
    options.fold_on_close_bytes = 0;
    Maker m(options);
    for (int i = 0; i < 6; i++) m.Put(Key(i), "logged" + std::to_string(i));
    m.Del(Key(0));
    m.Reopen();
    m.Put(Key(7), "after the close fold");
    seeds["close-fold"] = m.Image();
  }
  {
    // Automatic compaction: a tiny slack, so the history compacts by itself in the middle.
    dbdb::Options options;
    options.fold_threshold_bytes = 300;
    options.auto_compact_slack_bytes = 256;
    Maker m(options);
    for (int i = 0; i < 30; i++) m.Put(Key(i % 5), std::string(60, static_cast<char>('a' + i % 26)));
    seeds["auto-compacted"] = m.Image();
  }
  {
    Maker m;
    m.Put("big", std::string(6000, 'B'));
    m.Txn({{"medium", std::string(3000, 'M')}, {"small", "s"}});
    seeds["large-values"] = m.Image();
  }
  {
    Maker m;
    m.Txn({{"", "empty key"},
           {std::string(1, '\0'), std::string("\0\xff\0", 3)},
           {std::string(2, '\0'), ""},
           {std::string("a\0b", 3), "nul inside"},
           {"\xff", std::string(5, '\xff')},
           {"\xff\xff", std::string(1, '\0')}});
    m.Put(std::string("\x7f\x80", 2), "");
    seeds["binary-keys"] = m.Image();
  }
  {
    // No-sync commits: synced_through stays behind, so recovery verifies the chain back to it.
    dbdb::Options options;
    options.durability = dbdb::Durability::kNoSync;
    Maker m(options);
    for (int i = 0; i < 4; i++) m.Put(Key(i), "nosync" + std::to_string(i));
    seeds["nosync"] = m.Image();
  }
  {
    Maker m;
    m.Txn({{"x", "1"}, {"y", "2"}});
    m.Txn({}, {"x", "y"});  // the empty tree: root 0, height 0
    seeds["all-deleted"] = m.Image();
  }
  return seeds;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--normalize") {
    std::ifstream in(argv[2], std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string normalized = dbdb_fuzz::RecomputeChecksums(bytes);
    std::ofstream out(argv[3], std::ios::binary | std::ios::trunc);
    out.write(normalized.data(), static_cast<std::streamsize>(normalized.size()));
    return in && out ? 0 : 1;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR...  (writes the seed corpus into every DIR)\n", argv[0]);
    return 2;
  }
  fiu_init(0);
  for (const auto& [name, bytes] : Seeds()) {
    if (bytes.size() > kSeedSizeMaxBytes) {
      std::fprintf(stderr, "dbdb_fuzz_seed: seed %s is %zu bytes, over %zu\n", name.c_str(), bytes.size(), kSeedSizeMaxBytes);
      return 1;
    }
    for (int i = 1; i < argc; i++) {
      std::string path = std::string(argv[i]) + "/seed-" + name;
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!out) {
        std::fprintf(stderr, "dbdb_fuzz_seed: cannot write %s\n", path.c_str());
        return 1;
      }
    }
    std::printf("seed-%s: %zu bytes\n", name.c_str(), bytes.size());
  }
  return 0;
}
