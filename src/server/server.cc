#include "server/server.h"

#include <httplib.h>
#include <malloc.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iterator>
#include <map>
#include <random>
#include <sstream>

#include "format/torch_file.h"
#include "server/base64.h"
#include "server/connection.h"
#include "util/error.h"

namespace lclm::server {
namespace {

using nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool write_event(httplib::DataSink& sink, const std::string& data) {
  const std::string s = "data: " + data + "\n\n";
  return sink.write(s.data(), s.size());
}

}  // namespace

struct Server::CompletionRun {
  std::shared_ptr<const CompletionRequest> r;
  std::size_t choice = 0;  // of the request's n
  std::chrono::steady_clock::time_point t0;
  PreparedPrompt p;
  Session* session = nullptr;
  Utf8Stream utf8;
  std::optional<StopStringFilter> filter;
  std::optional<Generation> generation;
  // With logprobs: the tokens not yet sent, each with the byte of the
  // answer its text ends at; a token goes out with the piece of text that
  // completes it (stop strings hold text back, and cut it).
  std::deque<std::pair<TokenLogprob, std::size_t>> pending;
  std::size_t token_bytes = 0, sent_bytes = 0;

  void send(Job& job, const std::string& text) {
    sent_bytes += text.size();
    Event e;
    e.kind = Event::Kind::Text;
    e.text = text;
    while (!pending.empty() && pending.front().second <= sent_bytes) {
      e.logprobs.push_back(std::move(pending.front().first));
      pending.pop_front();
    }
    if (!e.text.empty() || !e.logprobs.empty()) job.emit(std::move(e));
  }
};

void LatentIds::remember(const std::string& id, const std::string& text) {
  std::lock_guard lock(mutex_);
  if (const auto it = index_.find(id); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (text.size() > budget_) return;
  lru_.emplace_front(id, text);
  index_[id] = lru_.begin();
  used_ += text.size();
  while (used_ > budget_) {
    used_ -= lru_.back().second.size();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

std::optional<std::string> LatentIds::find(const std::string& id) {
  std::lock_guard lock(mutex_);
  const auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

Server::Server(std::unique_ptr<Engine> engine, ServerOptions options)
    : engine_(std::move(engine)),
      options_(std::move(options)),
      http_(std::make_unique<httplib::Server>()),
      latent_ids_(options_.latent_id_bytes) {
  if (options_.model_name.empty()) {
    options_.model_name = engine_->dir().filename().string();
    if (options_.model_name.empty()) {
      options_.model_name = engine_->dir().parent_path().filename();
    }
  }
  if (!options_.allow_control_tokens) {
    options_.defaults.refused_in_content = control_token_texts(engine_->tokenizer());
  }
  scheduler_ =
      std::make_unique<Scheduler>(options_.max_queue, options_.parallel, engine_->decoder());
  for (std::size_t i = 0; i < std::max(options_.cache_sessions, scheduler_->parallel()); ++i) {
    sessions_.push_back(engine_->new_session());
    session_last_use_.push_back(0);
  }
  if (context() < 2) throw Error("the context (-c) must hold at least two positions");
  // Every request waiting in the queue holds an HTTP thread; four more keep
  // /health and /metrics answering when the queue is full.
  const std::size_t threads = std::max(options_.max_connections, options_.max_queue + 4);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // One body alone may not pass the budget of all of them.
  options_.max_body_bytes = std::min(options_.max_body_bytes, options_.max_body_bytes_in_flight);
  http_->set_payload_max_length(options_.max_body_bytes);
  routes();
}

Server::~Server() {
  stop();
}

std::size_t Server::context() const {
  return options_.context > 0 ? options_.context : engine_->max_context();
}

std::string Server::response_id(const char* prefix) {
  std::lock_guard lock(id_mutex_);
  char hex[25];
  std::snprintf(hex, sizeof hex, "%016llx%08llx", static_cast<unsigned long long>(id_rng_()),
                static_cast<unsigned long long>(id_rng_() & 0xffffffffu));
  return prefix + std::string(hex);
}

Session& Server::pick_session(const PreparedPrompt& prompt) {
  // One slot per running generation and a session per slot: one is free.
  std::optional<std::size_t> best;
  std::size_t best_reuse = 0;
  for (std::size_t i = 0; i < sessions_.size(); ++i) {
    if (sessions_[i].busy()) continue;
    const std::size_t reuse =
        sessions_[i].reusable_positions(prompt.embeddings.data(), prompt.ids.size());
    if (!best || reuse > best_reuse ||
        (reuse == best_reuse && session_last_use_[i] < session_last_use_[*best])) {
      best = i;
      best_reuse = reuse;
    }
  }
  if (!best) throw Error("no free session: more generations run than --parallel");
  session_last_use_[*best] = ++session_clock_;
  return sessions_[*best];
}

int Server::bind() {
  // A client that hangs up mid-stream must not kill the server with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  if (options_.port == 0) {
    const int port = http_->bind_to_any_port(options_.host);
    if (port < 0) throw Error("cannot bind " + options_.host + " to any port");
    options_.port = port;
  } else if (!http_->bind_to_port(options_.host, options_.port)) {
    throw Error("cannot bind " + options_.host + ":" + std::to_string(options_.port) +
                " (in use? try --port 0)");
  }
  // cpp-httplib 0.11 listens with a backlog of 5, so a burst of connections
  // lost SYNs and waited a second for the retry; listening again on the
  // same socket raises it.
  if (const std::optional<int> fd = listening_fd(options_.port)) ::listen(*fd, SOMAXCONN);
  return options_.port;
}

void Server::run() {
  running_ = true;
  if (stop_requested_) {
    running_ = false;
    return;
  }
  {
    std::lock_guard lock(watch_mutex_);
    watch_stop_ = false;
  }
  watchdog_ = std::thread([this] { watch_connections(); });
  http_->listen_after_bind();
  {
    std::lock_guard lock(watch_mutex_);
    watch_stop_ = true;
  }
  watch_wake_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  running_ = false;
}

void Server::note_activity(const std::string& peer, int running_delta) {
  std::lock_guard lock(watch_mutex_);
  Activity& a = activity_[peer];
  a.running += running_delta;
  a.since = std::chrono::steady_clock::now();
}

void Server::watch_connections() {
  const auto deadline = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.request_deadline_seconds));
  std::unique_lock lock(watch_mutex_);
  while (!watch_wake_.wait_for(lock, std::chrono::milliseconds(250), [&] { return watch_stop_; })) {
    // The scan reads /proc without the lock: requests note their activity
    // under it, and should not wait on the file system.
    lock.unlock();
    const std::vector<Connection> connections = connections_on(options_.port);
    lock.lock();
    const auto now = std::chrono::steady_clock::now();
    std::map<std::string, Activity> seen;
    for (const Connection& c : connections) {
      const std::string peer = c.peer_host + " " + std::to_string(c.peer_port);
      const auto it = activity_.find(peer);
      Activity a = it == activity_.end() ? Activity{0, now, std::nullopt} : it->second;
      if (a.running > 0) {
        a.idle_mark.reset();
      } else if (const std::optional<std::uint64_t> read = bytes_read(c.fd)) {
        if (!a.idle_mark) a.idle_mark = *read;
        if (*read - *a.idle_mark > kMaxIdleReadBytes) {
          // A request line or header without end: reset, not closed, so the
          // sender fails at once instead of waiting on a closed window.
          const linger abort{1, 0};
          ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
          ::shutdown(c.fd, SHUT_RDWR);
          a.idle_mark = *read;
        }
      }
      if (a.running == 0 && options_.request_deadline_seconds > 0 && now - a.since > deadline) {
        ::shutdown(c.fd, SHUT_RDWR);  // httplib's read fails, and it closes the socket
        a.since = now;                // once is enough
      }
      seen[peer] = a;
    }
    for (const auto& [peer, a] : activity_) {
      if (a.running > 0) seen.emplace(peer, a);  // mid-request, whatever the scan saw
    }
    activity_.swap(seen);
  }
}

void Server::stop(std::chrono::milliseconds grace) {
  scheduler_->drain(grace);
  // Once the handlers have written their last responses. cpp-httplib's stop()
  // does nothing before listen() has started, so a stop that comes while
  // run() is on its way there (a test that stops at once, a slow machine)
  // is repeated until run() returns.
  stop_requested_ = true;
  http_->stop();
  while (running_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    http_->stop();
  }
}

void Server::send_error(httplib::Response& res, int status, const json& error) {
  {
    std::lock_guard lock(metrics_.mutex);
    ++metrics_.errors[status];
  }
  res.status = status;
  res.set_content(dump_json(error), "application/json");
}

std::shared_ptr<void> Server::reserve_parse(std::size_t body_bytes) {
  const std::size_t budget = options_.max_body_bytes_in_flight;
  const std::size_t cost =
      body_bytes > budget / kParseBytesPerBodyByte ? budget : body_bytes * kParseBytesPerBodyByte;
  {
    std::unique_lock lock(parse_mutex_);
    parse_free_.wait(lock, [&] { return parse_bytes_ + cost <= budget; });
    parse_bytes_ += cost;
  }
  return std::shared_ptr<void>(nullptr, [this, cost](void*) {
    // glibc keeps what a thread frees in that thread's arena: after a large
    // parse the pages go back to the system, or every HTTP thread would keep
    // the peak of the largest body it parsed (1.6 GiB for 16 clients of 15
    // MB bodies, bench/server_rss.py).
    if (cost >= kTrimAfterParseBytes) ::malloc_trim(0);
    {
      std::lock_guard lock(parse_mutex_);
      parse_bytes_ -= cost;
    }
    parse_free_.notify_all();
  });
}

std::shared_ptr<Job> Server::submit(std::shared_ptr<Job> job) {
  submit(std::vector{job});
  return job;
}

void Server::submit(const std::vector<std::shared_ptr<Job>>& jobs) {
  if (!scheduler_->submit(jobs)) {
    throw RequestError(503,
                       "the server is busy: " + std::to_string(scheduler_->max_queue()) +
                           " requests are already waiting; retry later",
                       "", "queue_full", "server_error");
  }
}

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

namespace {

// Compares in time independent of where the strings differ.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

}  // namespace

std::string Server::allowed_origin(const std::string& origin) const {
  for (const std::string& allowed : options_.cors_origins) {
    if (allowed == "*") return "*";
    if (!origin.empty() && allowed == origin) return origin;
  }
  return "";
}

json Server::props() const {
  const SamplingParams& s = options_.defaults.sampling;
  json params = {{"n_predict", options_.default_max_tokens},
                 {"temperature", s.temperature},
                 {"top_k", s.top_k},
                 {"top_p", s.top_p},
                 {"min_p", s.min_p},
                 {"repeat_penalty", s.repeat_penalty},
                 {"repeat_last_n", s.repeat_last_n},
                 {"frequency_penalty", s.frequency_penalty},
                 {"presence_penalty", s.presence_penalty}};
  if (options_.defaults.seed) params["seed"] = *options_.defaults.seed;
  json lclm = {{"checkpoint", engine_->lclm() != nullptr}};
  if (engine_->lclm() != nullptr) lclm["ratio"] = engine_->ratio();
  if (!options_.latent_files.empty()) {
    json files = json::array();
    for (const auto& [id, l] : options_.latent_files) {
      files.push_back({{"id", id}, {"latents", l->count()}, {"tokens", l->n_tokens}});
    }
    lclm["latent_files"] = files;
  }
  return {{"default_generation_settings", {{"n_ctx", context()}, {"params", params}}},
          {"total_slots", scheduler_->parallel()},
          {"model_alias", options_.model_name},
          {"model_path", engine_->dir().string()},
          // What the server renders chats with: the model's template, the
          // --chat-template file, or ChatML.
          {"chat_template", engine_->chat_template().source()},
          {"build_info", "lclm"},
          {"cache_type_k", kv_cache_type_name(engine_->cache_types().keys)},
          {"cache_type_v", kv_cache_type_name(engine_->cache_types().values)},
          {"lclm", lclm}};
}

void Server::routes() {
  http_->set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // With --cors, every answer (errors included: the handlers keep the
    // headers set here) carries the origin's permission, and a preflight is
    // answered here, before the API key is asked for (browsers send none
    // with it).
    if (!options_.cors_origins.empty()) {
      const std::string origin = allowed_origin(req.get_header_value("Origin"));
      if (!origin.empty()) {
        res.set_header("Access-Control-Allow-Origin", origin);
        if (origin != "*") res.set_header("Vary", "Origin");
      }
      if (req.method == "OPTIONS") {
        res.status = 204;
        if (!origin.empty()) {
          res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
          res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
          res.set_header("Access-Control-Max-Age", "600");
        }
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (options_.api_key.empty() || req.path == "/health") {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const std::string auth = req.get_header_value("Authorization");
    const std::string_view prefix = "Bearer ";
    if (auth.rfind(prefix, 0) == 0 &&
        same_secret(std::string_view(auth).substr(prefix.size()), options_.api_key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    send_error(res, 401,
               error_json(auth.empty() ? "missing API key: send Authorization: Bearer KEY"
                                       : "invalid API key",
                          "invalid_request_error", "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http_->set_logger([this](const httplib::Request& req, const httplib::Response&) {
    note_activity(req.remote_addr + " " + std::to_string(req.remote_port), 0);
  });
  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"status", "ok"},
                         {"model", options_.model_name},
                         {"queue_depth", scheduler_->waiting()},
                         {"running", scheduler_->running()},
                         {"parallel", scheduler_->parallel()},
                         {"busy", scheduler_->running() > 0}}
                        .dump(),
                    "application/json");
  });
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json model = {{"id", options_.model_name},
                        {"object", "model"},
                        {"created", 0},
                        {"owned_by", "lclm"},
                        {"lclm_checkpoint", engine_->lclm() != nullptr},
                        {"context_length", context()}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(),
                    "application/json");
  });
  // Bodies are read here, not by httplib, so that the size limit holds for
  // chunked bodies too (httplib 0.11 checks it only against Content-Length:
  // a 200 MB chunked body was read whole).
  const auto post = [this](const char* path, auto handle) {
    http_->Post(path, [this, handle](const httplib::Request& req, httplib::Response& res,
                                     const httplib::ContentReader& read) {
      // The connection counts as busy (the watchdog leaves it alone) until
      // the last holder of `busy` lets go: a stream holds it until it ends.
      // Its body's bytes count against the server-wide budget for as long.
      const std::string peer = req.remote_addr + " " + std::to_string(req.remote_port);
      note_activity(peer, +1);
      auto held = std::make_shared<std::size_t>(0);
      const std::shared_ptr<void> busy(nullptr, [this, peer, held](void*) {
        body_bytes_ -= *held;
        if (*held >= kTrimAfterParseBytes) ::malloc_trim(0);  // see reserve_parse
        note_activity(peer, -1);
      });
      std::string body;
      bool too_large = false, too_slow = false, too_busy = false;
      // A declared length is admitted whole, or refused, before a byte is
      // read: counted chunk by chunk, bodies arriving together each took a
      // share of the budget until none could finish (24 clients of 60 MB:
      // every one refused, 1.4 GiB resident). Room for it is made up front,
      // so the body does not grow by doubling (pages are used as bytes come).
      // Bodies up to 1/256 of the budget (1 MiB by default) are counted but
      // never refused, so that connections declaring large bodies they never
      // send cannot shut out ordinary requests; 64 connections of those are
      // a quarter of the budget at most.
      const std::size_t always = options_.max_body_bytes_in_flight / 256;
      const auto passes_budget = [&](std::size_t total, std::size_t size) {
        return total > options_.max_body_bytes_in_flight && size > always;
      };
      const auto declared = req.get_header_value<std::uint64_t>("Content-Length");
      if (declared > 0 && declared <= options_.max_body_bytes) {
        if (passes_budget(body_bytes_.fetch_add(declared) + declared, declared)) {
          body_bytes_ -= declared;
          too_busy = true;
        } else {
          *held = declared;
          body.reserve(declared);
        }
      }
      const auto read_until = std::chrono::steady_clock::now() +
                              std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(options_.request_deadline_seconds));
      const bool refused_unread = too_busy;
      const bool whole = !too_busy && read([&](const char* data, std::size_t size) {
        if (body.size() + size > options_.max_body_bytes) {
          too_large = true;
          return false;  // stops reading
        }
        if (options_.request_deadline_seconds > 0 &&
            std::chrono::steady_clock::now() > read_until) {
          too_slow = true;
          return false;
        }
        // A chunked body is counted as it comes (a declared one already is).
        if (body.size() + size > *held) {
          const std::size_t more = body.size() + size - *held;
          if (passes_budget(body_bytes_.fetch_add(more) + more, body.size() + size)) {
            body_bytes_ -= more;
            too_busy = true;
            return false;
          }
          *held += more;
        }
        body.append(data, size);
        return true;
      });
      // httplib skips a body whose Content-Length is over the limit unread.
      too_large = too_large || (!whole && req.get_header_value<std::uint64_t>("Content-Length") >
                                              options_.max_body_bytes);
      if (too_large) {
        res.set_header("Connection", "close");
        return send_error(res, 413,
                          error_json("the request body is larger than " +
                                         std::to_string(options_.max_body_bytes) + " bytes",
                                     "invalid_request_error", "", "body_too_large"));
      }
      if (too_slow) {
        res.set_header("Connection", "close");
        return send_error(
            res, 408,
            error_json("the request body took longer than " +
                           std::to_string(options_.request_deadline_seconds) + " s to arrive",
                       "invalid_request_error", "", "request_timeout"));
      }
      if (refused_unread) {
        // The declared body is read and dropped (up to the deadline) before
        // the answer, so the client, still sending it, gets the 503: left
        // unread, httplib would read it as the next request's line.
        std::size_t dropped = 0;
        read([&](const char*, std::size_t size) {
          dropped += size;
          return dropped <= options_.max_body_bytes &&
                 (options_.request_deadline_seconds <= 0 ||
                  std::chrono::steady_clock::now() <= read_until);
        });
      }
      if (too_busy) {
        res.set_header("Connection", "close");
        res.set_header("Retry-After", "1");
        return send_error(
            res, 503,
            error_json("the server holds as many request bytes as it may (" +
                           std::to_string(options_.max_body_bytes_in_flight) +
                           ", --max-body-bytes-in-flight); retry when running requests finish",
                       "server_error", "", "server_busy"));
      }
      if (!whole) {
        return send_error(res, 400,
                          error_json("the request body could not be read", "invalid_request_error",
                                     "", "invalid_body"));
      }
      handle(req, body, res, busy);
    });
  };
  using Busy = std::shared_ptr<void>;
  post("/v1/chat/completions",
       [this](const httplib::Request& req, std::string& body, httplib::Response& res,
              const Busy& busy) { handle_completion(req, body, res, true, busy); });
  post("/v1/completions",
       [this](const httplib::Request& req, std::string& body, httplib::Response& res,
              const Busy& busy) { handle_completion(req, body, res, false, busy); });
  post("/v1/compress", [this](const httplib::Request&, std::string& body, httplib::Response& res,
                              const Busy&) { handle_compress(body, res); });
  post("/tokenize", [this](const httplib::Request&, std::string& body, httplib::Response& res,
                           const Busy&) { handle_tokenize(body, res); });
  post("/detokenize", [this](const httplib::Request&, std::string& body, httplib::Response& res,
                             const Busy&) { handle_detokenize(body, res); });
  post("/apply-template", [this](const httplib::Request&, std::string& body, httplib::Response& res,
                                 const Busy&) { handle_apply_template(body, res); });
  http_->Get("/props", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(props().dump(), "application/json");
  });
  http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const int status = res.status;
    send_error(res, status,
               error_json(status == 404   ? "no such endpoint: " + req.method + " " + req.path
                          : status == 413 ? "the request body is too large"
                                          : "HTTP error " + std::to_string(status),
                          "invalid_request_error"));
  });
  http_->set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_error(res, 500, error_json(message, "server_error"));
      });
}

