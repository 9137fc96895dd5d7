// The decode products of q8_0 / q4_0 weights on AVX512-VNNI (`vpdpbusd`:
// 64 unsigned x signed byte products summed into 16 int32 lanes per
// instruction), two blocks of 32 per 512-bit vector. The Highway kernel
// (quant_kernels.cc) widens weights and x to int16 for `pmaddwd`, half the
// products per instruction; see docs/quantization.md for the measurements.
//
// vpdpbusd wants one operand unsigned. The weights are made unsigned and the
// activations (int8, QuantizedActivations::q8) stay signed:
//   q8_0: u = w + 128 (w XOR 0x80), sum u x = sum w x + 128 sum x
//   q4_0: u = the nibble q = w + 8,  sum u x = sum w x +   8 sum x
// so each pair of blocks starts its int32 sums at -128 (or -8) times the
// blocks' sums of x (QuantizedActivations::pair_sum, one lane per block):
// the integer dot product of each block comes out exact, in the 8 lanes of
// its half of the vector. Those lanes are converted to float and multiplied
// by d_w * d_x of their block (pair_d times the weights' two scales), and
// added into two float accumulators taking alternate pairs. Every row of x
// is summed in the same order whatever rows are multiplied beside it.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "format/dtype.h"
#include "format/quant_blocks.h"
#include "ops/avx512_intrinsics.h"
#include "ops/matmul.h"
#include "ops/quant_kernels.h"

namespace lclm {
namespace {

std::atomic<bool> vnni_wanted{true};

// Rows of x multiplied per load of a weight pair (registers: 2 accumulators
// a row, plus the pair's weights and scales).
constexpr std::size_t kRowsPerPass = 4;

// The f16 scale at the start of a block.
LCLM_AVX512_VNNI inline float block_scale(const std::uint8_t* block) {
  std::uint16_t h;
  __builtin_memcpy(&h, block, 2);
  return _cvtsh_ss(h);
}

// Blocks b and b+1 of a row (b+1 absent when `two` is false: its bytes and
// scale are zero) as the unsigned operand, and their scales in lanes 0-7 and
// 8-15.
template <DType kType>
LCLM_AVX512_VNNI inline void load_pair(const std::uint8_t* row, std::size_t b, bool two, __m512i& u,
                                       __m512& scales) {
  constexpr std::size_t kBytes = kType == DType::Q8_0 ? kQ8_0BlockBytes : kQ4_0BlockBytes;
  const std::uint8_t* b0 = row + b * kBytes;
  const std::uint8_t* b1 = b0 + kBytes;
  const float s1 = two ? block_scale(b1) : 0.0f;
  scales = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(block_scale(b0)), _mm512_set1_ps(s1));
  if constexpr (kType == DType::Q8_0) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2));
    const __m256i hi =
        two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + 2)) : _mm256_setzero_si256();
    const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    // w + 128 as unsigned bytes; a missing block stays 0 (its scale is 0).
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    u = _mm512_mask_xor_epi32(w, two ? 0xFFFF : 0x00FF, w, flip);
  } else {
    // Byte j of a block holds elements j (low nibble) and j+16 (high).
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2));
    const __m128i q1 =
        two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + 2)) : _mm_setzero_si128();
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(t, mask);                        // [lo0, lo1]
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), mask);  // [hi0, hi1]
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    u = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));  // [lo0, hi0, lo1, hi1]
  }
}

// Pair p of blocks of `row` times the R rows of x starting at x_row, added
// into acc[r] (a pair's int32 sums converted, scaled, and fused into the
// float accumulator).
template <DType kType, std::size_t R>
LCLM_AVX512_VNNI inline void add_pair(const std::uint8_t* row, const QuantizedActivations& x,
                                      std::size_t x_row, std::size_t cols, std::size_t p,
                                      __m512 (&acc)[R]) {
  constexpr int kShift = kType == DType::Q8_0 ? 7 : 3;  // the 128 or 8 added to w
  const std::size_t pairs = x.pairs_per_row;
  __m512i u;
  __m512 w_scales;
  load_pair<kType>(row, 2 * p, 2 * p + 1 < cols / kQuantBlock, u, w_scales);
  for (std::size_t r = 0; r < R; ++r) {
    const std::size_t xr = x_row + r;
    const std::size_t lane = (xr * pairs + p) * 16;
    const __m512i sums = _mm512_load_si512(x.pair_sum.data() + lane);
    const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sums, kShift));
    // Two blocks of x: 64 bytes (a missing second block's bytes are read
    // from the next row or the padding and meet zero weights).
    const __m512i xv = _mm512_loadu_si512(x.q8.data() + xr * cols + 2 * p * kQuantBlock);
    const __m512i dot = _mm512_dpbusd_epi32(start, u, xv);
    const __m512 scale = _mm512_mul_ps(w_scales, _mm512_load_ps(x.pair_d.data() + lane));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
  }
}

