#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/attention.cc"
// Highway needs this order: foreach_target, highway, then contrib headers.
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
// clang-format on
#include "hwy/aligned_allocator.h"
#include "ops/bf16_attention.h"
#include "ops/bf16_gemm.h"
#include "ops/bf16_kernels.h"
#include "ops/quant_kernels.h"
#include "ops/simd.h"
#include "util/thread_pool.h"

// Highway compiles this file once per SIMD target; the shared definitions
// must appear once.
#ifndef LCLM_OPS_ATTENTION_DETAIL_
#define LCLM_OPS_ATTENTION_DETAIL_
namespace lclm {
namespace attention_detail {

// Queries per task and keys per block: a 64-key block of K and V (64 x 128 x
// 4 bytes each at head_dim 128) stays in L1/L2 while all 32 queries of the
// task use it, instead of every query streaming the whole cache.
constexpr std::size_t kQueryBlock = 32;
constexpr std::size_t kKeyBlock = 64;
// Prefill tasks whose queries (over the heads of a kv group) are at least
// this many transpose each key block for them (see AttendKeyBlock); a
// decode query's heads take a dot product per key.
constexpr std::size_t kTransposeMinQueries = 4;

// Running online-softmax state of one task: per query its max score, its
// sum of exp(score - max), and its unnormalised output row.
struct BlockState {
  float max[kQueryBlock];
  float sum[kQueryBlock];
  float* out;  // [n_q, head_dim]
};

}  // namespace attention_detail
}  // namespace lclm
#endif  // LCLM_OPS_ATTENTION_DETAIL_

HWY_BEFORE_NAMESPACE();
namespace lclm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using attention_detail::BlockState;
using attention_detail::kKeyBlock;

HWY_INLINE float Dot(const float* a, const float* b, std::size_t n) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  auto s0 = hn::Zero(df), s1 = hn::Zero(df);
  std::size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + N), hn::LoadU(df, b + i + N), s1);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(s0, s1)));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out[0..n) = out * scale + p * v
HWY_INLINE void ScaleAddScaled(float* out, float scale, float p, const float* v, std::size_t n) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  const auto vs = hn::Set(df, scale), vp = hn::Set(df, p);
  std::size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::MulAdd(vp, hn::LoadU(df, v + i), hn::Mul(vs, hn::LoadU(df, out + i))), df,
               out + i);
  }
  for (; i < n; ++i) out[i] = out[i] * scale + p * v[i];
}

// kt [hd][kKeyBlock] = the block's keys k [nk][hd] as columns, zero past nk
// up to whole vectors.
void TransposeKeyBlock(const float* k, std::size_t nk, std::size_t hd, float* kt) {
  const hn::ScalableTag<float> df;
  const std::size_t nk_padded = (nk + hn::Lanes(df) - 1) / hn::Lanes(df) * hn::Lanes(df);
  for (std::size_t j = 0; j < nk; ++j) {
    for (std::size_t d = 0; d < hd; ++d) kt[d * kKeyBlock + j] = k[j * hd + d];
  }
  for (std::size_t d = 0; d < hd; ++d) {
    for (std::size_t j = nk; j < nk_padded; ++j) kt[d * kKeyBlock + j] = 0.0f;
  }
}

#if HWY_HAVE_SCALABLE
// Scalable vectors (SVE, RVV) cannot form arrays: one vector or key at a time.
HWY_INLINE void TransposedScores(const float* q, std::size_t hd, const float* kt, std::size_t n,
                                 float scale, float* scores) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  const auto vscale = hn::Set(df, scale);
  for (std::size_t c = 0; c < n; c += N) {
    auto acc = hn::Zero(df);
    for (std::size_t d = 0; d < hd; ++d) {
      acc = hn::MulAdd(hn::Set(df, q[d]), hn::Load(df, kt + d * kKeyBlock + c), acc);
    }
    hn::Store(hn::Mul(acc, vscale), df, scores + c);
  }
}

HWY_INLINE void DirectScores(const float* q, const float* k, std::size_t n, std::size_t hd,
                             float scale, float* scores) {
  for (std::size_t j = 0; j < n; ++j) scores[j] = Dot(q, k + j * hd, hd) * scale;
}

HWY_INLINE void AccumulateValues(float* out, float correction, const float* p, const float* v,
                                 std::size_t n, std::size_t hd) {
  ScaleAddScaled(out, correction, p[0], v, hd);
  for (std::size_t j = 1; j < n; ++j) ScaleAddScaled(out, 1.0f, p[j], v + j * hd, hd);
}
#else
// Chunks of N keys whose scores one register row holds at once: four
// chunks for two queries are 8 independent multiply-add chains, enough to
// keep both FMA pipes busy (one chain per query, as before, waited on the
// FMA latency at every step).
constexpr std::size_t kScoreChunks = 4;

