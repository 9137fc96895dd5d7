#include "model/qwen3_block.h"

#include <algorithm>

#include "util/aligned_vector.h"
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

Qwen3Block Qwen3Block::load(const WeightReader& w, const std::string& p, const Qwen3Config& c) {
  const TensorStore& s = w.store();
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
  b.q_proj_ = w.matrix(p + "self_attn.q_proj.weight", q_rows, H);
  b.k_proj_ = w.matrix(p + "self_attn.k_proj.weight", kv_rows, H);
  b.v_proj_ = w.matrix(p + "self_attn.v_proj.weight", kv_rows, H);
  b.o_proj_ = w.matrix(p + "self_attn.o_proj.weight", H, q_rows);
  b.gate_proj_ = w.matrix(p + "mlp.gate_proj.weight", I, H);
  b.up_proj_ = w.matrix(p + "mlp.up_proj.weight", I, H);
  b.down_proj_ = w.matrix(p + "mlp.down_proj.weight", H, I);
  return b;
}

std::size_t Qwen3Block::matrix_bytes() const {
  std::size_t n = 0;
  for (const WeightMatrix* w :
       {&q_proj_, &k_proj_, &v_proj_, &o_proj_, &gate_proj_, &up_proj_, &down_proj_}) {
    n += w->bytes();
  }
  return n;
}

namespace {

// Activations of one forward call, kept per thread and grown, never shrunk:
// allocating them afresh for every layer cost a page fault per 4 KiB touched.
// They start on a cache line, so the matvec's vector loads of their rows
// (widths of whole lines) never straddle two lines.
struct BlockScratch {
  AlignedVector<float> h, q, k, v, attn, gate, up;
};

float* sized(AlignedVector<float>& buffer, std::size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace

void Qwen3Block::forward(float* x, std::size_t n, KVCache& cache, std::size_t layer,
                         AttentionMask mask, const RopeTable& rope) const {
  const SequenceRows one{&cache, n};
  forward(x, std::span(&one, 1), layer, mask, rope);
}

void Qwen3Block::forward(float* x, std::span<const SequenceRows> sequences, std::size_t layer,
                         AttentionMask mask, const RopeTable& rope) const {
  const std::size_t H = hidden_, I = intermediate_, D = head_dim_;
  const std::size_t QW = n_heads_ * D, KW = n_kv_heads_ * D;
  std::size_t n = 0;
  for (const SequenceRows& s : sequences) n += s.rows;

  thread_local BlockScratch scratch;
  float* h = sized(scratch.h, n * H);
  float* q = sized(scratch.q, n * QW);
  float* k = sized(scratch.k, n * KW);
  float* v = sized(scratch.v, n * KW);
  float* attn = sized(scratch.attn, n * QW);
  float* gate = sized(scratch.gate, n * I);
  float* up = sized(scratch.up, n * I);

  // Attention: x += o_proj(Attn(RoPE(q_norm(q)), RoPE(k_norm(k)), v)).
  rms_norm(x, input_layernorm_.data(), h, n, H, eps_);
  matmul_shared_input(h, n, {{&q_proj_, q}, {&k_proj_, k}, {&v_proj_, v}});
  rms_norm(q, q_norm_.data(), q, n * n_heads_, D, eps_);
  rms_norm(k, k_norm_.data(), k, n * n_kv_heads_, D, eps_);
  std::size_t row0 = 0;  // the sequence's first row in x
  for (const SequenceRows& s : sequences) {
    attend(q + row0 * QW, k + row0 * KW, v + row0 * KW, s.rows, *s.cache, layer, mask, rope,
           attn + row0 * QW);
    row0 += s.rows;
  }
  matmul(attn, n, o_proj_, h);
  add_inplace(x, h, n * H);

  // MLP: x += down_proj(silu(gate_proj(h)) * up_proj(h)), h = post_attention_layernorm(x).
  rms_norm(x, post_attention_layernorm_.data(), h, n, H, eps_);
  matmul_shared_input(h, n, {{&gate_proj_, gate}, {&up_proj_, up}});
  silu_mul(gate, up, n * I);
  matmul(gate, n, down_proj_, h);
  add_inplace(x, h, n * H);
}

void Qwen3Block::attend(float* q, float* k, const float* v, std::size_t n, KVCache& cache,
                        std::size_t layer, AttentionMask mask, const RopeTable& rope,
                        float* out) const {
  const std::size_t D = head_dim_;
  // pos0: the position (RoPE) of the first input; e0: the cache row it goes
  // to, fewer than pos0 once a KV policy has dropped entries.
  const std::size_t pos0 = cache.size();
  const std::size_t e0 = cache.entries(layer);
  const std::size_t stride = cache.capacity();
  std::int32_t* positions = cache.positions(layer);
  float* key_scores = cache.scoring() ? cache.key_scores(layer) : nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    rope.apply(q + i * n_heads_ * D, n_heads_, pos0 + i);
    rope.apply(k + i * n_kv_heads_ * D, n_kv_heads_, pos0 + i);
    for (std::size_t g = 0; g < n_kv_heads_; ++g) {
      const std::size_t row = g * stride + e0 + i;
      cache.write(layer, g, e0 + i, k + (i * n_kv_heads_ + g) * D, v + (i * n_kv_heads_ + g) * D);
      positions[row] = static_cast<std::int32_t>(pos0 + i);
      if (key_scores) key_scores[row] = 0.0f;
    }
  }
  const AttentionShape shape{n_heads_, n_kv_heads_, D, stride};
  // A policy that ranks entries by attention has the scored queries (from
  // score_from_position() on) add their probabilities to the key scores.
  KeyScoreAccumulator accumulate{0, key_scores};
  if (key_scores) accumulate.first_query = std::max(cache.score_from_position(), pos0) - pos0;
  attention(q, n, e0, cache.keys(layer), cache.values(layer), e0 + n, shape, mask, out,
            key_scores ? &accumulate : nullptr, cache.attention_residual(layer));
}

}  // namespace lclm
