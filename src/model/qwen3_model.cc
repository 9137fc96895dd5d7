#include "model/qwen3_model.h"

#include <algorithm>

#include "util/error.h"

namespace lclm {
namespace {

// A view of a stored float tensor as rows x cols (1-D tensors are one row).
WeightMatrix as_matrix(const TensorView& t) {
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16) {
    throw Error("tensor \"" + t.name + "\" has dtype " + std::string(dtype_name(t.dtype)) +
                "; weights must be F32, BF16 or F16");
  }
  const auto cols = static_cast<std::size_t>(t.shape.back());
  return WeightMatrix{t.dtype, t.data, static_cast<std::size_t>(t.numel()) / cols, cols};
}

// Norm weights are small and read on every token, so they are widened once.
std::vector<float> as_f32_vector(const TensorView& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  const std::int32_t first_row = 0;
  gather_rows(as_matrix(t), &first_row, 1, out.data());
  return out;
}

}  // namespace

Qwen3Model::Qwen3Model(Qwen3Config config, TensorStore store)
    : config_(std::move(config)),
      store_(std::move(store)),
      rope_(static_cast<std::size_t>(config_.head_dim), config_.rope_theta) {}

Qwen3Model Qwen3Model::load(const std::filesystem::path& dir) {
  Qwen3Config config = Qwen3Config::from_dir(dir);
  Qwen3Model m(config, TensorStore::open_dir(dir));
  const auto& c = m.config_;
  const TensorStore& s = m.store_;

  std::string prefix;
  if (s.find("model.embed_tokens.weight") != nullptr) {
    prefix = "model.";
  } else if (s.find("embed_tokens.weight") == nullptr) {
    throw Error("no embed_tokens.weight (with or without a \"model.\" prefix) in " + dir.string());
  }
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const std::int64_t q_rows = c.num_attention_heads * D, kv_rows = c.num_key_value_heads * D;
  m.embed_tokens_ = as_matrix(s.get(prefix + "embed_tokens.weight", {c.vocab_size, H}));
  m.final_norm_ = as_f32_vector(s.get(prefix + "norm.weight", {H}));
  if (s.find("lm_head.weight") != nullptr) {
    m.lm_head_ = as_matrix(s.get("lm_head.weight", {c.vocab_size, H}));
  } else if (c.tie_word_embeddings) {
    m.lm_head_ = m.embed_tokens_;
  }
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = prefix + "layers." + std::to_string(l) + ".";
    Qwen3LayerWeights w;
    w.input_layernorm = as_f32_vector(s.get(p + "input_layernorm.weight", {H}));
    w.post_attention_layernorm = as_f32_vector(s.get(p + "post_attention_layernorm.weight", {H}));
    w.q_norm = as_f32_vector(s.get(p + "self_attn.q_norm.weight", {D}));
    w.k_norm = as_f32_vector(s.get(p + "self_attn.k_norm.weight", {D}));
    w.q_proj = as_matrix(s.get(p + "self_attn.q_proj.weight", {q_rows, H}));
    w.k_proj = as_matrix(s.get(p + "self_attn.k_proj.weight", {kv_rows, H}));
    w.v_proj = as_matrix(s.get(p + "self_attn.v_proj.weight", {kv_rows, H}));
    w.o_proj = as_matrix(s.get(p + "self_attn.o_proj.weight", {H, q_rows}));
    w.gate_proj = as_matrix(s.get(p + "mlp.gate_proj.weight", {I, H}));
    w.up_proj = as_matrix(s.get(p + "mlp.up_proj.weight", {I, H}));
    w.down_proj = as_matrix(s.get(p + "mlp.down_proj.weight", {H, I}));
    m.layers_.push_back(std::move(w));
  }
  return m;
}

KVCache Qwen3Model::make_cache(std::size_t max_positions, std::size_t initial_capacity) const {
  return KVCache(layers_.size(), static_cast<std::size_t>(config_.num_key_value_heads),
                 static_cast<std::size_t>(config_.head_dim), max_positions, initial_capacity);
}