// scores_i[c * N, (c + kC) * N) = scale * sum_d q_i[d] kt[d][...] for the
// chunks c0 .. c0 + kC and R (1 or 2) queries; each lane sums d in order,
// as TransposedScores always has.
template <std::size_t kC, std::size_t R>
HWY_INLINE void ScoreChunks(const float* const (&q)[R], std::size_t hd, const float* kt,
                            std::size_t c0, float scale, float* const (&scores)[R]) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  using V = hn::Vec<decltype(df)>;
  V acc[R][kC];
  for (auto& row : acc) {
    for (auto& a : row) a = hn::Zero(df);
  }
  for (std::size_t d = 0; d < hd; ++d) {
    V keys[kC];
    for (std::size_t c = 0; c < kC; ++c) keys[c] = hn::Load(df, kt + d * kKeyBlock + (c0 + c) * N);
    for (std::size_t r = 0; r < R; ++r) {
      const auto qd = hn::Set(df, q[r][d]);
      for (std::size_t c = 0; c < kC; ++c) acc[r][c] = hn::MulAdd(qd, keys[c], acc[r][c]);
    }
  }
  const auto vscale = hn::Set(df, scale);
  for (std::size_t r = 0; r < R; ++r) {
    for (std::size_t c = 0; c < kC; ++c) {
      hn::Store(hn::Mul(acc[r][c], vscale), df, scores[r] + (c0 + c) * N);
    }
  }
}

// The scores of R queries over their first `chunks` chunks of keys.
template <std::size_t R>
HWY_INLINE void ScoreQueries(const float* const (&q)[R], std::size_t hd, const float* kt,
                             std::size_t chunks, float scale, float* const (&scores)[R]) {
  std::size_t c = 0;
  for (; c + kScoreChunks <= chunks; c += kScoreChunks) {
    ScoreChunks<kScoreChunks, R>(q, hd, kt, c, scale, scores);
  }
  switch (chunks - c) {
    case 3:
      ScoreChunks<3, R>(q, hd, kt, c, scale, scores);
      break;
    case 2:
      ScoreChunks<2, R>(q, hd, kt, c, scale, scores);
      break;
    case 1:
      ScoreChunks<1, R>(q, hd, kt, c, scale, scores);
      break;
    default:
      break;
  }
}

HWY_INLINE void TransposedScores(const float* q, std::size_t hd, const float* kt, std::size_t n,
                                 float scale, float* scores) {
  const std::size_t N = hn::Lanes(hn::ScalableTag<float>());
  const float* const qs[1] = {q};
  float* const out[1] = {scores};
  ScoreQueries<1>(qs, hd, kt, (n + N - 1) / N, scale, out);
}

// Keys scored together by DirectScores: each key's dot product runs as Dot
// runs it (two accumulators, then one vector, a horizontal sum, the scalar
// tail), so the scores are Dot's bit for bit; four at once hide the
// latency of the chains and of the horizontal sums.
constexpr std::size_t kDirectKeys = 4;

template <std::size_t kK>
HWY_INLINE void DirectKeys(const float* q, const float* k, std::size_t hd, float scale,
                           float* scores) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  using V = hn::Vec<decltype(df)>;
  V s0[kK], s1[kK];
  for (std::size_t j = 0; j < kK; ++j) s0[j] = s1[j] = hn::Zero(df);
  std::size_t i = 0;
  for (; i + 2 * N <= hd; i += 2 * N) {
    const auto q0 = hn::LoadU(df, q + i), q1 = hn::LoadU(df, q + i + N);
    for (std::size_t j = 0; j < kK; ++j) {
      s0[j] = hn::MulAdd(q0, hn::LoadU(df, k + j * hd + i), s0[j]);
      s1[j] = hn::MulAdd(q1, hn::LoadU(df, k + j * hd + i + N), s1[j]);
    }
  }
  for (; i + N <= hd; i += N) {
    const auto q0 = hn::LoadU(df, q + i);
    for (std::size_t j = 0; j < kK; ++j)
      s0[j] = hn::MulAdd(q0, hn::LoadU(df, k + j * hd + i), s0[j]);
  }
  for (std::size_t j = 0; j < kK; ++j) {
    float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(s0[j], s1[j])));
    for (std::size_t t = i; t < hd; ++t) sum += q[t] * k[j * hd + t];
    scores[j] = sum * scale;
  }
}

HWY_INLINE void DirectScores(const float* q, const float* k, std::size_t n, std::size_t hd,
                             float scale, float* scores) {
  std::size_t j = 0;
  for (; j + kDirectKeys <= n; j += kDirectKeys) {
    DirectKeys<kDirectKeys>(q, k + j * hd, hd, scale, scores + j);
  }
  for (; j < n; ++j) DirectKeys<1>(q, k + j * hd, hd, scale, scores + j);
}

