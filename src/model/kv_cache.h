// Keys and values of every layer for the positions processed so far. Storage
// grows with the request (doubling, capped at the context limit) instead of
// being sized for the model's maximum context up front.
#pragma once

#include <cstddef>
#include <vector>

namespace lclm {

class KVCache {
 public:
  // max_positions: the context limit; growing past it throws lclm::Error.
  KVCache(std::size_t n_layers, std::size_t n_kv_heads, std::size_t head_dim,
          std::size_t max_positions, std::size_t initial_capacity = 0);

  // Makes room for `extra` more positions after the current ones.
  void reserve_more(std::size_t extra);
  // Marks `n` more positions as filled (after their k/v rows were written).
  void advance(std::size_t n);
  // Drops every position from `n` on (n <= size()).
  void truncate(std::size_t n);
  void clear() { truncate(0); }

  // Layer storage, laid out [n_kv_heads, capacity(), head_dim].
  float* keys(std::size_t layer) { return keys_[layer].data(); }
  float* values(std::size_t layer) { return values_[layer].data(); }
  const float* keys(std::size_t layer) const { return keys_[layer].data(); }
  const float* values(std::size_t layer) const { return values_[layer].data(); }

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }
  std::size_t max_positions() const { return max_positions_; }
  std::size_t n_kv_heads() const { return n_kv_heads_; }
  std::size_t head_dim() const { return head_dim_; }
  // Bytes allocated for keys and values.
  std::size_t bytes() const;

 private:
  void set_capacity(std::size_t capacity);
  std::size_t n_layers_, n_kv_heads_, head_dim_, max_positions_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
  std::vector<std::vector<float>> keys_, values_;
};

}  // namespace lclm
