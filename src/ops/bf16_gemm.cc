#include "ops/bf16_gemm.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "format/dtype.h"
#include "ops/avx512_intrinsics.h"
#include "ops/bf16_kernels.h"
#include "ops/quant_kernels.h"
#include "util/error.h"

namespace lclm {
namespace {

// Columns of y per packed panel of W: two vectors of 16 f32 sums per row.
constexpr std::size_t kPanel = 32;
// Rows of x per register tile: 12 rows x 2 vectors = 24 accumulators, plus
// the panel's 2 vectors and the broadcast pairs of x, within the 32 zmm
// registers.
constexpr std::size_t kTileRows = 12;
// k-pairs per block. A packed block of one panel is kBlockPairs * 32 words
// of 4 bytes = 32 KiB, which every tile of rows reuses from L1 (48 KiB on
// Zen 5, 32 KiB on Zen 4); the block of x it meets, kBlockRows rows of
// kBlockPairs words (512 KiB, twice that split), is read from L2 (1 MiB)
// while the thread's panels pass. Measured on Zen 5 at m = 512: 256 pairs
// ran 2-5% faster than 128 (fewer passes of the sums through y).
constexpr std::size_t kBlockPairs = 256;
constexpr std::size_t kBlockRows = 512;

// Up to this many rows of x (decode's products, ops/bf16_matvec.h) are
// rounded by the calling thread: a parallel region per product would cost
// more than the rows, and decode's threads are the pool's, not OpenMP's.
constexpr std::size_t kSerialRoundingRows = 8;

std::atomic<int> precision_override{-1};

__mmask16 first_lanes(std::size_t count) {
  return static_cast<__mmask16>((1u << std::min<std::size_t>(count, 16)) - 1);
}

// panel [pairs][32] words = k-pairs p0 .. p0+pairs of columns n0 .. n0+width
// of y, i.e. of rows n0 .. n0+width of W [n, k]: word (p, j) holds
// W[n0+j][2(p0+p)] in its low half and W[n0+j][2(p0+p)+1] in its high half,
// the layout `vdpbf16ps` multiplies a broadcast pair of x with. Columns past
// `width` and the half pair past an odd k are zero, so tails need no other
// care than a masked store. Blocks of 16 rows by 16 pairs are transposed in
// registers (a word at a time took about 6% of the time at m = 512).
LCLM_AVX512_BF16 void pack_panel(const std::uint16_t* w, std::size_t k, std::size_t n0,
                                 std::size_t width, std::size_t p0, std::size_t pairs,
                                 std::uint32_t* panel) {
  const bool odd_end = k % 2 == 1 && p0 + pairs == (k + 1) / 2;
  const std::size_t whole = odd_end ? pairs - 1 : pairs;  // pairs with both halves in W
  for (std::size_t j0 = 0; j0 < kPanel; j0 += 16) {
    for (std::size_t p = 0; p < pairs; p += 16) {
      const __mmask16 words = first_lanes(whole > p ? whole - p : 0);
      __m512i r[16];
      for (std::size_t i = 0; i < 16; ++i) {
        r[i] = j0 + i < width
                   ? _mm512_maskz_loadu_epi32(words, w + (n0 + j0 + i) * k + 2 * (p0 + p))
                   : _mm512_setzero_si512();
      }
      transpose_16x16(r);
      for (std::size_t c = 0; c < std::min<std::size_t>(16, pairs - p); ++c) {
        _mm512_store_si512(panel + (p + c) * kPanel + j0, r[c]);
      }
    }
  }
  if (odd_end) {
    for (std::size_t j = 0; j < width; ++j) panel[whole * kPanel + j] = w[(n0 + j + 1) * k - 1];
  }
}

// y [kRows, 32] (+)= x [kRows, pairs] (words, row stride x_stride) times the
// packed panel [pairs][32]; lanes of y outside mask0 / mask1 (its two halves
// of 16) are neither read nor written. With kSplit, hi and lo both multiply
// the panel into the same sums.
template <std::size_t kRows, bool kSplit>
LCLM_AVX512_BF16 void multiply_tile(const std::uint32_t* hi, const std::uint32_t* lo,
                                    std::size_t x_stride, const std::uint32_t* panel,
                                    std::size_t pairs, float* y, std::size_t y_stride,
                                    __mmask16 mask0, __mmask16 mask1, bool accumulate) {
  __m512 sum0[kRows], sum1[kRows];
#pragma GCC unroll 16
  for (std::size_t r = 0; r < kRows; ++r) {
    sum0[r] = accumulate ? _mm512_maskz_loadu_ps(mask0, y + r * y_stride) : _mm512_setzero_ps();
    sum1[r] =
        accumulate ? _mm512_maskz_loadu_ps(mask1, y + r * y_stride + 16) : _mm512_setzero_ps();
  }
  for (std::size_t p = 0; p < pairs; ++p) {
    const auto b0 = reinterpret_cast<__m512bh>(_mm512_load_si512(panel + p * kPanel));
    const auto b1 = reinterpret_cast<__m512bh>(_mm512_load_si512(panel + p * kPanel + 16));
#pragma GCC unroll 16
    for (std::size_t r = 0; r < kRows; ++r) {
      const auto a =
          reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(hi[r * x_stride + p])));
      sum0[r] = _mm512_dpbf16_ps(sum0[r], a, b0);
      sum1[r] = _mm512_dpbf16_ps(sum1[r], a, b1);
      if constexpr (kSplit) {
        const auto a_lo =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(lo[r * x_stride + p])));
        sum0[r] = _mm512_dpbf16_ps(sum0[r], a_lo, b0);
        sum1[r] = _mm512_dpbf16_ps(sum1[r], a_lo, b1);
      }
    }
  }
