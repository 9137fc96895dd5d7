#include "ops/bf16_matvec.h"

#include <algorithm>
#include <array>
#include <utility>

#include "ops/avx512_intrinsics.h"

namespace lclm {
namespace {

// Elements per vector: 16 lanes of a pair each.
constexpr std::size_t kVector = 32;
// Accumulators of a register tile: RW rows of W times all R (up to
// kMaxRowsX) rows of x in one pass over W, so each weight is loaded once;
// with RW weight vectors and a vector of x that stays within the 32
// registers. (Tiles of 4 x 4 that read W twice for 8 rows of x, and kept
// their accumulators on the stack, ran batch-8 decode 1.4x slower;
// docs/benchmarks.md.)
constexpr std::size_t kTileAccumulators = 24;
constexpr std::size_t kMaxRowsX = 8;
// At most this many rows of W per tile: each is a stream from memory, and a
// batch of 2 ran 10% slower with 12 of them than with 4.
constexpr std::size_t kTileRowsW = 4;
// How far ahead a lone row of x prefetches W (as ops/simd.cc's DotRow, where
// 4 KiB ahead beat the hardware prefetcher).
constexpr std::size_t kPrefetchBytes = 4096;
// How far ahead each row of a tile prefetches: a tile computes longer per
// byte, and 16 KiB beat 4 and 8 KiB in batch-8 decode on a Zen 5.
constexpr std::size_t kTilePrefetchBytes = 16384;

__mmask32 first_elements(std::size_t count) {
  return count >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << count) - 1);
}

// RW rows of W (`cols` apart) times R rows of x (`x_stride` words apart):
// out[q * out_stride + a] = dot(W[a], x_q). The accumulators are one flat
// array with every loop unrolled, which GCC keeps in registers (a 2-D array
// was stored to the stack on every step).
template <std::size_t RW, std::size_t R>
LCLM_AVX512_BF16 void dot_tile(const std::uint16_t* w, std::size_t cols, const std::uint32_t* x,
                               std::size_t x_stride, float* out, std::size_t out_stride) {
  __m512 acc[RW * R];
#pragma GCC unroll 32
  for (std::size_t i = 0; i < RW * R; ++i) acc[i] = _mm512_setzero_ps();
  // One step: 32 columns of every row; whole vectors load unmasked, the
  // last partial one (cols not a multiple of 32) masked.
  const auto step = [&](std::size_t c, __mmask32 mask) LCLM_AVX512_BF16 {
    __m512bh wv[RW];
#pragma GCC unroll 32
    for (std::size_t a = 0; a < RW; ++a) {
      _mm_prefetch(reinterpret_cast<const char*>(w + a * cols + c) + kTilePrefetchBytes,
                   _MM_HINT_T0);
      wv[a] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w + a * cols + c));
    }
#pragma GCC unroll 8
    for (std::size_t q = 0; q < R; ++q) {
      const auto xv =
          reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, x + q * x_stride + c / 2));
#pragma GCC unroll 32
      for (std::size_t a = 0; a < RW; ++a) {
        acc[a * R + q] = _mm512_dpbf16_ps(acc[a * R + q], wv[a], xv);
      }
    }
  };
  std::size_t c = 0;
  for (; c + kVector <= cols; c += kVector) step(c, ~__mmask32{0});
  if (c < cols) step(c, first_elements(cols - c));
#pragma GCC unroll 8
  for (std::size_t q = 0; q < R; ++q) {
#pragma GCC unroll 32
    for (std::size_t a = 0; a < RW; ++a) {
      out[q * out_stride + a] = _mm512_reduce_add_ps(acc[a * R + q]);
    }
  }
}

// A lone row of x: W row by row, one stream prefetched ahead (the strides
// are dot_rows', unused here).
LCLM_AVX512_BF16 void dot_rows_one(const std::uint16_t* w, std::size_t rows, std::size_t cols,
                                   const std::uint32_t* x, std::size_t /*x_stride*/, float* y,
                                   std::size_t /*y_stride*/) {
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint16_t* row = w + r * cols;
    __m512 acc = _mm512_setzero_ps();
    for (std::size_t c = 0; c < cols; c += kVector) {
      _mm_prefetch(reinterpret_cast<const char*>(row + c) + kPrefetchBytes, _MM_HINT_T0);
      const __mmask32 mask = first_elements(cols - c);
      const auto wv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, row + c));
      const auto xv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, x + c / 2));
      acc = _mm512_dpbf16_ps(acc, wv, xv);
    }
    y[r] = _mm512_reduce_add_ps(acc);
  }
}

// All rows of W times R rows of x, tiles of as many rows of W as the
// accumulators allow, then the rows left one at a time.
template <std::size_t R>
LCLM_AVX512_BF16 void dot_rows(const std::uint16_t* w, std::size_t rows, std::size_t cols,
                               const std::uint32_t* x, std::size_t x_stride, float* y,
                               std::size_t y_stride) {
  constexpr std::size_t RW = std::min(kTileRowsW, kTileAccumulators / R);
  std::size_t r = 0;
  for (; r + RW <= rows; r += RW) dot_tile<RW, R>(w + r * cols, cols, x, x_stride, y + r, y_stride);
  for (; r < rows; ++r) dot_tile<1, R>(w + r * cols, cols, x, x_stride, y + r, y_stride);
}

// The kernels for 1 .. 1 + sizeof...(R) rows of x, indexed by rows - 1: a
// lone row on dot_rows_one, more on dot_rows.
using RowsKernel = void (*)(const std::uint16_t*, std::size_t, std::size_t, const std::uint32_t*,
                            std::size_t, float*, std::size_t);
template <std::size_t... R>
constexpr std::array<RowsKernel, 1 + sizeof...(R)> rows_kernels(std::index_sequence<R...>) {
  return {&dot_rows_one, &dot_rows<R + 2>...};
}

}  // namespace

void matvec_bf16_rounded(const std::uint16_t* w, const Bf16Rows& x, std::size_t rows, float* y,
                         std::size_t y_stride) {
  const std::size_t cols = x.k;
  constexpr auto kKernels = rows_kernels(std::make_index_sequence<kMaxRowsX - 1>());
  // Up to kMaxRowsX rows of x per pass over W.
  for (std::size_t i = 0; i < x.m; i += kMaxRowsX) {
    const std::size_t pass = std::min(kMaxRowsX, x.m - i);
    kKernels[pass - 1](w, rows, cols, x.hi.data() + i * x.row_words, x.row_words, y + i * y_stride,
                       y_stride);
  }
}

}  // namespace lclm
