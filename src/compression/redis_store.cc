// The latent store on a Redis server (--latent-cache redis://HOST:PORT/DB),
// shared by every process pointed at it. Keys:
//   lclm:latents:<LatentKey hex>  one string: a 40-byte header, then the floats
//   lclm:text:<id>                the text behind a /v1/compress id
// Header, little-endian: "LCLM", u32 format version, u64 n_tokens,
// u64 n_latents, u64 dim, u64 checksum (latent_checksum, seeded with the key).
// With a TTL, SET writes it and every read renews it (EXPIRE in the same
// round trip), so an entry lives TTL seconds past its last use.
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/time.h>

#include <bit>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "compression/latent_store.h"
#include "util/error.h"

namespace lclm {

namespace {

constexpr std::string_view kScheme = "redis://";
constexpr std::string_view kTlsScheme = "rediss://";
constexpr std::string_view kUsage = "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]";
// Sent as the password when the URL has none, so that it need not appear on
// a command line (visible to every user in ps) or in shell history.
constexpr const char* kPasswordVariable = "LCLM_REDIS_PASSWORD";
// A server that does not answer a connect within this long is down; a
// command gets longer, since a row of a long region at full decoder width is
// tens of MB (a 32K-token region at 4x and 2,560 wide: 80 MiB).
constexpr timeval kConnectTimeout = {2, 0};
constexpr timeval kCommandTimeout = {10, 0};

// Rows are the host's float bytes, as in the SQLite file; the header is
// written the same way.
static_assert(std::endian::native == std::endian::little,
              "the Redis row header is little-endian, as every target of the engine");
constexpr char kMagic[4] = {'L', 'C', 'L', 'M'};
constexpr std::size_t kHeaderBytes = 40;

[[noreturn]] void bad_url(std::string_view location, const std::string& why) {
  throw Error("--latent-cache '" + redacted_location(location) + "': " + why + " (" +
              std::string(kUsage) + ")");
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The URL's user or password with %XX escapes decoded (a password may hold
// '@', ':' or '/'); none for a malformed escape.
std::optional<std::string> percent_decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// A whole decimal number in [lo, hi], or none.
std::optional<int> parse_number(std::string_view s, int lo, int hi) {
  int v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) {
    return std::nullopt;
  }
  return v;
}

// hiredis writes with write(2): once the server has gone, a write raises
// SIGPIPE, whose default action ends the process (the CLI does not ignore
// it). Blocked on this thread for a command, and one raised meanwhile
// consumed, the write fails with EPIPE instead and the store goes down.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlock() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec now = {0, 0};
        sigtimedwait(&pipe_, nullptr, &now);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;
// One command's arguments, binary-safe.
using Command = std::vector<std::string_view>;

// A command's arguments as hiredis takes them (pointers and lengths).
struct Argv {
  explicit Argv(const Command& c) {
    for (std::string_view a : c) {
      args.push_back(a.data());
      lengths.push_back(a.size());
    }
  }
  int count() const { return static_cast<int>(args.size()); }
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
};

bool is_error(const Reply& r) {
  return r->type == REDIS_REPLY_ERROR;
}
std::string error_text(const Reply& r) {
  return std::string(r->str, r->len);
}

class RedisStore final : public LatentStore {
 public:
  explicit RedisStore(const LatentStoreOptions& options)
      : url_(parse_redis_url(options.location)),
        name_(redacted_location(options.location)),
        ttl_(options.ttl_seconds > 0 ? std::to_string(options.ttl_seconds) : ""),
        retry_(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(options.retry_seconds))) {
    connect();
  }
  ~RedisStore() override {
    if (context_) redisFree(context_);
  }

  Lookup find(const LatentKey& key, Latents& out) override {
    const std::string k = "lclm:latents:" + key.hex();
    const std::vector<Reply> replies = get(k, 1);
    if (replies.empty() || replies[0]->type == REDIS_REPLY_NIL) return Lookup::kMiss;
    const Reply& r = replies[0];
    if (is_error(r) && !error_text(r).starts_with("WRONGTYPE")) {
      go_down("the server answered GET with '" + error_text(r) + "'");
      return Lookup::kMiss;
    }
    if (r->type == REDIS_REPLY_STRING && unpack(key, r->str, r->len, out)) return Lookup::kHit;
    // A row that is not whole, or a key of another type (WRONGTYPE): dropped.
    run({{"DEL", k}});
    return Lookup::kCorrupt;
  }

  void store(const LatentKey& key, const Latents& latents) override {
    std::string value(kHeaderBytes + latents.bytes(), '\0');
    char* p = value.data();
    const std::uint32_t version = kLatentFormatVersion;
    const std::uint64_t fields[] = {latents.n_tokens, latents.count(), latents.dim,
                                    latent_checksum(key, latents.data)};
    std::memcpy(p, kMagic, 4);
    std::memcpy(p + 4, &version, 4);
    std::memcpy(p + 8, fields, sizeof fields);
    if (latents.bytes() > 0) std::memcpy(p + kHeaderBytes, latents.data.data(), latents.bytes());
    set("lclm:latents:" + key.hex(), value);
  }

