// The request queue of `lclm serve`: one worker thread runs the model, taking
// jobs in arrival order from a bounded queue that refuses work beyond its
// size instead of growing without end. Up to `parallel` generations run at
// once (continuous batching, runtime/decode_batch.h): every step reads one
// prefill chunk of a new prompt and decodes one token for each running
// generation in one forward pass; a new job joins between steps, and one
// that ends or is cancelled frees its slot for the next at once. Other jobs
// (compress) run whole between steps. A job talks back to its HTTP thread
// through a queue of events.
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

#include "runtime/decode_batch.h"
#include "runtime/session.h"
#include "server/openai_api.h"

namespace lclm::server {

struct Event {
  enum class Kind { Started, Text, Finished, Failed };
  Kind kind = Kind::Started;
  std::string text;           // Text: a piece of the answer
  std::vector<TokenLogprob> logprobs;  // Text: the tokens the piece completes (when asked)
  std::string finish_reason;  // Finished: "stop" or "length"
  CompletionUsage usage;      // Finished
  nlohmann::json payload;     // Finished: a whole answer (compress)
  int status = 0;             // Failed: the HTTP status
  nlohmann::json error;       // Failed: the OpenAI error object
  std::size_t choice = 0;     // the job it comes from, of a request's n (Job::share_events)
};

// Where jobs send their events, in the order they come: one queue per
// request, which the n jobs of a request with n choices share.
class EventQueue {
 public:
  void push(Event e);
  // Blocks until the next event, or (next_for) until one comes or `wait` passes.
  Event next();
  std::optional<Event> next_for(std::chrono::milliseconds wait);

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Event> events_;
};

Event failed_event(const RequestError& e);

class Job {
 public:
  // A job run whole by the worker.
  explicit Job(std::function<void(Job&)> work) : work_(std::move(work)) {}
  // A generation: `start` runs when the job takes a slot and returns the
  // generation to decode with the others (null: nothing to decode, the job
  // is over); `finish` runs once that generation is done (its finish()
  // throws the error of one that failed).
  Job(std::function<Generation*(Job&)> start, std::function<void(Job&)> finish)
      : start_(std::move(start)), finish_(std::move(finish)) {}

  // The worker's side.
  bool batched() const { return static_cast<bool>(start_); }
  void run() { work_(*this); }
  Generation* start() { return start_(*this); }
  void finish() { finish_(*this); }
  void emit(Event e);
  bool cancelled() const { return cancelled_.load(); }

  // The HTTP thread's side: blocks until the next event, or (next_for)
  // until one comes or `wait` passes. Jobs that share a queue give the
  // events of all of them, each tagged with its sender's choice.
  Event next() { return events_->next(); }
  std::optional<Event> next_for(std::chrono::milliseconds wait) { return events_->next_for(wait); }
  // Sends this job's events to `events`, tagged `choice` (before it is
  // submitted).
  void share_events(std::shared_ptr<EventQueue> events, std::size_t choice) {
    events_ = std::move(events);
    choice_ = choice;
  }
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
  std::function<Generation*(Job&)> start_;
  std::function<void(Job&)> finish_;
  std::atomic<bool> cancelled_{false}, shutdown_{false};
  std::shared_ptr<EventQueue> events_ = std::make_shared<EventQueue>();
  std::size_t choice_ = 0;
};

class Scheduler {
 public:
  // parallel: generations decoded together (slots); `model` the decoder they
  // run on.
  Scheduler(std::size_t max_queue, std::size_t parallel, const Qwen3Model& model);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // False when max_queue jobs are already waiting. Several jobs (the
  // choices of one request) are queued together, or none of them when they
  // do not all fit.
  bool submit(std::shared_ptr<Job> job) { return submit(std::vector{std::move(job)}); }
  bool submit(std::vector<std::shared_ptr<Job>> jobs);
  // Stops taking jobs (503 shutting_down from then on) and fails the waiting
  // ones the same way; the running ones have up to `grace` to finish, then
  // are cancelled for shutdown. Joins the worker.
  void drain(std::chrono::milliseconds grace);
  void stop() { drain(std::chrono::milliseconds(0)); }

  std::size_t waiting() const;
  // Jobs running now (in a slot, or a whole job between steps).
  std::size_t running() const;
  std::size_t max_queue() const { return max_queue_; }
  std::size_t parallel() const { return parallel_; }

 private:
  struct Slot {
    std::shared_ptr<Job> job;
    Generation* generation;
  };
  void work();
  // Runs a job's start (a batched one joins `slots_` if it has a generation)
  // or the whole of it, turning what it throws into its failed event.
  void begin(const std::shared_ptr<Job>& job);
  void end(const Slot& slot);
  // Takes a job that is over out of active_.
  void retire(const std::shared_ptr<Job>& job);

  const std::size_t max_queue_, parallel_;
  DecodeBatch batch_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<Slot> slots_;                   // the worker's
  std::vector<std::shared_ptr<Job>> active_;  // the running jobs (under mutex_)
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace lclm::server