// Vectors of an output row kept in registers while the block's values are
// folded in: 8 chains (head_dim 128 on AVX-512 in one go).
constexpr std::size_t kValueVectors = 8;

// out[0, kV N) = fold of the n values v_j (hd apart) with weights p_j into
// out * correction: the register form of ScaleAddScaled per key, bit for bit
// (the first key's fma takes out * correction, the others out * 1 = out).
template <std::size_t kV>
HWY_INLINE void AccumulateValueVectors(float* out, float correction, const float* p, const float* v,
                                       std::size_t n, std::size_t hd) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  using V = hn::Vec<decltype(df)>;
  V acc[kV];
  const auto vc = hn::Set(df, correction);
  for (std::size_t a = 0; a < kV; ++a) acc[a] = hn::Mul(vc, hn::LoadU(df, out + a * N));
  for (std::size_t j = 0; j < n; ++j) {
    const auto pj = hn::Set(df, p[j]);
    for (std::size_t a = 0; a < kV; ++a) {
      acc[a] = hn::MulAdd(pj, hn::LoadU(df, v + j * hd + a * N), acc[a]);
    }
  }
  for (std::size_t a = 0; a < kV; ++a) hn::StoreU(acc[a], df, out + a * N);
}

// out[0, hd) = out * correction + sum_j p_j v_j, in ScaleAddScaled's order.
HWY_INLINE void AccumulateValues(float* out, float correction, const float* p, const float* v,
                                 std::size_t n, std::size_t hd) {
  const std::size_t N = hn::Lanes(hn::ScalableTag<float>());
  std::size_t d = 0;
  for (; d + kValueVectors * N <= hd; d += kValueVectors * N) {
    AccumulateValueVectors<kValueVectors>(out + d, correction, p, v + d, n, hd);
  }
  for (; d + N <= hd; d += N) AccumulateValueVectors<1>(out + d, correction, p, v + d, n, hd);
  if (d < hd) {
    ScaleAddScaled(out + d, correction, p[0], v + d, hd - d);
    for (std::size_t j = 1; j < n; ++j) ScaleAddScaled(out + d, 1.0f, p[j], v + j * hd + d, hd - d);
  }
}
#endif

// The online-softmax step of one query over its n (> 0) scores s[0, n) in a
// block of its keys and of the queries of the bf16 kernels (SoftmaxRows):
// s[j] becomes exp(s[j] - the new max), the query's max and sum take the
// block in, and the factor its output so far is to be scaled by is returned.
HWY_INLINE float SoftmaxStep(float* s, std::size_t n, float& max, float& sum) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  // The block's max a vector at a time (max is exact in any order).
  auto vblock_max = hn::Set(df, -std::numeric_limits<float>::infinity());
  std::size_t i = 0;
  for (; i + N <= n; i += N) vblock_max = hn::Max(vblock_max, hn::LoadU(df, s + i));
  float block_max = hn::GetLane(hn::MaxOfLanes(df, vblock_max));
  for (; i < n; ++i) block_max = std::max(block_max, s[i]);
  const float new_max = std::max(max, block_max);
  // exp(score - max) for the block, a vector at a time; padding lanes give 0.
  const auto vmax = hn::Set(df, new_max);
  std::size_t j = 0;
  auto vsum = hn::Zero(df);
  for (; j + N <= n; j += N) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, s + j), vmax));
    hn::StoreU(e, df, s + j);
    vsum = hn::Add(vsum, e);
  }
  float block_sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - new_max);
    block_sum += s[j];
  }
  const float correction = std::exp(max - new_max);
  sum = sum * correction + block_sum;
  max = new_max;
  return correction;
}

