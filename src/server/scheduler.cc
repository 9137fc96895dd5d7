#include "server/scheduler.h"

#include <algorithm>
#include <exception>

#include "util/error.h"

namespace lclm::server {

Event failed_event(const RequestError& e) {
  Event ev;
  ev.kind = Event::Kind::Failed;
  ev.status = e.status;
  ev.error = error_json(e);
  return ev;
}

void EventQueue::push(Event e) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  ready_.notify_one();
}

void Job::emit(Event e) {
  e.choice = choice_;
  events_->push(std::move(e));
}

Event EventQueue::next() {
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !events_.empty(); });
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

std::optional<Event> EventQueue::next_for(std::chrono::milliseconds wait) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, wait, [&] { return !events_.empty(); })) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

Scheduler::Scheduler(std::size_t max_queue, std::size_t parallel, const Qwen3Model& model)
    : max_queue_(max_queue),
      parallel_(std::max<std::size_t>(1, parallel)),
      batch_(model),
      worker_([this] { work(); }) {}

Scheduler::~Scheduler() {
  stop();
}

bool Scheduler::submit(std::vector<std::shared_ptr<Job>> jobs) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      for (const auto& job : jobs) {
        job->emit(failed_event(
            RequestError(503, "the server is shutting down", "", "shutting_down", "server_error")));
      }
      return true;
    }
    if (queue_.size() + jobs.size() > max_queue_) return false;
    for (auto& job : jobs) queue_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

void Scheduler::drain(std::chrono::milliseconds grace) {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    dropped.swap(queue_);
  }
  wake_.notify_all();
  for (const auto& job : dropped) {
    job->emit(failed_event(
        RequestError(503, "the server is shutting down", "", "shutting_down", "server_error")));
  }
  {
    std::unique_lock lock(mutex_);
    idle_.wait_for(lock, grace, [&] { return active_.empty(); });
    for (const auto& job : active_) job->cancel_for_shutdown();
  }
  if (worker_.joinable()) worker_.join();
}

std::size_t Scheduler::waiting() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

std::size_t Scheduler::running() const {
  std::lock_guard lock(mutex_);
  return active_.size();
}

void Scheduler::retire(const std::shared_ptr<Job>& job) {
  std::lock_guard lock(mutex_);
  std::erase(active_, job);
  if (active_.empty()) idle_.notify_all();
}

namespace {

void fail_job(Job& job, std::exception_ptr error) {
  try {
    std::rethrow_exception(std::move(error));
  } catch (const RequestError& e) {
    job.emit(failed_event(e));
  } catch (const std::exception& e) {
    job.emit(failed_event(RequestError(500, e.what(), "", "internal_error", "server_error")));
  }
}

}  // namespace

void Scheduler::begin(const std::shared_ptr<Job>& job) {
  try {
    if (!job->batched()) {
      job->run();
      return;
    }
    if (Generation* g = job->start()) {
      slots_.push_back({job, g});
      return;
    }
  } catch (...) {
    fail_job(*job, std::current_exception());
  }
  retire(job);
}

void Scheduler::end(const Slot& slot) {
  try {
    slot.job->finish();
  } catch (...) {
    fail_job(*slot.job, std::current_exception());
  }
  retire(slot.job);
}

void Scheduler::work() {
  std::vector<Generation*> generations;
  for (;;) {
    std::shared_ptr<Job> next;
    {
      std::unique_lock lock(mutex_);
      // A free slot takes the next job; with every slot busy the queue
      // waits for one to end.
      if (slots_.empty()) wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (slots_.empty() && queue_.empty()) return;  // stopping, nothing left
      if (slots_.size() < parallel_ && !queue_.empty()) {
        next = queue_.front();
        queue_.pop_front();
        active_.push_back(next);
      }
    }
    if (next) {
      begin(next);
      // Fill every free slot before the step, so that requests arriving
      // together decode together from their first token.
      if (slots_.size() < parallel_) continue;
    }
    if (slots_.empty()) continue;

    // A generation cancelled while its prompt is read stops here; one that
    // decodes stops at its next token (its callback sees the cancel).
    for (const Slot& s : slots_) {
      if (s.job->cancelled() && s.generation->prefilling()) {
        s.generation->fail(std::make_exception_ptr(Error("cancelled")));
      }
    }
    generations.clear();
    for (const Slot& s : slots_) {
      if (!s.generation->done()) generations.push_back(s.generation);
    }
    if (!generations.empty()) batch_.step(generations);
    std::vector<Slot> running;
    for (const Slot& s : slots_) {
      if (s.generation->done()) {
        end(s);
      } else {
        running.push_back(s);
      }
    }
    slots_.swap(running);
  }
}

}  // namespace lclm::server
