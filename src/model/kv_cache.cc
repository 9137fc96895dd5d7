#include "model/kv_cache.h"

#include <algorithm>
#include <string>

#include "util/error.h"

namespace lclm {
namespace {

// Copies the first `used` rows of every head from a [heads, old_cap, width]
// layout into a [heads, new_cap, width] one.
template <typename T>
void regrow(std::vector<T>& layer, std::size_t heads, std::size_t old_cap, std::size_t new_cap,
            std::size_t used, std::size_t width) {
  std::vector<T> grown(heads * new_cap * width);
  for (std::size_t h = 0; h < heads && used > 0; ++h) {
    std::copy_n(layer.data() + h * old_cap * width, used * width,
                grown.data() + h * new_cap * width);
  }
  layer = std::move(grown);
}

}  // namespace

KVCache::KVCache(std::size_t n_layers, std::size_t n_kv_heads, std::size_t head_dim,
                 std::size_t max_positions, std::size_t initial_capacity)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      max_positions_(max_positions),
      entries_(n_layers, 0),
      keys_(n_layers),
      values_(n_layers),
      positions_(n_layers),
      scores_(n_layers),
      residuals_(n_layers, nullptr) {
  set_capacity(std::min(initial_capacity, max_positions));
}

void KVCache::reserve_more(std::size_t extra) {
  const std::size_t needed = size_ + extra;
  if (needed > max_positions_) {
    throw Error("context is full: " + std::to_string(needed) + " positions needed, the limit is " +
                std::to_string(max_positions_) + " (raise it with -c)");
  }
  const std::size_t rows = max_entries() + extra;
  if (rows <= capacity_) return;
  set_capacity(std::min(max_positions_, std::max(rows, 2 * capacity_)));
}

void KVCache::advance(std::size_t n) {
  if (max_entries() + n > capacity_) throw Error("KVCache::advance past the reserved capacity");
  size_ += n;
  for (std::size_t& e : entries_) e += n;
}

void KVCache::truncate(std::size_t n) {
  if (n >= size_) return;
  if (max_entries() != size_) throw Error("KVCache::truncate after entries were evicted");
  size_ = n;
  std::fill(entries_.begin(), entries_.end(), n);
}

void KVCache::clear() {
  size_ = 0;
  std::fill(entries_.begin(), entries_.end(), 0);
  std::fill(residuals_.begin(), residuals_.end(), nullptr);
}

std::size_t KVCache::bytes() const {
  return 2 * n_layers_ * n_kv_heads_ * capacity_ * head_dim_ * sizeof(float);
}

std::size_t KVCache::entry_bytes() const {
  std::size_t total = 0;
  for (std::size_t e : entries_) total += e;
  return 2 * n_kv_heads_ * total * head_dim_ * sizeof(float);
}

std::size_t KVCache::max_entries() const {
  return entries_.empty() ? 0 : *std::max_element(entries_.begin(), entries_.end());
}

void KVCache::start_key_scores(std::size_t from_position) {
  scoring_ = true;
  score_from_ = from_position;
  for (auto& layer : scores_) layer.assign(n_kv_heads_ * capacity_, 0.0f);
}

void KVCache::stop_key_scores() {
  scoring_ = false;
  for (auto& layer : scores_) std::vector<float>().swap(layer);
}

void KVCache::compact(std::size_t layer, std::span<const std::vector<std::size_t>> keep) {
  if (keep.size() != n_kv_heads_) throw Error("KVCache::compact needs one entry list per kv head");
  const std::size_t kept = keep.front().size();
  const std::size_t D = head_dim_;
  for (std::size_t g = 0; g < n_kv_heads_; ++g) {
    const std::vector<std::size_t>& rows = keep[g];
    if (rows.size() != kept) throw Error("KVCache::compact: kv heads keep different counts");
    float* k = keys_[layer].data() + g * capacity_ * D;
    float* v = values_[layer].data() + g * capacity_ * D;
    std::int32_t* p = positions_[layer].data() + g * capacity_;
    float* s = scoring_ ? scores_[layer].data() + g * capacity_ : nullptr;
    // Ascending sources never lie below their destination, so moving in
    // order never overwrites a row still to be read.
    for (std::size_t i = 0; i < kept; ++i) {
      const std::size_t from = rows[i];
      if (from >= entries_[layer] || (i > 0 && from <= rows[i - 1])) {
        throw Error("KVCache::compact: entry indices must ascend within the held entries");
      }
      if (from == i) continue;
      std::copy_n(k + from * D, D, k + i * D);
      std::copy_n(v + from * D, D, v + i * D);
      p[i] = p[from];
      if (s) s[i] = s[from];
    }
  }
  entries_[layer] = kept;
}

void KVCache::shrink_to_fit(std::size_t extra) {
  set_capacity(std::min(max_positions_, max_entries() + extra));
}

void KVCache::set_capacity(std::size_t capacity) {
  if (capacity == capacity_) return;
  const std::size_t used = max_entries();
  for (std::size_t l = 0; l < n_layers_; ++l) {
    regrow(keys_[l], n_kv_heads_, capacity_, capacity, used, head_dim_);
    regrow(values_[l], n_kv_heads_, capacity_, capacity, used, head_dim_);
    regrow(positions_[l], n_kv_heads_, capacity_, capacity, used, 1);
    if (scoring_) regrow(scores_[l], n_kv_heads_, capacity_, capacity, used, 1);
  }
  capacity_ = capacity;
  peak_bytes_ = std::max(peak_bytes_, bytes());
}

}  // namespace lclm
