// One place that sets how many threads the engine's kernels and OpenBLAS use.
#pragma once

namespace lclm {

// n <= 0 picks the number of hardware threads.
void set_num_threads(int n);
int num_threads();

}  // namespace lclm
