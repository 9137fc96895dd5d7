#include "ops/bf16_attention.h"

#include <algorithm>

#include "ops/avx512_intrinsics.h"
#include "ops/bf16_gemm.h"

namespace lclm::bf16_attention {
namespace {

// Lanes of an f32 vector, and pair words per vector.
constexpr std::size_t kLanes = 16;
// Score tiles: up to 4 rows x 4 chunks of 16 keys = 16 accumulators, with
// the 4 key vectors of a pair line loaded once for the 4 rows.
constexpr std::size_t kScoreRows = 4;
constexpr std::size_t kScoreChunks = 4;
// Value tiles: 2 rows x up to 8 vectors of an output row (head_dim 128 in
// one pass) = 16 accumulators, the 8 value vectors of a key pair loaded once
// for both rows.
constexpr std::size_t kValueRows = 2;
constexpr std::size_t kValueVectors = 8;

LCLM_AVX512_BF16 inline __m512bh as_bf16(__m512i v) {
  return reinterpret_cast<__m512bh>(v);
}

// R rows x C chunks of scores; each lane sums its pair products in order of p.
template <std::size_t R, std::size_t C>
LCLM_AVX512_BF16 void score_tile(const std::uint32_t* q, std::size_t pairs, const std::uint32_t* kt,
                                 float scale, float* s) {
  __m512 acc[R * C];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < R * C; ++i) acc[i] = _mm512_setzero_ps();
  for (std::size_t p = 0; p < pairs; ++p) {
    __m512bh queries[R];
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r) {
      queries[r] = as_bf16(_mm512_set1_epi32(static_cast<int>(q[r * pairs + p])));
    }
#pragma GCC unroll 4
    for (std::size_t c = 0; c < C; ++c) {
      const __m512bh keys = as_bf16(_mm512_loadu_si512(kt + p * kKeys + c * kLanes));
#pragma GCC unroll 4
      for (std::size_t r = 0; r < R; ++r) {
        acc[r * C + c] = _mm512_dpbf16_ps(acc[r * C + c], queries[r], keys);
      }
    }
  }
  const __m512 vscale = _mm512_set1_ps(scale);
#pragma GCC unroll 4
  for (std::size_t r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (std::size_t c = 0; c < C; ++c) {
      _mm512_storeu_ps(s + r * kKeys + c * kLanes, _mm512_mul_ps(acc[r * C + c], vscale));
    }
  }
}

template <std::size_t R>
LCLM_AVX512_BF16 void score_rows(const std::uint32_t* q, std::size_t pairs, const std::uint32_t* kt,
                                 std::size_t chunks, float scale, float* s) {
  switch (chunks) {
    case 1:
      return score_tile<R, 1>(q, pairs, kt, scale, s);
    case 2:
      return score_tile<R, 2>(q, pairs, kt, scale, s);
    case 3:
      return score_tile<R, 3>(q, pairs, kt, scale, s);
    default:
      return score_tile<R, 4>(q, pairs, kt, scale, s);
  }
}

// R rows of acc, D vectors (of 16 outputs) from column d0 on.
template <std::size_t R, std::size_t D>
LCLM_AVX512_BF16 void value_tile(const std::uint32_t* pw, std::size_t n_pairs,
                                 const std::uint32_t* vp, std::size_t hd, const float* correction,
                                 float* acc) {
  __m512 a[R * D];
#pragma GCC unroll 2
  for (std::size_t r = 0; r < R; ++r) {
    const __m512 vc = _mm512_set1_ps(correction[r]);
#pragma GCC unroll 8
    for (std::size_t v = 0; v < D; ++v) {
      a[r * D + v] = _mm512_mul_ps(vc, _mm512_loadu_ps(acc + r * hd + v * kLanes));
    }
  }
  // Each value vector is loaded once and used by the R rows at once (a
  // register array of them had GCC load each again per row).
  for (std::size_t t = 0; t < n_pairs; ++t) {
    __m512bh weights[R];
#pragma GCC unroll 2
    for (std::size_t r = 0; r < R; ++r) {
      weights[r] = as_bf16(_mm512_set1_epi32(static_cast<int>(pw[r * kKeys / 2 + t])));
    }
#pragma GCC unroll 8
    for (std::size_t v = 0; v < D; ++v) {
      const __m512bh values = as_bf16(_mm512_loadu_si512(vp + t * hd + v * kLanes));
#pragma GCC unroll 2
      for (std::size_t r = 0; r < R; ++r) {
        a[r * D + v] = _mm512_dpbf16_ps(a[r * D + v], weights[r], values);
      }
    }
  }
#pragma GCC unroll 2
  for (std::size_t r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (std::size_t v = 0; v < D; ++v) _mm512_storeu_ps(acc + r * hd + v * kLanes, a[r * D + v]);
  }
}

