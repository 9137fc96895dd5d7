#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/simd.h"

namespace lclm {
namespace {

constexpr std::size_t kKeyBlock = 64;

}  // namespace

void attention(const float* q, std::size_t n_q, std::size_t q_pos0, const float* k,
               const float* v, std::size_t n_keys, const AttentionShape& shape,
               AttentionMask mask, float* out) {
  const std::size_t hd = shape.head_dim;
  const std::size_t group = shape.n_heads / shape.n_kv_heads;
  const std::size_t q_width = shape.n_heads * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto n_tasks = static_cast<std::ptrdiff_t>(n_q * shape.n_heads);

#pragma omp parallel for schedule(dynamic, 4)
  for (std::ptrdiff_t task = 0; task < n_tasks; ++task) {
    const std::size_t i = static_cast<std::size_t>(task) / shape.n_heads;
    const std::size_t h = static_cast<std::size_t>(task) % shape.n_heads;
    const std::size_t kvh = h / group;
    const float* qi = q + i * q_width + h * hd;
    const float* kh = k + kvh * shape.kv_stride * hd;
    const float* vh = v + kvh * shape.kv_stride * hd;
    float* oi = out + i * q_width + h * hd;
    const std::size_t visible =
        mask == AttentionMask::Causal ? std::min(n_keys, q_pos0 + i + 1) : n_keys;

    std::fill(oi, oi + hd, 0.0f);
    float running_max = -std::numeric_limits<float>::infinity();
    float running_sum = 0.0f;
    float scores[kKeyBlock];
    for (std::size_t j0 = 0; j0 < visible; j0 += kKeyBlock) {
      const std::size_t nb = std::min(kKeyBlock, visible - j0);
      float block_max = -std::numeric_limits<float>::infinity();
      for (std::size_t j = 0; j < nb; ++j) {
        scores[j] = dot_f32(qi, kh + (j0 + j) * hd, hd) * scale;
        block_max = std::max(block_max, scores[j]);
      }
      const float new_max = std::max(running_max, block_max);
      const float correction = std::exp(running_max - new_max);
      if (correction != 1.0f) {
        scale_f32(oi, correction, hd);
        running_sum *= correction;
      }
      for (std::size_t j = 0; j < nb; ++j) {
        const float p = std::exp(scores[j] - new_max);
        running_sum += p;
        axpy_f32(p, vh + (j0 + j) * hd, oi, hd);
      }
      running_max = new_max;
    }
    if (running_sum > 0.0f) scale_f32(oi, 1.0f / running_sum, hd);
  }
}

}  // namespace lclm
