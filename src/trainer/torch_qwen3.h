// A Qwen3 transformer in libtorch, for training. It computes the same
// function as the engine's Qwen3Block / Qwen3Model (float32 RMSNorm, per-head
// q/k norms before RoPE, rotate-half RoPE from float32 tables built like
// RopeTable, grouped-query attention, SwiGLU), with autograd. Modules and
// parameters are named as in the Hugging Face checkpoints, so
// named_parameters() lists the checkpoint's tensors ("layers.0.self_attn.
// q_proj.weight", ...), without the "model." prefix of a causal LM.
//
// Parameters are float32 and start at zero: they are filled from a checkpoint
// (see trainer/lclm_checkpoint.h); the trainer never trains from scratch.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/qwen3_config.h"
#include "ops/attention.h"

namespace lclm::train {

// torch.nn.Linear's parameters and function: x [..., in] -> [..., out].
class TorchLinear : public torch::nn::Module {
 public:
  TorchLinear(std::int64_t in_features, std::int64_t out_features, bool with_bias);
  torch::Tensor forward(const torch::Tensor& x) const;

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out]; undefined without bias
};

// x [..., dim] -> x / sqrt(mean(x^2) + eps) * weight, in float32.
class TorchRmsNorm : public torch::nn::Module {
 public:
  TorchRmsNorm(std::int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x) const;

  torch::Tensor weight;  // [dim]

 private:
  double eps_;
};

// Rotate-half RoPE factors of positions 0..L-1.
struct RopeTables {
  torch::Tensor cos, sin;  // [L, head_dim / 2]
};

// RoPE tables with every value computed in float32 exactly as RopeTable::apply
// does (same inverse frequencies, same float product, std::cos / std::sin), so
// the trainer rotates by bit-identical factors. Grown on demand and reused.
class RopeCache {
 public:
  RopeCache(std::int64_t head_dim, double theta);
  RopeTables tables(std::int64_t n_positions);

 private:
  std::vector<float> inv_freq_;  // [head_dim / 2]
  torch::Tensor cos_, sin_;      // [cached positions, head_dim / 2]
};

// x [B, heads, L, head_dim] rotated by the L positions of `rope`: the pairs (i, i + half).
torch::Tensor apply_rope(const torch::Tensor& x, const RopeTables& rope);

// Documents packed one after another into a sequence of `length` tokens,
// the k-th starting at starts[k] (starts[0] == 0, increasing): each token
// attends only to its own document's tokens up to itself, at positions
// counted from its document's start, so every document computes what it
// would alone.
struct PackedDocuments {
  torch::Tensor positions;  // [L] int64
  torch::Tensor blocked;    // [L, L] bool: true where query i must not read key j
};
PackedDocuments packed_documents(std::span<const std::size_t> starts, std::int64_t length);

// self_attn: x [B, L, hidden] -> [B, L, hidden].
class TorchQwen3Attention : public torch::nn::Module {
 public:
  explicit TorchQwen3Attention(const Qwen3Config& c);
  // Positions 0..L-1 in every sequence of the batch. `blocked` [L, L] (bool,
  // true: not attended), when defined, replaces the mask's.
  torch::Tensor forward(const torch::Tensor& x, const RopeTables& rope, AttentionMask mask,
                        const torch::Tensor& blocked = {}) const;

  // The attention's inputs for x [B, L, hidden] at the positions of `rope`
  // (its L rows): q [B, n_heads, L, D], k and v [B, n_kv_heads, L, D], with
  // the q/k norms and RoPE applied (k as the engine caches it).
  struct Projections {
    torch::Tensor q, k, v;
  };
  Projections project(const torch::Tensor& x, const RopeTables& rope) const;

  std::shared_ptr<TorchLinear> q_proj;           // [n_heads * head_dim, hidden]
  std::shared_ptr<TorchLinear> k_proj;           // [n_kv_heads * head_dim, hidden]
  std::shared_ptr<TorchLinear> v_proj;           // [n_kv_heads * head_dim, hidden]
  std::shared_ptr<TorchLinear> o_proj;           // [hidden, n_heads * head_dim]
  std::shared_ptr<TorchRmsNorm> q_norm, k_norm;  // [head_dim], per head

