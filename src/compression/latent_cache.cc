#include "compression/latent_cache.h"

#include <sqlite3.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <iostream>

#include "util/error.h"

namespace lclm {
namespace {

// Bumped when the meaning of a stored entry changes; older rows are ignored.
// 2: the checksum is seeded with the row's key.
constexpr int kFormatVersion = 2;

}  // namespace

std::uint64_t latent_checksum(const LatentKey& key, const std::vector<float>& data) {
  return XXH3_64bits_withSeed(data.data(), data.size() * sizeof(float), key.high ^ key.low);
}

std::string LatentKey::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(high),
                static_cast<unsigned long long>(low));
  return buf;
}

LatentKey latent_key(std::string_view checkpoint_fingerprint, std::string_view text) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  // Length-prefix the fingerprint so (fingerprint, text) pairs cannot collide
  // by shifting bytes between the two.
  const std::uint64_t fp_len = checkpoint_fingerprint.size();
  XXH3_128bits_update(state, &fp_len, sizeof fp_len);
  XXH3_128bits_update(state, checkpoint_fingerprint.data(), checkpoint_fingerprint.size());
  XXH3_128bits_update(state, text.data(), text.size());
  const XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  return {h.high64, h.low64};
}

// One table in an SQLite file; statements prepared once.
class LatentStore {
 public:
  explicit LatentStore(const std::filesystem::path& path) : path_(path) {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) fail("cannot open");
    // Another process (a second server on the same file) may hold the lock
    // for a moment: wait for it instead of failing with "database is locked".
    sqlite3_busy_timeout(db_, 10000);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec(
        "CREATE TABLE IF NOT EXISTS latents ("
        " key TEXT PRIMARY KEY, version INTEGER NOT NULL, n_tokens INTEGER NOT NULL,"
        " n_latents INTEGER NOT NULL, dim INTEGER NOT NULL, checksum INTEGER NOT NULL,"
        " data BLOB NOT NULL, last_used REAL NOT NULL)");
    select_ = prepare(
        "SELECT version, n_tokens, n_latents, dim, checksum, data FROM latents WHERE key = ?");
    insert_ =
        prepare("INSERT OR REPLACE INTO latents VALUES (?, ?, ?, ?, ?, ?, ?, julianday('now'))");
    erase_ = prepare("DELETE FROM latents WHERE key = ?");
  }
  ~LatentStore() {
    for (sqlite3_stmt* s : {select_, insert_, erase_}) sqlite3_finalize(s);
    sqlite3_close(db_);
  }

  enum class Lookup { kHit, kMiss, kCorrupt };

  Lookup find(const LatentKey& key, Latents& out) {
    const std::string k = key.hex();
    Reset reset(select_);
    sqlite3_bind_text(select_, 1, k.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(select_);
    if (rc == SQLITE_DONE) return Lookup::kMiss;
    if (rc != SQLITE_ROW) fail("cannot read");
    const auto version = sqlite3_column_int64(select_, 0);
    const auto n_tokens = sqlite3_column_int64(select_, 1);
    const auto n_latents = sqlite3_column_int64(select_, 2);
    const auto dim = sqlite3_column_int64(select_, 3);
    const auto sum = static_cast<std::uint64_t>(sqlite3_column_int64(select_, 4));
    const void* blob = sqlite3_column_blob(select_, 5);
    const auto blob_bytes = static_cast<std::size_t>(sqlite3_column_bytes(select_, 5));
    const bool sane = version == kFormatVersion && n_tokens >= 0 && n_latents >= 0 && dim > 0 &&
                      blob_bytes == static_cast<std::size_t>(n_latents * dim) * sizeof(float);
    if (sane) {
      out.n_tokens = static_cast<std::size_t>(n_tokens);
      out.dim = static_cast<std::size_t>(dim);
      out.data.resize(blob_bytes / sizeof(float));
      if (blob_bytes > 0) std::memcpy(out.data.data(), blob, blob_bytes);
      if (latent_checksum(key, out.data) == sum) return Lookup::kHit;
    }
    reset.now();
    erase(k);
    return Lookup::kCorrupt;
  }

  void store(const LatentKey& key, const Latents& latents) {
    const std::string k = key.hex();
    Reset reset(insert_);
    sqlite3_bind_text(insert_, 1, k.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(insert_, 2, kFormatVersion);
    sqlite3_bind_int64(insert_, 3, static_cast<sqlite3_int64>(latents.n_tokens));
    sqlite3_bind_int64(insert_, 4, static_cast<sqlite3_int64>(latents.count()));
    sqlite3_bind_int64(insert_, 5, static_cast<sqlite3_int64>(latents.dim));
    sqlite3_bind_int64(insert_, 6, static_cast<sqlite3_int64>(latent_checksum(key, latents.data)));
    sqlite3_bind_blob64(insert_, 7, latents.data.data(), latents.bytes(), SQLITE_TRANSIENT);
    if (sqlite3_step(insert_) != SQLITE_DONE) fail("cannot write");
  }

 private:
  // Resets a statement when the scope ends, whichever way it ends.
  class Reset {
   public:
    explicit Reset(sqlite3_stmt* s) : s_(s) {}
    ~Reset() { now(); }
    void now() {
      if (s_ == nullptr) return;
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
      s_ = nullptr;
    }

   private:
    sqlite3_stmt* s_;
  };

  void erase(const std::string& k) {
    Reset reset(erase_);
    sqlite3_bind_text(erase_, 1, k.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(erase_) != SQLITE_DONE) fail("cannot delete from");
  }
  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail("cannot set up");
  }
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK) fail("cannot prepare");
    return s;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("latent cache " + path_.string() + ": " + what + " the database (" +
                (db_ ? sqlite3_errmsg(db_) : "no handle") + ")");
  }

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt *select_ = nullptr, *insert_ = nullptr, *erase_ = nullptr;
};

