#include "ops/quant_kernels.h"

#include <cstring>
#include <string>

#include "ops/row_groups.h"
#include "ops/simd.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/quant_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace lclm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The f16 scale at the start of a block.
HWY_INLINE float BlockScale(const std::uint8_t* block) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh;
  return hn::GetLane(
      hn::PromoteTo(d1, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(block))));
}

// Integer dot product of one block's 32 weights with 32 int16 activations,
// as a vector of int32 partial sums: int8 / int4 weights widened to int16,
// pairs multiplied and summed into int32 (pmaddwd on x86). Vectors of up to
// 32 int16 lanes: one block a vector with AVX-512, two with AVX2.
using D16 = hn::CappedTag<std::int16_t, kQuantBlock>;
using D32 = hn::Repartition<std::int32_t, D16>;

// q4_0 bytes -> (low nibbles - 8, high nibbles - 8) as int16, in lanes of d.
template <class D>
HWY_INLINE void UnpackNibbles(D d, const std::uint8_t* qs, hn::Vec<D>& lo, hn::Vec<D>& hi) {
  const hn::RebindToUnsigned<D> du16;
  const hn::Rebind<std::uint8_t, D> du8;
  const auto bytes = hn::BitCast(d, hn::PromoteTo(du16, hn::LoadU(du8, qs)));
  const auto eight = hn::Set(d, 8);
  lo = hn::Sub(hn::And(bytes, hn::Set(d, 0x0f)), eight);
  hi = hn::Sub(hn::ShiftRight<4>(bytes), eight);
}

template <DType kType>
HWY_INLINE hn::Vec<D32> BlockDot(const std::uint8_t* qs, const std::int16_t* xq) {
  const D16 d16;
  const D32 d32;
  const std::size_t N = hn::Lanes(d16);
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  if constexpr (kType == DType::Q8_0) {
    const hn::Rebind<std::int8_t, D16> d8;
    for (std::size_t j = 0; j < kQuantBlock; j += N) {
      const auto w =
          hn::PromoteTo(d16, hn::LoadU(d8, reinterpret_cast<const std::int8_t*>(qs) + j));
      sum0 = hn::ReorderWidenMulAccumulate(d32, w, hn::LoadU(d16, xq + j), sum0, sum1);
    }
#if HWY_TARGET != HWY_SCALAR  // which has no Combine, and one lane
  } else if constexpr (hn::MaxLanes(D16()) >= kQuantBlock) {
    // Byte j holds elements j and j + 16: the halves of one vector.
    const hn::Half<D16> dh;
    hn::Vec<decltype(dh)> lo, hi;
    UnpackNibbles(dh, qs, lo, hi);
    sum0 = hn::ReorderWidenMulAccumulate(d32, hn::Combine(d16, hi, lo), hn::LoadU(d16, xq), sum0,
                                         sum1);
#endif
  } else {
    for (std::size_t j = 0; j < kQuantBlock / 2; j += N) {
      hn::Vec<D16> lo, hi;
      UnpackNibbles(d16, qs + j, lo, hi);
      sum0 = hn::ReorderWidenMulAccumulate(d32, lo, hn::LoadU(d16, xq + j), sum0, sum1);
      sum0 = hn::ReorderWidenMulAccumulate(d32, hi, hn::LoadU(d16, xq + kQuantBlock / 2 + j), sum0,
                                           sum1);
    }
  }
  return hn::Add(sum0, sum1);
}

// dot(row, x_i) for R rows x_i of the quantized activations (xq_stride
// and xd_stride apart): each block of the row is loaded once for all R. Per
// row two float accumulators take alternate blocks (hiding the multiply-add
// latency) in one fixed order whatever R is, so a row's result does not
// depend on the rows decoded beside it.
template <DType kType, std::size_t R>
void DotQuantizedRows(const std::uint8_t* row, const std::int16_t* xq, std::size_t xq_stride,
                      const float* xd, std::size_t xd_stride, std::size_t n_blocks, float* out,
                      std::size_t out_stride) {
  constexpr std::size_t kBlockBytes = kType == DType::Q8_0 ? kQ8_0BlockBytes : kQ4_0BlockBytes;
  const hn::Rebind<float, D32> df;
  hn::Vec<decltype(df)> acc[R][2];
  for (std::size_t r = 0; r < R; ++r) acc[r][0] = acc[r][1] = hn::Zero(df);
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const std::uint8_t* block = row + b * kBlockBytes;
    const float scale = BlockScale(block);
    for (std::size_t r = 0; r < R; ++r) {
      const auto dot =
          hn::ConvertTo(df, BlockDot<kType>(block + 2, xq + r * xq_stride + b * kQuantBlock));
      acc[r][b % 2] = hn::MulAdd(hn::Set(df, scale * xd[r * xd_stride + b]), dot, acc[r][b % 2]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) {
    out[r * out_stride] = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc[r][0], acc[r][1])));
  }
}

