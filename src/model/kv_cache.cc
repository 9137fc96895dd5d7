#include "model/kv_cache.h"

#include <algorithm>
#include <string>

#include "util/error.h"

namespace lclm {

KVCache::KVCache(std::size_t n_layers, std::size_t n_kv_heads, std::size_t head_dim,
                 std::size_t max_positions, std::size_t initial_capacity)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      max_positions_(max_positions),
      keys_(n_layers),
      values_(n_layers) {
  set_capacity(std::min(initial_capacity, max_positions));
}

void KVCache::reserve_more(std::size_t extra) {
  const std::size_t needed = size_ + extra;
  if (needed > max_positions_) {
    throw Error("context is full: " + std::to_string(needed) + " positions needed, the limit is " +
                std::to_string(max_positions_) + " (raise it with -c)");
  }
  if (needed <= capacity_) return;
  set_capacity(std::min(max_positions_, std::max(needed, 2 * capacity_)));
}

void KVCache::advance(std::size_t n) {
  if (size_ + n > capacity_) throw Error("KVCache::advance past the reserved capacity");
  size_ += n;
}

void KVCache::truncate(std::size_t n) {
  size_ = std::min(size_, n);
}

std::size_t KVCache::bytes() const {
  return 2 * n_layers_ * n_kv_heads_ * capacity_ * head_dim_ * sizeof(float);
}

void KVCache::set_capacity(std::size_t capacity) {
  if (capacity == capacity_) return;
  for (auto* store : {&keys_, &values_}) {
    for (auto& layer : *store) {
      std::vector<float> grown(n_kv_heads_ * capacity * head_dim_);
      for (std::size_t h = 0; h < n_kv_heads_ && size_ > 0; ++h) {
        std::copy_n(layer.data() + h * capacity_ * head_dim_, size_ * head_dim_,
                    grown.data() + h * capacity * head_dim_);
      }
      layer = std::move(grown);
    }
  }
  capacity_ = capacity;
}

}  // namespace lclm
