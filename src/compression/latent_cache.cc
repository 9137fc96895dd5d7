#include "compression/latent_cache.h"

#include <sqlite3.h>
#include <xxhash.h>

#include <cstdio>
#include <cstring>
#include <iostream>

#include "compression/latent_store.h"
#include "util/error.h"

namespace lclm {

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

bool unpack_row(const LatentKey& key, const StoredRow& row, Latents& out) {
  if (row.version != kLatentFormatVersion || row.n_tokens < 0 || row.n_latents < 0 ||
      row.dim <= 0 || row.bytes % sizeof(float) != 0) {
    return false;
  }
  // Divided, not multiplied: the counts of a damaged row may be anything.
  const std::size_t floats = row.bytes / sizeof(float);
  const auto dim = static_cast<std::uint64_t>(row.dim);
  if (floats % dim != 0 || floats / dim != static_cast<std::uint64_t>(row.n_latents)) return false;
  out.n_tokens = static_cast<std::size_t>(row.n_tokens);
  out.dim = static_cast<std::size_t>(dim);
  out.data.resize(floats);
  if (row.bytes > 0) std::memcpy(out.data.data(), row.data, row.bytes);
  return latent_checksum(key, out.data) == row.checksum;
}

namespace {

// Two tables in an SQLite file, latents and the texts behind ids; statements
// prepared once.
class SqliteStore final : public LatentStore {
 public:
  explicit SqliteStore(const std::filesystem::path& path) : path_(path) {
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
    exec("CREATE TABLE IF NOT EXISTS texts (id TEXT PRIMARY KEY, text BLOB NOT NULL)");
    select_ = prepare(
        "SELECT version, n_tokens, n_latents, dim, checksum, data FROM latents WHERE key = ?");
    insert_ =
        prepare("INSERT OR REPLACE INTO latents VALUES (?, ?, ?, ?, ?, ?, ?, julianday('now'))");
    erase_ = prepare("DELETE FROM latents WHERE key = ?");
    select_text_ = prepare("SELECT text FROM texts WHERE id = ?");
    insert_text_ = prepare("INSERT OR REPLACE INTO texts VALUES (?, ?)");
  }
  ~SqliteStore() override {
    for (sqlite3_stmt* s : {select_, insert_, erase_, select_text_, insert_text_}) {
      sqlite3_finalize(s);
    }
    sqlite3_close(db_);
  }