#if HWY_HAVE_SCALABLE  // no arrays of scalable vectors: one row of x per pass
constexpr std::size_t kSharedRows = 1;
#else
constexpr std::size_t kSharedRows = 4;
#endif

// Row by row of W, each multiplied with up to kSharedRows rows of x per
// load (from cache for the next group): W comes from memory once.
template <DType kType>
void MatVecQuantizedT(const std::uint8_t* w, const std::int16_t* xq, const float* xd, std::size_t m,
                      std::size_t rows, std::size_t cols, float* y, std::size_t y_stride) {
  const std::size_t n_blocks = cols / kQuantBlock;
  const std::size_t stride = row_bytes(kType, cols);
  for (std::size_t r = 0; r < rows; ++r) {
    for_row_groups<kSharedRows>(m, [&](auto group, std::size_t i) {
      DotQuantizedRows<kType, decltype(group)::value>(w + r * stride, xq + i * cols, cols,
                                                      xd + i * n_blocks, n_blocks, n_blocks,
                                                      y + i * y_stride + r, y_stride);
    });
  }
}

void MatVecQuantized(DType type, const std::uint8_t* w, const std::int16_t* xq, const float* xd,
                     std::size_t m, std::size_t rows, std::size_t cols, float* y,
                     std::size_t y_stride) {
  if (type == DType::Q8_0) {
    MatVecQuantizedT<DType::Q8_0>(w, xq, xd, m, rows, cols, y, y_stride);
  } else {
    MatVecQuantizedT<DType::Q4_0>(w, xq, xd, m, rows, cols, y, y_stride);
  }
}

// Widens 32-bit lanes' worth of quantized values to f32 and scales them.
using DF = hn::CappedTag<float, 16>;

void DequantizeRows(DType type, const std::uint8_t* w, std::size_t n_rows, std::size_t cols,
                    float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const std::size_t N = hn::Lanes(df);
  const std::size_t n_blocks = n_rows * cols / kQuantBlock;
  if (type == DType::Q8_0) {
    const hn::Rebind<std::int8_t, DF> d8;
    for (std::size_t b = 0; b < n_blocks; ++b) {
      const std::uint8_t* block = w + b * kQ8_0BlockBytes;
      const auto* qs = reinterpret_cast<const std::int8_t*>(block + 2);
      const auto scale = hn::Set(df, BlockScale(block));
      float* y = out + b * kQuantBlock;
      for (std::size_t j = 0; j < kQuantBlock; j += N) {
        const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, qs + j)));
        hn::StoreU(hn::Mul(q, scale), df, y + j);
      }
    }
    return;
  }
  const hn::Rebind<std::uint8_t, DF> du8;
  const hn::RebindToUnsigned<DF> du32;
  const auto low_mask = hn::Set(di, 0x0f), eight = hn::Set(di, 8);
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const std::uint8_t* block = w + b * kQ4_0BlockBytes;
    const auto scale = hn::Set(df, BlockScale(block));
    float* y = out + b * kQuantBlock;
    for (std::size_t j = 0; j < kQuantBlock / 2; j += N) {
      const auto bytes = hn::BitCast(di, hn::PromoteTo(du32, hn::LoadU(du8, block + 2 + j)));
      const auto lo = hn::Sub(hn::And(bytes, low_mask), eight);
      const auto hi = hn::Sub(hn::ShiftRight<4>(bytes), eight);
      hn::StoreU(hn::Mul(hn::ConvertTo(df, lo), scale), df, y + j);
      hn::StoreU(hn::Mul(hn::ConvertTo(df, hi), scale), df, y + kQuantBlock / 2 + j);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace lclm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lclm {

HWY_EXPORT(MatVecQuantized);
HWY_EXPORT(DequantizeRows);

void matvec_quantized(DType type, const std::uint8_t* w, const std::int16_t* xq, const float* xd,
                      std::size_t m, std::size_t rows, std::size_t cols, float* y,
                      std::size_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatVecQuantized)(type, w, xq, xd, m, rows, cols, y, y_stride);
}

void dequantize_rows(DType type, const std::uint8_t* w, std::size_t n_rows, std::size_t cols,
                     float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeRows)(type, w, n_rows, cols, out);
}

void widen_rows(DType type, const std::uint8_t* rows, std::size_t n_rows, std::size_t cols,
                float* out) {
  const std::size_t n = n_rows * cols;
  switch (type) {
    case DType::F32:
      std::memcpy(out, rows, n * sizeof(float));
      return;
    case DType::BF16:
      convert_bf16_to_f32(reinterpret_cast<const std::uint16_t*>(rows), out, n);
      return;
    case DType::F16:
      convert_f16_to_f32(reinterpret_cast<const std::uint16_t*>(rows), out, n);
      return;
    case DType::Q8_0:
    case DType::Q4_0:
      dequantize_rows(type, rows, n_rows, cols, out);
      return;
    default:
      throw Error("widen_rows: rows of dtype " + std::string(dtype_name(type)) +
                  " are not supported");
  }
}

}  // namespace lclm
#endif  // HWY_ONCE
