#include "ops/simd.h"

#include <type_traits>

#include "ops/row_groups.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/simd.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace lclm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Loads one vector of 16-bit floats and widens it to f32. Half-precision
// element types are spelled as Highway's tag types over the raw bits.
template <typename Half16, class DF>
HWY_INLINE hn::Vec<DF> LoadWiden(DF df, const std::uint16_t* p) {
  const hn::Rebind<Half16, DF> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const Half16*>(p)));
}

// Weights as float / bf16 / f16 bits: `Stored` is the pointer type, `Half16`
// the Highway element the 16-bit bits are (void for f32).
template <typename Half16, typename Stored>
HWY_INLINE hn::Vec<hn::ScalableTag<float>> LoadWeights(hn::ScalableTag<float> df, const Stored* p) {
  if constexpr (std::is_same_v<Stored, float>) {
    return hn::LoadU(df, p);
  } else {
    return LoadWiden<Half16>(df, p);
  }
}

template <typename Half16, typename Stored>
float RowTail(const Stored* w, const float* x, std::size_t from, std::size_t n) {
  const hn::CappedTag<float, 1> d1;
  float sum = 0.0f;
  for (std::size_t i = from; i < n; ++i) {
    if constexpr (std::is_same_v<Stored, float>) {
      sum += w[i] * x[i];
    } else {
      sum += hn::GetLane(LoadWiden<Half16>(d1, w + i)) * x[i];
    }
  }
  return sum;
}

// How far ahead the weight stream is prefetched (see ops/bf16_kernels.cc:
// 4 KiB ahead beat the hardware prefetcher alone by about a third when
// streaming weights from memory).
constexpr std::size_t kPrefetchBytes = 4096;

// dot(w, x) for one row of weights stored as f32 (Half16 = void) or as the
// bits of a 16-bit float. The sums run in one fixed order (four accumulators
// over blocks of 4N, the rest into the first, then the scalar tail), which
// DotTile keeps for rows decoded in a batch.
template <typename Half16, typename Stored>
float DotRow(const Stored* w, const float* x, std::size_t n) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  auto s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  std::size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const char* ahead = reinterpret_cast<const char*>(w + i) + kPrefetchBytes;
    for (std::size_t line = 0; line < 4 * N * sizeof(Stored); line += 64) {
      hwy::Prefetch(ahead + line);
    }
    s0 = hn::MulAdd(LoadWeights<Half16>(df, w + i), hn::LoadU(df, x + i), s0);
    s1 = hn::MulAdd(LoadWeights<Half16>(df, w + i + N), hn::LoadU(df, x + i + N), s1);
    s2 = hn::MulAdd(LoadWeights<Half16>(df, w + i + 2 * N), hn::LoadU(df, x + i + 2 * N), s2);
    s3 = hn::MulAdd(LoadWeights<Half16>(df, w + i + 3 * N), hn::LoadU(df, x + i + 3 * N), s3);
  }
  for (; i + N <= n; i += N)
    s0 = hn::MulAdd(LoadWeights<Half16>(df, w + i), hn::LoadU(df, x + i), s0);
  const auto sum = hn::Add(hn::Add(s0, s1), hn::Add(s2, s3));
  return hn::GetLane(hn::SumOfLanes(df, sum)) + RowTail<Half16>(w, x, i, n);
}

float DotF32(const float* a, const float* b, std::size_t n) {
  return DotRow<void>(a, b, n);
}

#if HWY_HAVE_SCALABLE
// Highway's scalable vectors (SVE, RVV) cannot form arrays: one row of x at
// a time, each by DotRow.
template <typename Half16, typename Stored>
void MatVec(const Stored* w, const float* x, std::size_t m, std::size_t rows, std::size_t cols,
            float* y, std::size_t y_stride) {
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t r = 0; r < rows; ++r) {
      y[i * y_stride + r] = DotRow<Half16>(w + r * cols, x + i * cols, cols);
    }
  }
}
#else
// One of DotTile's four passes: acc[a][q] += W[a] x_q over the vectors
// `first`, first + 4N, ... below `full` (and, in the pass for accumulator 0,
// the whole vectors after `full`: DotRow's "rest into the first"). Beside
// it, the pass prefetches `ahead_rows` rows of weights from `ahead` (w_stride
// apart), the part of the next tile it is given: the tile's own weights come
// from cache, so the stream from memory overlaps the multiply-adds instead
// of stalling the first pass.
template <std::size_t RW, std::size_t R, typename Half16, typename Stored, class V>
HWY_INLINE void TilePass(const Stored* w, std::size_t w_stride, const float* x,
                         std::size_t x_stride, std::size_t first, std::size_t full, std::size_t n,
                         const Stored* ahead, std::size_t ahead_rows, V (&acc)[RW][R]) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  for (auto& row : acc) {
    for (auto& v : row) v = hn::Zero(df);
  }
  const auto step = [&](std::size_t i) HWY_ATTR {
    V wv[RW];
    for (std::size_t a = 0; a < RW; ++a) wv[a] = LoadWeights<Half16>(df, w + a * w_stride + i);
    for (std::size_t q = 0; q < R; ++q) {
      const auto xv = hn::LoadU(df, x + q * x_stride + i);
      for (std::size_t a = 0; a < RW; ++a) acc[a][q] = hn::MulAdd(wv[a], xv, acc[a][q]);
    }
  };
  for (std::size_t i = first; i < full; i += 4 * N) {
    for (std::size_t a = 0; a < ahead_rows; ++a) {
      const char* block = reinterpret_cast<const char*>(ahead + a * w_stride + i - first);
      for (std::size_t line = 0; line < 4 * N * sizeof(Stored); line += 64) {
        hwy::Prefetch(block + line);
      }
    }
    step(i);
  }
  if (first == 0) {
    for (std::size_t i = full; i + N <= n; i += N) step(i);
  }
}

