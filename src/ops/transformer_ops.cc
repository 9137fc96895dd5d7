#include "ops/transformer_ops.h"

#include <algorithm>
#include <cmath>

#include "ops/simd.h"
#include "util/error.h"

namespace lclm {
namespace {

// Largest head_dim / 2 the per-position cos/sin tables hold on the stack.
constexpr std::size_t kMaxHalf = 512;

}  // namespace

void rms_norm(const float* x, const float* weight, float* out, std::size_t n_rows, std::size_t dim,
              float eps) {
  for (std::size_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = out + r * dim;
    const float mean_sq = dot_f32(xr, xr, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(mean_sq + eps);
    for (std::size_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

RopeTable::RopeTable(std::size_t head_dim, double theta) : head_dim_(head_dim) {
  if (head_dim == 0 || head_dim % 2 != 0 || head_dim > 2 * kMaxHalf) {
    throw Error("head_dim " + std::to_string(head_dim) + " is not supported (even, at most " +
                std::to_string(2 * kMaxHalf) + ")");
  }
  const std::size_t half = head_dim / 2;
  inv_freq_.resize(half);
  for (std::size_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq_[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
}

void RopeTable::apply(float* x, std::size_t n_heads, std::size_t position) const {
  const std::size_t half = head_dim_ / 2;
  float cos_t[kMaxHalf], sin_t[kMaxHalf];
  for (std::size_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(position) * inv_freq_[i];
    cos_t[i] = std::cos(angle);
    sin_t[i] = std::sin(angle);
  }
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim_;
    for (std::size_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos_t[i] - b * sin_t[i];
      v[i + half] = b * cos_t[i] + a * sin_t[i];
    }
  }
}

void silu_mul(float* gate, const float* up, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* x, const float* y, std::size_t n) {
  axpy_f32(1.0f, y, x, n);
}

void softmax(float* x, std::size_t n) {
  if (n == 0) return;
  const float max = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  scale_f32(x, 1.0f / sum, n);
}

}  // namespace lclm
