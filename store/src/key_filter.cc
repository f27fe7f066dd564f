// KeyFilter's hash (key_filter.h), with XXH3's code inlined into it.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "key_filter.h"

namespace dbdb {

uint64_t KeyFilter::Hash(std::string_view key) { return XXH3_64bits(key.data(), key.size()); }

}  // namespace dbdb