  Lookup find(const LatentKey& key, Latents& out) override {
    const std::string k = key.hex();
    Reset reset(select_);
    sqlite3_bind_text(select_, 1, k.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(select_);
    if (rc == SQLITE_DONE) return Lookup::kMiss;
    if (rc != SQLITE_ROW) fail("cannot read");
    StoredRow row;
    row.version = sqlite3_column_int64(select_, 0);
    row.n_tokens = sqlite3_column_int64(select_, 1);
    row.n_latents = sqlite3_column_int64(select_, 2);
    row.dim = sqlite3_column_int64(select_, 3);
    row.checksum = static_cast<std::uint64_t>(sqlite3_column_int64(select_, 4));
    row.data = sqlite3_column_blob(select_, 5);
    row.bytes = static_cast<std::size_t>(sqlite3_column_bytes(select_, 5));
    if (unpack_row(key, row, out)) return Lookup::kHit;
    reset.now();
    erase(k);
    return Lookup::kCorrupt;
  }

  void store(const LatentKey& key, const Latents& latents) override {
    const std::string k = key.hex();
    Reset reset(insert_);
    sqlite3_bind_text(insert_, 1, k.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(insert_, 2, kLatentFormatVersion);
    sqlite3_bind_int64(insert_, 3, static_cast<sqlite3_int64>(latents.n_tokens));
    sqlite3_bind_int64(insert_, 4, static_cast<sqlite3_int64>(latents.count()));
    sqlite3_bind_int64(insert_, 5, static_cast<sqlite3_int64>(latents.dim));
    sqlite3_bind_int64(insert_, 6, static_cast<sqlite3_int64>(latent_checksum(key, latents.data)));
    sqlite3_bind_blob64(insert_, 7, latents.data.data(), latents.bytes(), SQLITE_TRANSIENT);
    if (sqlite3_step(insert_) != SQLITE_DONE) fail("cannot write");
  }

  void store_text(const std::string& id, std::string_view text) override {
    Reset reset(insert_text_);
    sqlite3_bind_text(insert_text_, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob64(insert_text_, 2, text.data(), text.size(), SQLITE_TRANSIENT);
    if (sqlite3_step(insert_text_) != SQLITE_DONE) fail("cannot write");
  }

  std::optional<std::string> find_text(const std::string& id) override {
    Reset reset(select_text_);
    sqlite3_bind_text(select_text_, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    const int rc = sqlite3_step(select_text_);
    if (rc == SQLITE_DONE) return std::nullopt;
    if (rc != SQLITE_ROW) fail("cannot read");
    const auto* text = static_cast<const char*>(sqlite3_column_blob(select_text_, 0));
    return std::string(text ? text : "",
                       static_cast<std::size_t>(sqlite3_column_bytes(select_text_, 0)));
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
  sqlite3_stmt *select_text_ = nullptr, *insert_text_ = nullptr;
};

}  // namespace

std::unique_ptr<LatentStore> open_sqlite_store(const std::filesystem::path& path) {
  return std::make_unique<SqliteStore>(path);
}

void check_latent_store_options(const LatentStoreOptions& options) {
  if (options.ttl_seconds < 0) {
    throw Error("--latent-cache-ttl must be 0 (never expire) or a number of seconds, not " +
                std::to_string(options.ttl_seconds));
  }
  if (is_redis_url(options.location)) {
    parse_redis_url(options.location);
  } else if (options.ttl_seconds > 0) {
    throw Error(
        "--latent-cache-ttl needs a Redis store (--latent-cache redis://HOST:PORT)" +
        (options.location.empty() ? std::string() : ", not the SQLite file " + options.location));
  }
}

LatentCache::LatentCache(std::size_t memory_budget_bytes, const LatentStoreOptions& options)
    : budget_(memory_budget_bytes) {
  check_latent_store_options(options);
  if (options.location.empty()) return;
  if (is_redis_url(options.location)) {
    remote_ = true;
    store_ = open_redis_store(options);
    return;
  }
  try {
    store_ = open_sqlite_store(options.location);
  } catch (const Error& e) {
    give_up_store(e.what());  // names the file already
  } catch (const std::exception& e) {
    give_up_store("latent cache " + options.location + ": " + e.what());
  }
}

void LatentCache::give_up_store(const std::string& why) {
  store_.reset();
  store_error_ = why;
  std::cerr << "lclm: warning: " << why << "; running without the latent cache file\n";
}

LatentCache::~LatentCache() = default;

std::optional<Latents> LatentCache::find(const LatentKey& key, LatentSource* source) {
  std::lock_guard lock(mutex_);
  if (auto it = index_.find(key); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    ++stats_.memory_hits;
    if (source) *source = LatentSource::kMemory;
    return it->second->second;
  }
  if (store_) {
    Latents latents;
    try {
      switch (store_->find(key, latents)) {
        case LatentStore::Lookup::kHit:
          ++(remote_ ? stats_.remote_hits : stats_.disk_hits);
          if (source) *source = remote_ ? LatentSource::kRemote : LatentSource::kDisk;
          remember(key, latents);
          return latents;
        case LatentStore::Lookup::kCorrupt:
          ++stats_.corrupt;
          break;
        case LatentStore::Lookup::kMiss:
          break;
      }
    } catch (const std::exception& e) {
      give_up_store(e.what());
    }
  }
  ++stats_.misses;
  return std::nullopt;
}

void LatentCache::store(const LatentKey& key, const Latents& latents) {
  std::lock_guard lock(mutex_);
  remember(key, latents);
  if (!store_) return;
  try {
    store_->store(key, latents);
  } catch (const std::exception& e) {
    give_up_store(e.what());
  }
}

void LatentCache::store_text(const std::string& id, std::string_view text) {
  std::lock_guard lock(mutex_);
  if (!store_) return;
  try {
    store_->store_text(id, text);
  } catch (const std::exception& e) {
    give_up_store(e.what());
  }
}

std::optional<std::string> LatentCache::find_text(const std::string& id) {
  std::lock_guard lock(mutex_);
  if (!store_) return std::nullopt;
  try {
    return store_->find_text(id);
  } catch (const std::exception& e) {
    give_up_store(e.what());
  }
  return std::nullopt;
}

std::string LatentCache::store_error() const {
  std::lock_guard lock(mutex_);
  if (!store_error_.empty() || !store_) return store_error_;
  return store_->error();
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
