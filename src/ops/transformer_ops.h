// Element-wise and per-row operations of a Qwen3 transformer block.
#pragma once

#include <cstddef>
#include <vector>

namespace lclm {

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, for n_rows rows
// of width dim. out may alias x.
void rms_norm(const float* x, const float* weight, float* out, std::size_t n_rows, std::size_t dim,
              float eps);

// Rotate-half RoPE: pairs (i, i + head_dim/2) of each head are rotated by the
// angle position * inv_freq[i]. cos/sin tables are built per position in f32,
// the way the reference implementation computes them.
class RopeTable {
 public:
  RopeTable(std::size_t head_dim, double theta);
  // Rotates n_heads heads of x (contiguous, head_dim each) at this position.
  void apply(float* x, std::size_t n_heads, std::size_t position) const;
  std::size_t head_dim() const { return head_dim_; }

 private:
  std::size_t head_dim_;
  std::vector<float> inv_freq_;  // head_dim / 2
};

// gate[i] = silu(gate[i]) * up[i], length n.
void silu_mul(float* gate, const float* up, std::size_t n);

// x[i] += y[i], length n.
void add_inplace(float* x, const float* y, std::size_t n);

// Numerically stable softmax over x[0..n) in place.
void softmax(float* x, std::size_t n);

}  // namespace lclm
