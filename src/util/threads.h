// One place that sets how many threads the engine's kernels and OpenBLAS use.
// OpenMP keeps the count per calling thread: a count set on main does not
// reach a thread started later (a server's worker runs on every core
// whatever -t said). So the Engine holds the count and applies it on the
// thread of each call (runtime/engine.h); front ends set it there.
#pragma once

namespace lclm {

// For the calling thread (and OpenBLAS, process-wide); n <= 0 picks the
// number of hardware threads.
void set_num_threads(int n);
int num_threads();
// n, or the number of hardware threads when n <= 0. Throws lclm::Error past
// kMaxThreads (a mistyped -t would otherwise start that many threads).
int resolve_threads(int n);
inline constexpr int kMaxThreads = 1024;

}  // namespace lclm