void Server::handle_completion(const httplib::Request& req, std::string& request_body,
                               httplib::Response& res, bool chat,
                               const std::shared_ptr<void>& busy) {
  ++(chat ? metrics_.chat : metrics_.completions);
  try {
    std::shared_ptr<CompletionRequest> r;
    {  // The parsed body lives only while the request is read from it.
      const auto parsing = reserve_parse(request_body.size());
      const nlohmann::ordered_json body = parse_body(request_body);
      const auto lookup = [this](const std::string& id) { return latent_ref(id); };
      r = std::make_shared<CompletionRequest>(
          chat ? parse_chat_request(body, options_.defaults, lookup, engine_->chat_template())
               : parse_completion_request(body, options_.defaults));
    }
    // The request holds what the body said; its bytes stay counted against
    // --max-body-bytes-in-flight until the answer is sent.
    std::string().swap(request_body);
    if (r->model.empty()) r->model = options_.model_name;
    if (r->model != options_.model_name) {
      throw RequestError(404,
                         "the model '" + r->model + "' does not exist; this server runs '" +
                             options_.model_name + "' (GET /v1/models)",
                         "model", "model_not_found");
    }
    try {
      engine_->ratio(r->ratio);
    } catch (const Error& e) {
      throw RequestError(400, e.what(), "lclm.ratio", "invalid_ratio");
    }
    const auto vocab = static_cast<std::int64_t>(engine_->decoder().config().vocab_size);
    for (const auto& [token, bias] : r->sampling.logit_bias) {
      if (token >= vocab) {
        const std::string param = "logit_bias." + std::to_string(token);
        throw RequestError(400,
                           "'" + param + "' names a token past the vocabulary (" +
                               std::to_string(vocab) + " tokens)",
                           param, "invalid_value");
      }
    }
    if (!r->seeded) r->sampling.seed = std::random_device{}();
    if (r->n > scheduler_->max_queue()) {
      throw RequestError(400,
                         "'n' is " + std::to_string(r->n) + " and this server queues at most " +
                             std::to_string(scheduler_->max_queue()) + " requests (--max-queue)",
                         "n", "invalid_value");
    }
    const std::string id = response_id(chat ? "chatcmpl-" : "cmpl-");
    const std::int64_t created = std::time(nullptr);
    // One job per choice, all sending their events to one queue: they decode
    // together (continuous batching), each with its own session and seed.
    const std::size_t n = r->n;
    auto events = std::make_shared<EventQueue>();
    std::vector<std::shared_ptr<Job>> jobs;
    for (std::size_t i = 0; i < n; ++i) {
      auto run = std::make_shared<CompletionRun>();
      run->r = r;
      run->choice = i;
      jobs.push_back(
          std::make_shared<Job>([this, run](Job& j) { return start_completion(*run, j); },
                                [this, run](Job& j) { finish_completion(*run, j); }));
      jobs.back()->share_events(events, i);
    }
    submit(jobs);
    const auto cancel_all = [jobs] {
      for (const auto& job : jobs) job->cancel();
    };

    // cpp-httplib does not tell a handler that its client has gone, so the
    // socket is watched while the request waits or runs (every 200 ms, events
    // or not): a client that hangs up cancels its request instead of costing
    // the whole generation. The socket is looked up at the first check.
    std::optional<std::optional<int>> fd;
    auto checked = std::chrono::steady_clock::now();
    const auto next_event = [&]() -> std::optional<Event> {
      for (;;) {
        std::optional<Event> e = events->next_for(std::chrono::milliseconds(200));
        const auto now = std::chrono::steady_clock::now();
        if (now - checked >= std::chrono::milliseconds(200)) {
          checked = now;
          if (!fd) fd = find_connection_fd(req.remote_addr, req.remote_port, req.local_port);
          if (*fd && peer_closed(**fd)) {
            cancel_all();
            return std::nullopt;
          }
        }
        if (e) return e;
      }
    };
    // Every choice has started (its prompt fits) before the answer begins;
    // the first failure is the answer, and the other choices are cancelled.
    // Text that comes before another choice's start is kept for later.
    std::deque<Event> early;
    for (std::size_t started = 0; started < n;) {
      std::optional<Event> e = next_event();
      if (!e) return;
      if (e->kind == Event::Kind::Failed) {
        cancel_all();
        return send_error(res, e->status, e->error);
      }
      if (e->kind == Event::Kind::Started) {
        ++started;
      } else {
        early.push_back(std::move(*e));
      }
    }
    const auto next_after_start = [&]() -> std::optional<Event> {
      if (early.empty()) return next_event();
      Event e = std::move(early.front());
      early.pop_front();
      return e;
    };
    // A choice's text through the tool-call parser, when the request has tools.
    const auto tool_parser = [this, r] {
      auto parser = std::make_shared<ToolCallParser>([this] { return response_id("call_"); },
                                                     r->parallel_tool_calls);
      if (r->forced_call) {
        std::vector<ToolCall> none;
        parser->push(kForcedCallOpening, none);  // held back: the block is open
      }
      return parser;
    };
    if (!r->stream) {
      std::vector<Choice> choices(n);
      std::vector<CompletionUsage> usages(n);
      for (std::size_t finished = 0; finished < n;) {
        std::optional<Event> next = next_after_start();
        if (!next) return;
        Event& e = *next;
        Choice& c = choices[e.choice];
        if (e.kind == Event::Kind::Text) {
          c.text += e.text;
          std::move(e.logprobs.begin(), e.logprobs.end(), std::back_inserter(c.logprobs));
        }
        if (e.kind == Event::Kind::Failed) {
          cancel_all();
          return send_error(res, e.status, e.error);
        }
        if (e.kind == Event::Kind::Finished) {
          ++finished;
          c.finish_reason = e.finish_reason;
          usages[e.choice] = e.usage;
          if (r->tools) {
            // A forced call: the prompt opened the block, the grammar ended the JSON.
            auto parser = tool_parser();
            if (r->forced_call) c.text += kForcedCallClosing;
            std::string content = parser->push(c.text, c.tool_calls);
            c.text = content + parser->flush();
          }
        }
      }
      res.set_content(
          dump_json(completion_json(*r, id, created, choices, usage_of_choices(usages))),
          "application/json");
      return;
    }
    // Streaming: each choice's role chunk, then one event per piece of text
    // (of whichever choice it is), each choice's end, optionally the usage,
    // and [DONE]. A failed write means the client left: the jobs are
    // cancelled and the worker stops generating at the next token.
    struct ChoiceStream {
      std::size_t text_offset = 0;  // completions' logprobs.text_offset
      // With tools, <tool_call> blocks are held back and sent as tool_calls deltas.
      std::shared_ptr<ToolCallParser> tool_calls;
    };
    struct Stream {
      bool roles_sent = false;
      std::size_t finished = 0;
      std::vector<ChoiceStream> choices;
      std::vector<CompletionUsage> usages;
      std::deque<Event> early;
    };
    auto stream = std::make_shared<Stream>();
    stream->choices.resize(n);
    stream->usages.resize(n);
    stream->early = std::move(early);
    if (r->tools) {
      for (ChoiceStream& c : stream->choices) c.tool_calls = tool_parser();
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, r, events, cancel_all, id, created, stream, n, busy](std::size_t,
                                                                    httplib::DataSink& sink) {
          const auto give_up = [&] {
            cancel_all();
            return false;
          };
          if (!stream->roles_sent) {
            stream->roles_sent = true;
            const std::string empty;
            for (std::size_t i = 0; i < n; ++i) {
              const json chunk = chunk_json(*r, id, created, r->chat ? nullptr : &empty, nullptr,
                                            true, nullptr, 0, i);
              if (!write_event(sink, chunk.dump())) return give_up();
            }
            return true;
          }
          Event e;
          if (stream->early.empty()) {
            e = events->next();
          } else {
            e = std::move(stream->early.front());
            stream->early.pop_front();
          }
          const std::size_t i = e.choice;
          ChoiceStream& c = stream->choices[i];
          const std::vector<TokenLogprob>* logprobs = r->top_logprobs >= 0 ? &e.logprobs : nullptr;
          // A piece of content (none when a tool call holds it all back),
          // then the tool calls it completed.
          const auto send_text = [&](const std::string& text) {
            if (text.empty() && !(logprobs && !logprobs->empty())) return true;
            const json chunk =
                chunk_json(*r, id, created, &text, nullptr, false, logprobs, c.text_offset, i);
            c.text_offset += text.size();
            return write_event(sink, dump_json(chunk));
          };
          // Text through the tool-call parser: the content it lets through,
          // then a chunk per call it completed.
          const auto send_through_parser = [&](std::string_view text) {
            std::vector<ToolCall> calls;
            if (!send_text(c.tool_calls->push(text, calls))) return false;
            std::size_t index = c.tool_calls->calls() - calls.size();
            for (const ToolCall& call : calls) {
              const json chunk = tool_call_chunk_json(*r, id, created, call, index++, i);
              if (!write_event(sink, dump_json(chunk))) return false;
            }
            return true;
          };
          if (e.kind == Event::Kind::Text) {
            if (!c.tool_calls) return send_text(e.text) ? true : give_up();
            return send_through_parser(e.text) ? true : give_up();
          }
          if (e.kind == Event::Kind::Failed) {
            // The answer ends with the error; the other choices stop.
            {
              std::lock_guard lock(metrics_.mutex);
              ++metrics_.errors[e.status];
            }
            cancel_all();
            if (!write_event(sink, dump_json(e.error)) || !write_event(sink, "[DONE]")) {
              return false;
            }
            sink.done();
            return true;
          }
          if (e.kind != Event::Kind::Finished) return true;
          if (c.tool_calls) {
            logprobs = nullptr;
            if (r->forced_call && !send_through_parser(kForcedCallClosing)) return give_up();
            if (!send_text(c.tool_calls->flush())) return give_up();
          }
          const std::string finish_reason =
              c.tool_calls && c.tool_calls->calls() > 0 ? "tool_calls" : e.finish_reason;
          if (!write_event(
                  sink, chunk_json(*r, id, created, nullptr, &finish_reason, false, nullptr, 0, i)
                            .dump())) {
            return give_up();
          }
          stream->usages[i] = e.usage;
          if (++stream->finished < n) return true;
          bool ok = true;
          if (r->include_usage) {
            json usage = chunk_json(*r, id, created, nullptr, nullptr);
            usage["choices"] = json::array();
            usage["usage"] = usage_json(usage_of_choices(stream->usages));
            ok = write_event(sink, dump_json(usage));
          }
          if (ok) ok = write_event(sink, "[DONE]");
          if (!ok) return give_up();
          sink.done();
          return true;
        },
        [cancel_all](bool success) {
          if (!success) cancel_all();
        });
  } catch (const RequestError& e) {
    send_error(res, e.status, error_json(e));
  }
}