void Qwen3Model::embed(std::span<const std::int32_t> ids, float* out) const {
  gather_rows(embed_tokens_, ids.data(), ids.size(), out);
}

void Qwen3Model::forward(float* x, std::size_t n, KVCache& cache, AttentionMask mask) const {
  if (n == 0) return;
  cache.reserve_more(n);
  for (std::size_t l = 0; l < layers_.size(); ++l) forward_layer(layers_[l], l, x, n, cache, mask);
  cache.advance(n);
  const auto H = static_cast<std::size_t>(config_.hidden_size);
  rms_norm(x, final_norm_.data(), x, n, H, static_cast<float>(config_.rms_norm_eps));
}

void Qwen3Model::forward_layer(const Qwen3LayerWeights& w, std::size_t layer, float* x,
                               std::size_t n, KVCache& cache, AttentionMask mask) const {
  const auto H = static_cast<std::size_t>(config_.hidden_size);
  const auto I = static_cast<std::size_t>(config_.intermediate_size);
  const auto D = static_cast<std::size_t>(config_.head_dim);
  const auto n_heads = static_cast<std::size_t>(config_.num_attention_heads);
  const auto n_kv = static_cast<std::size_t>(config_.num_key_value_heads);
  const auto eps = static_cast<float>(config_.rms_norm_eps);
  const std::size_t pos0 = cache.size();
  const std::size_t stride = cache.capacity();

  std::vector<float> h(n * H), q(n * n_heads * D), k(n * n_kv * D), v(n * n_kv * D);
  std::vector<float> attn(n * n_heads * D);

  // Attention: x += o_proj(Attn(RoPE(q_norm(q)), RoPE(k_norm(k)), v)).
  rms_norm(x, w.input_layernorm.data(), h.data(), n, H, eps);
  matmul(h.data(), n, w.q_proj, q.data());
  matmul(h.data(), n, w.k_proj, k.data());
  matmul(h.data(), n, w.v_proj, v.data());
  rms_norm(q.data(), w.q_norm.data(), q.data(), n * n_heads, D, eps);
  rms_norm(k.data(), w.k_norm.data(), k.data(), n * n_kv, D, eps);
  float* k_cache = cache.keys(layer);
  float* v_cache = cache.values(layer);
  for (std::size_t i = 0; i < n; ++i) {
    rope_.apply(q.data() + i * n_heads * D, n_heads, pos0 + i);
    rope_.apply(k.data() + i * n_kv * D, n_kv, pos0 + i);
    for (std::size_t g = 0; g < n_kv; ++g) {
      std::copy_n(k.data() + (i * n_kv + g) * D, D, k_cache + (g * stride + pos0 + i) * D);
      std::copy_n(v.data() + (i * n_kv + g) * D, D, v_cache + (g * stride + pos0 + i) * D);
    }
  }
  const AttentionShape shape{n_heads, n_kv, D, stride};
  attention(q.data(), n, pos0, k_cache, v_cache, pos0 + n, shape, mask, attn.data());
  matmul(attn.data(), n, w.o_proj, h.data());
  add_inplace(x, h.data(), n * H);

  // MLP: x += down_proj(silu(gate_proj(h)) * up_proj(h)), h = post_attention_layernorm(x).
  rms_norm(x, w.post_attention_layernorm.data(), h.data(), n, H, eps);
  std::vector<float> gate(n * I), up(n * I);
  matmul(h.data(), n, w.gate_proj, gate.data());
  matmul(h.data(), n, w.up_proj, up.data());
  silu_mul(gate.data(), up.data(), n * I);
  matmul(gate.data(), n, w.down_proj, h.data());
  add_inplace(x, h.data(), n * H);
}

void Qwen3Model::logits(const float* hidden, std::size_t n, float* out) const {
  if (!lm_head_) {
    throw Error(dir().string() + " has no lm_head.weight and tie_word_embeddings is false: "
                "it is an encoder and cannot produce logits");
  }
  matmul(hidden, n, *lm_head_, out);
}

}  // namespace lclm
