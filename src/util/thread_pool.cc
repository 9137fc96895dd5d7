#include "util/thread_pool.h"

#include <strings.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "util/threads.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lclm {
namespace detail {
namespace {

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long an idle worker (and a caller waiting for the last items) spins
// before it sleeps (yields): decode's loops follow each other within
// microseconds, and a futex wake costs tens of them.
std::chrono::microseconds spin_time() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (policy != nullptr && strcasecmp(policy, "passive") == 0) return std::chrono::microseconds(0);
  return std::chrono::microseconds(200);
}

// The job's state in one word, so that claiming an item checks in one
// compare-and-swap that the job is still the one the worker saw: the
// generation (32 bits), the number of items (16) and the next item (16).
constexpr std::size_t kMaxItems = 0xffff;
constexpr std::uint64_t pack(std::uint32_t generation, std::size_t n, std::size_t next) {
  return std::uint64_t{generation} << 32 | std::uint64_t{n} << 16 | next;
}
constexpr std::uint32_t generation_of(std::uint64_t s) { return static_cast<std::uint32_t>(s >> 32); }
constexpr std::size_t items_of(std::uint64_t s) { return (s >> 16) & kMaxItems; }
constexpr std::size_t next_of(std::uint64_t s) { return s & kMaxItems; }

class Pool {
 public:
  static Pool& instance() {
    // Never destroyed: workers may still be asleep in it at exit.
    static Pool* pool = new Pool;
    return *pool;
  }

  void run(std::size_t n, ItemFn fn, void* context) {
    const auto threads = static_cast<std::size_t>(num_threads());
    const auto alone = [&] {
      for (std::size_t i = 0; i < n; ++i) fn(context, i);
    };
    if (n <= 1 || threads <= 1 || inside_item_) return alone();
    std::unique_lock<std::mutex> lock(call_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return alone();
    const std::size_t helpers = std::min(threads, n) - 1;
    for (; workers_ < helpers; ++workers_) {
      std::thread([this, index = workers_] { work_loop(index); }).detach();
    }
    fn_ = fn;
    context_ = context;
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    helpers_.store(helpers, std::memory_order_relaxed);
    const std::uint32_t generation = ++generation_counter_;
    state_.store(pack(generation, n, 0), std::memory_order_release);
    wake_.store(generation, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_.notify_all();

    work(generation);
    const auto start = std::chrono::steady_clock::now();
    for (unsigned spins = 0; done_.load(std::memory_order_acquire) < n; ++spins) {
      // A worker holding the last item may have lost its core: after the
      // spin time, give the core to it.
      if (spins % 64 == 0 && std::chrono::steady_clock::now() - start > spin_) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  Pool() : spin_(spin_time()) {}

  // Claims and runs items of `generation` until none is left.
  void work(std::uint32_t generation) {
    std::uint64_t s = state_.load(std::memory_order_acquire);
    while (generation_of(s) == generation && next_of(s) < items_of(s)) {
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;
      }
      // The item is ours and the job cannot end before it is done, so the
      // job's fields are the ones published with this generation.
      inside_item_ = true;
      try {
        fn_(context_, next_of(s));
      } catch (...) {
        std::lock_guard<std::mutex> guard(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      inside_item_ = false;
      done_.fetch_add(1, std::memory_order_acq_rel);
      s = state_.load(std::memory_order_acquire);
    }
  }

  void work_loop(std::size_t index) {
    std::uint32_t seen = 0;
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      std::uint32_t now = wake_.load(std::memory_order_acquire);
      for (unsigned spins = 0; now == seen; ++spins) {
        if (spins % 64 == 0 && std::chrono::steady_clock::now() - start >= spin_) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          wake_.wait(seen, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        } else {
          cpu_relax();
        }
        now = wake_.load(std::memory_order_acquire);
      }
      seen = now;
      if (index < helpers_.load(std::memory_order_relaxed)) work(seen);
    }
  }

  const std::chrono::microseconds spin_;
  std::mutex call_mutex_;  // one call uses the workers at a time
  std::size_t workers_ = 0;  // started (detached: they live as long as the process)
  std::uint32_t generation_counter_ = 0;
  // Each on its own cache line: idle workers spin reading wake_ while the
  // working threads update state_ and done_.
  alignas(64) std::atomic<std::uint64_t> state_{0};
  alignas(64) std::atomic<std::size_t> done_{0};
  alignas(64) std::atomic<std::uint32_t> wake_{0};
  std::atomic<std::size_t> sleepers_{0}, helpers_{0};
  // The job: written by the caller before the generation is published.
  ItemFn fn_ = nullptr;
  void* context_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  static thread_local bool inside_item_;
};

thread_local bool Pool::inside_item_ = false;

}  // namespace

void run_parallel(std::size_t n, ItemFn fn, void* context) {
  if (n <= kMaxItems) {
    Pool::instance().run(n, fn, context);
    return;
  }
  // More items than the state word counts: groups of consecutive items.
  struct Groups {
    std::size_t n, size;
    ItemFn fn;
    void* context;
  } groups{n, (n + kMaxItems - 1) / kMaxItems, fn, context};
  Pool::instance().run(
      (n + groups.size - 1) / groups.size,
      [](void* c, std::size_t g) {
        const auto& gs = *static_cast<const Groups*>(c);
        for (std::size_t i = g * gs.size; i < std::min(gs.n, (g + 1) * gs.size); ++i) {
          gs.fn(gs.context, i);
        }
      },
      &groups);
}

}  // namespace detail
}  // namespace lclm
