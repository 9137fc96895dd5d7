#include "model/qwen3_block.h"

#include <algorithm>

#include "util/error.h"

namespace lclm {

WeightMatrix as_weight_matrix(const TensorView& t) {
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16) {
    throw Error("tensor \"" + t.name + "\" has dtype " + std::string(dtype_name(t.dtype)) +
                "; weights must be F32, BF16 or F16");
  }
  const auto cols = static_cast<std::size_t>(t.shape.back());
  return WeightMatrix{t.dtype, t.data, static_cast<std::size_t>(t.numel()) / cols, cols};
}

std::vector<float> as_f32_vector(const TensorView& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  const std::int32_t first_row = 0;
  gather_rows(as_weight_matrix(t), &first_row, 1, out.data());
  return out;
}

Qwen3Block Qwen3Block::load(const TensorStore& s, const std::string& p, const Qwen3Config& c) {
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const std::int64_t q_rows = c.num_attention_heads * D, kv_rows = c.num_key_value_heads * D;
  Qwen3Block b;
  b.hidden_ = static_cast<std::size_t>(H);
  b.intermediate_ = static_cast<std::size_t>(I);
  b.head_dim_ = static_cast<std::size_t>(D);
  b.n_heads_ = static_cast<std::size_t>(c.num_attention_heads);
  b.n_kv_heads_ = static_cast<std::size_t>(c.num_key_value_heads);
  b.eps_ = static_cast<float>(c.rms_norm_eps);
  b.input_layernorm_ = as_f32_vector(s.get(p + "input_layernorm.weight", {H}));
  b.post_attention_layernorm_ = as_f32_vector(s.get(p + "post_attention_layernorm.weight", {H}));
  b.q_norm_ = as_f32_vector(s.get(p + "self_attn.q_norm.weight", {D}));
  b.k_norm_ = as_f32_vector(s.get(p + "self_attn.k_norm.weight", {D}));
  b.q_proj_ = as_weight_matrix(s.get(p + "self_attn.q_proj.weight", {q_rows, H}));
  b.k_proj_ = as_weight_matrix(s.get(p + "self_attn.k_proj.weight", {kv_rows, H}));
  b.v_proj_ = as_weight_matrix(s.get(p + "self_attn.v_proj.weight", {kv_rows, H}));
  b.o_proj_ = as_weight_matrix(s.get(p + "self_attn.o_proj.weight", {H, q_rows}));
  b.gate_proj_ = as_weight_matrix(s.get(p + "mlp.gate_proj.weight", {I, H}));
  b.up_proj_ = as_weight_matrix(s.get(p + "mlp.up_proj.weight", {I, H}));
  b.down_proj_ = as_weight_matrix(s.get(p + "mlp.down_proj.weight", {H, I}));
  return b;
}

void Qwen3Block::forward(float* x, std::size_t n, KVCache& cache, std::size_t layer,
                         AttentionMask mask, const RopeTable& rope) const {
  const std::size_t H = hidden_, I = intermediate_, D = head_dim_;
  const std::size_t pos0 = cache.size();
  const std::size_t stride = cache.capacity();

  std::vector<float> h(n * H), q(n * n_heads_ * D), k(n * n_kv_heads_ * D), v(n * n_kv_heads_ * D),
      attn(n * n_heads_ * D);

  // Attention: x += o_proj(Attn(RoPE(q_norm(q)), RoPE(k_norm(k)), v)).
  rms_norm(x, input_layernorm_.data(), h.data(), n, H, eps_);
  matmul(h.data(), n, q_proj_, q.data());
  matmul(h.data(), n, k_proj_, k.data());
  matmul(h.data(), n, v_proj_, v.data());
  rms_norm(q.data(), q_norm_.data(), q.data(), n * n_heads_, D, eps_);
  rms_norm(k.data(), k_norm_.data(), k.data(), n * n_kv_heads_, D, eps_);
  float* k_cache = cache.keys(layer);
  float* v_cache = cache.values(layer);
  for (std::size_t i = 0; i < n; ++i) {
    rope.apply(q.data() + i * n_heads_ * D, n_heads_, pos0 + i);
    rope.apply(k.data() + i * n_kv_heads_ * D, n_kv_heads_, pos0 + i);
    for (std::size_t g = 0; g < n_kv_heads_; ++g) {
      std::copy_n(k.data() + (i * n_kv_heads_ + g) * D, D, k_cache + (g * stride + pos0 + i) * D);
      std::copy_n(v.data() + (i * n_kv_heads_ + g) * D, D, v_cache + (g * stride + pos0 + i) * D);
    }
  }
  const AttentionShape shape{n_heads_, n_kv_heads_, D, stride};
  attention(q.data(), n, pos0, k_cache, v_cache, pos0 + n, shape, mask, attn.data());
  matmul(attn.data(), n, o_proj_, h.data());
  add_inplace(x, h.data(), n * H);

  // MLP: x += down_proj(silu(gate_proj(h)) * up_proj(h)), h = post_attention_layernorm(x).
  rms_norm(x, post_attention_layernorm_.data(), h.data(), n, H, eps_);
  std::vector<float> gate(n * I), up(n * I);
  matmul(h.data(), n, gate_proj_, gate.data());
  matmul(h.data(), n, up_proj_, up.data());
  silu_mul(gate.data(), up.data(), n * I);
  matmul(gate.data(), n, down_proj_, h.data());
  add_inplace(x, h.data(), n * H);
}

}  // namespace lclm