// Folds one block of keys/values into the state of n_q queries. Query i sees
// the first visible[i] keys of the block (fewer than nk at the causal edge).
// kt, when not null, is the block's keys transposed (TransposeKeyBlock):
// the scores of N keys then accumulate in one vector with no horizontal
// sums, the transpose paid once for all the queries that share it. Without
// it (a decode query's few heads) each key takes a dot product.
void AttendKeyBlock(const float* q, std::size_t q_stride, std::size_t n_q, const float* k,
                    const float* kt, const float* v, std::size_t nk, const std::size_t* visible,
                    std::size_t hd, float scale, BlockState* state) {
  const hn::ScalableTag<float> df;
  const std::size_t N = hn::Lanes(df);
  HWY_ALIGN float scores[2][kKeyBlock];
  for (std::size_t i = 0; i < n_q; ++i) {
    const std::size_t n = std::min(nk, visible[i]);
    if (n == 0) continue;
    const float* qi = q + i * q_stride;
    float* si = scores[i % 2];
    if (kt == nullptr) {
      DirectScores(qi, k, n, hd, scale, si);
    } else {
#if HWY_HAVE_SCALABLE
      TransposedScores(qi, hd, kt, n, scale, si);
#else
      // Two queries at a time share each load of the keys; the second's
      // scores wait in scores[1] for its turn below.
      if (i % 2 == 0) {
        const std::size_t next = i + 1 < n_q ? std::min(nk, visible[i + 1]) : 0;
        if (next > 0) {
          const float* const qs[2] = {qi, qi + q_stride};
          float* const out[2] = {scores[0], scores[1]};
          ScoreQueries<2>(qs, hd, kt, (std::max(n, next) + N - 1) / N, scale, out);
        } else {
          TransposedScores(qi, hd, kt, n, scale, si);
        }
      } else if (i == 0 || std::min(nk, visible[i - 1]) == 0) {
        TransposedScores(qi, hd, kt, n, scale, si);
      }
#endif
    }
    const float correction = SoftmaxStep(si, n, state->max[i], state->sum[i]);
    AccumulateValues(state->out + i * hd, correction, si, v, n, hd);
  }
}

// The softmax step of the bf16 kernels' rows (ops/bf16_attention.h) over a
// block: row r's scores s[r * width, + visible[r]) become its weights and
// the rest of its `width` entries 0 (the value product reads them);
// correction[r] scales its output so far (1 for a row that sees no key here).
void SoftmaxRows(float* s, std::size_t n_rows, std::size_t width, const std::size_t* visible,
                 float* max, float* sum, float* correction) {
  for (std::size_t r = 0; r < n_rows; ++r) {
    float* row = s + r * width;
    const std::size_t n = visible[r];
    correction[r] = n == 0 ? 1.0f : SoftmaxStep(row, n, max[r], sum[r]);
    std::fill(row + n, row + width, 0.0f);
  }
}

