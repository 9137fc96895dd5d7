// The machine's own yardsticks, measured in the same run as the engine so
// that a benchmark's fractions of peak compare like with like (a VM's memory
// bandwidth can move by a third between minutes).
#pragma once

#include <cstddef>

namespace lclm {

// Read bandwidth in GB/s: `threads` threads each sum their share of a
// buffer of `bytes` (allocated and freed here) with the widest vector loads
// and software prefetch; best of `repeats` passes.
double measure_read_bandwidth(int threads, int repeats = 5,
                              std::size_t bytes = std::size_t{1} << 30);

// OpenBLAS sgemm GFLOP/s on 2048 x 2048 x 2048 at its configured threads;
// best of `repeats`.
double measure_sgemm_gflops(int repeats = 3);

// The bf16 dot-product peak in GFLOP/s: `threads` threads each run
// independent `vdpbf16ps` (AVX512_BF16) on registers, no memory, best of
// `repeats` passes; one instruction is 16 lanes of a pair's dot product,
// 64 FLOPs. No bf16 GEMM on these instructions can go faster. 0 where the
// CPU lacks AVX512_BF16.
double measure_bf16_dot_gflops(int threads, int repeats = 20);

// The int8 dot-product peak in GOP/s (multiply and add counted apart, as
// FLOPs are): the same with `vpdpbusd` (AVX512-VNNI), 64 byte products a
// instruction, 128 operations. The yardstick of the integer kernels
// (decode's q8_0 / q4_0 products); 0 where the CPU lacks AVX512-VNNI.
double measure_int8_dot_gops(int threads, int repeats = 20);

}  // namespace lclm
