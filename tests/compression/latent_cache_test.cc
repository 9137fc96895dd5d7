#include "compression/latent_cache.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstring>
#include <thread>

#include "core/redis_server.h"
#include "core/test_models.h"

namespace lclm {
namespace {

using testing::RedisServer;

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

// ---- Redis store -----------------------------------------------------------
// --latent-cache redis://..., against a redis-server the tests start on a
// free loopback port.

LatentStoreOptions redis(const RedisServer& server, std::int64_t ttl = 0) {
  return {.location = server.url(), .ttl_seconds = ttl, .retry_seconds = 0.2};
}

std::string row_key(const LatentKey& key) {
  return "lclm:latents:" + key.hex();
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST(RedisUrl, ParsesHostPortAndDatabase) {
  const RedisUrl a = parse_redis_url("redis://10.0.0.7:6380/3");
  EXPECT_EQ(a.host, "10.0.0.7");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 3);
  const RedisUrl b = parse_redis_url("redis://cache.internal");
  EXPECT_EQ(b.host, "cache.internal");
  EXPECT_EQ(b.port, 6379);
  EXPECT_EQ(b.db, 0);
  const RedisUrl c = parse_redis_url("redis://[::1]:7000/");
  EXPECT_EQ(c.host, "::1");
  EXPECT_EQ(c.port, 7000);
  EXPECT_EQ(c.db, 0);
  EXPECT_TRUE(is_redis_url("redis://x"));
  EXPECT_TRUE(is_redis_url("rediss://x"));  // refused by the parser, not taken for a file
  EXPECT_FALSE(is_redis_url("cache/redis.sqlite"));
}

// USER:PASSWORD@ (an ACL user) and :PASSWORD@ (the default user), escapes
// decoded, an unescaped '@' in the password kept (the last one ends it).
TEST(RedisUrl, ParsesCredentials) {
  const RedisUrl a = parse_redis_url("redis://alice:s3cr%40t%3A%2f@10.0.0.7:6380/3");
  EXPECT_EQ(a.user, "alice");
  EXPECT_EQ(a.password, "s3cr@t:/");
  EXPECT_EQ(a.host, "10.0.0.7");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 3);
  const RedisUrl b = parse_redis_url("redis://:p@ss@cache.internal");
  EXPECT_EQ(b.user, "");
  EXPECT_EQ(b.password, "p@ss");
  EXPECT_EQ(b.host, "cache.internal");
  const RedisUrl c = parse_redis_url("redis://[::1]:7000");
  EXPECT_EQ(c.user, "");
  EXPECT_EQ(c.password, "");
}

// A password never reaches a message: errors and warnings show *** instead.
TEST(RedisUrl, PasswordsAreRedactedInMessages) {
  EXPECT_EQ(redacted_location("redis://alice:secret@h:1/2"), "redis://alice:***@h:1/2");
  EXPECT_EQ(redacted_location("redis://:se@cret@h"), "redis://:***@h");
  EXPECT_EQ(redacted_location("redis://h:1/2"), "redis://h:1/2");
  EXPECT_EQ(redacted_location("cache/a:b@c.sqlite"), "cache/a:b@c.sqlite");
  for (const char* url : {"redis://:secret@h:port", "redis://u:secret@h:1/x",
                          "redis://u:secret%zz@h", "rediss://:secret@h"}) {
    SCOPED_TRACE(url);
    const std::string e = testing::error_of([&] { parse_redis_url(url); });
    EXPECT_NE(e.find("--latent-cache 'redis"), std::string::npos) << e;
    EXPECT_NE(e.find(":***@h"), std::string::npos) << e;
    EXPECT_EQ(e.find("secret"), std::string::npos) << e;
  }
}

TEST(RedisUrl, AMalformedOneIsAnErrorNamingTheFlag) {
  for (const char* url :
       {"redis://", "redis://:6379", "redis://host:", "redis://host:0", "redis://host:65536",
        "redis://host:port", "redis://host/db", "redis://host:1/-1", "redis://user@host:1",
        "redis://host:1?ttl=5", "redis://[::1", "redis://[::1]x", "rediss://host:1"}) {
    SCOPED_TRACE(url);
    const std::string e = testing::error_of([&] { parse_redis_url(url); });
    EXPECT_NE(e.find("--latent-cache '" + std::string(url) + "'"), std::string::npos) << e;
    EXPECT_NE(e.find("redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"), std::string::npos) << e;
    // The cache refuses it too, rather than running without a store.
    EXPECT_NE(testing::error_of([&] { LatentCache(0, {.location = url}); }).find("--latent-cache"),
              std::string::npos);
  }
}

TEST(RedisUrl, ATtlNeedsARedisStore) {
  EXPECT_NE(testing::error_of([] {
              check_latent_store_options({.location = "x.sqlite", .ttl_seconds = 5});
            }).find("--latent-cache-ttl needs a Redis store"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] {
              check_latent_store_options({.location = "redis://h:1", .ttl_seconds = -1});
            }).find("--latent-cache-ttl must be 0"),
            std::string::npos);
  check_latent_store_options({.location = "redis://h:1", .ttl_seconds = 60});
}

