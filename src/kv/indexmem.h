// IndexMem (the spec's second system in the seeds, arXiv 2605.25475): learned
// KV-cache eviction with a latent memory. Per decoder layer,
//
//   indexer    s(k) = w2 . relu(W1 k + b1)       a score for each cached key k
//                                                 (as stored: k-normed, RoPE'd),
//                                                 shared by the layer's kv heads
//   memory     phi(x) = elu(Wf x + bf) + 1        [F] features
//              M_g += phi(k) v^T, z_g += phi(k)   for every entry kv head g evicts
//   readout    out_h += gate[h] (phi(q_h)^T M_g) / (phi(q_h)^T z_g + eps)
//
// The policy keeps, per (layer, kv head), the first `sinks` entries, the last
// `recent` ones and the best-scored rest up to the budget; what it drops is
// folded into that head's memory, whose readout attention adds to every later
// query (ops/attention.h, AttentionResidual). See docs/indexmem.md.
//
// The weights live in a directory of their own (default: an LCLM
// checkpoint's indexmem/, beside decoder/): config.json and model.safetensors
// with, per layer l,
//   layers.l.indexer.fc1.weight [H, D]   layers.l.indexer.fc1.bias [H]
//   layers.l.indexer.fc2.weight [1, H]
//   layers.l.memory.feature_map.weight [F, D]   layers.l.memory.feature_map.bias [F]
//   layers.l.memory.gate [n_heads]
// in float32. The trainer (src/trainer/torch_indexmem.h) writes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "kv/kv_policy.h"
#include "model/qwen3_config.h"

namespace lclm {

struct IndexMemConfig {
  std::int64_t num_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t indexer_hidden = 64;   // H
  std::int64_t memory_features = 64;  // F
  std::int64_t sinks = 4;             // first entries always kept
  std::int64_t recent = 32;           // last entries always kept
  double eps = 1e-6;                  // the readout's denominator floor
};

struct IndexMemLayer {
  std::vector<float> indexer_w1;  // [H, D]
  std::vector<float> indexer_b1;  // [H]
  std::vector<float> indexer_w2;  // [H]
  std::vector<float> feature_w;   // [F, D]
  std::vector<float> feature_b;   // [F]
  std::vector<float> gate;        // [n_heads]
};

struct IndexMemWeights {
  IndexMemConfig config;
  std::vector<IndexMemLayer> layers;

  // Zero weights of the right shapes for a decoder (filled by the trainer or a test).
  static IndexMemWeights zeros(const Qwen3Config& decoder, std::int64_t indexer_hidden = 64,
                               std::int64_t memory_features = 64);
  // Reads DIR/config.json and DIR/model.safetensors and checks them against
  // the decoder's config; errors name the directory, file or tensor at fault.
  static IndexMemWeights load(const std::filesystem::path& dir, const Qwen3Config& decoder);
  // Writes DIR/config.json and DIR/model.safetensors (creating DIR).
  void save(const std::filesystem::path& dir) const;

  // The indexer's score of one key [head_dim] in `layer`.
  float score(std::size_t layer, const float* key) const;
};

// Where the weights of a model are looked for without --indexmem: an LCLM
// checkpoint's indexmem/ (MODEL/indexmem), or a decoder directory's sibling
// (MODEL/../indexmem).
std::filesystem::path default_indexmem_dir(const std::filesystem::path& model);

// The entries of one (layer, kv head) IndexMem keeps: the first `sinks`, the
// last `recent` (both cut to the budget, sinks first) and the rest of the
// budget from the middle by the largest score (ties: the earlier entry).
// Ascending, min(budget, n) of them.
std::vector<std::size_t> indexmem_keep(std::span<const float> scores, std::size_t sinks,
                                       std::size_t recent, std::size_t budget);

// The policy (KVPolicyKind::IndexMem); config.indexmem must hold the weights.
std::unique_ptr<KVPolicy> make_indexmem_policy(const KVPolicyConfig& config);

}  // namespace lclm