PreparedPrompt Server::prepare_request(const CompletionRequest& r) {
  try {
    // The context is checked on the prompt's bytes and tokens before anything
    // is compressed: a huge message costs a scan, not the encoder's time.
    std::vector<Latents> supplied;
    for (const auto& l : r.supplied) supplied.push_back(*l);
    return engine_->prepare(r.prompt, r.ratio, context() - 1, supplied);
  } catch (const PromptTooLong& e) {
    throw RequestError(400,
                       "the prompt is " + e.sizes() + ", which leaves no room to generate in the " +
                           std::to_string(context()) + "-position context",
                       r.chat ? "messages" : "prompt", "context_length_exceeded");
  } catch (const Error& e) {
    throw RequestError(400, e.what(), r.chat ? "messages" : "prompt", "invalid_prompt");
  }
}

Generation* Server::start_completion(CompletionRun& run, Job& job) {
  const CompletionRequest& r = *run.r;
  if (job.cancelled()) {  // its client left while it waited
    ++metrics_.cancelled;
    return nullptr;
  }
  run.t0 = std::chrono::steady_clock::now();
  PreparedPrompt& p = run.p;
  p = prepare_request(r);
  // prepare() has left room for at least one token; max_tokens may ask more.
  const std::size_t ctx = context(), n = p.ids.size();
  if (r.max_tokens && n + static_cast<std::size_t>(*r.max_tokens) > ctx) {
    throw RequestError(400,
                       "the prompt is " +
                           describe_positions(n, p.stats.plain_tokens, p.stats.latents) +
                           " and max_tokens is " + std::to_string(*r.max_tokens) +
                           ": more than the " + std::to_string(ctx) + "-position context",
                       "max_tokens", "context_length_exceeded");
  }
  job.emit(Event{});  // Started

  GenerationOptions o;
  o.context = ctx;
  o.prefill_chunk = options_.prefill_chunk;
  o.n_predict = r.max_tokens ? *r.max_tokens
                             : static_cast<int>(std::min<std::size_t>(
                                   static_cast<std::size_t>(options_.default_max_tokens), ctx - n));
  o.sampling = r.sampling;
  o.sampling.seed += run.choice;
  o.top_logprobs = r.top_logprobs;
  o.stop_ids = engine_->stop_ids();
  if (r.json_grammar) {
    // Kept from the first JSON request on: later ones do not sort the vocabulary again.
    if (!json_vocab_) json_vocab_ = JsonConstraint::vocab(engine_->tokenizer());
    o.constraint = std::make_shared<JsonConstraint>(r.json_grammar, engine_->tokenizer(), o.stop_ids);
  }
  run.filter.emplace(r.stop);
  run.session = &pick_session(p);
  run.generation.emplace(*run.session, p.ids, p.embeddings.data(), o,
                         [this, &run, &job](std::int32_t id) {
                           if (job.cancelled()) return false;
                           const Tokenizer& tokenizer = engine_->tokenizer();
                           const std::string bytes = tokenizer.token_bytes(id);
                           if (const TokenLogprobs* lp = run.generation->logprobs()) {
                             TokenLogprob t{bytes, lp->logprob, {}};
                             for (const auto& [alt, logprob] : lp->top) {
                               t.top.emplace_back(tokenizer.token_bytes(alt), logprob);
                             }
                             run.token_bytes += bytes.size();
                             run.pending.emplace_back(std::move(t), run.token_bytes);
                           }
                           run.send(job, run.filter->push(run.utf8.push(bytes)));
                           return !run.filter->stopped();
                         });
  return &*run.generation;
}

