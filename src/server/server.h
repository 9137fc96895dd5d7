// `lclm serve`: an OpenAI-compatible HTTP server over one model.
//   POST /v1/chat/completions, /v1/completions  (stream: server-sent events)
//   POST /v1/compress                             (latent ids for reuse)
//   GET  /v1/models, /health, /metrics (Prometheus text)
// HTTP threads parse and validate; one worker thread runs the model, taking
// requests from a bounded queue in arrival order and decoding up to
// --parallel of them together (continuous batching, see scheduler.h). The
// latent cache of the model is shared by every request, and the worker keeps
// the KV caches of the last few conversations (sessions): a request that
// starts like one of them (the next turn of a chat) prefills only what it
// adds, and reports the rest as usage.prompt_tokens_details.cached_tokens.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>

#include "runtime/engine.h"
#include "server/openai_api.h"
#include "server/scheduler.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace lclm::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;             // 0: any free port (see bind())
  std::size_t max_queue = 16;  // requests waiting beyond the running ones; more get 503
  // Generations decoded together, each step reading every weight once for
  // all of them (llama-server's --parallel).
  std::size_t parallel = 4;
  std::size_t context = 0;       // 0: the model's max_position_embeddings
  int default_max_tokens = 256;  // when a request gives no max_tokens
  std::size_t prefill_chunk = 512;
  RequestDefaults defaults;  // sampling when a request does not say
  std::size_t max_body_bytes = 64u << 20;
  // Request bodies held at once, all connections together, from the first
  // byte read until the answer is sent (a stream: until it ends). A body
  // that would pass it is refused with 503 server_busy, so that 64
  // connections of 64 MiB each cannot take 4 GiB; one of up to 1/256 of it
  // is never refused (ordinary requests get through whatever large bodies
  // hold). Parsing has a budget of this size of its own (reserve_parse).
  std::size_t max_body_bytes_in_flight = 256u << 20;
  std::size_t latent_id_bytes = 64u << 20;  // texts kept for /v1/compress ids
  std::string model_name;                   // reported as "model"; default: the directory name
  // Conversations whose KV caches the worker keeps for prefix reuse (0: none;
  // each holds up to the context's keys and values). Every slot (parallel)
  // needs a session of its own, so max(parallel, cache_sessions) are kept.
  std::size_t cache_sessions = 2;
  // Non-empty: every endpoint but /health needs "Authorization: Bearer KEY"
  // (401 otherwise).
  std::string api_key;
  // Let chat message content hold the model's control tokens (<|im_start|>
  // and the like). Off: such content is a 400 control_token_in_content, so a
  // user message cannot forge a system or assistant turn.
  bool allow_control_tokens = false;
  // Threads that read and answer connections (at least max_queue + 4): slow
  // clients hold one each, so there are more than requests that can run.
  std::size_t max_connections = 64;
  // A connection that spends this long without a request running on it
  // (sending its headers a byte at a time, or idle) is shut down; a body
  // still arriving after this long is a 408. 0: no limit.
  double request_deadline_seconds = 30;
  // Origins browsers may call the API from (Access-Control-Allow-Origin, and
  // preflight OPTIONS requests answered without the API key); "*" for any.
  // Empty: no CORS headers.
  std::vector<std::string> cors_origins;
  // Latents files loaded at start (serve --latents), by the id a memory or
  // file part names them with; each checked against the checkpoint.
  std::map<std::string, std::shared_ptr<const Latents>> latent_files;
};

// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost): the
// server warns when bound anywhere else.
bool is_loopback_host(const std::string& host);

// The texts behind /v1/compress ids held in memory, bounded in bytes (least
// recently used dropped first); the latent store (--latent-cache) keeps them
// too, for other replicas and after a restart. A request naming an id reads
// its text as a memory region, so it finds the latents in the cache, or
// recomputes them if the cache has dropped them.
class LatentIds {
 public:
  explicit LatentIds(std::size_t budget_bytes) : budget_(budget_bytes) {}
  void remember(const std::string& id, const std::string& text);
  std::optional<std::string> find(const std::string& id);

 private:
  std::mutex mutex_;
  std::size_t budget_, used_ = 0;
  std::list<std::pair<std::string, std::string>> lru_;
  std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> index_;
};

