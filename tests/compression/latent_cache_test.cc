#include "compression/latent_cache.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <thread>

#include "core/test_models.h"

namespace lclm {
namespace {

Latents make_latents(std::size_t count, std::size_t dim, float base) {
  Latents l;
  l.n_tokens = count * 4;
  l.dim = dim;
  for (std::size_t i = 0; i < count * dim; ++i) l.data.push_back(base + static_cast<float>(i));
  return l;
}

LatentStoreOptions file(const std::filesystem::path& path) {
  return {.location = path.string()};
}

void run_sql(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(h);
}

TEST(LatentKey, DependsOnFingerprintAndTextWithoutAmbiguity) {
  EXPECT_EQ(latent_key("ckpt", "text"), latent_key("ckpt", "text"));
  EXPECT_FALSE(latent_key("ckpt", "text") == latent_key("ckpt2", "text"));
  EXPECT_FALSE(latent_key("ckpt", "text") == latent_key("ckpt", "text "));
  EXPECT_FALSE(latent_key("ab", "c") == latent_key("a", "bc"));
  EXPECT_EQ(latent_key("x", "y").hex().size(), 32u);
}

TEST(LatentCache, MemoryLruEvictsTheLeastRecentlyUsed) {
  const auto l = make_latents(4, 8, 0.0f);  // 128 bytes
  LatentCache cache(3 * l.bytes());
  for (int i = 0; i < 3; ++i) cache.store(latent_key("c", std::to_string(i)), l);
  ASSERT_TRUE(cache.find(latent_key("c", "0")));  // 0 becomes the most recent
  cache.store(latent_key("c", "3"), l);           // evicts 1
  EXPECT_TRUE(cache.find(latent_key("c", "0")));
  EXPECT_FALSE(cache.find(latent_key("c", "1")));
  EXPECT_TRUE(cache.find(latent_key("c", "2")));
  EXPECT_TRUE(cache.find(latent_key("c", "3")));
  const auto s = cache.stats();
  EXPECT_EQ(s.memory_hits, 4u);
  EXPECT_EQ(s.misses, 1u);
}

TEST(LatentCache, DiskStoreSurvivesAcrossInstancesBitExact) {
  const auto db = testing::scratch_dir("latent_disk") / "cache.sqlite";
  const auto l = make_latents(5, 16, 0.25f);
  { LatentCache(0, file(db)).store(latent_key("c", "doc"), l); }
  LatentCache reopened(1 << 20, file(db));
  const auto got = reopened.find(latent_key("c", "doc"));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->data, l.data);
  EXPECT_EQ(got->n_tokens, l.n_tokens);
  EXPECT_EQ(got->count(), 5u);
  EXPECT_EQ(reopened.stats().disk_hits, 1u);
  EXPECT_TRUE(reopened.find(latent_key("c", "doc")));  // now from memory
  EXPECT_EQ(reopened.stats().memory_hits, 1u);
}

TEST(LatentCache, CorruptEntriesAreDroppedNeverReturned) {
  const auto db = testing::scratch_dir("latent_corrupt") / "cache.sqlite";
  const auto key = latent_key("c", "doc");
  const auto other = latent_key("c", "other");
  {
    LatentCache writer(0, file(db));
    writer.store(key, make_latents(2, 4, 1.0f));
    writer.store(other, make_latents(2, 4, 1.0f));
  }
  // A flipped payload byte (checksum mismatch) and a truncated payload.
  run_sql(db,
          "UPDATE latents SET data = CAST(zeroblob(32) AS BLOB) WHERE key = '" + key.hex() + "'");
  run_sql(db, "UPDATE latents SET data = substr(data, 1, 8) WHERE key = '" + other.hex() + "'");
  LatentCache reader(0, file(db));
  EXPECT_FALSE(reader.find(key));
  EXPECT_FALSE(reader.find(other));
  EXPECT_EQ(reader.stats().corrupt, 2u);
  EXPECT_EQ(reader.stats().misses, 2u);
  EXPECT_FALSE(reader.find(key));  // deleted: now a plain miss
  EXPECT_EQ(reader.stats().corrupt, 2u);
}

// A cache file that cannot be used once refused the whole run; now the cache
// says why (and warns once on stderr) and runs in memory.
TEST(LatentCache, AnUnusableFileLeavesTheCacheInMemory) {
  const auto dir = testing::scratch_dir("latent_unusable");
  const auto garbage = dir / "not-a-database.sqlite";
  testing::write_text(garbage, std::string(4096, 'x'));
  for (const std::filesystem::path& path :
       {std::filesystem::path("/proc/no/such/dir/cache.sqlite"), garbage, dir}) {
    SCOPED_TRACE(path);
    LatentCache cache(1 << 20, file(path));
    EXPECT_NE(cache.store_error().find(path.string()), std::string::npos) << cache.store_error();
    const auto l = make_latents(2, 4, 1.0f);
    cache.store(latent_key("c", "doc"), l);
    const auto got = cache.find(latent_key("c", "doc"));
    ASSERT_TRUE(got);
    EXPECT_EQ(got->data, l.data);
  }
  LatentCache fine(0, file(dir / "fine.sqlite"));
  EXPECT_EQ(fine.store_error(), "");
}

// A row's payload moved under another key fails that key's checksum.
TEST(LatentCache, ARowMovedUnderAnotherKeyIsRejected) {
  const auto db = testing::scratch_dir("latent_moved") / "cache.sqlite";
  const auto a = latent_key("c", "a"), b = latent_key("c", "b");
  {
    LatentCache writer(0, file(db));
    writer.store(a, make_latents(2, 4, 1.0f));
    writer.store(b, make_latents(2, 4, 9.0f));
  }
  run_sql(db, "UPDATE latents SET data = (SELECT data FROM latents WHERE key = '" + a.hex() +
                  "'), checksum = (SELECT checksum FROM latents WHERE key = '" + a.hex() +
                  "') WHERE key = '" + b.hex() + "'");
  LatentCache reader(0, file(db));
  EXPECT_TRUE(reader.find(a));
  EXPECT_FALSE(reader.find(b));
  EXPECT_EQ(reader.stats().corrupt, 1u);
}

// Two processes (here two connections on two threads) writing one file: the
// second waits for the first's lock instead of failing "database is locked".
TEST(LatentCache, TwoWritersShareOneFile) {
  const auto db = testing::scratch_dir("latent_shared") / "cache.sqlite";
  { LatentCache create(0, file(db)); }
  const auto write = [&](int who) {
    LatentCache cache(0, file(db));
    for (int i = 0; i < 150; ++i) {
      cache.store(latent_key(std::to_string(who), std::to_string(i)), make_latents(8, 64, 1.0f));
    }
    EXPECT_EQ(cache.store_error(), "");
  };
  std::thread first(write, 1), second(write, 2);
  first.join();
  second.join();
  LatentCache reader(0, file(db));
  for (int who : {1, 2}) {
    for (int i = 0; i < 150; i += 37) {
      EXPECT_TRUE(reader.find(latent_key(std::to_string(who), std::to_string(i))))
          << who << " " << i;
    }
  }
}

}  // namespace
}  // namespace lclm
