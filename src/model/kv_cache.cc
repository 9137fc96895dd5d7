#include "model/kv_cache.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "format/quant_blocks.h"
#include "ops/quant_kernels.h"
#include "util/error.h"

namespace lclm {
namespace {

constexpr std::array<std::pair<std::string_view, DType>, 5> kCacheTypeNames = {{
    {"f32", DType::F32},
    {"f16", DType::F16},
    {"bf16", DType::BF16},
    {"q8_0", DType::Q8_0},
    {"q4_0", DType::Q4_0},
}};

void store_row(DType type, const float* x, std::size_t n, std::uint8_t* out) {
  switch (type) {
    case DType::F32:
      std::memcpy(out, x, n * sizeof(float));
      return;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = f32_to_f16(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    default:
      quantize_row(type, x, n, out);
  }
}

// Copies the first `used` rows of every head from a [heads, old_cap, width]
// layout into a [heads, new_cap, width] one.
template <typename Vector>
void regrow(Vector& layer, std::size_t heads, std::size_t old_cap, std::size_t new_cap,
            std::size_t used, std::size_t width) {
  Vector grown(heads * new_cap * width);
  for (std::size_t h = 0; h < heads && used > 0; ++h) {
    std::copy_n(layer.data() + h * old_cap * width, used * width,
                grown.data() + h * new_cap * width);
  }
  layer = std::move(grown);
}

}  // namespace

DType parse_kv_cache_type(std::string_view name, std::string_view flag) {
  std::string accepted;
  for (const auto& [n, type] : kCacheTypeNames) {
    if (n == name) return type;
    accepted += (accepted.empty() ? "" : ", ") + std::string(n);
  }
  throw Error(std::string(flag) + " '" + std::string(name) + "': the KV cache types are " +
              accepted);
}

std::vector<std::string> kv_cache_type_names() {
  std::vector<std::string> names;
  for (const auto& entry : kCacheTypeNames) names.emplace_back(entry.first);
  return names;
}

std::string_view kv_cache_type_name(DType type) {
  for (const auto& [n, t] : kCacheTypeNames) {
    if (t == type) return n;
  }
  throw Error("not a KV cache type: " + std::string(dtype_name(type)));
}

void check_kv_cache_types(const KVCacheTypes& types, std::size_t head_dim) {
  const auto check = [&](DType type, std::string_view flag) {
    kv_cache_type_name(type);  // throws for a type the cache cannot hold
    if (is_block_quantized(type) && head_dim % kQuantBlock != 0) {
      throw Error(std::string(flag) + " " + std::string(kv_cache_type_name(type)) +
                  " stores rows in blocks of 32, and this model's head_dim is " +
                  std::to_string(head_dim) + "; use f32, f16 or bf16");
    }
  };
  check(types.keys, "--cache-type-k");
  check(types.values, "--cache-type-v");
}

KVCache::KVCache(std::size_t n_layers, std::size_t n_kv_heads, std::size_t head_dim,
                 std::size_t max_positions, std::size_t initial_capacity, KVCacheTypes types)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      max_positions_(max_positions),
      types_(types),
      key_row_bytes_((check_kv_cache_types(types, head_dim), row_bytes(types.keys, head_dim))),
      value_row_bytes_(row_bytes(types.values, head_dim)),
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
  return n_layers_ * n_kv_heads_ * capacity_ * (key_row_bytes_ + value_row_bytes_);
}

std::size_t KVCache::entry_bytes() const {
  std::size_t total = 0;
  for (std::size_t e : entries_) total += e;
  return n_kv_heads_ * total * (key_row_bytes_ + value_row_bytes_);
}

float* KVCache::f32_keys(std::size_t layer) {
  if (types_.keys != DType::F32) throw Error("KVCache::f32_keys: the keys are not stored as f32");
  return reinterpret_cast<float*>(keys_[layer].data());
}

float* KVCache::f32_values(std::size_t layer) {
  if (types_.values != DType::F32) {
    throw Error("KVCache::f32_values: the values are not stored as f32");
  }
  return reinterpret_cast<float*>(values_[layer].data());
}

void KVCache::write(std::size_t layer, std::size_t g, std::size_t entry, const float* key,
                    const float* value) {
  const std::size_t row = g * capacity_ + entry;
  store_row(types_.keys, key, head_dim_, keys_[layer].data() + row * key_row_bytes_);
  store_row(types_.values, value, head_dim_, values_[layer].data() + row * value_row_bytes_);
}

void KVCache::read_key(std::size_t layer, std::size_t g, std::size_t entry, float* out) const {
  widen_rows(types_.keys, keys_[layer].data() + (g * capacity_ + entry) * key_row_bytes_, 1,
             head_dim_, out);
}

void KVCache::read_value(std::size_t layer, std::size_t g, std::size_t entry, float* out) const {
  widen_rows(types_.values, values_[layer].data() + (g * capacity_ + entry) * value_row_bytes_, 1,
             head_dim_, out);
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
  const std::size_t KB = key_row_bytes_, VB = value_row_bytes_;
  for (std::size_t g = 0; g < n_kv_heads_; ++g) {
    const std::vector<std::size_t>& rows = keep[g];
    if (rows.size() != kept) throw Error("KVCache::compact: kv heads keep different counts");
    std::uint8_t* k = keys_[layer].data() + g * capacity_ * KB;
    std::uint8_t* v = values_[layer].data() + g * capacity_ * VB;
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
      std::copy_n(k + from * KB, KB, k + i * KB);
      std::copy_n(v + from * VB, VB, v + i * VB);
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
    regrow(keys_[l], n_kv_heads_, capacity_, capacity, used, key_row_bytes_);
    regrow(values_[l], n_kv_heads_, capacity_, capacity, used, value_row_bytes_);
    regrow(positions_[l], n_kv_heads_, capacity_, capacity, used, 1);
    if (scoring_) regrow(scores_[l], n_kv_heads_, capacity_, capacity, used, 1);
  }
  capacity_ = capacity;
  peak_bytes_ = std::max(peak_bytes_, bytes());
}

}  // namespace lclm
