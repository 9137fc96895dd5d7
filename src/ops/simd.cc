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

// dot(W[r], x_i) for R rows x_i of x (x_stride apart), weights stored as
// f32 (Half16 = void) or as the bits of a 16-bit float: each load of w serves
// all R rows. Per row the sums run in one fixed order (four accumulators over
// blocks of 4N, the rest into the first, then the scalar tail), whatever R
// is, so a row's result does not depend on the rows decoded beside it.
// Highway's scalable vectors (SVE, RVV) cannot form arrays: there R is 1.
template <std::size_t R, typename Half16, typename Stored>
void DotRows(const Stored* w, const float* x, std::size_t x_stride, std::size_t n, float* out,
             std::size_t out_stride) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  hn::Vec<decltype(df)> s[R][4];
  for (std::size_t r = 0; r < R; ++r) {
    for (auto& acc : s[r]) acc = hn::Zero(df);
  }
  std::size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const char* ahead = reinterpret_cast<const char*>(w + i) + kPrefetchBytes;
    for (std::size_t line = 0; line < 4 * N * sizeof(Stored); line += 64) {
      hwy::Prefetch(ahead + line);
    }
    for (std::size_t j = 0; j < 4; ++j) {
      const auto wv = LoadWeights<Half16>(df, w + i + j * N);
      for (std::size_t r = 0; r < R; ++r) {
        s[r][j] = hn::MulAdd(wv, hn::LoadU(df, x + r * x_stride + i + j * N), s[r][j]);
      }
    }
  }
  for (; i + N <= n; i += N) {
    const auto wv = LoadWeights<Half16>(df, w + i);
    for (std::size_t r = 0; r < R; ++r) {
      s[r][0] = hn::MulAdd(wv, hn::LoadU(df, x + r * x_stride + i), s[r][0]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) {
    const auto sum = hn::Add(hn::Add(s[r][0], s[r][1]), hn::Add(s[r][2], s[r][3]));
    out[r * out_stride] =
        hn::GetLane(hn::SumOfLanes(df, sum)) + RowTail<Half16>(w, x + r * x_stride, i, n);
  }
}

float DotF32(const float* a, const float* b, std::size_t n) {
  float out = 0.0f;
  DotRows<1, void>(a, b, 0, n, &out, 0);
  return out;
}

// The rows of x a pass over W serves at once: R accumulator sets of four
// vectors, 16 of AVX-512's 32 registers at R = 4.
#if HWY_HAVE_SCALABLE
constexpr std::size_t kSharedRows = 1;
#else
constexpr std::size_t kSharedRows = 4;
#endif

// y[i * y_stride + r] = dot(W[r], x_i) for the m rows of x: W row by row
// (measured faster than sharing loads of x across four rows of W, which
// splits the prefetcher's attention over four streams), and each row of W
// multiplied with up to kSharedRows rows of x per load, from cache for the
// next group, so W comes from memory once whatever m is. All rows in one
// call so the dispatch is paid once per block.
template <typename Half16, typename Stored>
void MatVec(const Stored* w, const float* x, std::size_t m, std::size_t rows, std::size_t cols,
            float* y, std::size_t y_stride) {
  for (std::size_t r = 0; r < rows; ++r) {
    for_row_groups<kSharedRows>(m, [&](auto group, std::size_t i) {
      DotRows<decltype(group)::value, Half16>(w + r * cols, x + i * cols, cols, cols,
                                              y + i * y_stride + r, y_stride);
    });
  }
}

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
