// A Qwen3 transformer loaded from a Hugging Face model directory. One block
// implementation serves the decoder (Qwen3ForCausalLM) and the encoder
// (Qwen3Model, no lm_head); weights stay in the mmapped safetensors files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "model/kv_cache.h"
#include "model/qwen3_block.h"
#include "model/qwen3_config.h"
#include "ops/attention.h"
#include "ops/matmul.h"
#include "ops/transformer_ops.h"

namespace lclm {

// "model." when the store's tensors carry it (Qwen3ForCausalLM), else "" (a
// bare Qwen3Model, as LCLM encoders may be stored).
std::string qwen3_tensor_prefix(const TensorStore& store);

struct Qwen3LoadOptions {
  // Block type (DType::Q8_0 or Q4_0) the projections and the lm_head are
  // converted to at load; embeddings and norms stay as stored.
  std::optional<DType> quant;
  // False for an encoder: no lm_head, not even the tied embeddings (which
  // --quant would otherwise convert for nothing).
  bool lm_head = true;
};

class Qwen3Model {
 public:
  // Reads DIR/config.json and the safetensors weights. Tensor names may carry
  // a "model." prefix (Qwen3ForCausalLM) or not (a bare Qwen3Model encoder).
  // Block-quantized tensors of a quantized checkpoint are mmapped as they
  // are. Throws lclm::Error naming the file or tensor at fault.
  static Qwen3Model load(const std::filesystem::path& dir, const Qwen3LoadOptions& options = {});

  const Qwen3Config& config() const { return config_; }
  const std::filesystem::path& dir() const { return store_.dir(); }
  bool has_lm_head() const { return lm_head_.has_value(); }
  // Bytes of weights mapped from disk.
  std::size_t weight_bytes() const { return store_.total_bytes(); }
  std::int64_t parameter_count() const { return parameter_count_; }
  // Bytes of the matrices one decode step reads: every projection and the
  // lm_head, in the type they run in (after any conversion at load).
  std::size_t decode_matrix_bytes() const;
  // The type the projection matrices run in (BF16, Q8_0, ...).
  DType matrix_dtype() const;
  // Bytes of matrices converted at load (0 when every matrix is mmapped).
  std::size_t converted_bytes() const;
  // Bytes of stored q8_0 / q4_0 matrices repacked at load for decode
  // (RowOrder::kInterleaved16; matrices converted at load are repacked
  // in place and counted above).
  std::size_t repacked_bytes() const;
  // The dtype of the embedding matrix, as a stand-in for the checkpoint's.
  DType weight_dtype() const { return embed_tokens_.dtype; }

  // A cache for this model's shape; max_positions is the context limit.
  KVCache make_cache(std::size_t max_positions, std::size_t initial_capacity = 0,
                     KVCacheTypes types = {}) const;

  // out [ids.size(), hidden] = embed_tokens rows.
  void embed(std::span<const std::int32_t> ids, float* out) const;

  // Runs every layer over x [n, hidden] in place: the n inputs take positions
  // cache.size() .. cache.size()+n-1 and their keys/values are appended to the
  // cache. On return x holds the final-norm hidden states.
  void forward(float* x, std::size_t n, KVCache& cache, AttentionMask mask) const;
  // The same for rows of several sequences at once (a decode batch): x [sum
  // of rows, hidden], each sequence's rows appended to its own cache. Every
  // weight is read once for all rows; each row comes out as in a pass of its
  // sequence alone (bit for bit up to kMatvecMaxRows rows in all).
  void forward(float* x, std::span<const SequenceRows> sequences, AttentionMask mask) const;

  // logits [n, vocab] = lm_head(hidden [n, hidden]).
  void logits(const float* hidden, std::size_t n, float* out) const;

 private:
  Qwen3Model(Qwen3Config config, TensorStore store);

  Qwen3Config config_;
  TensorStore store_;
  RopeTable rope_;
  WeightMatrix embed_tokens_;
  std::optional<WeightMatrix> lm_head_;
  std::vector<float> final_norm_;
  std::vector<Qwen3Block> layers_;
  std::vector<std::vector<std::uint8_t>> converted_;  // matrices converted at load
  std::vector<std::vector<std::uint8_t>> repacked_;   // stored ones interleaved at load
  std::int64_t parameter_count_ = 0;
};

}  // namespace lclm