void Server::finish_completion(CompletionRun& run, Job& job) {
  const CompletionRequest& r = *run.r;
  // The generation lets go of its session here, whatever happens next (the
  // job, and with it this run, may outlive the request's slot).
  struct Release {
    CompletionRun& run;
    bool keep_cache;
    ~Release() {
      run.generation.reset();
      if (!keep_cache) run.session->reset();
    }
  } release{run, options_.cache_sessions > 0};
  GenerationStats s;
  try {
    s = run.generation->finish();
  } catch (...) {
    if (job.shutting_down()) {
      ++metrics_.cancelled;
      throw RequestError(503, "the server shut down before the answer was finished", "",
                         "shutting_down", "server_error");
    }
    if (job.cancelled()) {  // its client left while the prompt was read
      ++metrics_.cancelled;
      return;
    }
    throw;
  }
  run.send(job, run.filter->push(run.utf8.flush()));
  run.send(job, run.filter->flush());

  if (job.shutting_down()) {
    ++metrics_.cancelled;
    throw RequestError(503,
                       "the server shut down before the answer was finished (" +
                           std::to_string(s.generated_tokens) + " tokens generated)",
                       "", "shutting_down", "server_error");
  }
  const PreparedPrompt& p = run.p;
  const std::size_t n = p.ids.size();
  Event done;
  done.kind = Event::Kind::Finished;
  done.finish_reason = s.stop == StopReason::StopToken || run.filter->stopped() ? "stop" : "length";
  CompletionUsage& u = done.usage;
  u.prompt_tokens = n;
  u.cached_tokens = s.reused_positions;
  u.ratio = engine_->ratio(r.ratio);
  u.completion_tokens = s.generated_tokens;
  u.compressed_tokens = p.stats.compressed_tokens;
  u.latents = p.stats.latents;
  u.regions = p.stats.regions;
  u.cache_hits = p.stats.cache_hits;
  u.remote_cache_hits = p.stats.remote_hits;
  u.compress_ms = p.stats.compress_seconds * 1e3;
  u.ttft_ms = (p.stats.compress_seconds + s.ttft_seconds) * 1e3;
  metrics_.prompt_tokens += n;
  metrics_.completion_tokens += s.generated_tokens;
  metrics_.compressed_tokens += p.stats.compressed_tokens;
  metrics_.latents += p.stats.latents;
  if (job.cancelled()) ++metrics_.cancelled;
  ++metrics_.finished;
  {
    std::lock_guard lock(metrics_.mutex);
    metrics_.ttft_seconds += u.ttft_ms / 1e3;
    metrics_.request_seconds += seconds_since(run.t0);
  }
  job.emit(std::move(done));
}