 private:
  std::int64_t n_heads_, n_kv_heads_, head_dim_;
};

// mlp: x [..., hidden] -> down_proj(silu(gate_proj(x)) * up_proj(x)).
class TorchQwen3Mlp : public torch::nn::Module {
 public:
  explicit TorchQwen3Mlp(const Qwen3Config& c);
  torch::Tensor forward(const torch::Tensor& x) const;

  std::shared_ptr<TorchLinear> gate_proj, up_proj;  // [intermediate, hidden]
  std::shared_ptr<TorchLinear> down_proj;           // [hidden, intermediate]
};

// One pre-norm Qwen3 block; the decoder, the encoder and the adapter's
// attention layers all run this one module.
class TorchQwen3Layer : public torch::nn::Module {
 public:
  explicit TorchQwen3Layer(const Qwen3Config& c);
  // x [B, L, hidden] -> [B, L, hidden] at the positions of `rope`; `blocked`
  // as TorchQwen3Attention::forward takes it.
  torch::Tensor forward(const torch::Tensor& x, const RopeTables& rope, AttentionMask mask,
                        const torch::Tensor& blocked = {}) const;

  std::shared_ptr<TorchRmsNorm> input_layernorm, post_attention_layernorm;  // [hidden]
  std::shared_ptr<TorchQwen3Attention> self_attn;
  std::shared_ptr<TorchQwen3Mlp> mlp;
};

// embed_tokens: ids [...] (int64) -> rows of weight [..., hidden].
class TorchEmbedding : public torch::nn::Module {
 public:
  TorchEmbedding(std::int64_t vocab_size, std::int64_t hidden_size);
  torch::Tensor forward(const torch::Tensor& ids) const;

  torch::Tensor weight;  // [vocab, hidden]
};

// A Qwen3Model (encoder: no head) or Qwen3ForCausalLM (decoder: lm_head, tied
// to embed_tokens when config.tie_word_embeddings).
class TorchQwen3 : public torch::nn::Module {
 public:
  TorchQwen3(const Qwen3Config& config, bool causal_lm);

  const Qwen3Config& config() const { return config_; }
  bool causal_lm() const { return causal_lm_; }

  // ids [...] -> [..., hidden].
  torch::Tensor embed(const torch::Tensor& ids) const;
  // input_embeds [L, hidden] or [B, L, hidden] -> final-norm hidden states of
  // the same shape; every sequence takes positions 0..L-1, or, with `docs`
  // (causal, for the L tokens), those of its packed documents.
  torch::Tensor forward(const torch::Tensor& input_embeds, AttentionMask mask,
                        const PackedDocuments* docs = nullptr);
  // hidden [..., hidden] -> logits [..., vocab]; throws lclm::Error for an encoder.
  torch::Tensor logits(const torch::Tensor& hidden) const;

  // Grows the model to n_layers layers, the new ones after the old: layer i
  // starts as a copy of layer i mod (old count) with o_proj and down_proj
  // zero, so it adds nothing to the residual stream and the model computes
  // exactly what it did; training then gives the new layers their own use.
  // Throws lclm::Error unless n_layers exceeds the current count.
  void deepen(std::int64_t n_layers);

  std::shared_ptr<TorchEmbedding> embed_tokens;
  torch::nn::ModuleList layers;          // of TorchQwen3Layer
  std::shared_ptr<TorchRmsNorm> norm;    // [hidden]
  std::shared_ptr<TorchLinear> lm_head;  // [vocab, hidden]; null when tied or an encoder

 private:
  Qwen3Config config_;
  bool causal_lm_;
  RopeCache rope_;
};

// "[2, 16, 64]", for error messages.
std::string shape_string(const torch::Tensor& t);

}  // namespace lclm::train
