// A tiny random Qwen3 model that runs KV-cache policies through a prompt
// and decode steps, shared by the KV policy tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "core/test_models.h"
#include "fixtures/random_qwen3.h"
#include "kv/indexmem.h"
#include "kv/kv_policy.h"
#include "model/qwen3_model.h"

namespace lclm {

// IndexMem weights for `decoder` drawn from N(0, std) (gates: N(0, gate_std));
// small indexer and memory so tests stay fast.
inline IndexMemWeights random_indexmem(const Qwen3Config& decoder, unsigned seed, float gate_std,
                                       float std = 0.3f) {
  IndexMemWeights w = IndexMemWeights::zeros(decoder, 8, 6);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (IndexMemLayer& layer : w.layers) {
    for (auto* t : {&layer.indexer_w1, &layer.indexer_b1, &layer.indexer_w2, &layer.feature_w,
                    &layer.feature_b}) {
      for (float& x : *t) x = std * normal(rng);
    }
    for (float& x : layer.gate) x = gate_std * normal(rng);
  }
  return w;
}

class KVPolicyModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = testing::scratch_dir("kv_policy_model");
    RandomQwen3Spec spec;
    spec.config = testing::tiny_config();
    spec.config.num_hidden_layers = 3;
    spec.config.vocab_size = 512;
    spec.seed = 5;
    spec.weight_std = 0.08f;
    write_random_qwen3(dir, spec);
    model_ = new Qwen3Model(Qwen3Model::load(dir));
  }
  static void TearDownTestSuite() { delete model_; }

  // A policy config of `kind`; IndexMem gets random weights for the model.
  static KVPolicyConfig config_of(KVPolicyKind kind) {
    KVPolicyConfig config;
    config.kind = kind;
    if (kind == KVPolicyKind::IndexMem) {
      config.indexmem =
          std::make_shared<IndexMemWeights>(random_indexmem(model_->config(), 7, 0.5f));
    }
    return config;
  }

  static std::vector<std::int32_t> prompt(std::size_t n) {
    std::vector<std::int32_t> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = std::int32_t((i * 37 + 11) % 500);
    return ids;
  }

  // Prefill in chunks of 16, then `steps` decode passes; checks after each
  // phase. Returns the last hidden state.
  template <typename Check>
  static std::vector<float> run(const KVPolicyConfig& config, std::size_t L, std::size_t steps,
                                Check&& check) {
    const auto H = std::size_t(model_->config().hidden_size);
    KVCache cache = model_->make_cache(256, L + steps);
    const auto policy = make_kv_policy(config);
    const auto ids = prompt(L + steps);
    std::vector<float> x(ids.size() * H);
    model_->embed(ids, x.data());
    policy->begin_prompt(cache, L);
    for (std::size_t s = 0; s < L; s += 16) {
      model_->forward(x.data() + s * H, std::min<std::size_t>(16, L - s), cache,
                      AttentionMask::Causal);
    }
    policy->end_prompt(cache);
    check(cache, *policy, 0);
    for (std::size_t t = 0; t < steps; ++t) {
      model_->forward(x.data() + (L + t) * H, 1, cache, AttentionMask::Causal);
      policy->after_token(cache);
      check(cache, *policy, t + 1);
    }
    const std::size_t last = (steps ? L + steps : L) - 1;
    return {x.begin() + long(last * H), x.begin() + long((last + 1) * H)};
  }

  inline static Qwen3Model* model_ = nullptr;
};

}  // namespace lclm