#pragma GCC unroll 16
  for (std::size_t r = 0; r < kRows; ++r) {
    _mm512_mask_storeu_ps(y + r * y_stride, mask0, sum0[r]);
    _mm512_mask_storeu_ps(y + r * y_stride + 16, mask1, sum1[r]);
  }
}

using TileKernel = void (*)(const std::uint32_t*, const std::uint32_t*, std::size_t,
                            const std::uint32_t*, std::size_t, float*, std::size_t, __mmask16,
                            __mmask16, bool);

// The tile kernels for 1 .. kTileRows rows (the last tile of a block may be
// short), so every row count runs fully unrolled.
template <bool kSplit, std::size_t... kRowsLess1>
constexpr std::array<TileKernel, kTileRows> tile_kernels(std::index_sequence<kRowsLess1...>) {
  return {&multiply_tile<kRowsLess1 + 1, kSplit>...};
}
constexpr auto kSplitTiles = tile_kernels<true>(std::make_index_sequence<kTileRows>());
constexpr auto kRoundedTiles = tile_kernels<false>(std::make_index_sequence<kTileRows>());

// W as the GEMM reads it: bf16 rows (bf16 set) or block-quantized rows of
// `type` (quantized set), widened to bf16 panel block by panel block.
struct WeightSource {
  const std::uint16_t* bf16 = nullptr;
  const std::uint8_t* quantized = nullptr;
  DType type = DType::BF16;
  RowOrder order = RowOrder::kRowMajor;
};

// Fills `panel` for columns n0 .. n0+width and k-pairs p0 .. p0+pairs. For a
// quantized W the rows' segment (whole blocks: 2 * p0 is a multiple of 512
// and k of 32) is widened to f32 in `wide` [width, 2 * pairs], rounded to
// bf16 into `half` (words of two) and packed from there.
LCLM_AVX512_BF16 void fill_panel(const WeightSource& w, std::size_t k, std::size_t n0,
                                 std::size_t width, std::size_t p0, std::size_t pairs, float* wide,
                                 std::uint32_t* half, std::uint32_t* panel) {
  if (w.quantized == nullptr) {
    pack_panel(w.bf16, k, n0, width, p0, pairs, panel);
    return;
  }
  const std::size_t cols = 2 * pairs;
  // An interleaved W's segment of the panel's rows is put back in the
  // row-major order first (32 rows of 512 columns: 9 KiB).
  thread_local std::vector<std::uint8_t> scratch;
  const RowMajorBlocks rows = row_major_blocks(w.type, w.order, w.quantized, k, n0, width,
                                               2 * p0 / kQuantBlock, cols / kQuantBlock, scratch);
  for (std::size_t j = 0; j < width; ++j) {
    dequantize_rows(w.type, rows.data + j * rows.stride, 1, cols, wide + j * cols);
    round_bf16_pairs(wide + j * cols, cols, half + j * pairs, nullptr);
  }
  pack_panel(reinterpret_cast<const std::uint16_t*>(half), cols, 0, width, 0, pairs, panel);
}