void Server::handle_compress(const std::string& request_body, httplib::Response& res) {
  ++metrics_.compress;
  try {
    std::shared_ptr<Job> job;
    {  // Parsed under the parse budget; the job holds what it needs.
      const auto parsing = reserve_parse(request_body.size());
      const nlohmann::ordered_json body = parse_body(request_body);
      if (const auto format = body.find("format"); format != body.end() && *format != "latents") {
        if (*format != "prompt_embeds") {
          throw RequestError(400, "'format' must be \"latents\" or \"prompt_embeds\"", "format",
                             "invalid_value");
        }
        // The prompt as a chat request ("messages") or a completion ("prompt") has it.
        const auto lookup = [this](const std::string& id) { return latent_ref(id); };
        auto r = std::make_shared<CompletionRequest>(
            body.contains("messages")
                ? parse_chat_request(body, options_.defaults, lookup, engine_->chat_template())
                : parse_completion_request(body, options_.defaults));
        DType dtype = engine_->decoder().weight_dtype();
        if (dtype != DType::BF16 && dtype != DType::F16) dtype = DType::F32;
        if (const auto d = body.find("dtype"); d != body.end()) {
          const std::map<std::string, DType> names = {
              {"bfloat16", DType::BF16}, {"float16", DType::F16}, {"float32", DType::F32}};
          const auto it = d->is_string() ? names.find(d->get<std::string>()) : names.end();
          if (it == names.end()) {
            throw RequestError(400, "'dtype' must be \"bfloat16\", \"float16\" or \"float32\"",
                               "dtype", "invalid_value");
          }
          dtype = it->second;
        }
        job = submit(
            std::make_shared<Job>([this, r, dtype](Job& j) { run_prompt_embeds(*r, dtype, j); }));
      } else {
        if (!engine_->lclm()) {
          throw RequestError(400, engine_->dir().string() + " is not an LCLM checkpoint", "model",
                             "not_an_lclm");
        }
        auto texts = std::make_shared<std::vector<std::string>>(parse_compress_request(body));
        job = submit(std::make_shared<Job>([this, texts](Job& j) { run_compress(*texts, j); }));
      }
    }
    const Event e = job->next();
    if (e.kind == Event::Kind::Failed) return send_error(res, e.status, e.error);
    res.set_content(dump_json(e.payload), "application/json");
  } catch (const RequestError& e) {
    send_error(res, e.status, error_json(e));
  }
}

