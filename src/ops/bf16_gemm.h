// Prefill GEMM on the CPU's bf16 dot products (AVX512_BF16, `vdpbf16ps`),
// for CPUs that have them but no AMX, where oneDNN's bf16 matmul (tuned for
// AMX) is not the fastest way: y [m, n] = x [m, k] W^T for bf16 W [n, k] in
// PyTorch's Linear layout, x given as f32 and converted to bf16 once per call.
//
// Shapes and layouts:
//   x   [m, k] f32, converted to Bf16Rows: hi (and lo) [m, row_words] words
//       of two bf16 each (the lower k in the low half), k_pairs of them used
//       per row, an odd k padded with a zero
//   W   [n, k] bf16 as stored (mmapped); no copy is kept: the kernel packs
//       each thread's W into panels of [256 pairs][32 columns][2] bf16 as it
//       goes, one L1-sized block at a time, once per call (bf16_gemm.cc says
//       why not once at load)
//   y   [m, n] f32, row-major
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "format/dtype.h"
#include "format/quant_blocks.h"

namespace lclm {

// How much of x the product keeps (see ops/bf16_kernels.h for the split).
enum class Bf16Precision {
  // x = hi + lo, two bf16 parts: 16 significant bits, within 2^-15 of
  // sum |w x| of the f32 product, so the f32 parity tests hold. Twice the
  // dot products of kRounded.
  kSplit,
  // bf16(x) alone: 8 significant bits (about 2^-9 relative per product), as
  // bf16 inference in PyTorch rounds its activations; half the work.
  kRounded,
};

// x as the kernel reads it: rows of k-pairs, lo empty for kRounded.
struct Bf16Rows {
  std::size_t m = 0, k = 0, k_pairs = 0;  // k_pairs = ceil(k / 2)
  // The row stride: k_pairs rounded up to whole 64-byte lines, made an odd
  // number of lines, so that the 12 rows a tile reads together fall in 12
  // different L1 sets (with a stride of 4 KiB they would all share one set
  // of the 8-way L1, which halved the speed at k = 2048).
  std::size_t row_words = 0;
  Bf16Precision precision = Bf16Precision::kSplit;
  std::vector<std::uint32_t> hi, lo;  // [m, row_words] words each
};

// words[0, ceil(n / 2)) = x[0, n) rounded to bf16 (round to nearest even),
// two to a word, the lower index in the low half (the pair words
// `vdpbf16ps` multiplies); a zero pads an odd n. With lo: lo's words =
// bf16(x - hi) likewise. Needs cpu_has_avx512_bf16().
void round_bf16_pairs(const float* x, std::size_t n, std::uint32_t* hi,
                      std::uint32_t* lo = nullptr);

// out = x [m, k] rounded to nearest even (and split, for kSplit), rows in
// parallel over the OpenMP threads (up to 8 rows by the calling thread).
// `out` keeps its storage between calls.
void to_bf16_rows(const float* x, std::size_t m, std::size_t k, Bf16Precision precision,
                  Bf16Rows& out);

// y [x.m, n] = x [x.m, x.k] W^T for W bf16 [n, x.k]. The threads split the
// columns of y in panels of 32, and its rows too when there are fewer
// panels than threads. Needs cpu_has_avx512_bf16() (ops/bf16_kernels.h);
// throws lclm::Error without it.
void gemm_bf16(const Bf16Rows& x, const std::uint16_t* w, std::size_t n, float* y);

// The same for W [n, x.k] of block type `type` (Q8_0 or Q4_0, rows of
// row_bytes(type, x.k) bytes, x.k a multiple of 32): each thread widens its
// panel blocks of W to f32 and rounds them to bf16 (nearest even) as it
// packs them, so no copy of W is made. The product is that of the rounded
// weights: within 2^-9 relative of each dequantized weight, below q8_0's own
// rounding of up to 2^-8 of a block's largest weight.
// W's rows are in `order` (format/quant_blocks.h).
void gemm_bf16_quantized(const Bf16Rows& x, DType type, const std::uint8_t* w, std::size_t n,
                         float* y, RowOrder order = RowOrder::kRowMajor);

// The precision of x in matmul()'s products with bf16 weights where this
// kernel runs them: kRounded, as llama.cpp and PyTorch's bf16 inference round
// x for bf16 weights (the weights carry 8 significant bits already;
// docs/benchmarks.md measures what it costs in logits), unless
// LCLM_BF16_ACTIVATIONS=split is in the environment or the setter says
// otherwise. With kRounded the matrix-vector path (decode) multiplies x
// rounded too, so prefill and decode agree; with kSplit it keeps x exact.
// The parity tests hold kSplit to the f32 reference and kRounded to a
// reference that rounds x the same way.
Bf16Precision bf16_activation_precision();
void set_bf16_activation_precision(Bf16Precision precision);

}  // namespace lclm
