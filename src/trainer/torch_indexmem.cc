#include "trainer/torch_indexmem.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include "kv/kv_selection.h"
#include "util/error.h"

namespace lclm::train {
namespace {

torch::Tensor to_tensor(const std::vector<float>& v, std::vector<std::int64_t> shape) {
  return torch::from_blob(const_cast<float*>(v.data()), shape, torch::kFloat32).clone();
}

std::vector<float> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  std::vector<float> out(static_cast<std::size_t>(c.numel()));
  std::memcpy(out.data(), c.data_ptr<float>(), out.size() * sizeof(float));
  return out;
}

torch::Tensor index_tensor(const std::vector<std::vector<std::size_t>>& rows) {
  const auto G = static_cast<std::int64_t>(rows.size());
  const auto n = static_cast<std::int64_t>(rows.front().size());
  torch::Tensor t = torch::empty({G, n}, torch::kInt64);
  auto a = t.accessor<std::int64_t, 2>();
  for (std::int64_t g = 0; g < G; ++g) {
    for (std::int64_t i = 0; i < n; ++i) {
      a[g][i] =
          static_cast<std::int64_t>(rows[static_cast<std::size_t>(g)][static_cast<std::size_t>(i)]);
    }
  }
  return t;
}

// rows [G, n] of x [G, L, D] -> [G, n, D].
torch::Tensor gather_rows(const torch::Tensor& x, const torch::Tensor& rows) {
  return x.gather(1, rows.unsqueeze(-1).expand({rows.size(0), rows.size(1), x.size(2)}));
}

// The prompt's keys, values and attention mass in the full-cache forward.
struct PromptLayer {
  torch::Tensor keys, values;  // [G, P, D]
  torch::Tensor mass;          // [G, P]: attention the answer queries give each prompt key
};

// One layer's cache in the trainer's decode: the held entries, their
// indexer scores (detached: selection is discrete) and the memory.
struct LayerCache {
  torch::Tensor keys, values;              // [G, n, D]
  std::vector<std::vector<float>> scores;  // [G][n]
  std::optional<TorchMemoryState> memory;  // none until something is evicted
};

}  // namespace

TorchIndexMemLayer::TorchIndexMemLayer(const IndexMemConfig& c) {
  const std::int64_t D = c.head_dim, H = c.indexer_hidden, F = c.memory_features;
  indexer = register_module("indexer", std::make_shared<torch::nn::Module>());
  memory = register_module("memory", std::make_shared<torch::nn::Module>());
  fc1 = indexer->register_module("fc1", std::make_shared<TorchLinear>(D, H, true));
  fc2 = indexer->register_module("fc2", std::make_shared<TorchLinear>(H, 1, false));
  feature_map = memory->register_module("feature_map", std::make_shared<TorchLinear>(D, F, true));
  gate = memory->register_parameter("gate", torch::zeros({c.num_attention_heads}));
}

torch::Tensor TorchIndexMemLayer::score(const torch::Tensor& keys) const {
  return fc2->forward(torch::relu(fc1->forward(keys))).squeeze(-1);
}

torch::Tensor TorchIndexMemLayer::features(const torch::Tensor& x) const {
  return torch::elu(feature_map->forward(x)) + 1.0;
}

TorchIndexMem::TorchIndexMem(const IndexMemConfig& config) : config_(config) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t l = 0; l < config_.num_layers; ++l) {
    layers->push_back(std::make_shared<TorchIndexMemLayer>(config_));
  }
}

void TorchIndexMem::load(const IndexMemWeights& w) {
  const IndexMemConfig& c = config_;
  const std::int64_t D = c.head_dim, H = c.indexer_hidden, F = c.memory_features;
  const torch::NoGradGuard no_grad;
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    TorchIndexMemLayer& t = layer(l);
    const IndexMemLayer& s = w.layers[l];
    t.fc1->weight.copy_(to_tensor(s.indexer_w1, {H, D}));
    t.fc1->bias.copy_(to_tensor(s.indexer_b1, {H}));
    t.fc2->weight.copy_(to_tensor(s.indexer_w2, {1, H}));
    t.feature_map->weight.copy_(to_tensor(s.feature_w, {F, D}));
    t.feature_map->bias.copy_(to_tensor(s.feature_b, {F}));
    t.gate.copy_(to_tensor(s.gate, {c.num_attention_heads}));
  }
}

IndexMemWeights TorchIndexMem::weights() const {
  IndexMemWeights w;
  w.config = config_;
  for (std::size_t l = 0; l < static_cast<std::size_t>(config_.num_layers); ++l) {
    const TorchIndexMemLayer& t = layer(l);
    w.layers.push_back({to_vector(t.fc1->weight), to_vector(t.fc1->bias), to_vector(t.fc2->weight),
                        to_vector(t.feature_map->weight), to_vector(t.feature_map->bias),
                        to_vector(t.gate)});
  }
  return w;
}

TorchMemoryState fold_into_memory(const TorchIndexMemLayer& layer, const torch::Tensor& keys,
                                  const torch::Tensor& values) {
  const torch::Tensor phi = layer.features(keys);  // [G, E, F]
  return {torch::matmul(phi.transpose(1, 2), values), phi.sum(1)};
}

