// One Qwen3 transformer block. The decoder, the encoder and the LCLM
// adapter's attention layers all run this one implementation.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "model/kv_cache.h"
#include "model/qwen3_config.h"
#include "model/weight_reader.h"
#include "ops/attention.h"
#include "ops/matmul.h"
#include "ops/transformer_ops.h"

namespace lclm {

// Consecutive rows of a forward pass's input that belong to one sequence:
// they are appended to `cache` and attend to it (a decode batch is one row
// for each of several sequences).
struct SequenceRows {
  KVCache* cache = nullptr;
  std::size_t rows = 0;
};

class Qwen3Block {
 public:
  // Reads PREFIX{input_layernorm, post_attention_layernorm, self_attn.*, mlp.*}
  // with shapes from `config`; errors name the tensor and both shapes. The
  // projections come through `weights` (converted to a block type or not).
  static Qwen3Block load(const WeightReader& weights, const std::string& prefix,
                         const Qwen3Config& config);

  // Bytes of the seven projection matrices, each read once per decode step.
  std::size_t matrix_bytes() const;
  // The type the projections run in (q_proj's: all seven share it, but for
  // one whose columns are not a multiple of the block length).
  DType matrix_dtype() const { return q_proj_.dtype; }

  // x [n, hidden] in place: the n inputs take positions cache.size() ..
  // cache.size()+n-1; their keys and values go to cache layer `layer` after
  // its cache.entries(layer) held entries, and they attend to those entries
  // and (causally) to each other. The caller reserves cache room first and
  // advances it after the last layer. While cache.scoring(), the attention
  // probabilities of the scored queries are added to the layer's key scores.
  void forward(float* x, std::size_t n, KVCache& cache, std::size_t layer, AttentionMask mask,
               const RopeTable& rope) const;
  // The same for rows of several sequences at once: x [sum of rows, hidden],
  // the sequences' rows one after another. The projections read each weight
  // once for all rows; attention runs per sequence on its own cache. Each
  // row comes out as it would in a pass of its sequence alone (bit for bit
  // up to kMatvecMaxRows rows in all, ops/matmul.h).
  void forward(float* x, std::span<const SequenceRows> sequences, std::size_t layer,
               AttentionMask mask, const RopeTable& rope) const;

 private:
  // One sequence's part of attention: q [n, n_heads * head_dim] and k, v
  // [n, n_kv_heads * head_dim] of its n rows get RoPE at its next positions,
  // k and v go to the cache's layer after its entries, and out [n, n_heads *
  // head_dim] = attention of q over the cache.
  void attend(float* q, float* k, const float* v, std::size_t n, KVCache& cache, std::size_t layer,
              AttentionMask mask, const RopeTable& rope, float* out) const;

  std::size_t hidden_ = 0, intermediate_ = 0, head_dim_ = 0, n_heads_ = 0, n_kv_heads_ = 0;
  float eps_ = 1e-6f;
  std::vector<float> input_layernorm_;           // [hidden]
  std::vector<float> post_attention_layernorm_;  // [hidden]
  std::vector<float> q_norm_, k_norm_;           // [head_dim]
  WeightMatrix q_proj_;                          // [n_heads * head_dim, hidden]
  WeightMatrix k_proj_;                          // [n_kv_heads * head_dim, hidden]
  WeightMatrix v_proj_;                          // [n_kv_heads * head_dim, hidden]
  WeightMatrix o_proj_;                          // [hidden, n_heads * head_dim]
  WeightMatrix gate_proj_;                       // [intermediate, hidden]
  WeightMatrix up_proj_;                         // [intermediate, hidden]
  WeightMatrix down_proj_;                       // [hidden, intermediate]
};

// A view of a stored float tensor as rows x cols (1-D tensors are one row);
// throws lclm::Error naming the tensor for non-float dtypes.
WeightMatrix as_weight_matrix(const TensorView& t);
// A small tensor (norm weights, biases) widened to f32 once at load.
std::vector<float> as_f32_vector(const TensorView& t);

}  // namespace lclm
