// Prefill attention's bf16 kernels (ops/bf16_attention.h) against scalar
// definitions: the packings word for word, the products to f32 rounding, and
// attention() over a bf16 cache, which takes them when x is rounded, against
// a double reference that rounds the same inputs (queries and weights to
// bf16). Skipped where the CPU has no AVX512_BF16.
#include "ops/bf16_attention.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/naive_attention.h"
#include "core/test_models.h"
#include "format/dtype.h"
#include "ops/attention.h"
#include "ops/bf16_gemm.h"
#include "ops/bf16_kernels.h"

namespace lclm {
namespace {

using bf16_attention::kKeys;
using testing::random_vector;

constexpr std::size_t kHeadDims[] = {32, 64, 96, 128, 160};

std::vector<std::uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<std::uint16_t> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = f32_to_bf16(x[i]);
  return out;
}

float rounded(float x) {
  return bf16_to_f32(f32_to_bf16(x));
}

std::uint32_t pair_word(std::uint16_t low, std::uint16_t high) {
  return static_cast<std::uint32_t>(low) | static_cast<std::uint32_t>(high) << 16;
}

#define SKIP_WITHOUT_AVX512_BF16() \
  if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16"

TEST(Bf16Attention, PackingsPlaceEveryPairWhereTheProductsReadIt) {
  SKIP_WITHOUT_AVX512_BF16();
  for (std::size_t hd : kHeadDims) {
    for (std::size_t nk :
         {std::size_t{1}, std::size_t{2}, std::size_t{17}, std::size_t{63}, kKeys - 1, kKeys}) {
      const auto k = to_bf16(random_vector(nk * hd, 3 + nk));
      std::vector<std::uint32_t> kt(hd / 2 * kKeys, 0xdeadbeef);
      bf16_attention::pack_keys(k.data(), nk, hd, kt.data());
      for (std::size_t p = 0; p < hd / 2; ++p) {
        for (std::size_t j = 0; j < kKeys; ++j) {
          const std::uint32_t want =
              j < nk ? pair_word(k[j * hd + 2 * p], k[j * hd + 2 * p + 1]) : 0;
          ASSERT_EQ(kt[p * kKeys + j], want)
              << "hd " << hd << " nk " << nk << " p " << p << " j " << j;
        }
      }
      const auto v = to_bf16(random_vector(nk * hd, 4 + nk));
      const std::size_t lines = (nk + 1) / 2;
      std::vector<std::uint32_t> vp(lines * hd + 1, 0xdeadbeef);
      bf16_attention::pack_values(v.data(), nk, hd, vp.data());
      for (std::size_t t = 0; t < lines; ++t) {
        for (std::size_t d = 0; d < hd; ++d) {
          const std::uint16_t partner = 2 * t + 1 < nk ? v[(2 * t + 1) * hd + d] : 0;
          ASSERT_EQ(vp[t * hd + d], pair_word(v[2 * t * hd + d], partner))
              << "hd " << hd << " nk " << nk << " t " << t << " d " << d;
        }
      }
      EXPECT_EQ(vp[lines * hd], 0xdeadbeef) << "wrote past the packed values";
    }
  }
  const std::vector<float> q = {1.0f, 1.00390625f, -3.0e-3f, 65504.5f};
  std::vector<float> q32(32, 0.0f);
  std::copy(q.begin(), q.end(), q32.begin());
  std::vector<std::uint32_t> words(16);
  round_bf16_pairs(q32.data(), 32, words.data());
  EXPECT_EQ(words[0], pair_word(f32_to_bf16(q[0]), f32_to_bf16(q[1])));
  EXPECT_EQ(words[1], pair_word(f32_to_bf16(q[2]), f32_to_bf16(q[3])));
}

// Scores of 1-9 rows (tiles of 4 and each tail) over every chunk count of a
// block (tiles of up to 4 chunks and each tail), and the
// value sums of 1-5 rows (pairs and a lone row) over odd and even key counts
// and head dims of 2-10 vectors, against sums in double of the same bf16
// inputs: they differ only by f32 rounding.
TEST(Bf16Attention, ProductsMatchSumsOfTheRoundedInputs) {
  SKIP_WITHOUT_AVX512_BF16();
  for (std::size_t hd : kHeadDims) {
    const std::size_t pairs = hd / 2;
    const auto k = to_bf16(random_vector(kKeys * hd, 11));
    std::vector<std::uint32_t> kt(pairs * kKeys);
    bf16_attention::pack_keys(k.data(), kKeys, hd, kt.data());
    for (std::size_t rows = 1; rows <= 9; ++rows) {
      const auto q = random_vector(rows * hd, 12 + rows);
      std::vector<std::uint32_t> qw(rows * pairs);
      for (std::size_t r = 0; r < rows; ++r) {
        round_bf16_pairs(q.data() + r * hd, hd, qw.data() + r * pairs);
      }
      for (std::size_t chunks = 1; chunks <= kKeys / 16; ++chunks) {
        std::vector<float> s(rows * kKeys, -7.0f);
        bf16_attention::scores(qw.data(), rows, hd, kt.data(), chunks, 0.5f, s.data());
        for (std::size_t r = 0; r < rows; ++r) {
          for (std::size_t j = 0; j < kKeys; ++j) {
            if (j >= 16 * chunks) {
              ASSERT_EQ(s[r * kKeys + j], -7.0f) << "wrote past its chunks";
              continue;
            }
            double want = 0, size = 0;
            for (std::size_t d = 0; d < hd; ++d) {
              const double term = double(rounded(q[r * hd + d])) * bf16_to_f32(k[j * hd + d]);
              want += term;
              size += std::abs(term);
            }
            ASSERT_NEAR(s[r * kKeys + j], 0.5 * want, 1e-6 * size)
                << "hd " << hd << " rows " << rows << " chunks " << chunks << " r " << r << " j "
                << j;
          }
        }
      }
    }
    for (std::size_t n_keys :
         {std::size_t{1}, std::size_t{2}, std::size_t{31}, std::size_t{64}, kKeys - 1, kKeys}) {
      const auto v = to_bf16(random_vector(n_keys * hd, 20 + n_keys));
      std::vector<std::uint32_t> vp((n_keys + 1) / 2 * hd);
      bf16_attention::pack_values(v.data(), n_keys, hd, vp.data());
      for (std::size_t rows = 1; rows <= 5; ++rows) {
        auto p = random_vector(rows * kKeys, 30 + rows);
        for (std::size_t r = 0; r < rows; ++r) {
          for (std::size_t j = n_keys; j < kKeys; ++j) p[r * kKeys + j] = 0.0f;
        }
        const auto acc0 = random_vector(rows * hd, 40 + rows);
        auto acc = acc0;
        std::vector<float> correction(rows);
        for (std::size_t r = 0; r < rows; ++r) correction[r] = 0.25f * static_cast<float>(r + 1);
        bf16_attention::accumulate_values(p.data(), rows, n_keys, vp.data(), hd, correction.data(),
                                          acc.data());
        for (std::size_t r = 0; r < rows; ++r) {
          for (std::size_t d = 0; d < hd; ++d) {
            double want = double(acc0[r * hd + d]) * correction[r];
            double size = std::abs(want);
            for (std::size_t j = 0; j < n_keys; ++j) {
              const double term = double(rounded(p[r * kKeys + j])) * bf16_to_f32(v[j * hd + d]);
              want += term;
              size += std::abs(term);
            }
            ASSERT_NEAR(acc[r * hd + d], want, 1e-6 * size)
                << "hd " << hd << " n_keys " << n_keys << " rows " << rows << " r " << r << " d "
                << d;
          }
        }
      }
    }
  }
}

// attention() over a bf16 cache, x rounded (the default): every head dim
// the kernels take, groups of 1, 2 and 4 query heads, query counts with a
// partial block and the causal edge inside key blocks, 1 and 2 threads,
// against attention in double over the rounded queries and the stored keys
// and values. The weights' rounding to bf16 (2^-9 relative each) is all that
// may differ: within 2^-8 of the largest value. A query decoded alone gets
// the same bits as among the others (prefill and decode agree). With x split
// the f32 path runs and gives exactly what it gives over the widened rows.
TEST(Bf16Attention, PrefillOverABf16CacheMatchesTheRoundedReference) {
  SKIP_WITHOUT_AVX512_BF16();
  const int threads_before = omp_get_max_threads();
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (std::size_t hd : kHeadDims) {
      for (std::size_t group : {1, 2, 4}) {
        const AttentionShape shape{2 * group, 2, hd, 310};
        const std::size_t n_keys = 300;  // whole blocks and a partial one
        const auto k = to_bf16(random_vector(shape.n_kv_heads * shape.kv_stride * hd, 50 + hd));
        const auto v = to_bf16(random_vector(shape.n_kv_heads * shape.kv_stride * hd, 51 + hd));
        std::vector<float> k_wide(k.size()), v_wide(v.size());
        for (std::size_t i = 0; i < k.size(); ++i) k_wide[i] = bf16_to_f32(k[i]);
        for (std::size_t i = 0; i < v.size(); ++i) v_wide[i] = bf16_to_f32(v[i]);
        const KVRows k_rows{reinterpret_cast<const std::uint8_t*>(k.data()), DType::BF16};
        const KVRows v_rows{reinterpret_cast<const std::uint8_t*>(v.data()), DType::BF16};
        for (std::size_t n_q : {3, 33, 70}) {
          for (bool causal : {true, false}) {
            SCOPED_TRACE(::testing::Message()
                         << "threads " << threads << " head_dim " << hd << " group " << group
                         << " n_q " << n_q << " causal " << causal);
            const AttentionMask mask =
                causal ? AttentionMask::Causal : AttentionMask::Bidirectional;
            const std::size_t pos0 = n_keys - n_q;
            auto q = random_vector(n_q * shape.n_heads * hd, 52 + n_q + group);
            for (float& x : q) x *= 3.0f;  // sharp weights: the online rescaling matters
            std::vector<float> out(q.size());
            {
              const testing::Bf16ActivationsScope rounded_x(Bf16Precision::kRounded);
              attention(q.data(), n_q, pos0, k_rows, v_rows, n_keys, shape, mask, out.data());
            }
            std::vector<float> q_rounded(q.size());
            for (std::size_t i = 0; i < q.size(); ++i) q_rounded[i] = rounded(q[i]);
            double worst = 0;
            for (std::size_t i = 0; i < n_q; ++i) {
              for (std::size_t h = 0; h < shape.n_heads; ++h) {
                const auto p = testing::naive_attention_weights(q_rounded, i, h, pos0, k_wide,
                                                                n_keys, shape, causal);
                for (std::size_t d = 0; d < hd; ++d) {
                  double want = 0, largest = 0;
                  for (std::size_t j = 0; j < p.size(); ++j) {
                    const double value = v_wide[((h / group) * shape.kv_stride + j) * hd + d];
                    want += p[j] * value;
                    largest = std::max(largest, std::abs(value));
                  }
                  const double error = std::abs(out[(i * shape.n_heads + h) * hd + d] - want);
                  ASSERT_LE(error, largest / 256) << "query " << i << " head " << h << " d " << d;
                  worst = std::max(worst, error);
                }
              }
            }
            // Each query alone (as decode runs it) gets the bits it got among the others.
            for (std::size_t i = 0; i < n_q; i += 5) {
              const std::size_t width = shape.n_heads * hd;
              const std::vector<float> qi(q.begin() + i * width, q.begin() + (i + 1) * width);
              std::vector<float> alone(width);
              const testing::Bf16ActivationsScope rounded_x(Bf16Precision::kRounded);
              attention(qi.data(), 1, pos0 + i, k_rows, v_rows, causal ? pos0 + i + 1 : n_keys,
                        shape, mask, alone.data());
              ASSERT_TRUE(std::equal(alone.begin(), alone.end(), out.begin() + i * width))
                  << "query " << i << " alone";
            }
            // f32 over the rounded queries would be within 1e-6.
            EXPECT_GT(worst, 1e-5) << "the weights were not rounded: the f32 path ran";
            std::vector<float> out_split(q.size()), out_wide(q.size());
            {
              const testing::Bf16ActivationsScope split_x(Bf16Precision::kSplit);
              attention(q.data(), n_q, pos0, k_rows, v_rows, n_keys, shape, mask, out_split.data());
              attention(q.data(), n_q, pos0, k_wide.data(), v_wide.data(), n_keys, shape, mask,
                        out_wide.data());
            }
            ASSERT_EQ(out_split, out_wide);
          }
        }
      }
    }
  }
  omp_set_num_threads(threads_before);
}

}  // namespace
}  // namespace lclm
