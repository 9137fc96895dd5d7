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

// Each thread's share of a job's items, a contiguous range, in one word, so
// that claiming an item checks in one compare-and-swap that the job is still
// the one the thread saw: the generation (32 bits), the next item (16) and
// the end of the range (16). The owner claims from the front, in order, so
// its weights stream from one address onwards (the hardware prefetchers
// lose the stream at every jump: items handed out round-robin ran decode's
// products at 0.7x the bandwidth of contiguous shares on two threads); a
// thread whose range is empty takes items from the back of the others'.
constexpr std::size_t kMaxItems = 0xffff;
constexpr std::size_t kMaxRanges = 256;  // threads taking part in one job
constexpr std::uint64_t pack(std::uint32_t generation, std::size_t front, std::size_t back) {
  return std::uint64_t{generation} << 32 | std::uint64_t{front} << 16 | back;
}
constexpr std::uint32_t generation_of(std::uint64_t s) { return static_cast<std::uint32_t>(s >> 32); }
constexpr std::size_t front_of(std::uint64_t s) {
  return (s >> 16) & kMaxItems;
}
constexpr std::size_t back_of(std::uint64_t s) {
  return s & kMaxItems;
}

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
    const std::size_t helpers = std::min({threads, n, kMaxRanges}) - 1;
    for (; workers_ < helpers; ++workers_) {
      std::thread([this, index = workers_] { work_loop(index); }).detach();
    }
    fn_ = fn;
    context_ = context;
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    helpers_.store(helpers, std::memory_order_relaxed);
    const std::uint32_t generation = ++generation_counter_;
    const std::size_t parts = helpers + 1;
    for (std::size_t t = 0; t < parts; ++t) {
      ranges_[t].word.store(pack(generation, t * n / parts, (t + 1) * n / parts),
                            std::memory_order_relaxed);
    }
    wake_.store(generation, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_.notify_all();

    work(generation, 0);
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

  // The next item of range r for `generation`, from its front (the owner)
  // or its back (another thread), or kMaxItems when it has none left.
  std::size_t claim(std::size_t r, std::uint32_t generation, bool front) {
    std::atomic<std::uint64_t>& word = ranges_[r].word;
    std::uint64_t s = word.load(std::memory_order_acquire);
    while (generation_of(s) == generation && front_of(s) < back_of(s)) {
      const std::uint64_t claimed = front ? s + (std::uint64_t{1} << 16) : s - 1;
      if (word.compare_exchange_weak(s, claimed, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
        return front ? front_of(s) : back_of(s) - 1;
      }
    }
    return kMaxItems;
  }

  // Runs items of `generation` until none is left: range `self` from its
  // front, then the others' from their backs.
  void work(std::uint32_t generation, std::size_t self) {
    const std::size_t parts = helpers_.load(std::memory_order_relaxed) + 1;
    for (std::size_t k = 0; k < parts; ++k) {
      const std::size_t r = (self + k) % parts;
      for (std::size_t item; (item = claim(r, generation, k == 0)) != kMaxItems;) {
        // The item is ours and the job cannot end before it is done, so the
        // job's fields are the ones published with this generation.
        inside_item_ = true;
        try {
          fn_(context_, item);
        } catch (...) {
          std::lock_guard<std::mutex> guard(error_mutex_);
          if (!error_) error_ = std::current_exception();
        }
        inside_item_ = false;
        done_.fetch_add(1, std::memory_order_acq_rel);
      }
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
      if (index < helpers_.load(std::memory_order_relaxed)) work(seen, index + 1);
    }
  }

  const std::chrono::microseconds spin_;
  std::mutex call_mutex_;  // one call uses the workers at a time
  std::size_t workers_ = 0;  // started (detached: they live as long as the process)
  std::uint32_t generation_counter_ = 0;
  // Each on its own cache line: idle workers spin reading wake_ while the
  // working threads update ranges_ and done_.
  struct alignas(64) Range {
    std::atomic<std::uint64_t> word{0};
  };
  Range ranges_[kMaxRanges];
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