class Server {
 public:
  Server(std::unique_ptr<Engine> engine, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds options.host:options.port (any free port when 0); returns the port.
  int bind();
  // Serves until stop(); call bind() first.
  void run();
  // Drains and stops: new and waiting requests get 503 shutting_down, the
  // running one has up to `grace` to finish and is then failed the same way
  // (streaming: an error event before [DONE]), never cut short as if it had
  // run its length; run() returns once the responses are written.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  std::string metrics_text() const;

 private:
  struct Metrics {
    std::atomic<std::uint64_t> chat{0}, completions{0}, compress{0}, cancelled{0};
    std::atomic<std::uint64_t> prompt_tokens{0}, completion_tokens{0}, compressed_tokens{0};
    std::atomic<std::uint64_t> latents{0}, finished{0};
    mutable std::mutex mutex;
    std::map<int, std::uint64_t> errors;  // by HTTP status
    double ttft_seconds = 0, request_seconds = 0;
  };

  void routes();
  // `busy` marks the connection as running a request for the watchdog; a
  // stream keeps it until it ends.
  // Frees `body` once the request is read from it.
  void handle_completion(const httplib::Request& req, std::string& body, httplib::Response& res,
                         bool chat, const std::shared_ptr<void>& busy);
  void handle_compress(const std::string& body, httplib::Response& res);
  // llama-server's utility endpoints: /tokenize, /detokenize, /apply-template.
  void handle_tokenize(const std::string& body, httplib::Response& res);
  void handle_detokenize(const std::string& body, httplib::Response& res);
  void handle_apply_template(const std::string& body, httplib::Response& res);
  nlohmann::json props() const;
  // The Access-Control-Allow-Origin value for a request's Origin (empty: none).
  std::string allowed_origin(const std::string& origin) const;
  // A completion in the worker: start() prepares the prompt and returns its
  // generation for the batch (null when the client has gone); finish() sends
  // the end and the usage. Both throw RequestError for the client.
  struct CompletionRun;
  Generation* start_completion(CompletionRun& run, Job& job);
  void finish_completion(CompletionRun& run, Job& job);
  void run_compress(const std::vector<std::string>& texts, Job& job);
  // The request's prompt prepared within the context; RequestError 400
  // (context_length_exceeded, invalid_prompt) naming messages or prompt.
  PreparedPrompt prepare_request(const CompletionRequest& r);
  // /v1/compress with "format": "prompt_embeds": the decoder's input for a
  // whole chat or completion request, as vLLM's prompt_embeds takes it.
  void run_prompt_embeds(const CompletionRequest& r, DType dtype, Job& job);
  // What a latent id names: a latents file's latents (--latents), else the
  // text behind a /v1/compress id, from memory or from the latent store,
  // where another replica (or this one before a restart) put it.
  std::optional<LatentRef> latent_ref(const std::string& id);
  std::optional<std::string> latent_text(const std::string& id);
  // Queues jobs (several: the choices of one request, all or none);
  // RequestError 503 queue_full when they do not fit.
  std::shared_ptr<Job> submit(std::shared_ptr<Job> job);
  void submit(const std::vector<std::shared_ptr<Job>>& jobs);
  void send_error(httplib::Response& res, int status, const nlohmann::json& error);
  std::size_t context() const;
  // Of the sessions not running a generation, the one sharing the longest
  // prefix with the prompt, else the one least recently used (worker thread
  // only).
  Session& pick_session(const PreparedPrompt& prompt);

  // The connection watchdog (run() starts it, stop() ends it; a scan every
  // 250 ms): shuts down connections with no request running for longer than
  // the deadline, or that have sent more than kMaxIdleReadBytes without a
  // request being dispatched (an endless request line or header, or the rest
  // of a body the server refused).
  void watch_connections();
  void note_activity(const std::string& peer, int running_delta);
  struct Activity {
    int running = 0;
    std::chrono::steady_clock::time_point since;  // first seen, or the last request's end
    // The connection's bytes read (bytes_read) when the watchdog first saw it
    // with no request running: httplib holds a request line or header it is
    // reading in memory however long it grows, so more than
    // kMaxIdleReadBytes read since then, with no request dispatched, shuts
    // the connection down.
    std::optional<std::uint64_t> idle_mark;
  };
  static constexpr std::uint64_t kMaxIdleReadBytes = 1u << 20;
  std::mutex watch_mutex_;
  std::condition_variable watch_wake_;
  bool watch_stop_ = false;
  std::map<std::string, Activity> activity_;  // by the peer's "host port"
  std::thread watchdog_;
  std::atomic<bool> running_{false}, stop_requested_{false};  // run(), stop()
  std::atomic<std::size_t> body_bytes_{0};  // request body bytes held (max_body_bytes_in_flight)
  // Parsing a body takes memory of its own: its JSON, the messages' texts,
  // the chat template's copies (up to ~16 bytes for each byte of a chat
  // body, measured with bench/server_rss.py). Parses reserve that much of a
  // second budget the size of max_body_bytes_in_flight, and wait for room,
  // so that many large bodies parsed at once cannot pass it; the reservation
  // ends with the parse (reserve_parse's holder).
  static constexpr std::size_t kParseBytesPerBodyByte = 16;
  static constexpr std::size_t kTrimAfterParseBytes = 16u
                                                      << 20;  // malloc_trim after parses this large
  std::shared_ptr<void> reserve_parse(std::size_t body_bytes);
  std::mutex parse_mutex_;
  std::condition_variable parse_free_;
  std::size_t parse_bytes_ = 0;

  std::unique_ptr<Engine> engine_;
  ServerOptions options_;
  std::vector<Session> sessions_;
  std::vector<std::uint64_t> session_last_use_;
  std::uint64_t session_clock_ = 0;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<Scheduler> scheduler_;
  LatentIds latent_ids_;
  Metrics metrics_;
  // Response ids: 96 random bits each, so ids from a restarted server (or
  // another replica) never repeat earlier ones as a counter's did.
  std::string response_id(const char* prefix);
  std::shared_ptr<const JsonConstraint::Vocab> json_vocab_;  // worker thread only
  // "lat_" and 128 bits from the kernel's generator: an id lets whoever holds
  // it make the model read its text, so it must not be guessable, and the
  // mt19937 behind response ids gives its state away to those who see enough
  // of them.
  static std::string new_latent_id();
  std::mutex id_mutex_;
  std::mt19937_64 id_rng_{std::random_device{}()};
};

}  // namespace lclm::server