  void store_text(const std::string& id, std::string_view text) override {
    set("lclm:text:" + id, text);
  }

  std::optional<std::string> find_text(const std::string& id) override {
    const std::vector<Reply> replies = get("lclm:text:" + id, 0);
    if (replies.empty() || replies[0]->type != REDIS_REPLY_STRING) return std::nullopt;
    return std::string(replies[0]->str, replies[0]->len);
  }

  std::string error() const override { return error_; }

 private:
  static bool unpack(const LatentKey& key, const char* value, std::size_t bytes, Latents& out) {
    if (bytes < kHeaderBytes || std::memcmp(value, kMagic, 4) != 0) return false;
    std::uint32_t version = 0;
    std::uint64_t fields[4];
    std::memcpy(&version, value + 4, 4);
    std::memcpy(fields, value + 8, sizeof fields);
    StoredRow row;
    row.version = version;
    row.n_tokens = static_cast<std::int64_t>(fields[0]);
    row.n_latents = static_cast<std::int64_t>(fields[1]);
    row.dim = static_cast<std::int64_t>(fields[2]);
    row.checksum = fields[3];
    row.data = value + kHeaderBytes;
    row.bytes = bytes - kHeaderBytes;
    return unpack_row(key, row, out);
  }

  // GET, and with a TTL an EXPIRE that renews it, in one round trip; no
  // replies when the server is not in use. With own_errors 1 an error reply
  // to GET (the key may hold another type) is the caller's; any other error
  // takes the store down.
  std::vector<Reply> get(const std::string& key, std::size_t own_errors) {
    if (ttl_.empty()) return run({{"GET", key}}, own_errors);
    return run({{"GET", key}, {"EXPIRE", key, ttl_}}, own_errors);
  }
  void set(const std::string& key, std::string_view value) {
    if (ttl_.empty()) {
      run({{"SET", key, value}});
    } else {
      run({{"SET", key, value, "EX", ttl_}});
    }
  }

  // Sends the commands together and reads their replies. Returns none, after
  // taking the store down, when the server is not in use, cannot be reached,
  // or answers an error (except to the first `own_errors` commands, whose
  // errors the caller handles).
  std::vector<Reply> run(const std::vector<Command>& commands, std::size_t own_errors = 0) {
    if (!usable()) return {};
    const SigpipeBlock block;
    for (const Command& c : commands) {
      Argv argv(c);
      redisAppendCommandArgv(context_, argv.count(), argv.args.data(), argv.lengths.data());
    }
    std::vector<Reply> replies;
    for (std::size_t i = 0; i < commands.size(); ++i) {
      void* reply = nullptr;
      if (redisGetReply(context_, &reply) != REDIS_OK || reply == nullptr) {
        go_down(context_->errstr[0] ? context_->errstr : "the connection failed");
        return {};
      }
      replies.emplace_back(static_cast<redisReply*>(reply));
      if (i >= own_errors && is_error(replies.back())) {
        go_down("the server answered " + std::string(commands[i][0]) + " with '" +
                error_text(replies.back()) + "'");
        return {};
      }
    }
    return replies;
  }

  // Connected, or connects when the last failure is retry_ old.
  bool usable() {
    if (context_) return true;
    if (std::chrono::steady_clock::now() < next_try_) return false;
    connect();
    return context_ != nullptr;
  }

  void connect() {
    const SigpipeBlock block;
    redisContext* c = redisConnectWithTimeout(url_.host.c_str(), url_.port, kConnectTimeout);
    std::string why;
    if (c == nullptr) {
      why = "cannot allocate a connection";
    } else if (c->err) {
      why = "cannot connect (" + std::string(c->errstr) + ")";
    } else {
      redisSetTimeout(c, kCommandTimeout);
      redisEnableKeepAlive(c);
      why = authenticate(c);
      if (why.empty()) {
        const std::string db = std::to_string(url_.db);
        const Reply r(static_cast<redisReply*>(redisCommand(c, "SELECT %s", db.c_str())));
        if (!r) {
          why = "cannot select database " + db + " (" + c->errstr + ")";
        } else if (is_error(r)) {
          why = "cannot select database " + db + " ('" + error_text(r) + "')";
        }
      }
    }
    if (!why.empty()) {
      if (c) redisFree(c);
      go_down(why);
      return;
    }
    context_ = c;
    if (!error_.empty()) {
      std::cerr << "lclm: latent cache " << name_ << ": connected again\n";
      error_.clear();
    }
  }

