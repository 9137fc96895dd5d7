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

  // Pass 2: the answer positions against the kept entries and the memory.
  double kept_mass = 0, streaming_kept_mass = 0;
  const RopeTables answer_rope{rope.cos.narrow(0, P, A), rope.sin.narrow(0, P, A)};
  torch::Tensor x = decoder.embed(ids.narrow(0, P, A)).unsqueeze(0);  // [1, A, hidden]
  for (std::size_t l = 0; l < n_layers; ++l) {
    const auto& layer = decoder.layers->ptr<TorchQwen3Layer>(l);
    const TorchIndexMemLayer& im = indexmem.layer(l);
    torch::Tensor kept_k = prompt[l].keys, kept_v = prompt[l].values;
    std::optional<TorchMemoryState> memory;
    if (static_cast<std::int64_t>(budget) < P) {
      std::vector<std::vector<std::size_t>> kept(static_cast<std::size_t>(G)), evicted(kept);
      for (std::int64_t g = 0; g < G; ++g) {
        const std::vector<float> s = to_vector(scores[l][g]);
        auto& k = kept[static_cast<std::size_t>(g)];
        k = indexmem_keep(s, static_cast<std::size_t>(ic.sinks),
                          static_cast<std::size_t>(ic.recent), budget);
        std::size_t next = 0;
        for (std::size_t j = 0; j < s.size(); ++j) {
          if (next < k.size() && k[next] == j) {
            ++next;
          } else {
            evicted[static_cast<std::size_t>(g)].push_back(j);
          }
        }
      }
      const torch::Tensor kept_rows = index_tensor(kept), evicted_rows = index_tensor(evicted);
      const torch::Tensor mass = prompt[l].mass / prompt[l].mass.sum(1, true).clamp_min(1e-12);
      const std::vector<std::size_t> streaming =
          streaming_keep(static_cast<std::size_t>(P), static_cast<std::size_t>(ic.sinks), budget);
      const torch::Tensor streaming_rows = index_tensor(
          std::vector<std::vector<std::size_t>>(static_cast<std::size_t>(G), streaming));
      kept_mass += mass.gather(1, kept_rows).sum(1).mean().item<double>() / double(n_layers);
      streaming_kept_mass +=
          mass.gather(1, streaming_rows).sum(1).mean().item<double>() / double(n_layers);
      kept_k = gather_rows(prompt[l].keys, kept_rows);
      kept_v = gather_rows(prompt[l].values, kept_rows);
      memory = fold_into_memory(im, gather_rows(prompt[l].keys, evicted_rows),
                                gather_rows(prompt[l].values, evicted_rows));
    }
    const std::int64_t B = kept_k.size(1);
    auto [q, k, v] = layer->self_attn->project(layer->input_layernorm->forward(x), answer_rope);
    const torch::Tensor keys = torch::cat({kept_k.unsqueeze(0), k}, 2).repeat_interleave(group, 1);
    const torch::Tensor values =
        torch::cat({kept_v.unsqueeze(0), v}, 2).repeat_interleave(group, 1);
    // Answer i sees every kept entry and answers 0..i.
    const torch::Tensor future = torch::cat(
        {torch::zeros({A, B}, torch::kBool), torch::ones({A, A}, torch::kBool).triu(1)}, 1);
    const torch::Tensor probs =
        (torch::matmul(q, keys.transpose(-2, -1)) * scale).masked_fill(future, inf).softmax(-1);
    torch::Tensor attended = torch::matmul(probs, values);  // [1, n_heads, A, D]
    if (memory) attended = attended + memory_readout(im, *memory, q[0], ic.eps).unsqueeze(0);
    x = x +
        layer->self_attn->o_proj->forward(attended.transpose(1, 2).reshape({1, A, n_heads * D}));
    x = x + layer->mlp->forward(layer->post_attention_layernorm->forward(x));
  }
  if (static_cast<std::int64_t>(budget) < P) {
    out.kept_mass = kept_mass;
    out.streaming_kept_mass = streaming_kept_mass;
  }
  out.answer_logits = decoder.logits(decoder.norm->forward(x))[0];  // [A, vocab]
  out.answer_targets = A - 1;
  out.answer_loss = A > 1 ? torch::nn::functional::cross_entropy(
                                out.answer_logits.narrow(0, 0, A - 1), ids.narrow(0, P + 1, A - 1))
                          : torch::zeros({});
  return out;
}

}  // namespace lclm::train
