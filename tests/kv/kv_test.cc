// KV-cache policies: the attention key scores against a full softmax in
// double, each selection rule against a brute-force reference, the cache
// compaction, and the policies on a tiny model: exact budgets, StreamingLLM's
// exact positions, and a budget that covers everything reproducing the full
// cache bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cli/cli_runner.h"
#include "core/naive_attention.h"
#include "core/test_models.h"
#include "kv/kv_policy.h"
#include "kv/kv_selection.h"
#include "kv/policy_model.h"
#include "model/qwen3_model.h"
#include "ops/attention.h"
#include "runtime/session.h"

namespace lclm {
namespace {

using testing::naive_attention_weights;
using testing::random_vector;

// sum over queries first..n_q-1 and the group's heads of softmax(q k / sqrt(D)), in double.
std::vector<double> naive_key_scores(const std::vector<float>& q, std::size_t n_q, std::size_t pos0,
                                     std::size_t first, const std::vector<float>& k,
                                     std::size_t n_keys, const AttentionShape& s) {
  std::vector<double> scores(s.n_kv_heads * s.kv_stride, 0.0);
  const std::size_t group = s.n_heads / s.n_kv_heads;
  for (std::size_t h = 0; h < s.n_heads; ++h) {
    const std::size_t g = h / group;
    for (std::size_t i = first; i < n_q; ++i) {
      const std::vector<double> p = naive_attention_weights(q, i, h, pos0, k, n_keys, s, true);
      for (std::size_t j = 0; j < p.size(); ++j) scores[g * s.kv_stride + j] += p[j];
    }
  }
  return scores;
}

// 130 keys over three key blocks, GQA 6/2, causal with an offset; the last
// 20 of 40 queries are scored, so the scored range starts mid-block.
TEST(KeyScores, AttentionAddsSoftmaxWeightsOfTheScoredQueries) {
  const AttentionShape shape{6, 2, 16, 140};
  const std::size_t n_keys = 130, n_q = 40, pos0 = n_keys - n_q, first = 20;
  const auto k = random_vector(shape.n_kv_heads * shape.kv_stride * shape.head_dim, 3);
  const auto v = random_vector(k.size(), 4);
  auto q = random_vector(n_q * shape.n_heads * shape.head_dim, 5);
  for (float& x : q) x *= 2.0f;
  std::vector<float> plain(q.size()), scored(q.size());
  std::vector<float> key_scores(shape.n_kv_heads * shape.kv_stride, 0.5f);
  attention(q.data(), n_q, pos0, k.data(), v.data(), n_keys, shape, AttentionMask::Causal,
            plain.data());
  const KeyScoreAccumulator acc{first, key_scores.data()};
  attention(q.data(), n_q, pos0, k.data(), v.data(), n_keys, shape, AttentionMask::Causal,
            scored.data(), &acc);
  EXPECT_EQ(plain, scored) << "scoring must not change the attention output";
  const auto ref = naive_key_scores(q, n_q, pos0, first, k, n_keys, shape);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    ASSERT_NEAR(key_scores[i], 0.5 + ref[i], 1e-5) << "entry " << i;  // added to what was there
  }
  // Each scored query hands out one unit of probability per query head.
  const double total = std::accumulate(ref.begin(), ref.end(), 0.0);
  EXPECT_NEAR(total, double((n_q - first) * shape.n_heads), 1e-9);
}

// ---- selection rules against brute force ---------------------------------

// Ranks by counting, for each candidate, the candidates that beat it.
std::vector<std::size_t> brute_top_k(const std::vector<double>& values, std::size_t k) {
  std::vector<std::size_t> keep;
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::size_t better = 0;
    for (std::size_t j = 0; j < values.size(); ++j) {
      better += values[j] > values[i] || (values[j] == values[i] && j < i);
    }
    if (better < k) keep.push_back(i);
  }
  return keep;
}

std::vector<float> random_scores(std::size_t n, unsigned seed, int levels) {
  std::mt19937 rng(seed);
  std::vector<float> s(n);
  for (float& x : s) x = static_cast<float>(rng() % levels) / 8.0f;  // many ties
  return s;
}

TEST(KVSelection, StreamingKeepsSinksAndTheRecentWindow) {
  EXPECT_EQ(streaming_keep(10, 2, 5), (std::vector<std::size_t>{0, 1, 7, 8, 9}));
  EXPECT_EQ(streaming_keep(4, 2, 5), (std::vector<std::size_t>{0, 1, 2, 3}));
  EXPECT_EQ(streaming_keep(10, 6, 3), (std::vector<std::size_t>{0, 1, 2}));
}

