// Reference attention for the kernel and KV-policy tests: one query's
// softmax weights over the keys it sees, in double, straight from the
// definition.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "ops/attention.h"

namespace lclm::testing {

// softmax_j(q[i, h] . k[g, j] / sqrt(D)) for query i (at position pos0 + i)
// and query head h, g = h / (n_heads / n_kv_heads). q [n_q, n_heads * D];
// k [n_kv_heads, kv_stride, D]. Causal: keys 0..pos0 + i (at most n_keys);
// otherwise all n_keys.
inline std::vector<double> naive_attention_weights(const std::vector<float>& q, std::size_t i,
                                                   std::size_t h, std::size_t pos0,
                                                   const std::vector<float>& k, std::size_t n_keys,
                                                   const AttentionShape& s, bool causal) {
  const std::size_t g = h / (s.n_heads / s.n_kv_heads);
  const std::size_t visible = causal ? std::min(n_keys, pos0 + i + 1) : n_keys;
  std::vector<double> p(visible);
  for (std::size_t j = 0; j < visible; ++j) {
    double dot = 0;
    for (std::size_t d = 0; d < s.head_dim; ++d) {
      dot += double(q[(i * s.n_heads + h) * s.head_dim + d]) *
             k[(g * s.kv_stride + j) * s.head_dim + d];
    }
    p[j] = dot / std::sqrt(double(s.head_dim));
  }
  const double max = *std::max_element(p.begin(), p.end());
  double sum = 0;
  for (double& x : p) sum += (x = std::exp(x - max));
  for (double& x : p) x /= sum;
  return p;
}

}  // namespace lclm::testing
