// lclm serve: the OpenAI-compatible HTTP server (see docs/server.md).
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/latents_file.h"
#include "compression/lclm_model.h"
#include "server/server.h"
#include "util/error.h"

namespace lclm::cli {
namespace {

struct ServeArgs {
  std::string model;
  LclmArgs lclm;
  ChatTemplateArg chat_template;
  server::ServerOptions server;
  GenerationOptions options;
  std::int64_t seed = -1;
  int threads = 0;
  std::string api_key_file;
  std::vector<std::string> latents;  // --latents [ID=]FILE
  double shutdown_timeout = 10;  // seconds the running request has on SIGTERM
};

// --api-key, else the first line of --api-key-file, else $LCLM_API_KEY.
std::string api_key(const ServeArgs& a) {
  if (!a.server.api_key.empty()) return a.server.api_key;
  if (!a.api_key_file.empty()) {
    std::string key = read_file(a.api_key_file, "API key file");
    key = key.substr(0, key.find_first_of("\r\n"));
    if (key.empty()) throw Error("--api-key-file " + a.api_key_file + " holds no key");
    return key;
  }
  const char* env = std::getenv("LCLM_API_KEY");
  return env ? env : "";
}

// --latents [ID=]FILE: files `lclm compress -o` wrote, checked against the
// checkpoint and named by ID (default: the file name without its extension)
// for memory and file parts to use as latent_id / file_id.
void load_latent_files(const std::vector<std::string>& specs, Engine& engine,
                       std::map<std::string, std::shared_ptr<const Latents>>& out,
                       std::ostream& err) {
  if (specs.empty()) return;
  LclmModel* model = engine.lclm();
  if (!model) {
    throw Error("--latents needs an LCLM checkpoint; " + engine.dir().string() +
                " is a plain model");
  }
  for (const std::string& spec : specs) {
    const std::size_t eq = spec.find('=');
    const bool named = eq != std::string::npos && spec.find('/') > eq;
    const std::filesystem::path file = named ? spec.substr(eq + 1) : spec;
    const std::string id = named ? spec.substr(0, eq) : file.stem().string();
    const bool good_id = !id.empty() && id.size() <= 64 &&
                         id.find_first_not_of(
                             "abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789._-") == std::string::npos;
    if (!good_id) {
      throw Error("--latents " + spec + ": the id '" + id +
                  "' must be 1-64 letters, digits, '.', '_' or '-' (--latents ID=FILE names it)");
    }
    if (out.contains(id)) {
      throw Error("--latents " + spec + ": the id '" + id + "' is taken by an earlier file");
    }
    auto latents = std::make_shared<const Latents>(read_checked_latents(file, *model, "--latents"));
    err << "lclm serve: latents " << file.string() << " as latent_id \"" << id << "\" ("
        << latents->count() << " latents of " << latents->n_tokens << " tokens)" << std::endl;
    out.emplace(id, std::move(latents));
  }
}

// The shutdown pipe: written by the signal handler, read by the waiter.
int g_stop_pipe[2] = {-1, -1};

int run(ServeArgs& a, std::ostream& err) {
  // Buffers of 4 MiB and more (request bodies, their parsed texts, the
  // prompts made of them) get pages of their own, returned to the system
  // when freed. glibc's default raises that threshold to 32 MiB after the
  // first large free, and the bodies each HTTP thread parsed then stayed in
  // its arena: 12 clients sending 60 MB bodies took the server to 1.4 GiB
  // resident, 0.8 GiB with this (bench/server_rss.py).
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  a.server.api_key = api_key(a);
  if (!server::is_loopback_host(a.server.host)) {
    err << "lclm serve: warning: listening on " << a.server.host
        << ", reachable from other machines"
        << (a.server.api_key.empty() ? ", with no API key (--api-key)" : "") << std::endl;
  }
  a.server.context = a.options.context;
  a.server.prefill_chunk = a.options.prefill_chunk;
  a.server.default_max_tokens = a.options.n_predict;
  a.server.defaults.sampling = a.options.sampling;
  if (a.seed >= 0) a.server.defaults.seed = static_cast<std::uint64_t>(a.seed);
  a.options.sampling.validate();
  // SIGINT and SIGTERM drain the server. Blocking them for sigwait() is not
  // enough: threads started before this point (OpenBLAS starts its pool when
  // the library loads) keep the default action, and the signal killed the
  // process there. A handler applies in every thread; it only writes the
  // signal's number to a pipe, and a waiter thread does the stopping (a
  // handler may not take the locks stop() takes).
  if (::pipe(g_stop_pipe) != 0) throw Error("cannot create the shutdown pipe");
  struct sigaction action {};
  action.sa_handler = [](int signo) {
    const char byte = static_cast<char>(signo);
    [[maybe_unused]] const ssize_t n = ::write(g_stop_pipe[1], &byte, 1);
  };
  sigemptyset(&action.sa_mask);
  for (int signo : {SIGINT, SIGTERM}) ::sigaction(signo, &action, nullptr);
  std::unique_ptr<Engine> engine =
      Engine::load(a.model, a.chat_template.apply(a.lclm.engine_options(a.threads)));
  load_latent_files(a.latents, *engine, a.server.latent_files, err);
  server::Server s(std::move(engine), a.server);
  const int port = s.bind();
  err << "lclm serve: " << a.model << " on http://" << a.server.host << ":" << port << " (queue "
      << a.server.max_queue << ")" << std::endl;
  std::thread waiter([&] {
    char signo = 0;
    while (::read(g_stop_pipe[0], &signo, 1) < 0 && errno == EINTR) {
    }
    if (signo == 0) return;  // run() returned on its own
    err << "lclm serve: " << (signo == SIGINT ? "SIGINT" : "SIGTERM")
        << ": not taking requests; the running one has " << a.shutdown_timeout << " s to finish"
        << std::endl;
    s.stop(std::chrono::milliseconds(static_cast<long>(a.shutdown_timeout * 1000)));
  });
  s.run();
  const char done = 0;
  [[maybe_unused]] const ssize_t n = ::write(g_stop_pipe[1], &done, 1);  // no-op if a signal came
  waiter.join();
  for (int signo : {SIGINT, SIGTERM}) ::signal(signo, SIG_DFL);
  ::close(g_stop_pipe[0]);
  ::close(g_stop_pipe[1]);
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  args->options.n_predict = 256;
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions (streaming or "
      "not), /v1/compress, /v1/models, /health, /metrics, and llama-server's /tokenize, "
      "/detokenize, /apply-template, /props");
  cmd->add_option("-m,--model", args->model, "LCLM checkpoint or Qwen3 model directory")
      ->required();
  cmd->add_option("--host", args->server.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", args->server.port, "Port (0: any free port, printed)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--max-queue", args->server.max_queue,
                  "Requests that may wait for the worker; more are refused with 503")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--parallel", args->server.parallel,
                  "Requests decoded together (continuous batching: each step reads every "
                  "weight once for all of them; a new prompt is read one -b chunk per "
                  "step between their tokens). Up to 8 each get the tokens they would alone")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--name", args->server.model_name,
                  "Model name the API reports (default: the directory name)");
  auto* key = cmd->add_option("--api-key", args->server.api_key,
                              "Require \"Authorization: Bearer KEY\" on every endpoint but "
                              "/health (also --api-key-file or $LCLM_API_KEY)");
  cmd->add_option("--api-key-file", args->api_key_file, "Read the API key from this file")
      ->excludes(key);
  cmd->add_option("--cache-sessions", args->server.cache_sessions,
                  "Conversations whose KV caches are kept, so that a request starting like one "
                  "of them (a chat's next turn) prefills only what it adds (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  cmd->add_option("--max-connections", args->server.max_connections,
                  "Connections read and answered at once (at least --max-queue + 4); slow "
                  "clients hold one each")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--request-deadline", args->server.request_deadline_seconds,
                  "Seconds a connection may go without a request running on it (sending its "
                  "headers slowly, or idle) before it is shut down, and a body may take to "
                  "arrive (408 after); 0: no limit")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  cmd->add_option("--shutdown-timeout", args->shutdown_timeout,
                  "On SIGTERM or SIGINT, seconds the running request has to finish before it is "
                  "failed with 503 shutting_down (waiting ones get it at once)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  cmd->add_option("--max-body-bytes-in-flight", args->server.max_body_bytes_in_flight,
                  "Request body bytes held at once, all connections together (a body that would "
                  "pass it gets 503 server_busy); bounds the memory clients can make the server "
                  "hold")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1} << 20, std::size_t{1} << 40));
  cmd->add_option("--latents", args->latents,
                  "[ID=]FILE: latents `lclm compress -o` wrote, for requests to name as a memory "
                  "part's latent_id (or a file part's file_id) ID, by default the file name "
                  "without its extension; repeatable")
      ->type_name("[ID=]FILE");
  cmd->add_option("--cors", args->server.cors_origins,
                  "Let browser pages from ORIGIN call the API (Access-Control-Allow-Origin; "
                  "preflight requests are answered without the API key); repeatable, \"*\" for "
                  "any origin")
      ->type_name("ORIGIN");
  cmd->add_flag("--allow-control-tokens", args->server.allow_control_tokens,
                "Let chat messages hold the model's control tokens (<|im_start|>, <|im_end|>, "
                "...); by default such a message is refused, so that a user cannot forge a turn");
  args->lclm.add_options(*cmd);
  args->chat_template.add_option(*cmd);
  add_generation_options(*cmd, args->options, args->seed, args->threads);
  return {cmd, [args](std::ostream&, std::ostream& err) { return run(*args, err); }};
}

}  // namespace lclm::cli
