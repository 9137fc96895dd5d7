// Reuse of compressed regions: a region's latents are keyed by a hash of the
// checkpoint's fingerprint and the region's text, and kept in memory (LRU,
// bounded in bytes) and optionally in a store behind it, an SQLite file or a
// Redis server that several processes share, so a document is compressed
// once and queried many times, across runs and replicas. Entries carry a
// checksum; a corrupt or mis-sized entry is deleted and reported as a miss,
// never returned. Stale entries cannot match: a changed checkpoint changes
// the fingerprint and so every key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lclm {

// The latents of one region: count() rows of dim floats.
struct Latents {
  std::size_t n_tokens = 0;  // encoder tokens of the region's text
  std::size_t dim = 0;
  std::vector<float> data;

  std::size_t count() const { return dim == 0 ? 0 : data.size() / dim; }
  std::size_t bytes() const { return data.size() * sizeof(float); }
};

struct LatentKey {
  std::uint64_t high = 0, low = 0;
  std::string hex() const;
  bool operator==(const LatentKey&) const = default;
};

LatentKey latent_key(std::string_view checkpoint_fingerprint, std::string_view text);
// The checksum stored with a row: seeded with its key, so a row's payload
// copied under another key does not pass as that key's.
std::uint64_t latent_checksum(const LatentKey& key, const std::vector<float>& data);

struct LatentCacheStats {
  std::size_t memory_hits = 0;
  std::size_t disk_hits = 0;    // from the SQLite file
  std::size_t remote_hits = 0;  // from the Redis server
  std::size_t misses = 0;
  std::size_t corrupt = 0;  // entries found damaged and dropped
};

// Where a found entry came from.
enum class LatentSource { kMemory, kDisk, kRemote };

// The store behind the memory LRU (--latent-cache, --latent-cache-ttl).
struct LatentStoreOptions {
  // Empty: memory only. "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]" (port
  // 6379, database 0 by default): a Redis server; without a password in the
  // URL, LCLM_REDIS_PASSWORD from the environment is sent if set.
  // "rediss://" (TLS) is refused. Anything else: an SQLite file, created when
  // missing.
  std::string location;
  // Redis only: an entry expires this long after it was last written or read
  // (0: never; Redis's own maxmemory policy still applies).
  std::int64_t ttl_seconds = 0;
  // Redis only: after the connection fails, the cache runs without it and
  // tries to connect again at most this often.
  double retry_seconds = 30;
};

// A Redis location split up; throws lclm::Error naming --latent-cache for a
// malformed one. user and password are percent-decoded; an empty user with a
// password is Redis's `default` user (AUTH with the password alone).
struct RedisUrl {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string user;
  std::string password;
};
// Whether `location` names a Redis server (redis:// or rediss://, which
// parse_redis_url refuses).
bool is_redis_url(std::string_view location);
RedisUrl parse_redis_url(std::string_view location);
// `location` with the password of a Redis URL replaced by "***", for
// messages and logs; anything else as it is.
std::string redacted_location(std::string_view location);
// Throws lclm::Error naming --latent-cache or --latent-cache-ttl for options
// no store can run with (a malformed URL, a TTL with a file or below 0).
void check_latent_store_options(const LatentStoreOptions& options);

class LatentStore;  // the SQLite file or the Redis server

class LatentCache {
 public:
  // memory_budget_bytes: the in-memory LRU's size (0 disables it). A store
  // that cannot be reached or used is a warning on stderr, not an error: the
  // cache runs without it (a Redis server is tried again later). Options
  // that are wrong in themselves (check_latent_store_options) throw.
  explicit LatentCache(std::size_t memory_budget_bytes, const LatentStoreOptions& store = {});
  ~LatentCache();
  LatentCache(const LatentCache&) = delete;
  LatentCache& operator=(const LatentCache&) = delete;

  // `source`, when given, says where a found entry came from.
  std::optional<Latents> find(const LatentKey& key, LatentSource* source = nullptr);
  void store(const LatentKey& key, const Latents& latents);
  // Texts named by an id (the server's /v1/compress ids), kept in the store
  // so that every process sharing it resolves them, and a restart keeps them.
  // Without a store (or while it is unreachable) nothing is kept here.
  void store_text(const std::string& id, std::string_view text);
  std::optional<std::string> find_text(const std::string& id);
  LatentCacheStats stats() const;
  // Why the store is not in use (it could not be opened, read or written:
  // the cache then runs in memory, after one warning on stderr); empty if
  // it is.
  std::string store_error() const;

 private:
  struct KeyHash {
    std::size_t operator()(const LatentKey& k) const { return k.low ^ (k.high * 31); }
  };
  using Lru = std::list<std::pair<LatentKey, Latents>>;
  void remember(const LatentKey& key, const Latents& latents);
  // An SQLite file that fails is given up for the run; a Redis store keeps
  // its own state and never throws once open.
  void give_up_store(const std::string& why);

  mutable std::mutex mutex_;
  std::size_t budget_, used_ = 0;
  Lru lru_;
  std::unordered_map<LatentKey, Lru::iterator, KeyHash> index_;
  std::unique_ptr<LatentStore> store_;
  bool remote_ = false;
  std::string store_error_;
  LatentCacheStats stats_;
};

}  // namespace lclm
