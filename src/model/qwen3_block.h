// One Qwen3 transformer block. The decoder, the encoder and the LCLM
// adapter's attention layers all run this one implementation.
#pragma once

#include <cstddef>
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

 private:
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
