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
#include <vector>

namespace lclm {

// x as the kernel reads it: rows of k rounded to bf16 (nearest even), two
// to a 32-bit word (the lower index in the low half), `row_words` apart.
struct Bf16Words {
  std::size_t m = 0, k = 0, row_words = 0;
  std::vector<std::uint32_t> words;
};

// out = x [m, k] rounded and packed, by the calling thread (decode calls it
// once per product; no parallel region). Needs cpu_has_avx512_bf16().
void pack_bf16_words(const float* x, std::size_t m, std::size_t k, Bf16Words& out);

// y[i * y_stride + r] = sum_c W[r, c] bf16(x_i)[c] for W bf16 [rows, x.k]
// (rows x.k apart) and the x.m rows of x. Needs cpu_has_avx512_bf16().
void matvec_bf16_rounded(const std::uint16_t* w, const Bf16Words& x, std::size_t rows, float* y,
                         std::size_t y_stride);

}  // namespace lclm