TEST(RedisStore, RoundTripIsBitExactAndCountsRemoteHits) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_round_trip");
  const auto key = latent_key("c", "doc");
  const Latents l = make_latents(5, 16, 0.25f);
  { LatentCache(0, redis(server)).store(key, l); }
  LatentCache cache(1 << 20, redis(server));
  LatentSource source = LatentSource::kMemory;
  const auto got = cache.find(key, &source);
  ASSERT_TRUE(got);
  EXPECT_EQ(source, LatentSource::kRemote);
  EXPECT_EQ(got->data, l.data);
  EXPECT_EQ(got->n_tokens, l.n_tokens);
  EXPECT_EQ(got->dim, l.dim);
  EXPECT_EQ(cache.stats().remote_hits, 1u);
  EXPECT_TRUE(cache.find(key, &source));  // now from memory
  EXPECT_EQ(source, LatentSource::kMemory);
  EXPECT_FALSE(cache.find(latent_key("c", "other")));
  EXPECT_EQ(cache.stats().misses, 1u);
  EXPECT_EQ(cache.store_error(), "");
  // An empty region's latents (no rows) round-trip too.
  const Latents none = make_latents(0, 16, 0.0f);
  cache.store(latent_key("c", "empty"), none);
  const auto empty = LatentCache(0, redis(server)).find(latent_key("c", "empty"));
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->count(), 0u);
}

// Two caches with their own connections, as two processes would have: each
// finds what the other wrote, latents and the texts behind ids.
TEST(RedisStore, TwoCachesShareLatentsAndTexts) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_shared");
  LatentCache a(1 << 20, redis(server)), b(1 << 20, redis(server));
  a.store(latent_key("c", "from a"), make_latents(3, 8, 1.0f));
  b.store(latent_key("c", "from b"), make_latents(2, 8, 5.0f));
  EXPECT_EQ(b.find(latent_key("c", "from a"))->data, make_latents(3, 8, 1.0f).data);
  EXPECT_EQ(a.find(latent_key("c", "from b"))->data, make_latents(2, 8, 5.0f).data);
  EXPECT_EQ(a.stats().remote_hits, 1u);
  EXPECT_EQ(b.stats().remote_hits, 1u);
  const std::string text("binary \0 text\xff", 15);
  a.store_text("lat_0123", text);
  EXPECT_EQ(b.find_text("lat_0123"), text);
  EXPECT_EQ(b.find_text("lat_none"), std::nullopt);
}