TEST(KVSelection, H2OEqualsBruteForce) {
  for (std::size_t n : {5, 17, 64}) {
    for (std::size_t budget : {1, 2, 7, 16}) {
      const auto scores = random_scores(n, static_cast<unsigned>(n * 31 + budget), 5);
      if (budget >= n) continue;
      const std::size_t recent = budget / 2;
      std::vector<double> older(scores.begin(), scores.end() - static_cast<std::ptrdiff_t>(recent));
      std::vector<std::size_t> expected = brute_top_k(older, budget - recent);
      for (std::size_t i = n - recent; i < n; ++i) expected.push_back(i);
      EXPECT_EQ(h2o_keep(scores, budget), expected) << "n " << n << " budget " << budget;
    }
  }
}

TEST(KVSelection, SnapKVEqualsBruteForce) {
  for (std::size_t kernel : {1, 5, 7}) {
    for (std::size_t budget : {4, 9, 20}) {
      const std::size_t n = 40, window = 3;
      const auto scores = random_scores(n, static_cast<unsigned>(kernel * 100 + budget), 7);
      std::vector<double> pooled(n - window);
      for (std::size_t i = 0; i < pooled.size(); ++i) {
        double sum = 0;
        for (long j = long(i) - long(kernel / 2); j <= long(i) + long(kernel / 2); ++j) {
          if (j >= 0 && j < long(pooled.size())) sum += scores[std::size_t(j)];
        }
        pooled[i] = float(sum) / float(kernel);
      }
      std::vector<std::size_t> expected = brute_top_k(pooled, budget - window);
      for (std::size_t i = n - window; i < n; ++i) expected.push_back(i);
      EXPECT_EQ(snapkv_keep(scores, window, kernel, budget), expected)
          << "kernel " << kernel << " budget " << budget;
    }
  }
}

TEST(KVSelection, PyramidBudgetsFallAndSumToTheFlatTotal) {
  for (std::size_t layers : {1, 2, 5, 28}) {
    for (std::size_t budget : {8, 64, 257}) {
      const std::size_t window = 8;
      const auto b = pyramid_budgets(layers, budget, window, 20.0);
      ASSERT_EQ(b.size(), layers);
      EXPECT_EQ(std::accumulate(b.begin(), b.end(), std::size_t{0}), layers * budget);
      for (std::size_t l = 0; l < layers; ++l) {
        EXPECT_GE(b[l], window);
        if (l > 0) {
          EXPECT_LE(b[l], b[l - 1]);
        }
      }
      if (layers > 1) {
        EXPECT_LE(b.back(), window + (budget - window) / 20 + 1);
      }
    }
  }
}

// The brute-force SnapKV on a small case end to end: scores from attention()
// equal those of a full softmax in double, and so does the selection.
TEST(KVSelection, SnapKVFromAttentionEqualsFullSoftmaxReference) {
  const AttentionShape shape{4, 2, 8, 48};
  const std::size_t L = 48, window = 6, budget = 12, kernel = 5;
  const auto k = random_vector(shape.n_kv_heads * L * shape.head_dim, 21);
  const auto v = random_vector(k.size(), 22);
  auto q = random_vector(L * shape.n_heads * shape.head_dim, 23);
  for (float& x : q) x *= 3.0f;
  std::vector<float> out(q.size()), key_scores(shape.n_kv_heads * L, 0.0f);
  const KeyScoreAccumulator acc{L - window, key_scores.data()};
  attention(q.data(), L, 0, k.data(), v.data(), L, shape, AttentionMask::Causal, out.data(), &acc);
  const auto ref = naive_key_scores(q, L, 0, L - window, k, L, shape);
  for (std::size_t g = 0; g < shape.n_kv_heads; ++g) {
    const std::vector<float> ref_head(ref.begin() + long(g * L), ref.begin() + long((g + 1) * L));
    const std::span<const float> got(key_scores.data() + g * L, L);
    EXPECT_EQ(snapkv_keep(got, window, kernel, budget),
              snapkv_keep(ref_head, window, kernel, budget))
        << "kv head " << g;
  }
}