template <std::size_t R>
LCLM_AVX512_BF16 void value_rows(const std::uint32_t* pw, std::size_t n_pairs,
                                 const std::uint32_t* vp, std::size_t hd, const float* correction,
                                 float* acc) {
  std::size_t d = 0;
  for (; d + kValueVectors * kLanes <= hd; d += kValueVectors * kLanes) {
    value_tile<R, kValueVectors>(pw, n_pairs, vp + d, hd, correction, acc + d);
  }
  switch ((hd - d) / kLanes) {  // hd is a multiple of 32: an even count of vectors
    case 6:
      return value_tile<R, 6>(pw, n_pairs, vp + d, hd, correction, acc + d);
    case 4:
      return value_tile<R, 4>(pw, n_pairs, vp + d, hd, correction, acc + d);
    case 2:
      return value_tile<R, 2>(pw, n_pairs, vp + d, hd, correction, acc + d);
    default:
      return;
  }
}

}  // namespace

LCLM_AVX512_BF16 void pack_keys(const std::uint16_t* k, std::size_t nk, std::size_t hd,
                                std::uint32_t* kt) {
  const std::size_t pairs = hd / 2;
  const auto* k32 = reinterpret_cast<const std::uint32_t*>(k);
  for (std::size_t j0 = 0; j0 < kKeys; j0 += kLanes) {
    for (std::size_t p0 = 0; p0 < pairs; p0 += kLanes) {
      __m512i r[16];
#pragma GCC unroll 16
      for (std::size_t t = 0; t < kLanes; ++t) {
        r[t] =
            j0 + t < nk ? _mm512_loadu_si512(k32 + (j0 + t) * pairs + p0) : _mm512_setzero_si512();
      }
      transpose_16x16(r);
#pragma GCC unroll 16
      for (std::size_t c = 0; c < kLanes; ++c)
        _mm512_storeu_si512(kt + (p0 + c) * kKeys + j0, r[c]);
    }
  }
}

LCLM_AVX512_BF16 void pack_values(const std::uint16_t* v, std::size_t nk, std::size_t hd,
                                  std::uint32_t* vp) {
  // Words 0..15 of the result interleave elements 0..15 of the two rows,
  // words 16..31 elements 16..31 (index bit 5 picks the second row).
  alignas(64) std::uint16_t low_index[32], high_index[32];
  for (std::uint16_t i = 0; i < 16; ++i) {
    low_index[2 * i] = i;
    low_index[2 * i + 1] = 32 + i;
    high_index[2 * i] = 16 + i;
    high_index[2 * i + 1] = 48 + i;
  }
  const __m512i lo = _mm512_load_si512(low_index), hi = _mm512_load_si512(high_index);
  for (std::size_t t = 0; 2 * t < nk; ++t) {
    const std::uint16_t* a = v + 2 * t * hd;
    const bool partner = 2 * t + 1 < nk;
    for (std::size_t d = 0; d < hd; d += 2 * kLanes) {
      const __m512i va = _mm512_loadu_si512(a + d);
      const __m512i vb = partner ? _mm512_loadu_si512(a + hd + d) : _mm512_setzero_si512();
      _mm512_storeu_si512(vp + t * hd + d, _mm512_permutex2var_epi16(va, lo, vb));
      _mm512_storeu_si512(vp + t * hd + d + kLanes, _mm512_permutex2var_epi16(va, hi, vb));
    }
  }
}

LCLM_AVX512_BF16 void scores(const std::uint32_t* q, std::size_t n_rows, std::size_t hd,
                             const std::uint32_t* kt, std::size_t chunks, float scale,
                             float* scores) {
  const std::size_t pairs = hd / 2;
  // Tiles of up to kScoreChunks chunks of the block at a time.
  for (std::size_t c = 0; c < chunks; c += kScoreChunks) {
    const std::size_t n = std::min(kScoreChunks, chunks - c);
    const std::uint32_t* keys = kt + c * kLanes;
    float* s = scores + c * kLanes;
    std::size_t r = 0;
    for (; r + kScoreRows <= n_rows; r += kScoreRows) {
      score_rows<kScoreRows>(q + r * pairs, pairs, keys, n, scale, s + r * kKeys);
    }
    switch (n_rows - r) {
      case 3:
        score_rows<3>(q + r * pairs, pairs, keys, n, scale, s + r * kKeys);
        break;
      case 2:
        score_rows<2>(q + r * pairs, pairs, keys, n, scale, s + r * kKeys);
        break;
      case 1:
        score_rows<1>(q + r * pairs, pairs, keys, n, scale, s + r * kKeys);
        break;
      default:
        break;
    }
  }
}

LCLM_AVX512_BF16 void accumulate_values(const float* p, std::size_t n_rows, std::size_t n_keys,
                                        const std::uint32_t* vp, std::size_t hd,
                                        const float* correction, float* acc) {
  const std::size_t n_pairs = (n_keys + 1) / 2;
  // The weights of the rows of a tile as pair words, rounded once.
  alignas(64) std::uint32_t pw[kValueRows * kKeys / 2];
  for (std::size_t r = 0; r < n_rows; r += kValueRows) {
    const std::size_t rows = std::min(kValueRows, n_rows - r);
    for (std::size_t i = 0; i < rows; ++i) {
      round_bf16_pairs(p + (r + i) * kKeys, 2 * n_pairs, pw + i * kKeys / 2);
    }
    if (rows == 2) {
      value_rows<2>(pw, n_pairs, vp, hd, correction + r, acc + r * hd);
    } else {
      value_rows<1>(pw, n_pairs, vp, hd, correction + r, acc + r * hd);
    }
  }
}

}  // namespace lclm::bf16_attention