// A damaged row (another width in its header, a flipped byte, cut short, a
// foreign value or type under the key) is a miss, counted, and deleted.
TEST(RedisStore, CorruptRowsAreMissesAndDeleted) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_corrupt");
  const auto key = latent_key("c", "doc");
  LatentCache(0, redis(server)).store(key, make_latents(4, 8, 1.0f));
  const std::string good = *server.command({"GET", row_key(key)});
  ASSERT_EQ(good.size(), 40u + 4 * 8 * sizeof(float));

  std::string wider = good;  // dim 16: the payload is two rows, not four
  const std::uint64_t dim = 16;
  std::memcpy(wider.data() + 24, &dim, sizeof dim);
  std::string flipped = good;
  flipped[60] ^= 1;
  std::string bad_version = good;
  bad_version[4] = 1;
  const std::vector<std::pair<const char*, std::string>> damaged = {
      {"another width", wider},          {"a flipped payload byte", flipped},
      {"cut short", good.substr(0, 70)}, {"only half a header", good.substr(0, 20)},
      {"an old version", bad_version},   {"not a row", "hello"}};
  LatentCache reader(0, redis(server));
  std::size_t corrupt = 0;
  for (const auto& [what, value] : damaged) {
    SCOPED_TRACE(what);
    server.command({"SET", row_key(key), value});
    EXPECT_FALSE(reader.find(key));
    EXPECT_EQ(reader.stats().corrupt, ++corrupt);
    EXPECT_EQ(server.command({"EXISTS", row_key(key)}), "0");
  }
  server.command({"HSET", row_key(key), "field", "value"});  // WRONGTYPE to GET
  EXPECT_FALSE(reader.find(key));
  EXPECT_EQ(reader.stats().corrupt, ++corrupt);
  EXPECT_EQ(server.command({"EXISTS", row_key(key)}), "0");
  EXPECT_FALSE(reader.find(key));  // deleted: now a plain miss
  EXPECT_EQ(reader.stats().corrupt, corrupt);
  EXPECT_EQ(reader.store_error(), "");  // none of it takes the store down

  // A whole row of another key, copied under this one, fails its checksum.
  const auto other = latent_key("c", "other");
  LatentCache(0, redis(server)).store(other, make_latents(4, 8, 1.0f));
  server.command({"SET", row_key(key), *server.command({"GET", row_key(other)})});
  EXPECT_FALSE(reader.find(key));
  EXPECT_TRUE(reader.find(other));
}

TEST(RedisStore, EntriesExpireAfterTheTtlUnlessUsed) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_ttl");
  const auto key = latent_key("c", "doc");
  LatentCache(0, redis(server, 1)).store(key, make_latents(2, 4, 1.0f));
  LatentCache(0, redis(server, 1)).store_text("lat_t", "text");
  EXPECT_EQ(server.command({"TTL", row_key(key)}), "1");
  EXPECT_EQ(server.command({"TTL", "lclm:text:lat_t"}), "1");
  server.command({"EXPIRE", row_key(key), "100"});
  EXPECT_TRUE(LatentCache(0, redis(server, 1)).find(key));  // a read renews the TTL
  EXPECT_EQ(server.command({"TTL", row_key(key)}), "1");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  LatentCache later(0, redis(server, 1));
  EXPECT_FALSE(later.find(key));
  EXPECT_EQ(later.find_text("lat_t"), std::nullopt);
  EXPECT_EQ(later.stats().corrupt, 0u);
  // Without a TTL nothing expires.
  LatentCache(0, redis(server)).store(key, make_latents(2, 4, 1.0f));
  EXPECT_EQ(server.command({"TTL", row_key(key)}), "-1");
}

// The server dies mid-run: one warning, the run goes on in memory, and once
// it is back (after the retry interval) the cache uses it again.
TEST(RedisStore, AServerKilledMidRunIsOneWarningAndTheRunGoesOn) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_killed");
  LatentCache cache(64 << 20, redis(server));
  cache.store(latent_key("c", "before"), make_latents(2, 4, 1.0f));
  server.kill();
  ::testing::internal::CaptureStderr();
  // 4 MiB to a closed connection: the writes after the first one fail
  // (EPIPE), which must not end the process with SIGPIPE.
  cache.store(latent_key("c", "big"), make_latents(1 << 18, 4, 1.0f));
  EXPECT_TRUE(cache.find(latent_key("c", "big")));  // from memory
  EXPECT_FALSE(cache.find(latent_key("c", "unseen")));
  for (int i = 0; i < 5; ++i) {
    cache.store(latent_key("c", std::to_string(i)), make_latents(2, 4, 1.0f));
    EXPECT_TRUE(cache.find(latent_key("c", std::to_string(i))));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(cache.find(latent_key("c", "unseen")));  // a failed retry: no new warning
  const std::string down = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(down, "warning"), 1) << down;
  EXPECT_NE(down.find("lclm: warning: latent cache " + server.url()), std::string::npos) << down;
  EXPECT_NE(down.find("running without it"), std::string::npos) << down;
  EXPECT_NE(cache.store_error().find(server.url()), std::string::npos) << cache.store_error();

  server.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::testing::internal::CaptureStderr();
  cache.store(latent_key("c", "after"), make_latents(2, 4, 3.0f));
  const std::string back = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(back.find("connected again"), std::string::npos) << back;
  EXPECT_EQ(cache.store_error(), "");
  EXPECT_TRUE(LatentCache(0, redis(server)).find(latent_key("c", "after")));
}