LatentCache::LatentCache(std::size_t memory_budget_bytes,
                         const std::optional<std::filesystem::path>& db_path)
    : budget_(memory_budget_bytes) {
  if (!db_path) return;
  try {
    disk_ = std::make_unique<LatentStore>(*db_path);
  } catch (const Error& e) {
    give_up_disk(e.what());  // names the file already
  } catch (const std::exception& e) {
    give_up_disk("latent cache " + db_path->string() + ": " + e.what());
  }
}

void LatentCache::give_up_disk(const std::string& why) {
  disk_.reset();
  disk_error_ = why;
  std::cerr << "lclm: warning: " << why << "; running without the latent cache file\n";
}

LatentCache::~LatentCache() = default;

std::optional<Latents> LatentCache::find(const LatentKey& key) {
  std::lock_guard lock(mutex_);
  if (auto it = index_.find(key); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    ++stats_.memory_hits;
    return it->second->second;
  }
  if (disk_) {
    Latents latents;
    try {
      switch (disk_->find(key, latents)) {
        case LatentStore::Lookup::kHit:
          ++stats_.disk_hits;
          remember(key, latents);
          return latents;
        case LatentStore::Lookup::kCorrupt:
          ++stats_.corrupt;
          break;
        case LatentStore::Lookup::kMiss:
          break;
      }
    } catch (const std::exception& e) {
      give_up_disk(e.what());
    }
  }
  ++stats_.misses;
  return std::nullopt;
}

void LatentCache::store(const LatentKey& key, const Latents& latents) {
  std::lock_guard lock(mutex_);
  remember(key, latents);
  if (!disk_) return;
  try {
    disk_->store(key, latents);
  } catch (const std::exception& e) {
    give_up_disk(e.what());
  }
}

std::string LatentCache::disk_error() const {
  std::lock_guard lock(mutex_);
  return disk_error_;
}

LatentCacheStats LatentCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void LatentCache::remember(const LatentKey& key, const Latents& latents) {
  if (latents.bytes() > budget_) return;
  if (auto it = index_.find(key); it != index_.end()) {
    used_ -= it->second->second.bytes();
    lru_.erase(it->second);
    index_.erase(it);
  }
  while (used_ + latents.bytes() > budget_ && !lru_.empty()) {
    used_ -= lru_.back().second.bytes();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  lru_.emplace_front(key, latents);
  index_[key] = lru_.begin();
  used_ += latents.bytes();
}

}  // namespace lclm
