#include "kv/kv_policy.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "kv/indexmem.h"
#include "kv/kv_selection.h"
#include "util/error.h"

namespace lclm {
namespace {

std::span<const float> head_scores(const KVCache& cache, std::size_t layer, std::size_t head) {
  return {cache.key_scores(layer) + head * cache.capacity(), cache.entries(layer)};
}

class FullPolicy : public KVPolicy {
 public:
  using KVPolicy::KVPolicy;
  void end_prompt(KVCache&) override {}

 protected:
  std::vector<std::size_t> keep(const KVCache& cache, std::size_t layer, std::size_t,
                                std::size_t) const override {
    return streaming_keep(cache.entries(layer), 0, cache.entries(layer));
  }
};

class StreamingPolicy : public KVPolicy {
 public:
  using KVPolicy::KVPolicy;
  void after_token(KVCache& cache) override { evict(cache); }

 protected:
  std::vector<std::size_t> keep(const KVCache& cache, std::size_t layer, std::size_t,
                                std::size_t budget) const override {
    return streaming_keep(cache.entries(layer), config_.sinks, budget);
  }
};

class H2OPolicy : public KVPolicy {
 public:
  using KVPolicy::KVPolicy;
  void begin_prompt(KVCache& cache, std::size_t prompt_len) override {
    KVPolicy::begin_prompt(cache, prompt_len);
    cache.start_key_scores(0);  // every query, prompt and decode, votes
  }
  void after_token(KVCache& cache) override { evict(cache); }

 protected:
  std::vector<std::size_t> keep(const KVCache& cache, std::size_t layer, std::size_t head,
                                std::size_t budget) const override {
    return h2o_keep(head_scores(cache, layer, head), budget);
  }
};

class SnapKVPolicy : public KVPolicy {
 public:
  using KVPolicy::KVPolicy;
  void begin_prompt(KVCache& cache, std::size_t prompt_len) override {
    KVPolicy::begin_prompt(cache, prompt_len);
    // PyramidKV moves budget between layers only when the prompt must be
    // cut at all; a budget covering the prompt keeps every layer whole.
    if (config_.kind == KVPolicyKind::PyramidKV && budgets_.front() < prompt_len) {
      const std::size_t flat = budgets_.front();
      budgets_ =
          pyramid_budgets(cache.n_layers(), flat, config_.observation_window, config_.pyramid_beta);
    }
    cache.start_key_scores(prompt_len - std::min(prompt_len, config_.observation_window));
  }
  void end_prompt(KVCache& cache) override {
    KVPolicy::end_prompt(cache);
    cache.stop_key_scores();  // generated tokens are kept as they come
  }

 protected:
  std::vector<std::size_t> keep(const KVCache& cache, std::size_t layer, std::size_t head,
                                std::size_t budget) const override {
    return snapkv_keep(head_scores(cache, layer, head), config_.observation_window,
                       config_.pool_kernel, budget);
  }
};

}  // namespace

std::string_view kv_policy_name(KVPolicyKind kind) {
  switch (kind) {
    case KVPolicyKind::Full:
      return "full";
    case KVPolicyKind::StreamingLLM:
      return "streaming";
    case KVPolicyKind::H2O:
      return "h2o";
    case KVPolicyKind::SnapKV:
      return "snapkv";
    case KVPolicyKind::PyramidKV:
      return "pyramidkv";
    case KVPolicyKind::IndexMem:
      return "indexmem";
  }
  return "?";
}

const std::vector<KVPolicyKind>& all_kv_policies() {
  static const std::vector<KVPolicyKind> all = {KVPolicyKind::Full,      KVPolicyKind::StreamingLLM,
                                                KVPolicyKind::H2O,       KVPolicyKind::SnapKV,
                                                KVPolicyKind::PyramidKV, KVPolicyKind::IndexMem};
  return all;
}

KVPolicyKind parse_kv_policy(std::string_view name) {
  std::string known;
  for (KVPolicyKind k : all_kv_policies()) {
    if (kv_policy_name(k) == name) return k;
    known += (known.empty() ? "" : ", ") + std::string(kv_policy_name(k));
  }
  throw Error("unknown KV-cache policy \"" + std::string(name) + "\" (known: " + known + ")");
}

std::size_t kv_budget(const KVPolicyConfig& config, std::size_t prompt_len) {
  if (config.budget > 0) return config.budget;
  if (!(config.ratio >= 1.0)) {
    throw Error("a KV-cache policy's ratio must be at least 1, not " +
                std::to_string(config.ratio));
  }
  return static_cast<std::size_t>(std::ceil(static_cast<double>(prompt_len) / config.ratio));
}

void KVPolicy::begin_prompt(KVCache& cache, std::size_t prompt_len) {
  budgets_.assign(cache.n_layers(), kv_budget(config_, prompt_len));
}

void KVPolicy::end_prompt(KVCache& cache) {
  evict(cache);
}

void KVPolicy::after_token(KVCache&) {}

void KVPolicy::evict(KVCache& cache) const {
  std::vector<std::vector<std::size_t>> keep_per_head(cache.n_kv_heads());
  for (std::size_t l = 0; l < cache.n_layers(); ++l) {
    if (cache.entries(l) <= budgets_[l]) continue;
    for (std::size_t g = 0; g < cache.n_kv_heads(); ++g)
      keep_per_head[g] = keep(cache, l, g, budgets_[l]);
    cache.compact(l, keep_per_head);
  }
}

std::unique_ptr<KVPolicy> make_kv_policy(const KVPolicyConfig& config) {
  switch (config.kind) {
    case KVPolicyKind::Full:
      return std::make_unique<FullPolicy>(config);
    case KVPolicyKind::StreamingLLM:
      return std::make_unique<StreamingPolicy>(config);
    case KVPolicyKind::H2O:
      return std::make_unique<H2OPolicy>(config);
    case KVPolicyKind::SnapKV:
    case KVPolicyKind::PyramidKV:
      return std::make_unique<SnapKVPolicy>(config);
    case KVPolicyKind::IndexMem:
      return make_indexmem_policy(config);
  }
  throw Error("unknown KV-cache policy");
}

}  // namespace lclm
