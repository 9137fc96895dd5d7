#include "runtime/scoring.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "util/error.h"

namespace lclm {

std::vector<float> score_tokens(const Qwen3Model& model, std::span<const std::int32_t> ids,
                                const float* inputs, std::size_t first, std::size_t chunk) {
  const std::size_t n = ids.size();
  if (first == 0 || first > n) {
    throw Error("score_tokens: the first scored position must be in [1, " + std::to_string(n) +
                "], not " + std::to_string(first));
  }
  const auto H = static_cast<std::size_t>(model.config().hidden_size);
  const auto V = static_cast<std::size_t>(model.config().vocab_size);
  const auto context = static_cast<std::size_t>(model.config().max_position_embeddings);
  if (n > context) {
    throw Error("the text to score is " + std::to_string(n) +
                " positions, more than the model's context of " + std::to_string(context));
  }
  for (std::size_t i = first; i < n; ++i) {
    if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= V) {
      throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary of " + std::to_string(V));
    }
  }
  chunk = std::max<std::size_t>(1, chunk);
  constexpr std::size_t kLogitRows = 8;
  std::vector<float> scores;
  scores.reserve(n - first);
  KVCache cache = model.make_cache(n, n);
  std::vector<float> x, logits(kLogitRows * V);
  // Position p's output predicts ids[p + 1]: only positions first-1 .. n-2
  // need logits, but every position is read for the cache.
  for (std::size_t start = 0; start + 1 < n; start += chunk) {
    const std::size_t len = std::min(chunk, n - 1 - start);
    x.assign(inputs + start * H, inputs + (start + len) * H);
    model.forward(x.data(), len, cache, AttentionMask::Causal);
    std::size_t row = start < first - 1 ? first - 1 - start : 0;
    for (; row < len; row += kLogitRows) {
      const std::size_t rows = std::min(kLogitRows, len - row);
      model.logits(x.data() + row * H, rows, logits.data());
      for (std::size_t r = 0; r < rows; ++r) {
        const float* l = logits.data() + r * V;
        // log softmax in double, as the sampler's logprobs: log(sum exp(l - max)).
        const float max_logit = *std::max_element(l, l + V);
        double sum = 0;
        for (std::size_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v]) - max_logit);
        const double log_z = max_logit + std::log(sum);
        const auto target = static_cast<std::size_t>(ids[start + row + r + 1]);
        scores.push_back(static_cast<float>(l[target] - log_z));
      }
    }
  }
  return scores;
}

}  // namespace lclm
