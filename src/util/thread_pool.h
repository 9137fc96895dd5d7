// A process-wide pool of persistent threads for the many short parallel
// loops of decode (four matrix products and one attention per layer per
// token). Against an OpenMP parallel region per loop it differs in two
// ways that matter on a small or busy machine:
//   - each thread starts on a contiguous share of the items and claims
//     them one at a time, in order, from its front (so the weights a thread
//     reads form one stream for the prefetchers); a thread done with its
//     share takes items one at a time from the back of the others', and a
//     call ends when every item is done, not when every thread has arrived:
//     a worker the OS has descheduled (another process took its core) costs
//     at most the item it holds, where a static split waited for its whole
//     share and a barrier for its next time slice;
//   - idle workers spin briefly (not at all with OMP_WAIT_POLICY=PASSIVE),
//     then sleep on a futex (std::atomic::wait), and are woken only when
//     some are asleep.
// The calling thread works too; the number of threads is the calling
// thread's OpenMP count (util/threads.h), so -t and EngineOptions::threads
// apply as they do to the OpenMP loops.
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>

namespace lclm {

namespace detail {
using ItemFn = void (*)(void* context, std::size_t item);
void run_parallel(std::size_t n, ItemFn fn, void* context);
}  // namespace detail

// Calls f(i) for each i in [0, n), each exactly once, on the calling thread
// and up to num_threads() - 1 workers; returns when all are done. An
// exception from f is rethrown here (the first, once all items are done).
// One call at a time uses the workers: a call made while another thread's
// call runs, or from inside f, runs its items on the calling thread alone.
template <typename F>
void parallel_for(std::size_t n, F&& f) {
  using Fn = std::remove_reference_t<F>;
  detail::run_parallel(
      n, [](void* context, std::size_t i) { (*static_cast<Fn*>(context))(i); },
      const_cast<void*>(static_cast<const void*>(std::addressof(f))));
}

}  // namespace lclm