void Server::handle_tokenize(const std::string& request_body, httplib::Response& res) {
  try {
    const auto parsing = reserve_parse(request_body.size());
    const TokenizeRequest r = parse_tokenize_request(parse_body(request_body));
    const Tokenizer& tokenizer = engine_->tokenizer();
    const std::vector<std::int32_t> ids = tokenizer.encode(r.content);
    json tokens = json::array();
    for (const std::int32_t id : ids) {
      if (r.with_pieces) {
        tokens.push_back({{"id", id}, {"piece", tokenizer.decode(std::span(&id, 1))}});
      } else {
        tokens.push_back(id);
      }
    }
    res.set_content(dump_json(json{{"tokens", tokens}}), "application/json");
  } catch (const RequestError& e) {
    send_error(res, e.status, error_json(e));
  }
}

void Server::handle_detokenize(const std::string& request_body, httplib::Response& res) {
  try {
    const auto parsing = reserve_parse(request_body.size());
    const std::vector<std::int32_t> ids =
        parse_detokenize_request(parse_body(request_body), engine_->decoder().config().vocab_size);
    res.set_content(dump_json(json{{"content", engine_->tokenizer().decode(ids)}}),
                    "application/json");
  } catch (const RequestError& e) {
    send_error(res, e.status, error_json(e));
  }
}

