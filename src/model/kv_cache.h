// Keys and values of every layer for the positions processed so far. Storage
// grows with the request (doubling, capped at the context limit) instead of
// being sized for the model's maximum context up front.
//
// A KV-cache policy (src/kv) may drop entries: each layer then holds fewer
// entries than positions processed, and the heads of a layer may keep
// different positions (always the same number of them). Kept keys stay as
// they were written, RoPE applied at their original position; new tokens
// still take the next position, so position() and entries(layer) differ.
//
// Keys and values are stored as f32 (exact), f16, bf16, q8_0 or q4_0 (each
// row of head_dim elements in ggml's block layout, format/quant_blocks.h):
// a row is rounded once when written, and attention reads the stored type,
// widening a block of rows at a time (docs/architecture.md, "KV cache types").
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "ops/attention.h"
#include "util/aligned_vector.h"

namespace lclm {

// What a cache stores its keys and values as. The model-level default is
// f32, which keeps every forward pass exact; the engine's is
// kDefaultKVCacheTypes.
struct KVCacheTypes {
  DType keys = DType::F32;
  DType values = DType::F32;
  bool operator==(const KVCacheTypes&) const = default;
};
// bf16 halves what attention reads per decoded token against f32, at a
// relative error of at most 2^-9 per stored element.
inline constexpr KVCacheTypes kDefaultKVCacheTypes{DType::BF16, DType::BF16};

// llama.cpp's names ("f32", "f16", "bf16", "q8_0", "q4_0") -> the type;
// throws lclm::Error naming `flag` and the accepted names otherwise.
DType parse_kv_cache_type(std::string_view name, std::string_view flag);
// The inverse: "bf16" for DType::BF16, ...
std::string_view kv_cache_type_name(DType type);
// Every name parse_kv_cache_type takes, in that order.
std::vector<std::string> kv_cache_type_names();
// Throws lclm::Error (naming --cache-type-k/v) when a row of head_dim
// elements cannot be stored as these types: the block types need a
// multiple of 32.
void check_kv_cache_types(const KVCacheTypes& types, std::size_t head_dim);

class KVCache {
 public:
  // max_positions: the context limit; growing past it throws lclm::Error.
  KVCache(std::size_t n_layers, std::size_t n_kv_heads, std::size_t head_dim,
          std::size_t max_positions, std::size_t initial_capacity = 0, KVCacheTypes types = {});

  // Makes room for `extra` more positions after the current ones.
  void reserve_more(std::size_t extra);
  // Marks `n` more positions as filled in every layer (after their k/v rows
  // were written at entries(layer) .. entries(layer)+n-1).
  void advance(std::size_t n);
  // Drops every position from `n` on (n <= size()); only before any eviction.
  void truncate(std::size_t n);
  void clear();

  KVCacheTypes types() const { return types_; }
  // Layer storage, laid out [n_kv_heads, capacity(), row] with rows of
  // key_row_bytes() / value_row_bytes(), as attention() reads it.
  KVRows keys(std::size_t layer) const { return {keys_[layer].data(), types_.keys}; }
  KVRows values(std::size_t layer) const { return {values_[layer].data(), types_.values}; }
  std::size_t key_row_bytes() const { return key_row_bytes_; }
  std::size_t value_row_bytes() const { return value_row_bytes_; }
  // The f32 storage itself; throws lclm::Error unless the cache holds f32.
  float* f32_keys(std::size_t layer);
  float* f32_values(std::size_t layer);
  // Stores key and value [head_dim] as entry `entry` of kv head g, rounded
  // to the cache's types.
  void write(std::size_t layer, std::size_t g, std::size_t entry, const float* key,
             const float* value);
  // The stored key / value of an entry, widened to f32 [head_dim].
  void read_key(std::size_t layer, std::size_t g, std::size_t entry, float* out) const;
  void read_value(std::size_t layer, std::size_t g, std::size_t entry, float* out) const;
  // The position each entry was written at, [n_kv_heads, capacity()].
  std::int32_t* positions(std::size_t layer) { return positions_[layer].data(); }
  const std::int32_t* positions(std::size_t layer) const { return positions_[layer].data(); }

  // Positions processed so far: the next input takes position size().
  std::size_t size() const { return size_; }
  // Entries each kv head of `layer` holds (size() until a policy evicts).
  std::size_t entries(std::size_t layer) const { return entries_[layer]; }
  std::size_t capacity() const { return capacity_; }
  std::size_t max_positions() const { return max_positions_; }
  std::size_t n_layers() const { return n_layers_; }
  std::size_t n_kv_heads() const { return n_kv_heads_; }
  std::size_t head_dim() const { return head_dim_; }
  // Bytes allocated for keys and values.
  std::size_t bytes() const;
  // The most bytes() was over the cache's life.
  std::size_t peak_bytes() const { return peak_bytes_; }
  // Bytes of the keys and values of the entries held (what a cache sized
  // exactly to them would take).
  std::size_t entry_bytes() const;

  // ---- attention scores for policies (src/kv) ----
  // From now on the queries at positions >= from_position add their
  // attention probabilities to key_scores(layer) (allocated here, zeroed).
  void start_key_scores(std::size_t from_position);
  // Stops scoring and frees the scores.
  void stop_key_scores();
  bool scoring() const { return scoring_; }
  std::size_t score_from_position() const { return score_from_; }
  // [n_kv_heads, capacity()]: per entry, the attention probability it got,
  // summed over the scored queries and the query heads of its kv head.
  float* key_scores(std::size_t layer) { return scores_[layer].data(); }
  const float* key_scores(std::size_t layer) const { return scores_[layer].data(); }

  // ---- a latent memory for policies (IndexMem, src/kv/indexmem.h) ----
  // The policy owns the memory; while set, attention in `layer` adds its
  // readout to the output. Null (the default, and after clear()): no memory.
  void set_attention_residual(std::size_t layer, const AttentionResidual* residual) {
    residuals_[layer] = residual;
  }
  const AttentionResidual* attention_residual(std::size_t layer) const { return residuals_[layer]; }

  // Keeps, for every kv head g of `layer`, only the entries keep[g] (indices
  // into the current entries, ascending, the same count for every head), in
  // that order; keys, values, positions and scores move together.
  void compact(std::size_t layer, std::span<const std::vector<std::size_t>> keep);
  // Reallocates the storage to the largest layer's entries plus `extra`.
  void shrink_to_fit(std::size_t extra);

 private:
  void set_capacity(std::size_t capacity);
  std::size_t max_entries() const;
  std::size_t n_layers_, n_kv_heads_, head_dim_, max_positions_;
  KVCacheTypes types_;
  std::size_t key_row_bytes_, value_row_bytes_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  std::size_t peak_bytes_ = 0;
  std::vector<std::size_t> entries_;
  std::vector<AlignedVector<std::uint8_t>> keys_, values_;
  std::vector<std::vector<std::int32_t>> positions_;
  bool scoring_ = false;
  std::size_t score_from_ = 0;
  std::vector<std::vector<float>> scores_;
  std::vector<const AttentionResidual*> residuals_;
};

}  // namespace lclm