namespace {

// The engine's eviction (kv/indexmem.cc) when the cache holds more than
// `budget`: per kv head, indexmem_keep on the scores; the other entries are
// folded into the memory. Returns the kept rows.
std::vector<std::vector<std::size_t>> evict(LayerCache& cache, const TorchIndexMemLayer& layer,
                                            const IndexMemConfig& c, std::size_t budget) {
  std::vector<std::vector<std::size_t>> kept, evicted;
  if (cache.scores.front().size() <= budget) return kept;
  for (std::vector<float>& s : cache.scores) {
    kept.push_back(indexmem_keep(s, static_cast<std::size_t>(c.sinks),
                                 static_cast<std::size_t>(c.recent), budget));
    evicted.emplace_back();
    std::size_t next = 0;
    for (std::size_t j = 0; j < s.size(); ++j) {
      if (next < kept.back().size() && kept.back()[next] == j) {
        s[next++] = s[j];
      } else {
        evicted.back().push_back(j);
      }
    }
    s.resize(kept.back().size());
  }
  const torch::Tensor kept_rows = index_tensor(kept), evicted_rows = index_tensor(evicted);
  const TorchMemoryState folded = fold_into_memory(layer, gather_rows(cache.keys, evicted_rows),
                                                   gather_rows(cache.values, evicted_rows));
  cache.memory = cache.memory
                     ? TorchMemoryState{cache.memory->M + folded.M, cache.memory->z + folded.z}
                     : folded;
  cache.keys = gather_rows(cache.keys, kept_rows);
  cache.values = gather_rows(cache.values, kept_rows);
  return kept;
}

}  // namespace

torch::Tensor memory_readout(const TorchIndexMemLayer& layer, const TorchMemoryState& memory,
                             const torch::Tensor& q, double eps) {
  const std::int64_t H = q.size(0), group = H / memory.M.size(0);
  const torch::Tensor phi = layer.features(q);                                  // [H, n, F]
  const torch::Tensor M = memory.M.repeat_interleave(group, 0);                 // [H, F, D]
  const torch::Tensor z = memory.z.repeat_interleave(group, 0);                 // [H, F]
  const torch::Tensor numerator = torch::matmul(phi, M);                        // [H, n, D]
  const torch::Tensor denominator = torch::matmul(phi, z.unsqueeze(-1)) + eps;  // [H, n, 1]
  return layer.gate.view({H, 1, 1}) * numerator / denominator;
}