void Server::handle_apply_template(const std::string& request_body, httplib::Response& res) {
  try {
    const auto parsing = reserve_parse(request_body.size());
    const auto lookup = [this](const std::string& id) { return latent_ref(id); };
    const CompletionRequest r = parse_chat_request(parse_body(request_body), options_.defaults,
                                                   lookup, engine_->chat_template());
    res.set_content(dump_json(json{{"prompt", r.prompt}}), "application/json");
  } catch (const RequestError& e) {
    send_error(res, e.status, error_json(e));
  }
}

void Server::run_prompt_embeds(const CompletionRequest& r, DType dtype, Job& job) {
  const PreparedPrompt p = prepare_request(r);
  const auto hidden = static_cast<std::size_t>(engine_->decoder().config().hidden_size);
  const std::string bytes = torch_tensor_bytes(p.embeddings.data(), p.ids.size(), hidden, dtype);
  metrics_.compressed_tokens += p.stats.compressed_tokens;
  metrics_.latents += p.stats.latents;
  const json usage = {{"prompt_tokens", p.stats.plain_tokens},
                      {"compressed_tokens", p.stats.compressed_tokens},
                      {"latents", p.stats.latents},
                      {"regions", p.stats.regions},
                      {"cache_hits", p.stats.cache_hits},
                      {"compress_ms", p.stats.compress_seconds * 1e3}};
  Event done;
  done.kind = Event::Kind::Finished;
  done.payload = {{"object", "prompt_embeds"},
                  {"model", options_.model_name},
                  {"prompt_embeds", base64_encode(bytes)},
                  {"shape", json::array({p.ids.size(), hidden})},
                  {"dtype", dtype == DType::BF16  ? "bfloat16"
                            : dtype == DType::F16 ? "float16"
                                                  : "float32"},
                  {"usage", usage}};
  job.emit(std::move(done));
}

