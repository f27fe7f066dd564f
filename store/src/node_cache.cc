// NodeCache: a sharded LRU bounded by the bytes of the nodes it holds.
#include "node_cache.h"

namespace dbdb {

NodeCache::NodeCache(uint64_t capacity_bytes) : shard_capacity_bytes_(capacity_bytes / kShardCount) {}

std::shared_ptr<const Node> NodeCache::Lookup(uint64_t offset) {
  Shard& shard = ShardFor(offset);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.entries.find(offset);
  if (it == shard.entries.end()) return nullptr;
  shard.lru.splice(shard.lru.begin(), shard.lru, it->second.position);
  return it->second.node;
}

void NodeCache::Insert(uint64_t offset, std::shared_ptr<const Node> node) {
  uint64_t charge = node->payload.size() + node->keys.size() * 48 + 128;
  if (charge > shard_capacity_bytes_) return;
  Shard& shard = ShardFor(offset);
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.entries.count(offset) != 0) return;
  shard.lru.push_front(offset);
  shard.entries.emplace(offset, Shard::Entry{std::move(node), shard.lru.begin(), charge});
  shard.used_bytes += charge;
  while (shard.used_bytes > shard_capacity_bytes_ && !shard.lru.empty()) {
    auto victim = shard.entries.find(shard.lru.back());
    shard.used_bytes -= victim->second.charge;
    shard.entries.erase(victim);
    shard.lru.pop_back();
  }
}

}  // namespace dbdb