TEST(RedisStore, AnUnreachableServerLeavesTheCacheInMemory) {
  const int port = testing::free_loopback_port();
  const std::string url = "redis://127.0.0.1:" + std::to_string(port);
  ::testing::internal::CaptureStderr();
  LatentCache cache(1 << 20, {.location = url});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("lclm: warning: latent cache " + url + ": cannot connect"), std::string::npos)
      << err;
  EXPECT_NE(cache.store_error().find(url), std::string::npos);
  cache.store(latent_key("c", "doc"), make_latents(2, 4, 1.0f));
  EXPECT_TRUE(cache.find(latent_key("c", "doc")));
}

// A server that requires a password: the URL's, or LCLM_REDIS_PASSWORD's
// when the URL has none, or an ACL user's; a wrong one is a warning naming
// where the password came from (never the password) and the cache runs in
// memory.
TEST(RedisStore, CredentialsFromTheUrlOrTheEnvironment) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_auth",
                     {"--requirepass", "pa:ss@word", "--user", "alice", "on", ">al1ce", "~*", "&*", "+@all"},
                     "pa:ss@word");
  const std::string host = "127.0.0.1:" + std::to_string(server.port());
  const auto key = latent_key("c", "doc");
  const Latents l = make_latents(3, 8, 0.5f);
  {
    LatentCache cache(0, {.location = "redis://:pa%3Ass%40word@" + host});
    EXPECT_EQ(cache.store_error(), "");
    cache.store(key, l);
  }
  EXPECT_EQ(server.command({"EXISTS", row_key(key)}), "1");
  {
    LatentCache cache(0, {.location = "redis://alice:al1ce@" + host});
    EXPECT_EQ(cache.store_error(), "");
    EXPECT_TRUE(cache.find(key));
  }
  ::setenv("LCLM_REDIS_PASSWORD", "pa:ss@word", 1);
  {
    LatentCache cache(0, {.location = "redis://" + host});
    EXPECT_EQ(cache.store_error(), "");
    EXPECT_TRUE(cache.find(key));
  }
  ::setenv("LCLM_REDIS_PASSWORD", "wrong-one", 1);
  {
    ::testing::internal::CaptureStderr();
    LatentCache cache(1 << 20, {.location = "redis://" + host});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("cannot authenticate with the password in LCLM_REDIS_PASSWORD"),
              std::string::npos)
        << err;
    EXPECT_EQ(err.find("wrong-one"), std::string::npos) << err;
    cache.store(latent_key("c", "mem"), l);  // in memory still
    EXPECT_TRUE(cache.find(latent_key("c", "mem")));
  }
  ::unsetenv("LCLM_REDIS_PASSWORD");
  {
    ::testing::internal::CaptureStderr();
    LatentCache cache(0, {.location = "redis://alice:nope-pw@" + host});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("latent cache redis://alice:***@" + host +
                       ": cannot authenticate as alice with the URL's password"),
              std::string::npos)
        << err;
    EXPECT_EQ(err.find("nope-pw"), std::string::npos) << err;
    EXPECT_EQ(cache.store_error().find("nope-pw"), std::string::npos);
  }
  {  // no password at all: the server refuses the first command
    ::testing::internal::CaptureStderr();
    LatentCache cache(0, {.location = "redis://" + host});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("NOAUTH"), std::string::npos) << err;
  }
}

TEST(RedisStore, ADatabaseTheServerLacksIsAWarning) {
  LCLM_SKIP_WITHOUT_REDIS();
  RedisServer server("redis_db");
  ::testing::internal::CaptureStderr();
  LatentCache cache(0, {.location = server.url() + "/999"});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("cannot select database 999"), std::string::npos) << err;
  LatentCache(0, {.location = server.url() + "/1"})
      .store(latent_key("c", "x"), make_latents(1, 4, 1.0f));
  EXPECT_EQ(server.command({"EXISTS", row_key(latent_key("c", "x"))}), "0");  // not in db 0
  EXPECT_TRUE(LatentCache(0, {.location = server.url() + "/1"}).find(latent_key("c", "x")));
}

}  // namespace
}  // namespace lclm
