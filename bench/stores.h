// The stores dbdb-bench compares, behind one small interface. Each adapter configures its store
// durably and fairly (README, "Performance"): every batch is one durable commit, caches are 64 MiB.
// Any error aborts the benchmark with a message: a benchmark of a failing store measures nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace bench {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

class Store {
 public:
  virtual ~Store() = default;
  virtual std::string name() const = 0;
  virtual void Open(const std::string& dir) = 0;  // creates it if missing
  virtual void Close() = 0;
  // Writes `batch` as one commit, durable before it returns. Safe to call from several threads
  // at once (fillsync4): each store as it is meant to be shared (dbdb, LevelDB, RocksDB: one
  // handle; LMDB: one environment; SQLite: one connection, its commits taken one at a time).
  virtual void WriteBatch(const KeyValues& batch) = 0;
  virtual bool Get(const std::string& key, std::string* value) = 0;
  // Iterates every key in order; returns how many.
  virtual uint64_t Scan() = 0;
  // Reclaims space if the store has an explicit way to (dbdb: Compact); false if not.
  virtual bool Compact() { return false; }
  // The store's own counters, read once its fill and reads are done, before it is closed (not
  // between: reading dbdb's Stats looks up keys, which would warm the reads): dbdb's writer stalls
  // (Stats), so that the report says how much of the fill waited for compaction. Only the fill
  // writes before that point; a compaction may still install during the reads.
  virtual std::vector<std::pair<std::string, double>> Counters() { return {}; }
};

std::unique_ptr<Store> MakeStore(const std::string& name);  // dbdb, lmdb, leveldb, rocksdb, sqlite
const std::vector<std::string>& StoreNames();

[[noreturn]] void Die(const std::string& what);

}  // namespace bench