// y rows r0 .. r1, columns of panels q0 .. q1 (one thread's share), over
// all of k. W is packed here, per call, rather than once at load: a packed
// copy kept with each matrix would cost as much memory again as the bf16
// weights (880 MB for Qwen3-0.6B's projections), and skipping the packing
// made a 512-row product only 1% (split) to 4% (rounded) faster. Blocks of kBlockRows rows, then of
// kBlockPairs k-pairs, then the panels: each panel block is packed once into L1 and multiplied by
// every tile of the row block, which waits in L2.
void multiply_share(const Bf16Rows& x, const WeightSource& w, std::size_t n, std::size_t q0,
                    std::size_t q1, std::size_t r0, std::size_t r1, float* y) {
  alignas(64) std::uint32_t panel[kBlockPairs * kPanel];
  // A quantized W's panel block widened (64 KiB) and rounded (32 KiB) on its way.
  std::vector<float> wide(w.quantized ? kPanel * 2 * kBlockPairs : 0);
  std::vector<std::uint32_t> half(w.quantized ? kPanel * kBlockPairs : 0);
  const auto& tiles = x.precision == Bf16Precision::kSplit ? kSplitTiles : kRoundedTiles;
  const std::uint32_t* hi = x.hi.data();
  const std::uint32_t* lo = x.precision == Bf16Precision::kSplit ? x.lo.data() : nullptr;
  for (std::size_t i0 = r0; i0 < r1; i0 += kBlockRows) {
    const std::size_t i1 = std::min(r1, i0 + kBlockRows);
    for (std::size_t p0 = 0; p0 < x.k_pairs; p0 += kBlockPairs) {
      const std::size_t pairs = std::min(kBlockPairs, x.k_pairs - p0);
      for (std::size_t q = q0; q < q1; ++q) {
        const std::size_t n0 = q * kPanel, width = std::min(kPanel, n - n0);
        fill_panel(w, x.k, n0, width, p0, pairs, wide.data(), half.data(), panel);
        const __mmask16 mask0 = first_lanes(width);
        const __mmask16 mask1 = first_lanes(width > 16 ? width - 16 : 0);
        for (std::size_t i = i0; i < i1; i += kTileRows) {
          const std::size_t offset = i * x.row_words + p0;
          tiles[std::min(kTileRows, i1 - i) - 1](hi + offset, lo ? lo + offset : nullptr,
                                                 x.row_words, panel, pairs, y + i * n + n0, n,
                                                 mask0, mask1, p0 > 0);
        }
      }
    }
  }
}

void require_avx512_bf16(const char* what) {
  if (!cpu_has_avx512_bf16()) {
    throw Error(std::string(what) +
                ": this CPU has no AVX512_BF16; multiply with matmul() (ops/matmul.h), which "
                "takes the portable path there");
  }
}

Bf16Precision precision_from_environment() {
  static const Bf16Precision precision = [] {
    const char* env = std::getenv("LCLM_BF16_ACTIVATIONS");
    const std::string value = env ? env : "";
    if (value.empty() || value == "rounded") return Bf16Precision::kRounded;
    if (value == "split") return Bf16Precision::kSplit;
    throw Error("LCLM_BF16_ACTIVATIONS=" + value +
                " in the environment: expected split or rounded");
  }();
  return precision;
}

}  // namespace