// dot(W[a], x_q) for RW rows of W (w_stride apart) and R rows of x: each
// load of W serves R rows of x and each load of x RW rows of W, so batched
// decode is bound by neither. The sums are DotRow's, bit for bit: its four
// accumulators are formed one after another (accumulator j over the vectors
// j, j + 4, ... of each 4N block, then the rest into the first), one
// register per (a, q) at a time, and combined as it combines them. Each
// pass prefetches a quarter of the next RW rows of W (`next`, null for
// none). The passes are written out: as a loop over j the compiler kept
// four rows of x at 35 GMAC/s instead of 44-51 (lclm-bench-kernels, one
// thread, AMD EPYC Zen 5, 2026-12-05).
template <std::size_t RW, std::size_t R, typename Half16, typename Stored>
void DotTile(const Stored* w, std::size_t w_stride, const Stored* next, const float* x,
             std::size_t x_stride, std::size_t n, float* out, std::size_t out_stride) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  using V = hn::Vec<decltype(df)>;
  const std::size_t full = n / (4 * N) * (4 * N);
  // Pass j prefetches rows [j RW / 4, (j + 1) RW / 4) of the next tile.
  const auto ahead = [&](std::size_t j) {
    return next == nullptr ? next : next + j * RW / 4 * w_stride;
  };
  const auto ahead_rows = [&](std::size_t j) {
    return next == nullptr ? 0 : (j + 1) * RW / 4 - j * RW / 4;
  };
  V acc[RW][R], s01[RW][R], s23[RW][R];
  TilePass<RW, R, Half16>(w, w_stride, x, x_stride, 0, full, n, ahead(0), ahead_rows(0), acc);
  for (std::size_t a = 0; a < RW; ++a) {
    for (std::size_t q = 0; q < R; ++q) s01[a][q] = acc[a][q];
  }
  TilePass<RW, R, Half16>(w, w_stride, x, x_stride, N, full, n, ahead(1), ahead_rows(1), acc);
  for (std::size_t a = 0; a < RW; ++a) {
    for (std::size_t q = 0; q < R; ++q) s01[a][q] = hn::Add(s01[a][q], acc[a][q]);
  }
  TilePass<RW, R, Half16>(w, w_stride, x, x_stride, 2 * N, full, n, ahead(2), ahead_rows(2), acc);
  for (std::size_t a = 0; a < RW; ++a) {
    for (std::size_t q = 0; q < R; ++q) s23[a][q] = acc[a][q];
  }
  TilePass<RW, R, Half16>(w, w_stride, x, x_stride, 3 * N, full, n, ahead(3), ahead_rows(3), acc);
  const std::size_t tail = full + (n - full) / N * N;
  for (std::size_t a = 0; a < RW; ++a) {
    for (std::size_t q = 0; q < R; ++q) {
      const auto sum = hn::Add(s01[a][q], hn::Add(s23[a][q], acc[a][q]));
      out[q * out_stride + a] = hn::GetLane(hn::SumOfLanes(df, sum)) +
                                RowTail<Half16>(w + a * w_stride, x + q * x_stride, tail, n);
    }
  }
}

// The rows of W and of x a tile takes at once: 16 accumulators, 4 weight
// vectors and one of x in AVX-512's 32 registers.
constexpr std::size_t kTileRowsW = 4;
constexpr std::size_t kTileRowsX = 4;

