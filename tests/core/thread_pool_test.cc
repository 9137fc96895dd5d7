#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "util/threads.h"

namespace lclm {
namespace {

// Restores the calling thread's thread count at scope exit.
class ThreadsScope {
 public:
  explicit ThreadsScope(int n) : saved_(num_threads()) { set_num_threads(n); }
  ~ThreadsScope() { set_num_threads(saved_); }

 private:
  int saved_;
};

// Every item runs exactly once, whatever the thread count, for counts that
// fit the pool's job word and counts past it (run in groups).
TEST(ThreadPool, EveryItemRunsExactlyOnce) {
  for (int threads : {1, 2, 4}) {
    const ThreadsScope scope(threads);
    for (std::size_t n : {0u, 1u, 2u, 3u, 100u, 65535u, 65536u + 7u, 200001u}) {
      std::vector<std::atomic<int>> runs(n);
      parallel_for(n, [&](std::size_t i) { runs[i].fetch_add(1); });
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(runs[i].load(), 1) << "threads " << threads << " n " << n << " item " << i;
      }
    }
  }
}

// Back-to-back calls (as decode makes hundreds per token) each see their
// own items: a worker late for one call never runs an item of the next.
TEST(ThreadPool, ConsecutiveCallsKeepTheirOwnItems) {
  const ThreadsScope scope(3);
  std::vector<int> out(64);
  for (int call = 0; call < 2000; ++call) {
    const std::size_t n = 1 + static_cast<std::size_t>(call % 64);
    parallel_for(n, [&](std::size_t i) { out[i] = call; });
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], call) << "call " << call << " item " << i;
  }
}

// Each thread starts on a contiguous share and runs it in order, so the
// weights it reads form one stream: the calling thread runs items 0, 1, 2,
// ... of the first half without gaps (handed out round-robin, it ran every
// other one while the worker took the rest).
TEST(ThreadPool, EachThreadRunsItsShareInOrder) {
  const ThreadsScope scope(2);
  const std::size_t n = 16;
  const auto caller = std::this_thread::get_id();
  std::mutex mutex;
  std::vector<std::size_t> callers_items;
  parallel_for(n, [&](std::size_t i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (std::this_thread::get_id() != caller) return;
    const std::lock_guard<std::mutex> lock(mutex);
    callers_items.push_back(i);
  });
  std::vector<std::size_t> first_half;
  for (std::size_t i : callers_items) {
    if (i < n / 2) first_half.push_back(i);
  }
  ASSERT_FALSE(first_half.empty());
  for (std::size_t k = 0; k < first_half.size(); ++k) {
    EXPECT_EQ(first_half[k], k) << "the calling thread's item number " << k;
  }
}

// Items are claimed one at a time: a thread stuck in one item does not hold
// back the others' progress through the rest. Item 0 waits until every other
// item is done; with a fixed share per thread, the stuck thread's share would
// never be done and the wait would time out.
TEST(ThreadPool, AStuckItemDoesNotHoldBackTheRest) {
  const ThreadsScope scope(2);
  const std::size_t n = 200;
  std::atomic<std::size_t> done{0};
  std::atomic<bool> timed_out{false};
  parallel_for(n, [&](std::size_t i) {
    if (i == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (done.load() < n - 1) {
        if (std::chrono::steady_clock::now() > deadline) {
          timed_out = true;
          break;
        }
        std::this_thread::yield();
      }
    }
    done.fetch_add(1);
  });
  EXPECT_FALSE(timed_out.load());
  EXPECT_EQ(done.load(), n);
}

// An exception from an item reaches the caller, after every item has run.
TEST(ThreadPool, AnExceptionReachesTheCallerAfterAllItems) {
  const ThreadsScope scope(2);
  std::atomic<int> ran{0};
  EXPECT_THROW(parallel_for(50,
                            [&](std::size_t i) {
                              ran.fetch_add(1);
                              if (i == 7) throw std::runtime_error("item 7");
                            }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 50);
  // The pool is usable afterwards.
  std::atomic<int> again{0};
  parallel_for(10, [&](std::size_t) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 10);
}

// A parallel_for inside an item, and calls from two threads at once, run
// (the inner and the second call on their own thread) instead of deadlocking.
TEST(ThreadPool, NestedAndConcurrentCallsComplete) {
  const ThreadsScope scope(2);
  std::atomic<int> inner{0};
  parallel_for(8, [&](std::size_t) { parallel_for(5, [&](std::size_t) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 40);

  std::atomic<long> sum{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      set_num_threads(2);
      for (int call = 0; call < 200; ++call) {
        parallel_for(16, [&](std::size_t i) { sum.fetch_add(static_cast<long>(i)); });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(sum.load(), 3L * 200 * (15 * 16 / 2));
}

}  // namespace
}  // namespace lclm
