// The stores behind LatentCache's memory LRU (internal to src/compression):
// one interface, an SQLite file (latent_cache.cc) and a Redis server
// (redis_store.cc), and the one row check both apply before a row is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "compression/latent_cache.h"

namespace lclm {

// Bumped when the meaning of a stored entry changes; older rows are ignored.
// 2: the checksum is seeded with the row's key.
inline constexpr int kLatentFormatVersion = 2;

// A stored row's fields as read, before anything in them is trusted.
struct StoredRow {
  std::int64_t version = 0, n_tokens = 0, n_latents = 0, dim = 0;
  std::uint64_t checksum = 0;
  const void* data = nullptr;
  std::size_t bytes = 0;
};
// Fills `out` and returns true when the row is whole: this format version,
// a payload of exactly n_latents x dim floats, and the checksum of `key`.
bool unpack_row(const LatentKey& key, const StoredRow& row, Latents& out);

class LatentStore {
 public:
  enum class Lookup { kHit, kMiss, kCorrupt };
  virtual ~LatentStore() = default;
  // A row that fails unpack_row is deleted and reported kCorrupt. Throws
  // lclm::Error when the store cannot be used (the cache then gives it up).
  virtual Lookup find(const LatentKey& key, Latents& out) = 0;
  virtual void store(const LatentKey& key, const Latents& latents) = 0;
  virtual void store_text(const std::string& id, std::string_view text) = 0;
  virtual std::optional<std::string> find_text(const std::string& id) = 0;
  // Why the store is out of use for now (a Redis server between tries);
  // empty while it works.
  virtual std::string error() const { return ""; }
};

std::unique_ptr<LatentStore> open_sqlite_store(const std::filesystem::path& path);
// Never throws for an unreachable server: it warns and tries again later.
std::unique_ptr<LatentStore> open_redis_store(const LatentStoreOptions& options);

}  // namespace lclm