TEST(KVCache, CompactMovesKeysValuesPositionsAndScoresTogether) {
  KVCache cache(1, 2, 2, 100, 8);
  cache.start_key_scores(0);
  cache.reserve_more(6);
  for (std::size_t g = 0; g < 2; ++g) {
    for (std::size_t i = 0; i < 6; ++i) {
      const std::size_t row = g * cache.capacity() + i;
      cache.f32_keys(0)[row * 2] = float(100 * g + i);
      cache.f32_values(0)[row * 2 + 1] = float(-100.0 * g - i);
      cache.positions(0)[row] = std::int32_t(i);
      cache.key_scores(0)[row] = float(i) / 10;
    }
  }
  cache.advance(6);
  const std::vector<std::vector<std::size_t>> keep = {{0, 2, 5}, {1, 3, 4}};
  cache.compact(0, keep);
  EXPECT_EQ(cache.entries(0), 3u);
  EXPECT_EQ(cache.size(), 6u) << "positions processed do not shrink";
  for (std::size_t g = 0; g < 2; ++g) {
    for (std::size_t i = 0; i < 3; ++i) {
      const std::size_t row = g * cache.capacity() + i, from = keep[g][i];
      EXPECT_EQ(cache.f32_keys(0)[row * 2], float(100 * g + from));
      EXPECT_EQ(cache.f32_values(0)[row * 2 + 1], float(-100.0 * g - from));
      EXPECT_EQ(cache.positions(0)[row], std::int32_t(from));
      EXPECT_EQ(cache.key_scores(0)[row], float(from) / 10);
    }
  }
  EXPECT_EQ(cache.entry_bytes(), 2u * 2 * 3 * 2 * sizeof(float));
  const std::vector<std::vector<std::size_t>> uneven = {{0, 1}, {2}};
  EXPECT_THROW(cache.compact(0, uneven), Error);
  cache.shrink_to_fit(1);
  EXPECT_EQ(cache.capacity(), 4u);
  EXPECT_EQ(cache.positions(0)[cache.capacity() + 2], 4);
}

// ---- policies on a tiny model ---------------------------------------------

TEST_F(KVPolicyModel, EachPolicyKeepsExactlyItsBudget) {
  const std::size_t L = 70, steps = 4;
  for (KVPolicyKind kind : all_kv_policies()) {
    for (double ratio : {4.0, 8.0, 16.0}) {
      KVPolicyConfig config = config_of(kind);
      config.ratio = ratio;
      config.observation_window = 4;
      const std::size_t budget = std::size_t(std::ceil(L / ratio));
      run(config, L, steps, [&](const KVCache& cache, const KVPolicy& policy, std::size_t step) {
        std::size_t total = 0;
        for (std::size_t l = 0; l < cache.n_layers(); ++l) {
          total += cache.entries(l);
          const bool decodes_in_budget = kind == KVPolicyKind::StreamingLLM ||
                                         kind == KVPolicyKind::H2O ||
                                         kind == KVPolicyKind::IndexMem;
          std::size_t expected = kind == KVPolicyKind::Full ? L : policy.budgets()[l];
          if (kind != KVPolicyKind::Full && kind != KVPolicyKind::PyramidKV) {
            EXPECT_EQ(policy.budgets()[l], budget);
          }
          if (!decodes_in_budget) expected += step;
          ASSERT_EQ(cache.entries(l), expected)
              << kv_policy_name(kind) << " x" << ratio << " layer " << l << " step " << step;
        }
        if (kind == KVPolicyKind::PyramidKV) {
          EXPECT_EQ(total, cache.n_layers() * (budget + step)) << "x" << ratio;
          EXPECT_GT(cache.entries(0), cache.entries(cache.n_layers() - 1));
        }
      });
    }
  }
}

TEST_F(KVPolicyModel, StreamingKeepsExactlySinksAndWindow) {
  const std::size_t L = 64, steps = 3;
  KVPolicyConfig config;
  config.kind = KVPolicyKind::StreamingLLM;
  config.ratio = 8;  // budget 8: 4 sinks + 4 recent
  run(config, L, steps, [&](const KVCache& cache, const KVPolicy&, std::size_t step) {
    const std::size_t end = L + step;
    const std::vector<std::int32_t> expected = {0,
                                                1,
                                                2,
                                                3,
                                                std::int32_t(end - 4),
                                                std::int32_t(end - 3),
                                                std::int32_t(end - 2),
                                                std::int32_t(end - 1)};
    for (std::size_t l = 0; l < cache.n_layers(); ++l) {
      for (std::size_t g = 0; g < cache.n_kv_heads(); ++g) {
        const std::int32_t* p = cache.positions(l) + g * cache.capacity();
        EXPECT_EQ(std::vector<std::int32_t>(p, p + cache.entries(l)), expected);
      }
    }
  });
}

