#include "ops/bf16_matvec.h"

#include "ops/avx512_intrinsics.h"

namespace lclm {
namespace {

// Elements per vector: 16 lanes of a pair each.
constexpr std::size_t kVector = 32;
// Rows of W and of x per register tile of the batched product: 16
// accumulators, 4 weight vectors, and a vector of x at a time.
constexpr std::size_t kTileRowsW = 4;
constexpr std::size_t kTileRowsX = 4;
// How far ahead a lone row of x prefetches the weight stream (as
// ops/simd.cc's DotRow, where 4 KiB ahead beat the hardware prefetcher).
constexpr std::size_t kPrefetchBytes = 4096;

__mmask32 first_elements(std::size_t count) {
  return count >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << count) - 1);
}

// RW rows of W (`cols` apart) times R rows of x (`x_stride` words apart):
// out[q * out_stride + a] = dot(W[a], x_q). `next`, when not null, is the
// next tile's first row of W, prefetched a line per row per vector.
template <std::size_t RW, std::size_t R>
LCLM_AVX512_BF16 void dot_tile(const std::uint16_t* w, std::size_t cols, const std::uint16_t* next,
                               const std::uint32_t* x, std::size_t x_stride, float* out,
                               std::size_t out_stride) {
  __m512 acc[RW][R];
  for (auto& row : acc) {
    for (auto& a : row) a = _mm512_setzero_ps();
  }
  for (std::size_t c = 0; c < cols; c += kVector) {
    const __mmask32 mask = first_elements(cols - c);
    __m512bh wv[RW];
    for (std::size_t a = 0; a < RW; ++a) {
      if (next != nullptr)
        _mm_prefetch(reinterpret_cast<const char*>(next + a * cols + c), _MM_HINT_T0);
      wv[a] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w + a * cols + c));
    }
    for (std::size_t q = 0; q < R; ++q) {
      const auto xv =
          reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, x + q * x_stride + c / 2));
      for (std::size_t a = 0; a < RW; ++a) acc[a][q] = _mm512_dpbf16_ps(acc[a][q], wv[a], xv);
    }
  }
  for (std::size_t q = 0; q < R; ++q) {
    for (std::size_t a = 0; a < RW; ++a) out[q * out_stride + a] = _mm512_reduce_add_ps(acc[a][q]);
  }
}

// A lone row of x: W row by row, one stream prefetched ahead.
LCLM_AVX512_BF16 void dot_rows_one(const std::uint16_t* w, std::size_t rows, std::size_t cols,
                                   const std::uint32_t* x, float* y) {
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

template <std::size_t RW>
LCLM_AVX512_BF16 void tiles_for_x(const std::uint16_t* w, std::size_t cols,
                                  const std::uint16_t* next, const Bf16Rows& x, float* y,
                                  std::size_t y_stride) {
  std::size_t i = 0;
  for (; i + kTileRowsX <= x.m; i += kTileRowsX) {
    dot_tile<RW, kTileRowsX>(w, cols, next, x.hi.data() + i * x.row_words, x.row_words,
                             y + i * y_stride, y_stride);
    next = nullptr;  // prefetched by the first group of x
  }
  const std::uint32_t* xi = x.hi.data() + i * x.row_words;
  switch (x.m - i) {
    case 3:
      dot_tile<RW, 3>(w, cols, next, xi, x.row_words, y + i * y_stride, y_stride);
      break;
    case 2:
      dot_tile<RW, 2>(w, cols, next, xi, x.row_words, y + i * y_stride, y_stride);
      break;
    case 1:
      dot_tile<RW, 1>(w, cols, next, xi, x.row_words, y + i * y_stride, y_stride);
      break;
    default:
      break;
  }
}

}  // namespace

void matvec_bf16_rounded(const std::uint16_t* w, const Bf16Rows& x, std::size_t rows, float* y,
                         std::size_t y_stride) {
  const std::size_t cols = x.k;
  if (x.m == 1) {
    dot_rows_one(w, rows, cols, x.hi.data(), y);
    return;
  }
  std::size_t r = 0;
  for (; r + kTileRowsW <= rows; r += kTileRowsW) {
    const std::uint16_t* next = r + 2 * kTileRowsW <= rows ? w + (r + kTileRowsW) * cols : nullptr;
    tiles_for_x<kTileRowsW>(w + r * cols, cols, next, x, y + r, y_stride);
  }
  for (; r < rows; ++r) tiles_for_x<1>(w + r * cols, cols, nullptr, x, y + r, y_stride);
}

}  // namespace lclm