// y[i * y_stride + r] = dot(W[r], x_i) for the m rows of x. One row of x
// (decode) runs DotRow over W row by row: the stream from memory is the
// limit, and one stream per thread suits the prefetcher better than four
// (measured). Several rows run tiles of 4 rows of W by up to 4 of x, from
// cache for the next group of x, so W comes from memory once whatever m is
// and the loads stay below the multiply-adds. All rows in one call so the
// dispatch is paid once per block.
template <typename Half16, typename Stored>
void MatVec(const Stored* w, const float* x, std::size_t m, std::size_t rows, std::size_t cols,
            float* y, std::size_t y_stride) {
  if (m == 1) {
    for (std::size_t r = 0; r < rows; ++r) y[r] = DotRow<Half16>(w + r * cols, x, cols);
    return;
  }
  const auto tiles = [&](auto rows_w, std::size_t r) {
    constexpr std::size_t kRowsW = decltype(rows_w)::value;
    const Stored* next = r + 2 * kRowsW <= rows ? w + (r + kRowsW) * cols : nullptr;
    for_row_groups<kTileRowsX>(m, [&](auto group, std::size_t i) {
      DotTile<kRowsW, decltype(group)::value, Half16>(w + r * cols, cols, next, x + i * cols, cols,
                                                      cols, y + i * y_stride + r, y_stride);
    });
  };
  std::size_t r = 0;
  for (; r + kTileRowsW <= rows; r += kTileRowsW) {
    tiles(std::integral_constant<std::size_t, kTileRowsW>{}, r);
  }
  for (; r < rows; ++r) tiles(std::integral_constant<std::size_t, 1>{}, r);
}
#endif

void MatVecBF16(const std::uint16_t* w, const float* x, std::size_t m, std::size_t rows,
                std::size_t cols, float* y, std::size_t y_stride) {
  MatVec<hwy::bfloat16_t>(w, x, m, rows, cols, y, y_stride);
}
void MatVecF16(const std::uint16_t* w, const float* x, std::size_t m, std::size_t rows,
               std::size_t cols, float* y, std::size_t y_stride) {
  MatVec<hwy::float16_t>(w, x, m, rows, cols, y, y_stride);
}
void MatVecF32(const float* w, const float* x, std::size_t m, std::size_t rows, std::size_t cols,
               float* y, std::size_t y_stride) {
  MatVec<void>(w, x, m, rows, cols, y, y_stride);
}

template <typename Half16>
void ConvertHalf(const std::uint16_t* in, float* out, std::size_t n) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  std::size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadWiden<Half16>(df, in + i), df, out + i);
  const hn::CappedTag<float, 1> d1;
  for (; i < n; ++i) hn::StoreU(LoadWiden<Half16>(d1, in + i), d1, out + i);
}

void ConvertBF16ToF32(const std::uint16_t* in, float* out, std::size_t n) {
  ConvertHalf<hwy::bfloat16_t>(in, out, n);
}
void ConvertF16ToF32(const std::uint16_t* in, float* out, std::size_t n) {
  ConvertHalf<hwy::float16_t>(in, out, n);
}

void AxpyF32(float a, const float* x, float* y, std::size_t n) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  const auto va = hn::Set(df, a);
  std::size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

void ScaleF32(float* x, float a, std::size_t n) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  const auto va = hn::Set(df, a);
  std::size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(va, hn::LoadU(df, x + i)), df, x + i);
  for (; i < n; ++i) x[i] *= a;
}

}  // namespace HWY_NAMESPACE
}  // namespace lclm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lclm {

HWY_EXPORT(DotF32);
HWY_EXPORT(MatVecBF16);
HWY_EXPORT(MatVecF16);
HWY_EXPORT(MatVecF32);
HWY_EXPORT(ConvertBF16ToF32);
HWY_EXPORT(ConvertF16ToF32);
HWY_EXPORT(AxpyF32);
HWY_EXPORT(ScaleF32);

float dot_f32(const float* a, const float* b, std::size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotF32)(a, b, n);
}
void matvec_bf16(const std::uint16_t* w, const float* x, std::size_t m, std::size_t rows,
                 std::size_t cols, float* y, std::size_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatVecBF16)(w, x, m, rows, cols, y, y_stride);
}
void matvec_f16(const std::uint16_t* w, const float* x, std::size_t m, std::size_t rows,
                std::size_t cols, float* y, std::size_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatVecF16)(w, x, m, rows, cols, y, y_stride);
}
void matvec_f32(const float* w, const float* x, std::size_t m, std::size_t rows, std::size_t cols,
                float* y, std::size_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatVecF32)(w, x, m, rows, cols, y, y_stride);
}
void convert_bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(ConvertBF16ToF32)(in, out, n);
}
void convert_f16_to_f32(const std::uint16_t* in, float* out, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(ConvertF16ToF32)(in, out, n);
}
void axpy_f32(float a, const float* x, float* y, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(AxpyF32)(a, x, y, n);
}
void scale_f32(float* x, float a, std::size_t n) {
  HWY_DYNAMIC_DISPATCH(ScaleF32)(x, a, n);
}

}  // namespace lclm
#endif  // HWY_ONCE