// out[r * out_stride] = dot(row, x_r) for the R rows of x starting at x_row:
// even pairs summed into one accumulator per row, odd pairs into another
// (the loop unrolled by two, so both stay in registers), added at the end.
template <DType kType, std::size_t R>
LCLM_AVX512_VNNI void dot_rows(const std::uint8_t* row, const QuantizedActivations& x,
                               std::size_t x_row, std::size_t cols, float* out,
                               std::size_t out_stride) {
  const std::size_t pairs = x.pairs_per_row;
  __m512 even[R], odd[R];
  for (std::size_t r = 0; r < R; ++r) even[r] = odd[r] = _mm512_setzero_ps();
  std::size_t p = 0;
  for (; p + 2 <= pairs; p += 2) {
    add_pair<kType, R>(row, x, x_row, cols, p, even);
    add_pair<kType, R>(row, x, x_row, cols, p + 1, odd);
  }
  if (p < pairs) add_pair<kType, R>(row, x, x_row, cols, p, even);
  for (std::size_t r = 0; r < R; ++r) {
    out[r * out_stride] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
  }
}

template <DType kType>
void matvec_rows(const std::uint8_t* w, const QuantizedActivations& x, std::size_t m,
                 std::size_t rows, std::size_t cols, float* y, std::size_t y_stride) {
  const std::size_t stride = row_bytes(kType, cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint8_t* row = w + r * stride;
    std::size_t i = 0;
    for (; i + kRowsPerPass <= m; i += kRowsPerPass) {
      dot_rows<kType, kRowsPerPass>(row, x, i, cols, y + i * y_stride + r, y_stride);
    }
    switch (m - i) {
      case 3:
        dot_rows<kType, 3>(row, x, i, cols, y + i * y_stride + r, y_stride);
        break;
      case 2:
        dot_rows<kType, 2>(row, x, i, cols, y + i * y_stride + r, y_stride);
        break;
      case 1:
        dot_rows<kType, 1>(row, x, i, cols, y + i * y_stride + r, y_stride);
        break;
      default:
        break;
    }
  }
}

// The 16 rows of one group of a kInterleaved16 matrix of type kType times
// the R rows of x starting at x_row: y[r * y_stride + i] for rows i of the
// group. Per block, the quarters of the group's quants (rows j, j+4, j+8,
// j+12 in the four 128-bit lanes of quarter j) give each row's 16 unsigned
// bytes of elements 0-15 and of 16-31 (q4_0: the low and high nibbles of
// one quarter; q8_0: quarters j and 4 + j, stored as w + 128), which meet
// the block's 16 bytes of x of each half broadcast to every lane: two
// `vpdpbusd` give each row's block sum in four int32 lanes. Two rounds of
// unpack-and-add across the quarters sum those four lanes exactly and leave
// row i in lane i; less 8 (or 128) times the block's sum of x, converted to
// float, times d_w * d_x, added into one float accumulator per row of x.
template <DType kType, std::size_t R>
LCLM_AVX512_VNNI void dot_group(const std::uint8_t* group, const QuantizedActivations& x,
                                std::size_t x_row, std::size_t cols, float* y,
                                std::size_t y_stride) {
  constexpr std::size_t kBlockBytes =
      kGroupRows * (kType == DType::Q8_0 ? kQ8_0BlockBytes : kQ4_0BlockBytes);
  constexpr std::int32_t kOffset = kType == DType::Q8_0 ? 128 : 8;  // added to each w
  constexpr std::size_t kPrefetchAhead = 4096;
  const std::size_t n_blocks = cols / kQuantBlock, pairs = x.pairs_per_row;
  __m512 acc[R];
  for (std::size_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const std::uint8_t* block = group + b * kBlockBytes;
    const std::uint8_t* quarters = block + 2 * kGroupRows;
    // q8_0: the lines of the block 4 KiB ahead (the next group's, near a
    // group's end: W is one stream). Decode at one thread read 80-87% of the
    // measured bandwidth without, 94-95% with; q4_0, with half the bytes per
    // block, ran 2-5% slower with it.
    if constexpr (kType == DType::Q8_0) {
      for (std::size_t line = 0; line < kBlockBytes; line += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(block + kPrefetchAhead + line), _MM_HINT_T0);
      }
    }
    const __m512 w_scales =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
    __m512i lo[4], hi[4];  // elements 0-15 and 16-31 of rows j, j+4, j+8, j+12
    for (std::size_t j = 0; j < 4; ++j) {
      const __m512i q = _mm512_loadu_si512(quarters + 64 * j);
      if constexpr (kType == DType::Q8_0) {
        lo[j] = q;
        hi[j] = _mm512_loadu_si512(quarters + 64 * (4 + j));
      } else {
        const __m512i nibble = _mm512_set1_epi8(0x0f);
        lo[j] = _mm512_and_si512(q, nibble);
        hi[j] = _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble);
      }
    }
    for (std::size_t r = 0; r < R; ++r) {
      const std::size_t xr = x_row + r;
      const std::int8_t* xb = x.q8.data() + xr * cols + b * kQuantBlock;
      const __m512i x_lo =
          _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb)));
      const __m512i x_hi =
          _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb + 16)));
      __m512i sums[4];
      for (std::size_t j = 0; j < 4; ++j) {
        sums[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[j], x_lo);
        sums[j] = _mm512_dpbusd_epi32(sums[j], hi[j], x_hi);
      }
      const __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(sums[0], sums[1]),
                                           _mm512_unpackhi_epi32(sums[0], sums[1]));
      const __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(sums[2], sums[3]),
                                           _mm512_unpackhi_epi32(sums[2], sums[3]));
      const __m512i rows16 =
          _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
      const std::int32_t x_sum = x.pair_sum[(xr * pairs + b / 2) * 16 + (b % 2) * 8];
      const __m512i dot = _mm512_sub_epi32(rows16, _mm512_set1_epi32(kOffset * x_sum));
      const __m512 scale = _mm512_mul_ps(w_scales, _mm512_set1_ps(x.d[xr * n_blocks + b]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) _mm512_storeu_ps(y + r * y_stride, acc[r]);
}

