// The request queue of `lclm serve`: one worker thread runs the jobs in
// arrival order (the engine already spreads one request over every core), and
// a bounded queue refuses work beyond its size instead of growing without end.
// A job talks back to its HTTP thread through a queue of events.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "server/openai_api.h"

namespace lclm::server {

struct Event {
  enum class Kind { Started, Text, Finished, Failed };
  Kind kind = Kind::Started;
  std::string text;           // Text: a piece of the answer
  std::string finish_reason;  // Finished: "stop" or "length"
  CompletionUsage usage;      // Finished
  nlohmann::json payload;     // Finished: a whole answer (compress)
  int status = 0;             // Failed: the HTTP status
  nlohmann::json error;       // Failed: the OpenAI error object
};

Event failed_event(const RequestError& e);

class Job {
 public:
  explicit Job(std::function<void(Job&)> work) : work_(std::move(work)) {}

  // The worker's side.
  void run() { work_(*this); }
  void emit(Event e);
  bool cancelled() const { return cancelled_.load(); }

  // The HTTP thread's side: blocks until the next event, or (next_for)
  // until one comes or `wait` passes.
  Event next();
  std::optional<Event> next_for(std::chrono::milliseconds wait);
  void cancel() { cancelled_.store(true); }
  // Cancelled because the server is shutting down: the worker fails the job
  // (503 shutting_down) instead of finishing it as if it had run its length.
  void cancel_for_shutdown() {
    shutdown_.store(true);
    cancel();
  }
  bool shutting_down() const { return shutdown_.load(); }

 private:
  std::function<void(Job&)> work_;
  std::atomic<bool> cancelled_{false}, shutdown_{false};
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Event> events_;
};

class Scheduler {
 public:
  explicit Scheduler(std::size_t max_queue);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // False when max_queue jobs are already waiting.
  bool submit(std::shared_ptr<Job> job);
  // Stops taking jobs (503 shutting_down from then on) and fails the waiting
  // ones the same way; the running one has up to `grace` to finish, then is
  // cancelled for shutdown. Joins the worker.
  void drain(std::chrono::milliseconds grace);
  void stop() { drain(std::chrono::milliseconds(0)); }

  std::size_t waiting() const;
  bool running_job() const { return running_.load(); }
  std::size_t max_queue() const { return max_queue_; }

 private:
  void work();

  const std::size_t max_queue_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::shared_ptr<Job> current_;
  std::atomic<bool> running_{false};
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace lclm::server
