#include "server/scheduler.h"

namespace lclm::server {

Event failed_event(const RequestError& e) {
  Event ev;
  ev.kind = Event::Kind::Failed;
  ev.status = e.status;
  ev.error = error_json(e);
  return ev;
}

void Job::emit(Event e) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  ready_.notify_one();
}

Event Job::next() {
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !events_.empty(); });
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

std::optional<Event> Job::next_for(std::chrono::milliseconds wait) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, wait, [&] { return !events_.empty(); })) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

Scheduler::Scheduler(std::size_t max_queue) : max_queue_(max_queue), worker_([this] { work(); }) {}

Scheduler::~Scheduler() {
  stop();
}

bool Scheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      job->emit(failed_event(
          RequestError(503, "the server is shutting down", "", "shutting_down", "server_error")));
      return true;
    }
    if (queue_.size() >= max_queue_) return false;
    queue_.push_back(std::move(job));
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
    idle_.wait_for(lock, grace, [&] { return !current_; });
    if (current_) current_->cancel_for_shutdown();
  }
  if (worker_.joinable()) worker_.join();
}

std::size_t Scheduler::waiting() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void Scheduler::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = current_ = queue_.front();
      queue_.pop_front();
      running_ = true;
    }
    try {
      job->run();
    } catch (const RequestError& e) {
      job->emit(failed_event(e));
    } catch (const std::exception& e) {
      job->emit(failed_event(RequestError(500, e.what(), "", "internal_error", "server_error")));
    }
    {
      std::lock_guard lock(mutex_);
      current_.reset();
      running_ = false;
    }
    idle_.notify_all();
  }
}

}  // namespace lclm::server