  // AUTH with the URL's credentials, or the password from the environment;
  // nothing without either. Returns why it failed (never the password), or
  // "" when it did not.
  std::string authenticate(redisContext* c) const {
    std::string password = url_.password;
    if (password.empty()) {
      const char* env = std::getenv(kPasswordVariable);
      if (env == nullptr || *env == '\0') return "";
      password = env;
    }
    Command auth = {"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(password);
    Argv argv(auth);
    const Reply r(static_cast<redisReply*>(
        redisCommandArgv(c, argv.count(), argv.args.data(), argv.lengths.data())));
    const std::string as = url_.user.empty() ? "" : " as " + url_.user;
    const std::string from = url_.password.empty()
                                 ? std::string(" with the password in ") + kPasswordVariable
                                 : std::string(" with the URL's password");
    if (!r) return "cannot authenticate" + as + " (" + c->errstr + ")";
    if (is_error(r)) return "cannot authenticate" + as + from + " ('" + error_text(r) + "')";
    return "";
  }

  // One warning per outage: the first failure says so, later failed tries
  // are silent, and the next success says it is back.
  void go_down(const std::string& why) {
    if (context_) {
      redisFree(context_);
      context_ = nullptr;
    }
    next_try_ = std::chrono::steady_clock::now() + retry_;
    if (error_.empty()) {
      std::cerr << "lclm: warning: latent cache " << name_ << ": " << why
                << "; running without it, trying again every "
                << std::chrono::duration<double>(retry_).count() << " s\n";
    }
    error_ = "latent cache " + name_ + ": " + why;
  }

  RedisUrl url_;
  std::string name_;
  std::string ttl_;  // seconds, as sent; empty: no TTL
  std::chrono::steady_clock::duration retry_;
  redisContext* context_ = nullptr;
  std::chrono::steady_clock::time_point next_try_;
  std::string error_;  // why the store is down; empty while it is up
};

}  // namespace

bool is_redis_url(std::string_view location) {
  return location.starts_with(kScheme) || location.starts_with(kTlsScheme);
}

std::string redacted_location(std::string_view location) {
  if (!is_redis_url(location)) return std::string(location);
  const std::size_t start = location.find("//") + 2;
  const std::size_t end = location.find_first_of("/?#", start);
  const std::size_t at = location.substr(0, end).rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(location);
  const std::size_t colon = location.find(':', start);
  if (colon == std::string_view::npos || colon > at) return std::string(location);  // a user only
  return std::string(location.substr(0, colon + 1)) + "***" + std::string(location.substr(at));
}

RedisUrl parse_redis_url(std::string_view location) {
  if (location.starts_with(kTlsScheme)) {
    bad_url(location,
            "TLS (rediss://) is not supported: Debian 12's hiredis 0.14 has no TLS; reach a TLS "
            "server through a tunnel on a loopback port (stunnel, spiped, ssh -L) and give its "
            "redis:// address");
  }
  if (!is_redis_url(location)) bad_url(location, "not a redis:// URL");
  std::string_view rest = location.substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    bad_url(location, "query parameters are not supported (the TTL is --latent-cache-ttl)");
  }
  RedisUrl url;
  // USER:PASSWORD@ or :PASSWORD@ before the host; the last '@' before the
  // path ends it (one in a password is escaped as %40, or taken as part of it).
  const std::size_t at = rest.substr(0, rest.find('/')).rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    const std::size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      bad_url(location,
              "a user needs a password (USER:PASSWORD@, or :PASSWORD@ for the default user)");
    }
    const auto user = percent_decoded(userinfo.substr(0, colon));
    const auto password = percent_decoded(userinfo.substr(colon + 1));
    if (!user || !password) bad_url(location, "a malformed %XX escape in the credentials");
    if (password->empty()) bad_url(location, "an empty password");
    url.user = *user;
    url.password = *password;
    rest = rest.substr(at + 1);
  }
  const std::size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos && slash + 1 < rest.size()) {
    const auto db = parse_number(rest.substr(slash + 1), 0, 1 << 20);
    if (!db) bad_url(location, "the database must be a number");
    url.db = *db;
  }
  std::string_view host = authority, port;
  if (authority.starts_with('[')) {  // [IPv6]:PORT
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) bad_url(location, "no ']' after the IPv6 address");
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) bad_url(location, "junk after ']'");
    if (!after.empty()) port = after.substr(1);
    if (after == ":") bad_url(location, "no port after ':'");
  } else if (const std::size_t colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) bad_url(location, "no port after ':'");
  }
  if (host.empty()) bad_url(location, "no host");
  url.host = std::string(host);
  if (!port.empty()) {
    const auto p = parse_number(port, 1, 65535);
    if (!p) bad_url(location, "the port must be a number from 1 to 65535");
    url.port = *p;
  }
  return url;
}

std::unique_ptr<LatentStore> open_redis_store(const LatentStoreOptions& options) {
  return std::make_unique<RedisStore>(options);
}

}  // namespace lclm
