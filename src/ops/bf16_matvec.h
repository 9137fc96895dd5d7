// Decode products of bf16 weights with x rounded to bf16 (the engine's
// default precision on AVX512_BF16 CPUs, ops/bf16_gemm.h), on `vdpbf16ps`:
// 32 products per instruction straight from the stored weights, where the
// exact path (ops/simd.h) widens every weight to f32 first. Batched decode
// is compute-bound on the exact path; on this one it does half the work.
//
// Sums: each (row of W, row of x) runs one accumulator over the row in
// vectors of 32 (a masked last vector), then one horizontal sum, whatever
// rows are multiplied beside it: a sequence decoded in a batch gets the
// numbers it would alone.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/bf16_gemm.h"

namespace lclm {

// y[i * y_stride + r] = sum_c W[r, c] bf16(x_i)[c] for W bf16 [rows, x.k]
// (rows x.k apart) and the x.m rows of x, x as to_bf16_rows made it with
// Bf16Precision::kRounded (its hi words); W is read once for every 8 rows of
// x. Needs cpu_has_avx512_bf16().
void matvec_bf16_rounded(const std::uint16_t* w, const Bf16Rows& x, std::size_t rows, float* y,
                         std::size_t y_stride);

}  // namespace lclm
