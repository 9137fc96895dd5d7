#include "trainer/torch_qwen3.h"

#include <torch/utils.h>

#include <cmath>
#include <limits>
#include <span>
#include <string>

#include "format/safetensors.h"
#include "util/error.h"

namespace lclm::train {

torch::Tensor apply_rope(const torch::Tensor& x, const RopeTables& rope) {
  const std::int64_t half = x.size(-1) / 2;
  const torch::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  return torch::cat({a * rope.cos - b * rope.sin, b * rope.cos + a * rope.sin}, -1);
}

namespace {

// [L, L] bool, true above the diagonal: the keys a causal query must not read.
torch::Tensor future_positions(std::int64_t length) {
  return torch::ones({length, length}, torch::kBool).triu(1);
}

}  // namespace

PackedDocuments packed_documents(std::span<const std::size_t> starts, std::int64_t length) {
  if (starts.empty() || starts.front() != 0) {
    throw Error("packed_documents: the first document must start at token 0");
  }
  torch::Tensor positions = torch::empty({length}, torch::kLong);
  torch::Tensor doc = torch::empty({length}, torch::kLong);
  std::int64_t* pos = positions.data_ptr<std::int64_t>();
  std::int64_t* d = doc.data_ptr<std::int64_t>();
  std::size_t k = 0;
  for (std::int64_t i = 0; i < length; ++i) {
    const auto at = static_cast<std::size_t>(i);
    while (k + 1 < starts.size() && starts[k + 1] <= at) {
      if (starts[k + 1] <= starts[k]) throw Error("packed_documents: starts must increase");
      ++k;
    }
    pos[i] = static_cast<std::int64_t>(at - starts[k]);
    d[i] = static_cast<std::int64_t>(k);
  }
  return {positions, future_positions(length).logical_or(doc.unsqueeze(1) != doc.unsqueeze(0))};
}

TorchLinear::TorchLinear(std::int64_t in_features, std::int64_t out_features, bool with_bias) {
  weight = register_parameter("weight", torch::zeros({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor TorchLinear::forward(const torch::Tensor& x) const {
  return torch::linear(x, weight, bias);
}

TorchRmsNorm::TorchRmsNorm(std::int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::zeros({dim}));
}

torch::Tensor TorchRmsNorm::forward(const torch::Tensor& x) const {
  return x * torch::rsqrt(x.square().mean(-1, /*keepdim=*/true) + eps_) * weight;
}

RopeCache::RopeCache(std::int64_t head_dim, double theta) {
  const std::int64_t half = head_dim / 2;
  inv_freq_.resize(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq_[static_cast<std::size_t>(i)] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  cos_ = torch::empty({0, half});
  sin_ = torch::empty({0, half});
}

RopeTables RopeCache::tables(std::int64_t n_positions) {
  if (n_positions > cos_.size(0)) {
    const auto half = static_cast<std::int64_t>(inv_freq_.size());
    torch::Tensor new_cos = torch::empty({n_positions, half});
    torch::Tensor new_sin = torch::empty({n_positions, half});
    float* c = new_cos.data_ptr<float>();
    float* s = new_sin.data_ptr<float>();
    for (std::int64_t p = 0; p < n_positions; ++p) {
      for (std::int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(p) * inv_freq_[static_cast<std::size_t>(i)];
        c[p * half + i] = std::cos(angle);
        s[p * half + i] = std::sin(angle);
      }
    }
    cos_ = new_cos;
    sin_ = new_sin;
  }
  return {cos_.narrow(0, 0, n_positions), sin_.narrow(0, 0, n_positions)};
}

TorchQwen3Attention::TorchQwen3Attention(const Qwen3Config& c)
    : n_heads_(c.num_attention_heads), n_kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  const std::int64_t H = c.hidden_size;
  q_proj = register_module("q_proj", std::make_shared<TorchLinear>(H, n_heads_ * head_dim_, false));
  k_proj =
      register_module("k_proj", std::make_shared<TorchLinear>(H, n_kv_heads_ * head_dim_, false));
  v_proj =
      register_module("v_proj", std::make_shared<TorchLinear>(H, n_kv_heads_ * head_dim_, false));
  o_proj = register_module("o_proj", std::make_shared<TorchLinear>(n_heads_ * head_dim_, H, false));
  q_norm = register_module("q_norm", std::make_shared<TorchRmsNorm>(head_dim_, c.rms_norm_eps));
  k_norm = register_module("k_norm", std::make_shared<TorchRmsNorm>(head_dim_, c.rms_norm_eps));
}

TorchQwen3Attention::Projections TorchQwen3Attention::project(const torch::Tensor& x,
                                                              const RopeTables& rope) const {
  const std::int64_t B = x.size(0), L = x.size(1), D = head_dim_;
  const torch::Tensor q =
      q_norm->forward(q_proj->forward(x).view({B, L, n_heads_, D})).transpose(1, 2);
  const torch::Tensor k =
      k_norm->forward(k_proj->forward(x).view({B, L, n_kv_heads_, D})).transpose(1, 2);
  return {apply_rope(q, rope), apply_rope(k, rope),
          v_proj->forward(x).view({B, L, n_kv_heads_, D}).transpose(1, 2)};
}

torch::Tensor TorchQwen3Attention::forward(const torch::Tensor& x, const RopeTables& rope,
                                           AttentionMask mask, const torch::Tensor& blocked) const {
  const std::int64_t B = x.size(0), L = x.size(1), D = head_dim_;
  // q [B, n_heads, L, D]; k, v [B, n_kv_heads, L, D].
  auto [q, k, v] = project(x, rope);
  // Query head h reads kv head h / (n_heads / n_kv_heads).
  const std::int64_t group = n_heads_ / n_kv_heads_;
  if (group > 1) {
    k = k.repeat_interleave(group, 1);
    v = v.repeat_interleave(group, 1);
  }
  // scores [B, n_heads, L, L]: memory grows with L^2, which sequences of a
  // few thousand tokens afford.
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  if (blocked.defined()) {
    scores = scores.masked_fill(blocked, -std::numeric_limits<float>::infinity());
  } else if (mask == AttentionMask::Causal) {
    scores = scores.masked_fill(future_positions(L), -std::numeric_limits<float>::infinity());
  }
  const torch::Tensor attended = torch::matmul(scores.softmax(-1), v);  // [B, n_heads, L, D]
  return o_proj->forward(attended.transpose(1, 2).reshape({B, L, n_heads_ * D}));
}

TorchQwen3Mlp::TorchQwen3Mlp(const Qwen3Config& c) {
  const std::int64_t H = c.hidden_size, I = c.intermediate_size;
  gate_proj = register_module("gate_proj", std::make_shared<TorchLinear>(H, I, false));
  up_proj = register_module("up_proj", std::make_shared<TorchLinear>(H, I, false));
  down_proj = register_module("down_proj", std::make_shared<TorchLinear>(I, H, false));
}

torch::Tensor TorchQwen3Mlp::forward(const torch::Tensor& x) const {
  return down_proj->forward(torch::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

TorchQwen3Layer::TorchQwen3Layer(const Qwen3Config& c) {
  const std::int64_t H = c.hidden_size;
  input_layernorm =
      register_module("input_layernorm", std::make_shared<TorchRmsNorm>(H, c.rms_norm_eps));
  self_attn = register_module("self_attn", std::make_shared<TorchQwen3Attention>(c));
  post_attention_layernorm = register_module("post_attention_layernorm",
                                             std::make_shared<TorchRmsNorm>(H, c.rms_norm_eps));
  mlp = register_module("mlp", std::make_shared<TorchQwen3Mlp>(c));
}

torch::Tensor TorchQwen3Layer::forward(const torch::Tensor& x, const RopeTables& rope,
                                       AttentionMask mask, const torch::Tensor& blocked) const {
  const torch::Tensor h = x + self_attn->forward(input_layernorm->forward(x), rope, mask, blocked);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

TorchEmbedding::TorchEmbedding(std::int64_t vocab_size, std::int64_t hidden_size) {
  weight = register_parameter("weight", torch::zeros({vocab_size, hidden_size}));
}

torch::Tensor TorchEmbedding::forward(const torch::Tensor& ids) const {
  return torch::embedding(weight, ids);
}

std::string shape_string(const torch::Tensor& t) {
  const auto sizes = t.sizes();
  return lclm::shape_string(std::span<const std::int64_t>(sizes.data(), sizes.size()));
}

TorchQwen3::TorchQwen3(const Qwen3Config& config, bool causal_lm)
    : config_(config), causal_lm_(causal_lm), rope_(config.head_dim, config.rope_theta) {
  config_.validate("TorchQwen3 config");
  const std::int64_t H = config_.hidden_size, V = config_.vocab_size;
  embed_tokens = register_module("embed_tokens", std::make_shared<TorchEmbedding>(V, H));
  layers = register_module("layers", torch::nn::ModuleList());
  for (std::int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    layers->push_back(std::make_shared<TorchQwen3Layer>(config_));
  }
  norm = register_module("norm", std::make_shared<TorchRmsNorm>(H, config_.rms_norm_eps));
  if (causal_lm_ && !config_.tie_word_embeddings) {
    lm_head = register_module("lm_head", std::make_shared<TorchLinear>(H, V, false));
  }
}

torch::Tensor TorchQwen3::embed(const torch::Tensor& ids) const {
  return embed_tokens->forward(ids);
}

torch::Tensor TorchQwen3::forward(const torch::Tensor& input_embeds, AttentionMask mask,
                                  const PackedDocuments* docs) {
  const std::int64_t rank = input_embeds.dim();
  if ((rank != 2 && rank != 3) || input_embeds.size(rank - 1) != config_.hidden_size) {
    throw Error("TorchQwen3::forward takes input_embeds [L, H] or [B, L, H] with H = " +
                std::to_string(config_.hidden_size) + ", not " + shape_string(input_embeds));
  }
  torch::Tensor h = rank == 3 ? input_embeds : input_embeds.unsqueeze(0);  // [B, L, H]
  RopeTables rope;
  torch::Tensor blocked;
  if (docs != nullptr) {
    if (mask != AttentionMask::Causal || docs->positions.size(0) != h.size(1)) {
      throw Error("TorchQwen3::forward: packed documents take a causal mask and their " +
                  std::to_string(docs->positions.size(0)) + " positions, not " +
                  std::to_string(h.size(1)));
    }
    const RopeTables all = rope_.tables(docs->positions.max().item<std::int64_t>() + 1);
    rope = {all.cos.index_select(0, docs->positions), all.sin.index_select(0, docs->positions)};
    blocked = docs->blocked;
  } else {
    rope = rope_.tables(h.size(1));
  }
  for (const auto& layer : *layers) {
    h = layer->as<TorchQwen3Layer>()->forward(h, rope, mask, blocked);
  }
  h = norm->forward(h);
  return rank == 3 ? h : h.squeeze(0);
}

void TorchQwen3::deepen(std::int64_t n_layers) {
  const std::int64_t old = config_.num_hidden_layers;
  if (n_layers <= old) {
    throw Error("deepen to " + std::to_string(n_layers) + " layers: the model has " +
                std::to_string(old) + " already; give more");
  }
  const torch::NoGradGuard no_grad;
  for (std::int64_t l = old; l < n_layers; ++l) {
    auto layer = std::make_shared<TorchQwen3Layer>(config_);
    const auto source = layers[static_cast<std::size_t>(l % old)]->named_parameters();
    for (auto& item : layer->named_parameters()) item.value().copy_(source[item.key()]);
    layer->self_attn->o_proj->weight.zero_();
    layer->mlp->down_proj->weight.zero_();
    layers->push_back(layer);
  }
  config_.num_hidden_layers = n_layers;
}

torch::Tensor TorchQwen3::logits(const torch::Tensor& hidden) const {
  if (!causal_lm_) {
    throw Error("TorchQwen3::logits: this model is an encoder (Qwen3Model) and has no lm_head");
  }
  return torch::linear(hidden, lm_head ? lm_head->weight : embed_tokens->weight);
}

}  // namespace lclm::train
