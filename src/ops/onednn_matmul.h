// Many-row products with bf16 weights on oneDNN's bf16 matmul, which runs on
// the CPU's matrix units (AMX) or native bf16 dot products (AVX512_BF16)
// where it has them; measured against widening W to f32 for OpenBLAS sgemm
// in docs/benchmarks.md.
//
// x is split into two bf16 parts, x = hi + lo (ops/bf16_kernels.h), and both
// are multiplied in one call of 2m rows, so the product keeps 16 significant
// bits of x and matches the f32 path within the engine's 1e-4 parity.
#pragma once

#include <cstddef>

#include "ops/matmul.h"

namespace lclm {

// Whether oneDNN has a native bf16 matmul on this CPU (not an emulation)
// and native bf16 kernels are enabled (ops/bf16_kernels.h).
bool onednn_native_bf16();
// Whether oneDNN's bf16 matmul runs on AMX tiles on this CPU (and may: the
// kernel grants the tile state), whatever the native kernels' switch says.
bool onednn_uses_amx();

// y [m, W.rows] = x [m, W.cols] W^T for bf16 W. Returns false, touching
// nothing, where onednn_native_bf16() is false.
bool matmul_bf16_onednn(const float* x, std::size_t m, const WeightMatrix& w, float* y);

}  // namespace lclm
