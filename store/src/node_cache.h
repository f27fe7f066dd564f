// A bounded cache of decoded, verified nodes keyed by file offset. Nodes never change once
// written, so the cache needs no invalidation while its file is open; one cache per open file.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "node.h"

namespace dbdb {

class NodeCache {
 public:
  explicit NodeCache(uint64_t capacity_bytes);
  std::shared_ptr<const Node> Lookup(uint64_t offset);
  void Insert(uint64_t offset, std::shared_ptr<const Node> node);

 private:
  static constexpr int kShardCount = 16;
  struct Shard {
    std::mutex mutex;
    std::list<uint64_t> lru;  // most recent first
    struct Entry {
      std::shared_ptr<const Node> node;
      std::list<uint64_t>::iterator position;
      uint64_t charge;
    };
    std::unordered_map<uint64_t, Entry> entries;
    uint64_t used_bytes = 0;
  };
  Shard& ShardFor(uint64_t offset) { return shards_[(offset >> 4) % kShardCount]; }

  uint64_t shard_capacity_bytes_;
  Shard shards_[kShardCount];
};

}  // namespace dbdb
