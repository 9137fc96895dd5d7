#include "quant/logit_error.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace lclm {
namespace {

// log softmax(x)[i] for x [n], in double.
std::vector<double> log_softmax(const float* x, std::size_t n) {
  const double top = *std::max_element(x, x + n);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += std::exp(x[i] - top);
  const double log_sum = top + std::log(sum);
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = x[i] - log_sum;
  return out;
}

}  // namespace

void LogitError::add(const float* ref, const float* got, std::size_t n, std::size_t vocab,
                     const std::int32_t* next) {
  for (std::size_t r = 0; r < n; ++r) {
    const float* a = ref + r * vocab;
    const float* b = got + r * vocab;
    for (std::size_t i = 0; i < vocab; ++i) {
      const double d = static_cast<double>(b[i]) - a[i];
      err2_ += d * d;
      ref2_ += static_cast<double>(a[i]) * a[i];
      max_abs_ = std::max(max_abs_, std::fabs(d));
    }
    agree_ += std::max_element(a, a + vocab) - a == std::max_element(b, b + vocab) - b;
    const std::vector<double> la = log_softmax(a, vocab), lb = log_softmax(b, vocab);
    double kl = 0;
    for (std::size_t i = 0; i < vocab; ++i) kl += std::exp(la[i]) * (la[i] - lb[i]);
    kl_ += kl;
    if (next != nullptr && next[r] >= 0) {
      nll_ref_ -= la[static_cast<std::size_t>(next[r])];
      nll_got_ -= lb[static_cast<std::size_t>(next[r])];
      ++scored_;
    }
    ++positions_;
  }
}

double LogitError::relative_rms() const {
  return ref2_ > 0 ? std::sqrt(err2_ / ref2_) : 0.0;
}

double LogitError::top1_agreement() const {
  return positions_ ? static_cast<double>(agree_) / static_cast<double>(positions_) : 0.0;
}

double LogitError::mean_kl() const {
  return positions_ ? kl_ / static_cast<double>(positions_) : 0.0;
}

double LogitError::perplexity_ref() const {
  return scored_ ? std::exp(nll_ref_ / static_cast<double>(scored_)) : 0.0;
}

double LogitError::perplexity_got() const {
  return scored_ ? std::exp(nll_got_ / static_cast<double>(scored_)) : 0.0;
}

}  // namespace lclm
