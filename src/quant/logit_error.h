// How far one model's logits lie from a reference's (a quantized model's
// from the bf16 one's), accumulated over positions: what lclm-quant-error
// reports and the quantization tests bound.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lclm {

class LogitError {
 public:
  // ref, got [n, vocab] at the same positions; next [n] the token that
  // follows each position (for the perplexities), or nullptr.
  void add(const float* ref, const float* got, std::size_t n, std::size_t vocab,
           const std::int32_t* next = nullptr);

  std::size_t positions() const { return positions_; }
  // sqrt(sum (got - ref)^2 / sum ref^2) over every logit.
  double relative_rms() const;
  double max_abs() const { return max_abs_; }
  // Positions whose argmax is the same.
  double top1_agreement() const;
  // Mean over positions of KL(softmax(ref) || softmax(got)), in nats.
  double mean_kl() const;
  // exp(mean cross-entropy of the next tokens) under each model.
  double perplexity_ref() const;
  double perplexity_got() const;

 private:
  std::size_t positions_ = 0, agree_ = 0, scored_ = 0;
  double err2_ = 0, ref2_ = 0, max_abs_ = 0, kl_ = 0, nll_ref_ = 0, nll_got_ = 0;
};

}  // namespace lclm