IndexMemForward indexmem_forward(TorchQwen3& decoder, const TorchIndexMem& indexmem,
                                 const IndexMemExample& example, std::size_t budget) {
  const Qwen3Config& c = decoder.config();
  const IndexMemConfig& ic = indexmem.config();
  const auto L = static_cast<std::int64_t>(example.ids.size());
  const auto P = static_cast<std::int64_t>(example.prompt_len);
  const std::int64_t A = L - P;
  if (P < 1 || A < 1) {
    throw Error("an IndexMem example needs a prompt and an answer, not " + std::to_string(P) +
                " + " + std::to_string(A) + " tokens");
  }
  const std::int64_t n_heads = c.num_attention_heads, G = c.num_key_value_heads, D = c.head_dim;
  const std::int64_t group = n_heads / G;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const auto n_layers = static_cast<std::size_t>(c.num_hidden_layers);
  RopeCache rope_cache(D, c.rope_theta);
  const RopeTables rope = rope_cache.tables(L);
  const torch::Tensor ids =
      torch::tensor(std::vector<std::int64_t>(example.ids.begin(), example.ids.end()));
  const torch::Tensor inf = torch::full({}, -std::numeric_limits<float>::infinity());

  // Pass 1, the whole cache, no grad: the prompt's keys and values (what the
  // engine caches) and the attention mass the answer queries give them.
  std::vector<PromptLayer> prompt(n_layers);
  {
    const torch::NoGradGuard no_grad;
    torch::Tensor x = decoder.embed(ids).unsqueeze(0);  // [1, L, hidden]
    const torch::Tensor future = torch::ones({L, L}, torch::kBool).triu(1);
    for (std::size_t l = 0; l < n_layers; ++l) {
      const auto& layer = decoder.layers->ptr<TorchQwen3Layer>(l);
      auto [q, k, v] = layer->self_attn->project(layer->input_layernorm->forward(x), rope);
      const torch::Tensor probs =
          (torch::matmul(q, k.repeat_interleave(group, 1).transpose(-2, -1)) * scale)
              .masked_fill(future, inf)
              .softmax(-1);  // [1, n_heads, L, L]
      const torch::Tensor attended = torch::matmul(probs, v.repeat_interleave(group, 1));
      prompt[l] = {k[0].narrow(1, 0, P), v[0].narrow(1, 0, P),
                   probs[0].narrow(1, P, A).narrow(2, 0, P).sum(1).view({G, group, P}).sum(1)};
      x = x +
          layer->self_attn->o_proj->forward(attended.transpose(1, 2).reshape({1, L, n_heads * D}));
      x = x + layer->mlp->forward(layer->post_attention_layernorm->forward(x));
    }
  }

  // The indexer against the mass: a listwise cross-entropy over the entries
  // it chooses among (neither sink nor recent).
  IndexMemForward out;
  const std::int64_t first = std::min<std::int64_t>(ic.sinks, P);
  const std::int64_t middle = P - first - std::min<std::int64_t>(ic.recent, P - first);
  std::vector<torch::Tensor> ranking_losses;
  std::vector<torch::Tensor> scores(n_layers);
  for (std::size_t l = 0; l < n_layers; ++l) {
    scores[l] = indexmem.layer(l).score(prompt[l].keys);  // [G, P]
    if (middle < 2) continue;
    const torch::Tensor mass = prompt[l].mass.narrow(1, first, middle);
    const torch::Tensor target = mass / mass.sum(1, true).clamp_min(1e-12);
    const torch::Tensor log_p = scores[l].narrow(1, first, middle).log_softmax(1);
    ranking_losses.push_back(-(target * log_p).sum(1).mean());
  }
  out.indexer_loss =
      ranking_losses.empty() ? torch::zeros({}) : torch::stack(ranking_losses).mean();

  // Pass 2: the engine's decode. The prompt's entries are evicted to the
  // budget; then each answer token, layer by layer, attends to the held
  // entries and itself plus the memory's readout, and the layer evicts (and
  // folds) back down to the budget, as after_token does.
  std::vector<LayerCache> caches(n_layers);
  for (std::size_t l = 0; l < n_layers; ++l) {
    LayerCache& cache = caches[l];
    cache.keys = prompt[l].keys;
    cache.values = prompt[l].values;
    for (std::int64_t g = 0; g < G; ++g) cache.scores.push_back(to_vector(scores[l][g]));
    if (static_cast<std::int64_t>(budget) >= P) continue;
    const torch::Tensor kept_rows = index_tensor(evict(cache, indexmem.layer(l), ic, budget));
    const torch::Tensor mass = prompt[l].mass / prompt[l].mass.sum(1, true).clamp_min(1e-12);
    const std::vector<std::size_t> streaming =
        streaming_keep(static_cast<std::size_t>(P), static_cast<std::size_t>(ic.sinks), budget);
    const torch::Tensor streaming_rows =
        index_tensor(std::vector<std::vector<std::size_t>>(static_cast<std::size_t>(G), streaming));
    out.kept_mass -= (1.0 - mass.gather(1, kept_rows).sum(1).mean().item<double>()) /
                     static_cast<double>(n_layers);
    out.streaming_kept_mass -= (1.0 - mass.gather(1, streaming_rows).sum(1).mean().item<double>()) /
                               static_cast<double>(n_layers);
  }
  const torch::Tensor embeds = decoder.embed(ids.narrow(0, P, A));  // [A, hidden]
  std::vector<torch::Tensor> hidden;
  for (std::int64_t t = 0; t < A; ++t) {
    const RopeTables position{rope.cos.narrow(0, P + t, 1), rope.sin.narrow(0, P + t, 1)};
    torch::Tensor x = embeds[t].view({1, 1, -1});
    for (std::size_t l = 0; l < n_layers; ++l) {
      const auto& layer = decoder.layers->ptr<TorchQwen3Layer>(l);
      const TorchIndexMemLayer& im = indexmem.layer(l);
      LayerCache& cache = caches[l];
      auto [q, k, v] = layer->self_attn->project(layer->input_layernorm->forward(x), position);
      cache.keys = torch::cat({cache.keys, k[0]}, 1);  // [G, n + 1, D]
      cache.values = torch::cat({cache.values, v[0]}, 1);
      const std::vector<float> new_scores = to_vector(im.score(k[0].squeeze(1)));
      for (std::int64_t g = 0; g < G; ++g)
        cache.scores[static_cast<std::size_t>(g)].push_back(
            new_scores[static_cast<std::size_t>(g)]);
      const torch::Tensor probs =
          (torch::matmul(q[0], cache.keys.repeat_interleave(group, 0).transpose(-2, -1)) * scale)
              .softmax(-1);  // [n_heads, 1, n + 1]
      torch::Tensor attended = torch::matmul(probs, cache.values.repeat_interleave(group, 0));
      if (cache.memory) attended = attended + memory_readout(im, *cache.memory, q[0], ic.eps);
      x = x + layer->self_attn->o_proj->forward(attended.transpose(0, 1).reshape({1, 1, -1}));
      x = x + layer->mlp->forward(layer->post_attention_layernorm->forward(x));
      evict(cache, im, ic, budget);
    }
    hidden.push_back(x.view({1, -1}));
  }
  out.answer_logits = decoder.logits(decoder.norm->forward(torch::cat(hidden, 0)));  // [A, vocab]
  out.answer_targets = A - 1;
  out.answer_loss = A > 1 ? torch::nn::functional::cross_entropy(
                                out.answer_logits.narrow(0, 0, A - 1), ids.narrow(0, P + 1, A - 1))
                          : torch::zeros({});
  return out;
}

}  // namespace lclm::train