TEST_F(KVPolicyModel, SnapKVKeepsTheObservationWindowAndHeadsMayDiffer) {
  const std::size_t L = 80;
  KVPolicyConfig config;
  config.kind = KVPolicyKind::SnapKV;
  config.ratio = 4;
  config.observation_window = 6;
  bool heads_differ = false;
  run(config, L, 0, [&](const KVCache& cache, const KVPolicy&, std::size_t) {
    EXPECT_FALSE(cache.scoring());
    for (std::size_t l = 0; l < cache.n_layers(); ++l) {
      const std::int32_t* h0 = cache.positions(l);
      const std::int32_t* h1 = cache.positions(l) + cache.capacity();
      const std::size_t n = cache.entries(l);
      heads_differ = heads_differ || !std::equal(h0, h0 + n, h1);
      for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(h0[n - 6 + i], std::int32_t(L - 6 + i));
    }
  });
  EXPECT_TRUE(heads_differ) << "per-head selection picked the same positions everywhere";
}

// A budget as large as the whole run evicts nothing: the hidden states, and
// so the logits, are bit for bit those of the full cache.
TEST_F(KVPolicyModel, FullBudgetReproducesTheFullCacheExactly) {
  const std::size_t L = 50, steps = 5;
  const auto nothing = [](const KVCache&, const KVPolicy&, std::size_t) {};
  const std::vector<float> full = run(KVPolicyConfig{}, L, steps, nothing);
  for (KVPolicyKind kind : all_kv_policies()) {
    KVPolicyConfig config = config_of(kind);
    config.budget = L + steps;
    EXPECT_EQ(run(config, L, steps, nothing), full) << kv_policy_name(kind);
  }
  // Ratio 1 through the generator: the same greedy tokens.
  GenerationOptions options;
  options.n_predict = 6;
  options.sampling.temperature = 0;
  options.prefill_chunk = 16;
  const auto ids = prompt(L);
  const auto tokens = [&](KVPolicyKind kind) {
    options.kv_policy.kind = kind;
    options.kv_policy.ratio = 1;
    return Session(*model_).generate(ids, options).tokens;
  };
  const auto reference = tokens(KVPolicyKind::Full);
  for (KVPolicyKind kind : {KVPolicyKind::SnapKV, KVPolicyKind::PyramidKV}) {
    EXPECT_EQ(tokens(kind), reference) << kv_policy_name(kind);
  }
}

TEST(KVPolicyCli, GenerateTakesAPolicyAndARatio) {
  const auto dir = testing::tiny_model_with_tokenizer("kv_cli_model");
  const auto generate = [&](const std::string& policy, const std::string& ratio) {
    return testing::cli({"generate", "-m", dir.string(), "-p",
                         "A long enough prompt that a KV policy has entries to drop from it.", "-n",
                         "8", "--temp", "0", "-t", "1", "--kv-policy", policy, "--kv-ratio",
                         ratio});
  };
  const auto full = generate("full", "1");
  ASSERT_EQ(full.code, 0) << full.err;
  EXPECT_EQ(generate("snapkv", "1").out, full.out) << "a budget covering the prompt drops nothing";
  const auto cut = generate("snapkv", "8");
  EXPECT_EQ(cut.code, 0) << cut.err;
  const auto bad = generate("lru", "4");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("lru"), std::string::npos) << bad.err;
  EXPECT_EQ(generate("h2o", "0.5").code, 2);
}

TEST(KVPolicyConfigTest, NamesAndErrors) {
  for (KVPolicyKind kind : all_kv_policies()) {
    EXPECT_EQ(parse_kv_policy(kv_policy_name(kind)), kind);
  }
  const std::string message = testing::error_of([] { parse_kv_policy("lru"); });
  EXPECT_NE(message.find("\"lru\""), std::string::npos) << message;
  EXPECT_NE(message.find("snapkv"), std::string::npos) << message;
  KVPolicyConfig config;
  config.ratio = 0.5;
  EXPECT_NE(testing::error_of([&] { kv_budget(config, 10); }).find("ratio"), std::string::npos);
  config.ratio = 8;
  EXPECT_EQ(kv_budget(config, 17), 3u);
  config.budget = 5;
  EXPECT_EQ(kv_budget(config, 17), 5u);
}

}  // namespace
}  // namespace lclm