// key_scores[j] += exp(q.k_j * scale - max) * inv_sum for the first n keys.
void AddKeyProbabilities(const float* q, const float* k, std::size_t n, std::size_t hd, float scale,
                         float max, float inv_sum, float* key_scores) {
  for (std::size_t j = 0; j < n; ++j) {
    key_scores[j] += std::exp(Dot(q, k + j * hd, hd) * scale - max) * inv_sum;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace lclm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lclm {

HWY_EXPORT(AttendKeyBlock);
HWY_EXPORT(TransposeKeyBlock);
HWY_EXPORT(AddKeyProbabilities);
HWY_EXPORT(SoftmaxRows);

namespace {

std::size_t visible_keys(AttentionMask mask, std::size_t n_keys, std::size_t query_pos) {
  return mask == AttentionMask::Causal ? std::min(n_keys, query_pos + 1) : n_keys;
}

// The rows of kv head g (rows: a layer's [n_kv_heads, stride, row]).
KVRows head_rows(KVRows rows, std::size_t g, std::size_t stride, std::size_t hd) {
  return {rows.data + g * stride * row_bytes(rows.type, hd), rows.type};
}

// Rows first .. first+n-1 of `rows` as f32 [n, hd]: the stored rows
// themselves when they are f32, else widened into scratch.
const float* f32_rows(KVRows rows, std::size_t first, std::size_t n, std::size_t hd,
                      float* scratch) {
  const std::uint8_t* p = rows.data + first * row_bytes(rows.type, hd);
  if (rows.type == DType::F32) return reinterpret_cast<const float*>(p);
  widen_rows(rows.type, p, n, hd, scratch);
  return scratch;
}

// Per-thread scratch for one key block of keys and of values widened to f32
// (empty while both are f32).
struct WidenedBlock {
  std::vector<float> keys, values;
  void size_for(KVRows k, KVRows v, std::size_t hd) {
    if (k.type != DType::F32) keys.resize(attention_detail::kKeyBlock * hd);
    if (v.type != DType::F32) values.resize(attention_detail::kKeyBlock * hd);
  }
};

// The second pass of attention() for a KeyScoreAccumulator: one task per kv
// head, so each head's scores are summed by one thread in a fixed order.
// row_max / row_sum [n_heads, n_q]: each query's softmax max and normaliser.
void accumulate_key_scores(const float* q, std::size_t n_q, std::size_t q_pos0, KVRows k,
                           std::size_t n_keys, const AttentionShape& shape, AttentionMask mask,
                           const KeyScoreAccumulator& acc, const float* row_max,
                           const float* row_sum) {
  const std::size_t hd = shape.head_dim;
  const std::size_t group = shape.n_heads / shape.n_kv_heads;
  const std::size_t q_width = shape.n_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  using attention_detail::kKeyBlock;
#pragma omp parallel
  {
    std::vector<float> widened(k.type == DType::F32 ? 0 : kKeyBlock * hd);
#pragma omp for schedule(dynamic, 1)
    for (std::ptrdiff_t gi = 0; gi < static_cast<std::ptrdiff_t>(shape.n_kv_heads); ++gi) {
      const auto g = static_cast<std::size_t>(gi);
      float* scores = acc.key_scores + g * shape.kv_stride;
      const KVRows kg = head_rows(k, g, shape.kv_stride, hd);
      for (std::size_t j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
        const std::size_t nk = std::min(kKeyBlock, n_keys - j0);
        const float* kb = f32_rows(kg, j0, nk, hd, widened.data());
        for (std::size_t h = g * group; h < (g + 1) * group; ++h) {
          for (std::size_t i = acc.first_query; i < n_q; ++i) {
            const float sum = row_sum[h * n_q + i];
            const std::size_t visible = visible_keys(mask, n_keys, q_pos0 + i);
            if (sum <= 0.0f || visible <= j0) continue;
            HWY_DYNAMIC_DISPATCH(AddKeyProbabilities)
            (q + i * q_width + h * hd, kb, std::min(nk, visible - j0), hd, scale,
             row_max[h * n_q + i], 1.0f / sum, scores + j0);
          }
        }
      }
    }
  }
}

// out += the residual's readout for every (query, head): one task per head.
void add_attention_residual(const float* q, std::size_t n_q, const AttentionShape& shape,
                            const AttentionResidual& r, float* out) {
  const std::size_t hd = shape.head_dim, F = r.n_features;
  const std::size_t group = shape.n_heads / shape.n_kv_heads;
  const std::size_t q_width = shape.n_heads * hd;
#pragma omp parallel
  {
    std::vector<float> phi(F), readout(hd);
#pragma omp for schedule(static)
    for (std::ptrdiff_t task = 0; task < static_cast<std::ptrdiff_t>(n_q * shape.n_heads); ++task) {
      const std::size_t i = static_cast<std::size_t>(task) / shape.n_heads;
      const std::size_t h = static_cast<std::size_t>(task) % shape.n_heads;
      const std::size_t g = h / group;
      memory_features(r, q + i * q_width + h * hd, hd, phi.data());
      const float* M = r.memory + g * F * hd;
      const float* z = r.normalizer + g * F;
      float denominator = r.eps;
      std::fill(readout.begin(), readout.end(), 0.0f);
      for (std::size_t f = 0; f < F; ++f) {
        denominator += phi[f] * z[f];
        axpy_f32(phi[f], M + f * hd, readout.data(), hd);
      }
      const float scale = r.gate[h] / denominator;
      float* oi = out + i * q_width + h * hd;
      for (std::size_t d = 0; d < hd; ++d) oi[d] += scale * readout[d];
    }
  }
}

// Decode (one query): one task per kv head, whose query heads (adjacent in
// q and out, head_dim apart) go through AttendKeyBlock together as its
// "queries", so each key and value row is read from memory once for the
// group instead of once per query head. row_max / row_sum, when not empty,
// get each head's softmax statistics.
void attend_one_query(const float* q, std::size_t q_pos, KVRows k, KVRows v, std::size_t n_keys,
                      const AttentionShape& shape, AttentionMask mask, float* out,
                      std::vector<float>& row_max, std::vector<float>& row_sum) {
  using namespace attention_detail;
  const std::size_t hd = shape.head_dim;
  const std::size_t group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t visible = visible_keys(mask, n_keys, q_pos);
  // Scratch per thread of the pool, kept between calls.
  thread_local std::vector<float> acc_storage;
  thread_local WidenedBlock widened;
  parallel_for(shape.n_kv_heads, [&](std::size_t g) {
    std::vector<float>& acc = acc_storage;
    acc.assign(group * hd, 0.0f);
    widened.size_for(k, v, hd);
    const KVRows kg = head_rows(k, g, shape.kv_stride, hd);
    const KVRows vg = head_rows(v, g, shape.kv_stride, hd);
    BlockState state;
    std::fill(state.max, state.max + group, -std::numeric_limits<float>::infinity());
    std::fill(state.sum, state.sum + group, 0.0f);
    state.out = acc.data();
    std::size_t block_visible[kQueryBlock];
    for (std::size_t j0 = 0; j0 < visible; j0 += kKeyBlock) {
      const std::size_t nk = std::min(kKeyBlock, visible - j0);
      std::fill(block_visible, block_visible + group, nk);
      HWY_DYNAMIC_DISPATCH(AttendKeyBlock)
      (q + g * group * hd, hd, group, f32_rows(kg, j0, nk, hd, widened.keys.data()), nullptr,
       f32_rows(vg, j0, nk, hd, widened.values.data()), nk, block_visible, hd, scale, &state);
    }
    for (std::size_t i = 0; i < group; ++i) {
      const std::size_t h = g * group + i;
      const float inv = state.sum[i] > 0.0f ? 1.0f / state.sum[i] : 0.0f;
      for (std::size_t d = 0; d < hd; ++d) out[h * hd + d] = acc[i * hd + d] * inv;
      if (!row_max.empty()) {
        row_max[h] = state.max[i];
        row_sum[h] = state.sum[i];
      }
    }
  });
}

// Whether attention takes the bf16 kernels (ops/bf16_attention.h): keys and
// values stored bf16 (the engine's sessions' default cache), x rounded to
// bf16 in products with bf16 weights (the default; LCLM_BF16_ACTIVATIONS=split
// keeps attention in f32 too, as the parity tests need), the CPU's native
// bf16 on and head_dim a multiple of 32. Prefill and decode both take them,
// so a query's output is the same bits whether its position was prefilled
// with others or decoded alone (each row's sums run in one order whatever
// the tile it falls in).
bool bf16_attention_applies(KVRows k, KVRows v, std::size_t hd) {
  return k.type == DType::BF16 && v.type == DType::BF16 && bf16_attention_kernels(hd);
}

// Queries per task of the bf16 path: twice the f32 path's, so each packed
// key block serves twice the rows (packing took a tenth of the time at 32).
constexpr std::size_t kBf16QueryBlock = 64;

// A thread's scratch for bf16 tasks of up to `rows` rows (query heads of a
// group times queries) at head_dim hd, grown on demand and kept.
struct Bf16Scratch {
  static constexpr std::size_t kKeys = bf16_attention::kKeys;
  std::size_t rows = 0, hd = 0;
  hwy::AlignedFreeUniquePtr<std::uint32_t[]> queries, keys, values;
  hwy::AlignedFreeUniquePtr<float[]> scores, acc;
  std::vector<float> max, sum, correction;
  std::vector<std::size_t> visible, block_visible;

  void size_for(std::size_t need_rows, std::size_t need_hd) {
    if (need_rows <= rows && need_hd == hd) return;
    rows = std::max(rows, need_rows);
    hd = need_hd;
    queries = hwy::AllocateAligned<std::uint32_t>(rows * hd / 2);
    keys = hwy::AllocateAligned<std::uint32_t>(hd / 2 * kKeys);
    values = hwy::AllocateAligned<std::uint32_t>(kKeys / 2 * hd);
    scores = hwy::AllocateAligned<float>(rows * kKeys);
    acc = hwy::AllocateAligned<float>(rows * hd);
    for (auto* v : {&max, &sum, &correction}) v->resize(rows);
    visible.resize(rows);
    block_visible.resize(rows);
  }
};

// One task of the bf16 path: queries i0 .. i0 + nq - 1 of the query heads of
// kv group g (row a * nq + i: head a of the group, query i). The rows are
// rounded to bf16 once; each block of keys is packed once for all of them,
// scored, put through the online softmax in f32, and its values summed with
// the weights rounded to bf16. row_max / row_sum [n_heads, n_q], when not
// empty, get each row's softmax statistics, as the f32 path's.
void attend_task_bf16(const float* q, std::size_t n_q, std::size_t q_pos0, std::size_t i0,
                      std::size_t nq, std::size_t g, KVRows k, KVRows v, std::size_t n_keys,
                      const AttentionShape& shape, AttentionMask mask, float* out,
                      std::vector<float>& row_max, std::vector<float>& row_sum, Bf16Scratch& w) {
  constexpr std::size_t kKeys = Bf16Scratch::kKeys;
  const std::size_t hd = shape.head_dim, pairs = hd / 2;
  const std::size_t group = shape.n_heads / shape.n_kv_heads;
  const std::size_t q_width = shape.n_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t rows = group * nq;
  w.size_for(rows, hd);
  std::size_t keys_needed = 0;
  for (std::size_t a = 0; a < group; ++a) {
    for (std::size_t i = 0; i < nq; ++i) {
      const std::size_t r = a * nq + i;
      round_bf16_pairs(q + (i0 + i) * q_width + (g * group + a) * hd, hd,
                       w.queries.get() + r * pairs);
      w.visible[r] = visible_keys(mask, n_keys, q_pos0 + i0 + i);
      keys_needed = std::max(keys_needed, w.visible[r]);
    }
  }
  std::fill_n(w.max.begin(), rows, -std::numeric_limits<float>::infinity());
  std::fill_n(w.sum.begin(), rows, 0.0f);
  std::fill_n(w.acc.get(), rows * hd, 0.0f);
  const auto* kg =
      reinterpret_cast<const std::uint16_t*>(head_rows(k, g, shape.kv_stride, hd).data);
  const auto* vg =
      reinterpret_cast<const std::uint16_t*>(head_rows(v, g, shape.kv_stride, hd).data);
  for (std::size_t j0 = 0; j0 < keys_needed; j0 += kKeys) {
    const std::size_t nk = std::min(kKeys, keys_needed - j0);
    bf16_attention::pack_keys(kg + j0 * hd, nk, hd, w.keys.get());
    bf16_attention::pack_values(vg + j0 * hd, nk, hd, w.values.get());
    for (std::size_t r = 0; r < rows; ++r) {
      w.block_visible[r] = w.visible[r] > j0 ? std::min(nk, w.visible[r] - j0) : 0;
    }
    bf16_attention::scores(w.queries.get(), rows, hd, w.keys.get(), (nk + 15) / 16, scale,
                           w.scores.get());
    HWY_DYNAMIC_DISPATCH(SoftmaxRows)
    (w.scores.get(), rows, kKeys, w.block_visible.data(), w.max.data(), w.sum.data(),
     w.correction.data());
    bf16_attention::accumulate_values(w.scores.get(), rows, nk, w.values.get(), hd,
                                      w.correction.data(), w.acc.get());
  }
  for (std::size_t a = 0; a < group; ++a) {
    const std::size_t h = g * group + a;
    for (std::size_t i = 0; i < nq; ++i) {
      const std::size_t r = a * nq + i;
      const float inv = w.sum[r] > 0.0f ? 1.0f / w.sum[r] : 0.0f;
      float* oi = out + (i0 + i) * q_width + h * hd;
      for (std::size_t d = 0; d < hd; ++d) oi[d] = w.acc[r * hd + d] * inv;
      if (!row_max.empty()) {
        row_max[h * n_q + i0 + i] = w.max[r];
        row_sum[h * n_q + i0 + i] = w.sum[r];
      }
    }
  }
}

// Attention on the bf16 kernels: a decode query on the pool, one task per kv
// head (as attend_one_query); more queries on OpenMP, one task per
// (kBf16QueryBlock queries, kv head).
void attend_bf16(const float* q, std::size_t n_q, std::size_t q_pos0, KVRows k, KVRows v,
                 std::size_t n_keys, const AttentionShape& shape, AttentionMask mask, float* out,
                 std::vector<float>& row_max, std::vector<float>& row_sum) {
  if (n_q == 1) {
    thread_local Bf16Scratch scratch;
    parallel_for(shape.n_kv_heads, [&](std::size_t g) {
      attend_task_bf16(q, 1, q_pos0, 0, 1, g, k, v, n_keys, shape, mask, out, row_max, row_sum,
                       scratch);
    });
    return;
  }
  const std::size_t q_blocks = (n_q + kBf16QueryBlock - 1) / kBf16QueryBlock;
  const auto n_tasks = static_cast<std::ptrdiff_t>(q_blocks * shape.n_kv_heads);
#pragma omp parallel
  {
    Bf16Scratch scratch;
#pragma omp for schedule(dynamic, 1)
    for (std::ptrdiff_t task = 0; task < n_tasks; ++task) {
      const std::size_t g = static_cast<std::size_t>(task) % shape.n_kv_heads;
      const std::size_t i0 = (static_cast<std::size_t>(task) / shape.n_kv_heads) * kBf16QueryBlock;
      attend_task_bf16(q, n_q, q_pos0, i0, std::min(kBf16QueryBlock, n_q - i0), g, k, v, n_keys,
                       shape, mask, out, row_max, row_sum, scratch);
    }
  }
}

}  // namespace

bool bf16_attention_kernels(std::size_t head_dim) {
  return head_dim % 32 == 0 && native_bf16_enabled() &&
         bf16_activation_precision() == Bf16Precision::kRounded;
}

void memory_features(const AttentionResidual& r, const float* x, std::size_t head_dim,
                     float* features) {
  for (std::size_t f = 0; f < r.n_features; ++f) {
    const float a = dot_f32(r.feature_w + f * head_dim, x, head_dim) + r.feature_b[f];
    features[f] = a > 0.0f ? a + 1.0f : std::exp(a);  // elu(a) + 1
  }
}

void attention(const float* q, std::size_t n_q, std::size_t q_pos0, KVRows k, KVRows v,
               std::size_t n_keys, const AttentionShape& shape, AttentionMask mask, float* out,
               const KeyScoreAccumulator* scores, const AttentionResidual* residual) {
  using namespace attention_detail;
  const std::size_t hd = shape.head_dim;
  const std::size_t group = shape.n_heads / shape.n_kv_heads;
  const std::size_t q_width = shape.n_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t q_blocks = (n_q + kQueryBlock - 1) / kQueryBlock;
  // Softmax statistics per (head, query), kept only for a score pass.
  std::vector<float> row_max, row_sum;
  if (scores) {
    row_max.resize(shape.n_heads * n_q);
    row_sum.resize(shape.n_heads * n_q);
  }

  if (bf16_attention_applies(k, v, hd)) {
    attend_bf16(q, n_q, q_pos0, k, v, n_keys, shape, mask, out, row_max, row_sum);
  } else if (n_q == 1 && group <= kQueryBlock) {
    attend_one_query(q, q_pos0, k, v, n_keys, shape, mask, out, row_max, row_sum);
  } else {
    // One task per (32-query block, kv head): the heads of the group share
    // each key block, widened and transposed once for all of them.
    const auto n_tasks = static_cast<std::ptrdiff_t>(q_blocks * shape.n_kv_heads);
#pragma omp parallel
    {
      std::vector<float> acc(group * kQueryBlock * hd);
      std::vector<BlockState> states(group);
      // Rows of kKeyBlock floats from an aligned base: every vector load is aligned.
      const auto keys_t = hwy::AllocateAligned<float>(hd * kKeyBlock);
      WidenedBlock widened;
      widened.size_for(k, v, hd);
#pragma omp for schedule(dynamic, 1)
      for (std::ptrdiff_t task = 0; task < n_tasks; ++task) {
        const std::size_t g = static_cast<std::size_t>(task) % shape.n_kv_heads;
        const std::size_t i0 = (static_cast<std::size_t>(task) / shape.n_kv_heads) * kQueryBlock;
        const std::size_t nq = std::min(kQueryBlock, n_q - i0);
        const KVRows kg = head_rows(k, g, shape.kv_stride, hd);
        const KVRows vg = head_rows(v, g, shape.kv_stride, hd);
        const bool transpose = nq * group >= kTransposeMinQueries;

        // Keys each query may see: causal stops at its own position.
        std::size_t visible[kQueryBlock];
        for (std::size_t i = 0; i < nq; ++i) {
          visible[i] = visible_keys(mask, n_keys, q_pos0 + i0 + i);
        }
        const std::size_t keys_needed = *std::max_element(visible, visible + nq);
        for (std::size_t a = 0; a < group; ++a) {
          BlockState& state = states[a];
          std::fill(state.max, state.max + nq, -std::numeric_limits<float>::infinity());
          std::fill(state.sum, state.sum + nq, 0.0f);
          state.out = acc.data() + a * kQueryBlock * hd;
          std::fill(state.out, state.out + nq * hd, 0.0f);
        }

        std::size_t block_visible[kQueryBlock];
        for (std::size_t j0 = 0; j0 < keys_needed; j0 += kKeyBlock) {
          const std::size_t nk = std::min(kKeyBlock, keys_needed - j0);
          for (std::size_t i = 0; i < nq; ++i)
            block_visible[i] = visible[i] > j0 ? visible[i] - j0 : 0;
          const float* kb = f32_rows(kg, j0, nk, hd, widened.keys.data());
          const float* vb = f32_rows(vg, j0, nk, hd, widened.values.data());
          if (transpose) HWY_DYNAMIC_DISPATCH(TransposeKeyBlock)(kb, nk, hd, keys_t.get());
          for (std::size_t a = 0; a < group; ++a) {
            const std::size_t h = g * group + a;
            HWY_DYNAMIC_DISPATCH(AttendKeyBlock)
            (q + i0 * q_width + h * hd, q_width, nq, kb, transpose ? keys_t.get() : nullptr, vb, nk,
             block_visible, hd, scale, &states[a]);
          }
        }
        for (std::size_t a = 0; a < group; ++a) {
          const std::size_t h = g * group + a;
          const BlockState& state = states[a];
          for (std::size_t i = 0; i < nq; ++i) {
            const float inv = state.sum[i] > 0.0f ? 1.0f / state.sum[i] : 0.0f;
            float* oi = out + (i0 + i) * q_width + h * hd;
            for (std::size_t d = 0; d < hd; ++d) oi[d] = state.out[i * hd + d] * inv;
          }
          if (scores) {
            std::copy_n(state.max, nq, row_max.data() + h * n_q + i0);
            std::copy_n(state.sum, nq, row_sum.data() + h * n_q + i0);
          }
        }
      }
    }
  }
  if (scores && scores->first_query < n_q) {
    accumulate_key_scores(q, n_q, q_pos0, k, n_keys, shape, mask, *scores, row_max.data(),
                          row_sum.data());
  }
  if (residual) add_attention_residual(q, n_q, shape, *residual, out);
}

}  // namespace lclm
#endif  // HWY_ONCE