void Server::run_compress(const std::vector<std::string>& texts, Job& job) {
  LclmModel& lclm = *engine_->lclm();
  json data = json::array();
  for (std::size_t i = 0; i < texts.size(); ++i) {
    bool hit = false;
    const Latents l = lclm.compress(texts[i], std::nullopt, &hit);
    const std::string id = new_latent_id();
    latent_ids_.remember(id, texts[i]);
    lclm.cache().store_text(id, texts[i]);
    metrics_.compressed_tokens += l.n_tokens;
    metrics_.latents += l.count();
    data.push_back({{"object", "latents"},
                    {"index", i},
                    {"id", id},
                    {"tokens", l.n_tokens},
                    {"latents", l.count()},
                    {"compression_ratio", lclm.config().compression_ratio},
                    {"cached", hit}});
  }
  Event done;
  done.kind = Event::Kind::Finished;
  done.payload = {{"object", "list"}, {"model", options_.model_name}, {"data", data}};
  job.emit(std::move(done));
}

std::string Server::new_latent_id() {
  unsigned char bytes[16];
  for (std::size_t got = 0; got < sizeof bytes;) {
    const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno != EINTR) throw Error("getrandom failed: the kernel gave no random bytes");
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  std::string id = "lat_";
  for (const unsigned char b : bytes) {
    id += "0123456789abcdef"[b >> 4];
    id += "0123456789abcdef"[b & 15];
  }
  return id;
}

std::optional<LatentRef> Server::latent_ref(const std::string& id) {
  if (const auto it = options_.latent_files.find(id); it != options_.latent_files.end()) {
    return LatentRef{"", it->second};
  }
  if (std::optional<std::string> text = latent_text(id)) return LatentRef{std::move(*text), {}};
  return std::nullopt;
}

std::optional<std::string> Server::latent_text(const std::string& id) {
  if (auto text = latent_ids_.find(id)) return text;
  LclmModel* lclm = engine_->lclm();
  // Only the ids this server makes go to the store: nothing else can be there.
  const bool well_formed = id.size() == 36 && id.starts_with("lat_") &&
                           id.find_first_not_of("0123456789abcdef", 4) == std::string::npos;
  if (lclm == nullptr || !well_formed) return std::nullopt;
  std::optional<std::string> text = lclm->cache().find_text(id);
  if (text) latent_ids_.remember(id, *text);
  return text;
}

std::string Server::metrics_text() const {
  std::ostringstream m;
  const auto metric = [&](const char* name, const char* type, const char* help) {
    m << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  metric("lclm_requests_total", "counter", "Requests received, by endpoint.");
  m << "lclm_requests_total{endpoint=\"chat_completions\"} " << metrics_.chat << "\n"
    << "lclm_requests_total{endpoint=\"completions\"} " << metrics_.completions << "\n"
    << "lclm_requests_total{endpoint=\"compress\"} " << metrics_.compress << "\n";
  metric("lclm_request_errors_total", "counter", "Error responses, by HTTP status.");
  {
    std::lock_guard lock(metrics_.mutex);
    for (const auto& [status, count] : metrics_.errors) {
      m << "lclm_request_errors_total{status=\"" << status << "\"} " << count << "\n";
    }
  }
  metric("lclm_requests_cancelled_total", "counter",
         "Streams whose client went away before the end.");
  m << "lclm_requests_cancelled_total " << metrics_.cancelled << "\n";
  metric("lclm_generations_total", "counter", "Generations run to their end or cancelled.");
  m << "lclm_generations_total " << metrics_.finished << "\n";
  metric("lclm_prompt_tokens_total", "counter", "Decoder positions prefilled (latents included).");
  m << "lclm_prompt_tokens_total " << metrics_.prompt_tokens << "\n";
  metric("lclm_completion_tokens_total", "counter", "Tokens generated.");
  m << "lclm_completion_tokens_total " << metrics_.completion_tokens << "\n";
  metric("lclm_compressed_tokens_total", "counter", "Encoder tokens in memory regions.");
  m << "lclm_compressed_tokens_total " << metrics_.compressed_tokens << "\n";
  metric("lclm_latents_total", "counter", "Latents those regions became.");
  m << "lclm_latents_total " << metrics_.latents << "\n";
  metric("lclm_queue_depth", "gauge", "Requests waiting for the worker.");
  m << "lclm_queue_depth " << scheduler_->waiting() << "\n";
  metric("lclm_requests_running", "gauge", "Requests decoded together now (up to --parallel).");
  m << "lclm_requests_running " << scheduler_->running() << "\n";
  metric("lclm_request_body_bytes", "gauge",
         "Request body bytes held now (at most --max-body-bytes-in-flight).");
  m << "lclm_request_body_bytes " << body_bytes_.load() << "\n";
  {
    std::lock_guard lock(metrics_.mutex);
    metric("lclm_time_to_first_token_seconds_sum", "counter",
           "Time to first token (compression included), summed over generations.");
    m << "lclm_time_to_first_token_seconds_sum " << metrics_.ttft_seconds << "\n";
    metric("lclm_generation_seconds_sum", "counter",
           "Worker time per generation, summed over generations.");
    m << "lclm_generation_seconds_sum " << metrics_.request_seconds << "\n";
  }
  if (const LclmModel* lclm = engine_->lclm()) {
    const LatentCacheStats c = lclm->cache().stats();
    metric("lclm_latent_cache_hits_total", "counter", "Regions found in the latent cache.");
    m << "lclm_latent_cache_hits_total{level=\"memory\"} " << c.memory_hits << "\n"
      << "lclm_latent_cache_hits_total{level=\"disk\"} " << c.disk_hits << "\n"
      << "lclm_latent_cache_hits_total{level=\"remote\"} " << c.remote_hits << "\n";
    metric("lclm_latent_cache_misses_total", "counter", "Regions the encoder had to compress.");
    m << "lclm_latent_cache_misses_total " << c.misses << "\n";
  }
  return m.str();
}

}  // namespace lclm::server