LCLM_AVX512_BF16 void round_bf16_pairs(const float* x, std::size_t n, std::uint32_t* hi,
                                       std::uint32_t* lo) {
  for (std::size_t i = 0; i < n; i += 16) {
    const std::size_t count = std::min<std::size_t>(16, n - i);
    const __m512 v = _mm512_maskz_loadu_ps(first_lanes(count), x + i);
    const __m256bh h = _mm512_cvtneps_pbh(v);
    const auto words = static_cast<__mmask8>((1u << ((count + 1) / 2)) - 1);
    _mm256_mask_storeu_epi32(hi + i / 2, words, reinterpret_cast<__m256i>(h));
    if (lo != nullptr) {
      const __m512 hv = _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(h)), 16));
      const __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, hv));
      _mm256_mask_storeu_epi32(lo + i / 2, words, reinterpret_cast<__m256i>(l));
    }
  }
}

void to_bf16_rows(const float* x, std::size_t m, std::size_t k, Bf16Precision precision,
                  Bf16Rows& out) {
  require_avx512_bf16("to_bf16_rows");
  out.m = m;
  out.k = k;
  out.k_pairs = (k + 1) / 2;
  out.precision = precision;
  const std::size_t lines = (out.k_pairs + 15) / 16;
  out.row_words = 16 * (lines % 2 == 1 ? lines : lines + 1);
  out.hi.resize(m * out.row_words);
  out.lo.resize(precision == Bf16Precision::kSplit ? m * out.row_words : 0);
  std::uint32_t* hi = out.hi.data();
  std::uint32_t* lo = precision == Bf16Precision::kSplit ? out.lo.data() : nullptr;
  const auto rows = static_cast<std::ptrdiff_t>(m);
#pragma omp parallel for schedule(static) if (m > kSerialRoundingRows)
  for (std::ptrdiff_t i = 0; i < rows; ++i) {
    const auto r = static_cast<std::size_t>(i);
    round_bf16_pairs(x + r * k, k, hi + r * out.row_words, lo ? lo + r * out.row_words : nullptr);
  }
}

namespace {

void run_gemm(const Bf16Rows& x, const WeightSource& w, std::size_t n, float* y) {
  if (x.m == 0 || n == 0) return;
  const std::size_t panels = (n + kPanel - 1) / kPanel;
  const std::size_t row_tiles = (x.m + kTileRows - 1) / kTileRows;
#pragma omp parallel
  {
    // Columns first, so each thread reads only its own rows of W; rows of y
    // too when there are fewer panels than threads.
    const auto threads = static_cast<std::size_t>(omp_get_num_threads());
    const auto t = static_cast<std::size_t>(omp_get_thread_num());
    const std::size_t column_parts = std::min(threads, panels);
    const std::size_t row_parts = threads / column_parts;
    const std::size_t tc = t % column_parts, tr = t / column_parts;
    if (tr < row_parts) {
      const std::size_t r0 = std::min(x.m, row_tiles * tr / row_parts * kTileRows);
      const std::size_t r1 = std::min(x.m, row_tiles * (tr + 1) / row_parts * kTileRows);
      multiply_share(x, w, n, panels * tc / column_parts, panels * (tc + 1) / column_parts, r0, r1,
                     y);
    }
  }
}

}  // namespace

void gemm_bf16(const Bf16Rows& x, const std::uint16_t* w, std::size_t n, float* y) {
  require_avx512_bf16("gemm_bf16");
  run_gemm(x, {.bf16 = w}, n, y);
}

void gemm_bf16_quantized(const Bf16Rows& x, DType type, const std::uint8_t* w, std::size_t n,
                         float* y, RowOrder order) {
  require_avx512_bf16("gemm_bf16_quantized");
  if (!is_block_quantized(type) || x.k % kQuantBlock != 0) {
    throw Error("gemm_bf16_quantized: needs q8_0 or q4_0 rows of whole blocks of 32");
  }
  run_gemm(x, {.quantized = w, .type = type, .order = order}, n, y);
}

Bf16Precision bf16_activation_precision() {
  const int chosen = precision_override.load(std::memory_order_relaxed);
  return chosen < 0 ? precision_from_environment() : static_cast<Bf16Precision>(chosen);
}

void set_bf16_activation_precision(Bf16Precision precision) {
  precision_override.store(static_cast<int>(precision), std::memory_order_relaxed);
}

}  // namespace lclm
