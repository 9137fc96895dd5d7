// Reuse of compressed regions: a region's latents are keyed by a hash of the
// checkpoint's fingerprint and the region's text, and kept in memory (LRU,
// bounded in bytes) and optionally in an SQLite file, so a document is
// compressed once and queried many times, across runs. Entries carry a
// checksum; a corrupt or mis-sized entry is deleted and reported as a miss,
// never returned. Stale entries cannot match: a changed checkpoint changes
// the fingerprint and so every key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
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
  std::size_t disk_hits = 0;
  std::size_t misses = 0;
  std::size_t corrupt = 0;  // entries found damaged and dropped
};

class LatentStore;  // the SQLite file

class LatentCache {
 public:
  // memory_budget_bytes: the in-memory LRU's size (0 disables it).
  // db_path: the SQLite file (created when missing); none keeps it in memory only.
  explicit LatentCache(std::size_t memory_budget_bytes,
                       const std::optional<std::filesystem::path>& db_path = std::nullopt);
  ~LatentCache();
  LatentCache(const LatentCache&) = delete;
  LatentCache& operator=(const LatentCache&) = delete;

  std::optional<Latents> find(const LatentKey& key);
  void store(const LatentKey& key, const Latents& latents);
  LatentCacheStats stats() const;
  // Why the file was given up (it could not be opened, read or written: the
  // cache then runs in memory, after one warning on stderr); empty if not.
  std::string disk_error() const;

 private:
  struct KeyHash {
    std::size_t operator()(const LatentKey& k) const { return k.low ^ (k.high * 31); }
  };
  using Lru = std::list<std::pair<LatentKey, Latents>>;
  void remember(const LatentKey& key, const Latents& latents);
  void give_up_disk(const std::string& why);

  mutable std::mutex mutex_;
  std::size_t budget_, used_ = 0;
  Lru lru_;
  std::unordered_map<LatentKey, Lru::iterator, KeyHash> index_;
  std::unique_ptr<LatentStore> disk_;
  std::string disk_error_;
  LatentCacheStats stats_;
};

}  // namespace lclm
