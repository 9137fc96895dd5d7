#include "ops/quant_kernels.h"

#include <cstring>

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

// Two float accumulators, alternate blocks, hide the multiply-add latency.
template <DType kType>
float DotQuantizedRow(const std::uint8_t* row, const std::int16_t* xq, const float* xd,
                      std::size_t n_blocks) {
  constexpr std::size_t kBlockBytes = kType == DType::Q8_0 ? kQ8_0BlockBytes : kQ4_0BlockBytes;
  const hn::Rebind<float, D32> df;
  auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  std::size_t b = 0;
  for (; b + 2 <= n_blocks; b += 2) {
    const std::uint8_t* b0 = row + b * kBlockBytes;
    const std::uint8_t* b1 = b0 + kBlockBytes;
    const auto s0 = hn::ConvertTo(df, BlockDot<kType>(b0 + 2, xq + b * kQuantBlock));
    const auto s1 = hn::ConvertTo(df, BlockDot<kType>(b1 + 2, xq + (b + 1) * kQuantBlock));
    acc0 = hn::MulAdd(hn::Set(df, BlockScale(b0) * xd[b]), s0, acc0);
    acc1 = hn::MulAdd(hn::Set(df, BlockScale(b1) * xd[b + 1]), s1, acc1);
  }
  if (b < n_blocks) {
    const std::uint8_t* b0 = row + b * kBlockBytes;
    const auto s0 = hn::ConvertTo(df, BlockDot<kType>(b0 + 2, xq + b * kQuantBlock));
    acc0 = hn::MulAdd(hn::Set(df, BlockScale(b0) * xd[b]), s0, acc0);
  }
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
}

template <DType kType>
void MatVecQuantizedT(const std::uint8_t* w, const std::int16_t* xq, const float* xd,
                      std::size_t rows, std::size_t cols, float* y) {
  const std::size_t n_blocks = cols / kQuantBlock;
  const std::size_t stride = row_bytes(kType, cols);
  for (std::size_t r = 0; r < rows; ++r)
    y[r] = DotQuantizedRow<kType>(w + r * stride, xq, xd, n_blocks);
}

void MatVecQuantized(DType type, const std::uint8_t* w, const std::int16_t* xq, const float* xd,
                     std::size_t rows, std::size_t cols, float* y) {
  if (type == DType::Q8_0) {
    MatVecQuantizedT<DType::Q8_0>(w, xq, xd, rows, cols, y);
  } else {
    MatVecQuantizedT<DType::Q4_0>(w, xq, xd, rows, cols, y);
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
                      std::size_t rows, std::size_t cols, float* y) {
  HWY_DYNAMIC_DISPATCH(MatVecQuantized)(type, w, xq, xd, rows, cols, y);
}

void dequantize_rows(DType type, const std::uint8_t* w, std::size_t n_rows, std::size_t cols,
                     float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeRows)(type, w, n_rows, cols, out);
}

}  // namespace lclm
#endif  // HWY_ONCE
