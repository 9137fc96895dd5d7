// The machine's own yardsticks, measured in the same run as the engine so
// that a benchmark's fractions of peak compare like with like (a VM's memory
// bandwidth can move by a third between minutes).
#pragma once

namespace lclm {

// Read bandwidth in GB/s: `threads` threads each sum their share of a 1 GiB
// buffer with the widest vector loads and software prefetch; best of
// `repeats` passes.
double measure_read_bandwidth(int threads, int repeats = 5);

// OpenBLAS sgemm GFLOP/s on 2048 x 2048 x 2048 at its configured threads;
// best of `repeats`.
double measure_sgemm_gflops(int repeats = 3);

}  // namespace lclm