// dot_group for 1 .. sizeof...(R) rows of x, indexed by rows - 1.
using GroupKernel = void (*)(const std::uint8_t*, const QuantizedActivations&, std::size_t,
                             std::size_t, float*, std::size_t);
template <DType kType, std::size_t... R>
constexpr std::array<GroupKernel, sizeof...(R)> group_kernels(std::index_sequence<R...>) {
  return {&dot_group<kType, R + 1>...};
}

template <DType kType>
void matvec_groups(const std::uint8_t* w, const QuantizedActivations& x, std::size_t m,
                   std::size_t rows, std::size_t cols, float* y, std::size_t y_stride) {
  // Up to 8 rows of x in one pass over a group's blocks: the live
  // registers are the block's eight weight vectors, one accumulator per row
  // of x, and the row being summed (its two broadcasts of x, four block
  // sums, a few temporaries), within the 32 vector registers.
  const std::size_t group_bytes = cols / kQuantBlock * kGroupRows * row_bytes(kType, kQuantBlock);
  constexpr auto kKernels = group_kernels<kType>(std::make_index_sequence<kMatvecMaxRows>());
  for (std::size_t g = 0; g < rows / kGroupRows; ++g) {
    const std::uint8_t* group = w + g * group_bytes;
    for (std::size_t i = 0; i < m; i += kMatvecMaxRows) {
      const std::size_t pass = std::min(kMatvecMaxRows, m - i);
      kKernels[pass - 1](group, x, i, cols, y + g * kGroupRows + i * y_stride, y_stride);
    }
  }
}

}  // namespace

bool cpu_has_avx512_vnni() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c");
  return has;
}

bool native_vnni_enabled() {
  return vnni_wanted.load(std::memory_order_relaxed) && cpu_has_avx512_vnni();
}

void set_native_vnni(bool on) {
  vnni_wanted.store(on, std::memory_order_relaxed);
}

void matvec_quantized_vnni(DType type, const std::uint8_t* w, const QuantizedActivations& x,
                           std::size_t m, std::size_t rows, std::size_t cols, float* y,
                           std::size_t y_stride) {
  if (type == DType::Q8_0) {
    matvec_rows<DType::Q8_0>(w, x, m, rows, cols, y, y_stride);
  } else {
    matvec_rows<DType::Q4_0>(w, x, m, rows, cols, y, y_stride);
  }
}

void matvec_interleaved_vnni(DType type, const std::uint8_t* w, const QuantizedActivations& x,
                             std::size_t m, std::size_t rows, std::size_t cols, float* y,
                             std::size_t y_stride) {
  if (type == DType::Q8_0) {
    matvec_groups<DType::Q8_0>(w, x, m, rows, cols, y, y_stride);
  } else {
    matvec_groups<DType::Q4_0>(w, x, m, rows, cols, y, y_stride);
  }
}

}  // namespace lclm
