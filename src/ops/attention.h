// Scaled dot-product attention with grouped-query heads over a KV cache.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/dtype.h"

namespace lclm {

enum class AttentionMask { Causal, Bidirectional };

struct AttentionShape {
  std::size_t n_heads = 0;
  std::size_t n_kv_heads = 0;
  std::size_t head_dim = 0;
  std::size_t kv_stride = 0;  // positions between one kv head and the next in the cache
};

// Cached keys or values of one layer: [n_kv_heads, kv_stride, row], each row
// head_dim elements of `type` (F32, F16, BF16, Q8_0 or Q4_0; row_bytes(type,
// head_dim) bytes).
struct KVRows {
  const std::uint8_t* data = nullptr;
  DType type = DType::F32;
};

// q [n_q, n_heads * head_dim]: queries at positions q_pos0 .. q_pos0 + n_q - 1.
// k, v [n_kv_heads, kv_stride, head_dim]: n_keys cached positions 0 .. n_keys-1.
// out [n_q, n_heads * head_dim]. Causal: query at position p sees keys 0..p;
// bidirectional: all n_keys. Query head h reads kv head h / (n_heads / n_kv_heads).
// Work is split into (kv head, 32-query block) tasks that walk the keys in
// blocks of 64 with an online softmax: memory is O(block), never
// O(n_q * n_keys), and each key block is reused by all queries of a task and
// all the query heads that read its kv head.
//
// With `scores`, the queries first_query .. n_q-1 also add their attention
// probabilities (softmax weights) to key_scores [n_kv_heads, kv_stride]: entry
// j of kv head g gains the sum over those queries and over the query heads
// reading g of p(query, key j). This second pass recomputes the scores of the
// scored queries only; without `scores` nothing of it runs.
struct KeyScoreAccumulator {
  std::size_t first_query = 0;
  float* key_scores = nullptr;
};

// A latent memory of attention entries that are no longer in the cache
// (IndexMem, src/kv/indexmem.h), one linear-attention state per kv head:
//   phi(x) = elu(W x + b) + 1                    [F] features of a [D] vector
//   M_g = sum phi(k_j) v_j^T  [F, D],  z_g = sum phi(k_j)  [F]   over the entries j folded in
// Its readout is added to each query head's normalised attention output:
//   out_h += gate[h] * (phi(q_h)^T M_g) / (phi(q_h)^T z_g + eps)   (g: h's kv head)
struct AttentionResidual {
  std::size_t n_features = 0;         // F
  const float* feature_w = nullptr;   // W [F, head_dim]
  const float* feature_b = nullptr;   // b [F]
  const float* gate = nullptr;        // [n_heads]
  const float* memory = nullptr;      // M [n_kv_heads, F, head_dim]
  const float* normalizer = nullptr;  // z [n_kv_heads, F]
  float eps = 1e-6f;
};

// features [F] = phi(x) for x [head_dim], as defined above.
void memory_features(const AttentionResidual& r, const float* x, std::size_t head_dim,
                     float* features);

// With `residual`, its readout is added to `out` after the softmax part
// (queries laid out as for attention()); without it nothing of it runs.
// Keys and values of another type than f32 are widened a block of 64 rows at
// a time into per-thread scratch, so memory traffic is the stored type's.
void attention(const float* q, std::size_t n_q, std::size_t q_pos0, KVRows k, KVRows v,
               std::size_t n_keys, const AttentionShape& shape, AttentionMask mask, float* out,
               const KeyScoreAccumulator* scores = nullptr,
               const AttentionResidual* residual = nullptr);
// Whether attention over bf16 keys and values of head_dim runs on the bf16
// kernels (ops/bf16_attention.h): x rounded (bf16_activation_precision(),
// the default), the native bf16 kernels on, head_dim a multiple of 32.
// Otherwise it widens them to f32.
bool bf16_attention_kernels(std::size_t head_dim);

// The same over f32 keys and values.
inline void attention(const float* q, std::size_t n_q, std::size_t q_pos0, const float* k,
                      const float* v, std::size_t n_keys, const AttentionShape& shape,
                      AttentionMask mask, float* out, const KeyScoreAccumulator* scores = nullptr,
                      const AttentionResidual* residual = nullptr) {
  attention(q, n_q, q_pos0, {reinterpret_cast<const std::uint8_t*>(k), DType::F32},
            {reinterpret_cast<const std::uint8_t*>(v), DType::F32}, n_keys, shape, mask, out,
            scores, residual);
}

}  // namespace lclm
