// IndexMem (kv/indexmem.h): the selection rule against a brute-force ranking,
// the indexer and the memory readout against direct double-precision
// computations, the policy on a tiny model (kept entries = the rule on the
// indexer's scores, memory = the fold of exactly the evicted entries, a zero
// indexer without a gate = StreamingLLM bit for bit), weight files (round
// trip and every error), and `generate --kv-policy indexmem`.
#include "kv/indexmem.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <vector>

#include "cli/cli_runner.h"
#include "core/test_models.h"
#include "format/json_file.h"
#include "kv/kv_selection.h"
#include "kv/policy_model.h"
#include "ops/attention.h"

namespace lclm {
namespace {

using testing::random_vector;

// The sinks, the recent entries, then the best-scored others (ties: earlier).
std::vector<std::size_t> brute_force_keep(const std::vector<float>& scores, std::size_t sinks,
                                          std::size_t recent, std::size_t budget) {
  const std::size_t n = scores.size();
  std::vector<bool> kept(n, budget >= n);
  if (budget < n) {
    const std::size_t s = std::min(sinks, budget), r = std::min(recent, budget - s);
    for (std::size_t j = 0; j < s; ++j) kept[j] = true;
    for (std::size_t j = n - r; j < n; ++j) kept[j] = true;
    std::vector<std::size_t> middle(n - s - r);
    std::iota(middle.begin(), middle.end(), s);
    std::stable_sort(middle.begin(), middle.end(),
                     [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    for (std::size_t i = 0; i < budget - s - r; ++i) kept[middle[i]] = true;
  }
  std::vector<std::size_t> out;
  for (std::size_t j = 0; j < n; ++j)
    if (kept[j]) out.push_back(j);
  return out;
}

TEST(IndexMemSelection, KeepsSinksRecentAndTheBestScoredRest) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(0, 5);  // few levels: many ties
  for (std::size_t n : {0, 1, 5, 12, 40}) {
    std::vector<float> scores(n);
    for (float& s : scores) s = float(level(rng));
    for (std::size_t budget = 0; budget <= n + 1; ++budget) {
      for (std::size_t sinks : {0, 2, 4}) {
        for (std::size_t recent : {0, 3, 16}) {
          const auto kept = indexmem_keep(scores, sinks, recent, budget);
          ASSERT_EQ(kept, brute_force_keep(scores, sinks, recent, budget))
              << "n " << n << " budget " << budget << " sinks " << sinks << " recent " << recent;
          ASSERT_EQ(kept.size(), std::min(budget, n));
        }
      }
    }
  }
}

// phi(x) = elu(W x + b) + 1 in double.
std::vector<double> features_double(const AttentionResidual& r, const float* x, std::size_t D) {
  std::vector<double> phi(r.n_features);
  for (std::size_t f = 0; f < r.n_features; ++f) {
    double a = r.feature_b[f];
    for (std::size_t d = 0; d < D; ++d) a += double(r.feature_w[f * D + d]) * x[d];
    phi[f] = a > 0 ? a + 1 : std::exp(a);
  }
  return phi;
}

TEST(IndexMemReadout, AttentionAddsTheMemoryReadoutPerQueryHead) {
  const AttentionShape shape{4, 2, 8, 6};  // 4 query heads on 2 kv heads, D 8
  const std::size_t n_q = 3, n_keys = 6, F = 5, D = 8;
  const auto q = random_vector(n_q * 4 * D, 1), k = random_vector(2 * 6 * D, 2),
             v = random_vector(2 * 6 * D, 3);
  const auto W = random_vector(F * D, 4), b = random_vector(F, 5), gate = random_vector(4, 6),
             M = random_vector(2 * F * D, 7);
  auto z = random_vector(2 * F, 8);
  for (float& x : z) x = std::abs(x) + 0.1f;  // a sum of positive features
  const AttentionResidual r{F, W.data(), b.data(), gate.data(), M.data(), z.data(), 1e-6f};

  std::vector<float> plain(n_q * 4 * D), with_memory(n_q * 4 * D);
  attention(q.data(), n_q, 3, k.data(), v.data(), n_keys, shape, AttentionMask::Causal,
            plain.data());
  attention(q.data(), n_q, 3, k.data(), v.data(), n_keys, shape, AttentionMask::Causal,
            with_memory.data(), nullptr, &r);
  for (std::size_t i = 0; i < n_q; ++i) {
    for (std::size_t h = 0; h < 4; ++h) {
      const std::size_t g = h / 2;
      const std::size_t row = (i * 4 + h) * D;
      const auto phi = features_double(r, q.data() + row, D);
      double denominator = 1e-6;
      for (std::size_t f = 0; f < F; ++f) denominator += phi[f] * z[g * F + f];
      for (std::size_t d = 0; d < D; ++d) {
        double numerator = 0;
        for (std::size_t f = 0; f < F; ++f) numerator += phi[f] * M[(g * F + f) * D + d];
        const double expected = plain[row + d] + gate[h] * numerator / denominator;
        EXPECT_NEAR(with_memory[row + d], expected, 1e-5) << "query " << i << " head " << h;
      }
    }
  }
}

TEST(IndexMemWeightsTest, ScoreIsTheIndexerMlp) {
  const IndexMemWeights w = random_indexmem(testing::tiny_config(), 11, 0.5f);
  const auto D = std::size_t(w.config.head_dim), H = std::size_t(w.config.indexer_hidden);
  const auto key = random_vector(D, 12);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const IndexMemLayer& m = w.layers[l];
    double s = 0;
    for (std::size_t h = 0; h < H; ++h) {
      double a = m.indexer_b1[h];
      for (std::size_t d = 0; d < D; ++d) a += double(m.indexer_w1[h * D + d]) * key[d];
      s += m.indexer_w2[h] * std::max(a, 0.0);
    }
    EXPECT_NEAR(w.score(l, key.data()), s, 1e-5);
  }
}

TEST_F(KVPolicyModel, IndexMemKeepsTheIndexersChoiceAndFoldsTheRestIntoMemory) {
  const std::size_t L = 60;
  KVPolicyConfig config = config_of(KVPolicyKind::IndexMem);
  IndexMemWeights weights = *config.indexmem;
  weights.config.recent = 3;
  config.indexmem = std::make_shared<IndexMemWeights>(weights);
  config.ratio = 4;  // budget 15: 4 sinks, 3 recent, 8 chosen by the indexer
  const IndexMemWeights& w = *config.indexmem;
  const std::size_t budget = 15;
  KVCache cache = model_->make_cache(128, L);
  const auto policy = make_kv_policy(config);
  const auto ids = prompt(L);
  const auto H = std::size_t(model_->config().hidden_size);
  std::vector<float> x(L * H);
  model_->embed(ids, x.data());
  policy->begin_prompt(cache, L);
  model_->forward(x.data(), L, cache, AttentionMask::Causal);
  for (std::size_t l = 0; l < cache.n_layers(); ++l)
    EXPECT_EQ(cache.attention_residual(l), nullptr);

  const std::size_t D = cache.head_dim(), stride = cache.capacity();
  std::vector<std::vector<float>> keys, values;
  for (std::size_t l = 0; l < cache.n_layers(); ++l) {
    keys.emplace_back(cache.f32_keys(l), cache.f32_keys(l) + cache.n_kv_heads() * stride * D);
    values.emplace_back(cache.f32_values(l), cache.f32_values(l) + cache.n_kv_heads() * stride * D);
  }
  policy->end_prompt(cache);

  for (std::size_t l = 0; l < cache.n_layers(); ++l) {
    ASSERT_EQ(cache.entries(l), budget);
    const AttentionResidual* r = cache.attention_residual(l);
    ASSERT_NE(r, nullptr) << "layer " << l << " evicted entries but reads no memory";
    const std::size_t F = r->n_features;
    for (std::size_t g = 0; g < cache.n_kv_heads(); ++g) {
      const float* kg = keys[l].data() + g * stride * D;
      const float* vg = values[l].data() + g * stride * D;
      std::vector<float> scores(L);
      for (std::size_t j = 0; j < L; ++j) scores[j] = w.score(l, kg + j * D);
      const auto kept = brute_force_keep(scores, std::size_t(w.config.sinks),
                                         std::size_t(w.config.recent), budget);
      const std::int32_t* positions = cache.positions(l) + g * stride;
      for (std::size_t i = 0; i < budget; ++i) EXPECT_EQ(positions[i], std::int32_t(kept[i]));
      // M = sum phi(k) v^T, z = sum phi(k) over the evicted entries, in double.
      std::vector<double> M(F * D, 0.0), z(F, 0.0);
      for (std::size_t j = 0; j < L; ++j) {
        if (std::find(kept.begin(), kept.end(), j) != kept.end()) continue;
        const auto phi = features_double(*r, kg + j * D, D);
        for (std::size_t f = 0; f < F; ++f) {
          z[f] += phi[f];
          for (std::size_t d = 0; d < D; ++d) M[f * D + d] += phi[f] * vg[j * D + d];
        }
      }
      for (std::size_t f = 0; f < F; ++f) {
        EXPECT_NEAR(r->normalizer[g * F + f], z[f], 1e-4 * std::abs(z[f]));
        for (std::size_t d = 0; d < D; ++d)
          EXPECT_NEAR(r->memory[(g * F + f) * D + d], M[f * D + d], 1e-4 * (1 + std::abs(z[f])));
      }
    }
  }
}

// A constant indexer ranks the middle by position (ties go to the earlier
// entry), so IndexMem keeps the first budget - recent entries and the last
// `recent`: StreamingLLM with that many sinks. Without a gate the memory adds
// nothing, and every hidden state equals StreamingLLM's bit for bit; with one,
// the memory changes them.
TEST_F(KVPolicyModel, ConstantIndexerWithoutGateIsStreamingLLM) {
  const std::size_t L = 64, steps = 5;
  KVPolicyConfig indexmem = config_of(KVPolicyKind::IndexMem);
  IndexMemWeights w = *indexmem.indexmem;
  w.config.recent = 6;
  for (IndexMemLayer& layer : w.layers) {
    std::fill(layer.indexer_w2.begin(), layer.indexer_w2.end(), 0.0f);
    std::fill(layer.gate.begin(), layer.gate.end(), 0.0f);
  }
  indexmem.indexmem = std::make_shared<IndexMemWeights>(w);
  indexmem.ratio = 4;  // budget 16
  KVPolicyConfig streaming;
  streaming.kind = KVPolicyKind::StreamingLLM;
  streaming.ratio = 4;
  streaming.sinks = 16 - std::size_t(w.config.recent);
  std::vector<std::vector<std::int32_t>> streaming_positions;
  const auto record = [&](const KVCache& cache, const KVPolicy&, std::size_t) {
    streaming_positions.emplace_back(cache.positions(0), cache.positions(0) + 16);
  };
  const auto expected = run(streaming, L, steps, record);
  std::size_t step_index = 0;
  const auto actual =
      run(indexmem, L, steps, [&](const KVCache& cache, const KVPolicy&, std::size_t) {
        EXPECT_EQ(std::vector<std::int32_t>(cache.positions(0), cache.positions(0) + 16),
                  streaming_positions[step_index++]);
        EXPECT_NE(cache.attention_residual(0), nullptr);
      });
  EXPECT_EQ(actual, expected);

  for (IndexMemLayer& layer : w.layers) std::fill(layer.gate.begin(), layer.gate.end(), 0.5f);
  indexmem.indexmem = std::make_shared<IndexMemWeights>(w);
  const auto nothing = [](const KVCache&, const KVPolicy&, std::size_t) {};
  EXPECT_NE(run(indexmem, L, steps, nothing), expected) << "the memory readout changed nothing";
}

TEST(IndexMemWeightsTest, SaveLoadRoundTripsBitForBit) {
  const Qwen3Config decoder = testing::tiny_config();
  IndexMemWeights w = random_indexmem(decoder, 21, 0.5f);
  w.config.sinks = 2;
  w.config.recent = 9;
  const auto dir = testing::scratch_dir("indexmem_round_trip") / "indexmem";
  w.save(dir);
  const IndexMemWeights back = IndexMemWeights::load(dir, decoder);
  EXPECT_EQ(back.config.sinks, 2);
  EXPECT_EQ(back.config.recent, 9);
  EXPECT_EQ(back.config.indexer_hidden, w.config.indexer_hidden);
  ASSERT_EQ(back.layers.size(), w.layers.size());
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    EXPECT_EQ(back.layers[l].indexer_w1, w.layers[l].indexer_w1);
    EXPECT_EQ(back.layers[l].indexer_b1, w.layers[l].indexer_b1);
    EXPECT_EQ(back.layers[l].indexer_w2, w.layers[l].indexer_w2);
    EXPECT_EQ(back.layers[l].feature_w, w.layers[l].feature_w);
    EXPECT_EQ(back.layers[l].feature_b, w.layers[l].feature_b);
    EXPECT_EQ(back.layers[l].gate, w.layers[l].gate);
  }
}

TEST(IndexMemWeightsTest, ErrorsNameWhatIsWrong) {
  const Qwen3Config decoder = testing::tiny_config();
  const auto root = testing::scratch_dir("indexmem_errors");
  const auto expect_error = [&](const std::filesystem::path& dir, const std::string& needle,
                                const Qwen3Config& c) {
    const std::string message = testing::error_of([&] { IndexMemWeights::load(dir, c); });
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  expect_error(root / "missing", (root / "missing").string(), decoder);

  const IndexMemWeights w = random_indexmem(decoder, 22, 0.5f);
  const auto good = root / "good";
  w.save(good);
  Qwen3Config other = decoder;
  other.num_hidden_layers += 1;
  expect_error(good, "config.json", other);

  const auto no_key = root / "no_key";
  w.save(no_key);
  auto j = read_json_file(no_key / "config.json");
  j.erase("recent");
  write_text_file(no_key / "config.json", j.dump());
  expect_error(no_key, "recent", decoder);

  // Another method's weights once loaded as IndexMem's.
  const auto other_method = root / "other_method";
  w.save(other_method);
  j = read_json_file(other_method / "config.json");
  j["method"] = "zzz";
  write_text_file(other_method / "config.json", j.dump());
  expect_error(other_method, "method \"zzz\" is not indexmem", decoder);

  const auto truncated = root / "truncated";
  w.save(truncated);
  std::filesystem::resize_file(truncated / "model.safetensors",
                               std::filesystem::file_size(truncated / "model.safetensors") - 16);
  expect_error(truncated, "model.safetensors", decoder);

  const auto wrong_shape = root / "wrong_shape";
  IndexMemWeights bigger = w;
  bigger.config.memory_features += 1;
  for (IndexMemLayer& layer : bigger.layers) {
    layer.feature_w.resize(layer.feature_w.size() + std::size_t(w.config.head_dim));
    layer.feature_b.resize(layer.feature_b.size() + 1);
  }
  bigger.save(wrong_shape);
  write_text_file(wrong_shape / "config.json",
                  read_json_file(good / "config.json").dump());  // claims the old F
  expect_error(wrong_shape, "layers.0.memory.feature_map.weight", decoder);

  KVPolicyConfig no_weights;
  no_weights.kind = KVPolicyKind::IndexMem;
  EXPECT_NE(testing::error_of([&] { make_kv_policy(no_weights); }).find("--indexmem"),
            std::string::npos);
}

TEST(IndexMemWeightsTest, DefaultDirectoryIsBesideTheDecoder) {
  const auto root = testing::scratch_dir("indexmem_default");
  std::filesystem::create_directories(root / "ckpt" / "decoder");
  testing::write_text(root / "ckpt" / "model_config.json", "{}");
  EXPECT_EQ(default_indexmem_dir(root / "ckpt"), root / "ckpt" / "indexmem");
  EXPECT_EQ(default_indexmem_dir(root / "ckpt" / "decoder"), root / "ckpt" / "indexmem");
  EXPECT_EQ(default_indexmem_dir(root / "ckpt" / "decoder/"), root / "ckpt" / "indexmem");
}

TEST(IndexMemCli, GenerateRunsTheLearnedPolicy) {
  const auto dir = testing::tiny_model_with_tokenizer("indexmem_cli_model");
  const auto weights = testing::scratch_dir("indexmem_cli_weights") / "weights";
  random_indexmem(Qwen3Config::from_dir(dir), 31, 0.5f).save(weights);
  const auto generate = [&](const std::string& policy, const std::string& ratio,
                            const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        "generate",
        "-m",
        dir.string(),
        "-p",
        "A long enough prompt that a KV policy has entries to drop from it, and then "
        "some more words so that the memory has something to hold.",
        "-n",
        "8",
        "--temp",
        "0",
        "-t",
        "1",
        "--kv-policy",
        policy,
        "--kv-ratio",
        ratio};
    args.insert(args.end(), extra.begin(), extra.end());
    return testing::cli(args);
  };
  // The budget stays fixed while decoding, so even ratio 1 evicts once
  // generation starts: the run must work, its equality with the full cache
  // before that is KVPolicyModel.FullBudgetReproducesTheFullCacheExactly.
  const auto cut = generate("indexmem", "8", {"--indexmem", weights.string()});
  ASSERT_EQ(cut.code, 0) << cut.err;
  EXPECT_FALSE(cut.out.empty());
  const auto wrong = generate("indexmem", "8", {"--indexmem", (weights / "nowhere").string()});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE(wrong.err.find("nowhere"), std::string::npos) << wrong.err;
  const auto missing = generate("indexmem", "8", {});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("indexmem"), std::string::npos) << missing.err;
}

}  // namespace
}  // namespace lclm
