// A redis-server of the test's own: a free loopback port, no persistence
// (--save '' --appendonly no), its files in a scratch directory; killed when
// it goes out of scope, and when the test process dies (PR_SET_PDEATHSIG).
// Tests that need one skip when /usr/bin/redis-server is missing
// (scripts/install_deps.sh installs it, so CI has it).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/test_models.h"

namespace lclm::testing {

#define LCLM_SKIP_WITHOUT_REDIS()                                                           \
  if (!::lclm::testing::RedisServer::available())                                           \
  GTEST_SKIP() << ::lclm::testing::RedisServer::kBinary                                     \
               << " is missing: scripts/install_deps.sh installs redis-server, which this " \
                  "test starts on a loopback port"

// A loopback port nothing listens on now (the kernel's pick for port 0).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  return ok ? ntohs(a.sin_port) : 0;
}

class RedisServer {
 public:
  static constexpr const char* kBinary = "/usr/bin/redis-server";
  static bool available() { return ::access(kBinary, X_OK) == 0; }

  // extra: more redis-server arguments (--requirepass, --user ...);
  // password: what the helper's own connections AUTH with (none: no AUTH).
  explicit RedisServer(const std::string& name, std::vector<std::string> extra = {},
                       std::string password = "")
      : dir_(scratch_dir(name)),
        port_(free_loopback_port()),
        extra_(std::move(extra)),
        password_(std::move(password)) {
    start();
  }
  ~RedisServer() { kill(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

  // Starts it on the same port (again, after kill()) and waits until it answers.
  void start() {
    const std::string port = std::to_string(port_);
    const std::string log = (dir_ / "redis.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<const char*> argv = {
          kBinary,        "--port", port.c_str(), "--bind",     "127.0.0.1", "--save",   "",
          "--appendonly", "no",     "--dir",      dir_.c_str(), "--logfile", log.c_str()};
      for (const std::string& a : extra_) argv.push_back(a.c_str());
      argv.push_back(nullptr);
      ::execv(kBinary, const_cast<char* const*>(argv.data()));
      ::_exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until) {
      if (command({"PING"}) == "PONG") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "redis-server on port " << port_ << " did not answer; see " << log;
  }

  // SIGKILL, as a crash or an operator would end it mid-run.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // One command on a connection of its own: a string or status reply, an
  // integer as its decimal digits, none for nil, an error or no answer.
  std::optional<std::string> command(const std::vector<std::string>& args) {
    const timeval timeout = {2, 0};
    redisContext* ctx = redisConnectWithTimeout("127.0.0.1", port_, timeout);
    std::optional<std::string> out;
    if (ctx != nullptr && ctx->err == 0 && !password_.empty()) {
      freeReplyObject(redisCommand(ctx, "AUTH %b", password_.data(), password_.size()));
    }
    if (ctx != nullptr && ctx->err == 0) {
      std::vector<const char*> argv;
      std::vector<std::size_t> lengths;
      for (const std::string& a : args) {
        argv.push_back(a.data());
        lengths.push_back(a.size());
      }
      auto* r = static_cast<redisReply*>(
          redisCommandArgv(ctx, static_cast<int>(args.size()), argv.data(), lengths.data()));
      if (r != nullptr) {
        if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
          out = std::string(r->str, r->len);
        } else if (r->type == REDIS_REPLY_INTEGER) {
          out = std::to_string(r->integer);
        }
        freeReplyObject(r);
      }
    }
    if (ctx != nullptr) redisFree(ctx);
    return out;
  }

 private:
  std::filesystem::path dir_;
  int port_;
  std::vector<std::string> extra_;
  std::string password_;
  pid_t pid_ = -1;
};

}  // namespace lclm::testing
