#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "util/error.h"

namespace lclm {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f && std::isfinite(temperature))) {
    throw Error("--temp must be a finite number >= 0");
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) throw Error("--top-p must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p < 1.0f)) throw Error("--min-p must be in [0, 1)");
  if (!(repeat_penalty > 0.0f)) throw Error("--repeat-penalty must be > 0");
  if (repeat_last_n < 0) throw Error("--repeat-last-n must be >= 0");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    throw Error("--frequency-penalty must be in [-2, 2]");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    throw Error("--presence-penalty must be in [-2, 2]");
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0) throw Error("--logit-bias: token id " + std::to_string(id) + " is negative");
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      throw Error("--logit-bias: the bias of token " + std::to_string(id) +
                  " must be in [-100, 100]");
    }
  }
}

Sampler::Sampler(SamplingParams params) : params_(params), rng_(params.seed) {
  params_.validate();
}

std::int32_t Sampler::sample(std::span<const float> logits, std::span<const std::int32_t> history,
                             TokenLogprobs* logprobs, int top_logprobs) {
  const std::int32_t id = draw(logits, history, logprobs != nullptr);
  if (logprobs != nullptr) {
    // log softmax of the adjusted logits, in double: log(sum exp(l - max)).
    const float max_logit = *std::max_element(adjusted_.begin(), adjusted_.end());
    double sum = 0;
    for (const float l : adjusted_) sum += std::exp(static_cast<double>(l) - max_logit);
    const double log_z = max_logit + std::log(sum);
    const auto logprob = [&](std::int32_t t) {
      return static_cast<float>(adjusted_[static_cast<std::size_t>(t)] - log_z);
    };
    logprobs->id = id;
    logprobs->logprob = logprob(id);
    logprobs->top.clear();
    const auto k = static_cast<std::size_t>(std::clamp(top_logprobs, 0, kMaxTopLogprobs));
    if (k > 0) {
      std::vector<std::int32_t>& ids = order_;
      ids.resize(adjusted_.size());
      for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i);
      const auto more_likely = [&](std::int32_t a, std::int32_t b) {
        const float la = adjusted_[static_cast<std::size_t>(a)];
        const float lb = adjusted_[static_cast<std::size_t>(b)];
        return la > lb || (la == lb && a < b);
      };
      const std::size_t n = std::min(k, ids.size());
      std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n), ids.end(),
                        more_likely);
      for (std::size_t i = 0; i < n; ++i) logprobs->top.emplace_back(ids[i], logprob(ids[i]));
    }
  }
  return id;
}

std::int32_t Sampler::draw(std::span<const float> logits, std::span<const std::int32_t> history,
                           bool keep_adjusted) {
  candidates_.resize(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    // NaN or +Inf comes from broken weights (NaN or Inf in a file) and
    // would be sampled as token 0 or whatever compares first.
    if (std::isnan(logits[i]) || logits[i] == INFINITY) {
      throw Error("the model computed a " +
                  std::string(std::isnan(logits[i]) ? "NaN" : "infinite") + " logit (token " +
                  std::to_string(i) + "): its weights hold NaN or Inf values, or overflow");
    }
    candidates_[i] = {logits[i], static_cast<std::int32_t>(i)};
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (static_cast<std::size_t>(id) >= candidates_.size()) {
      throw Error("logit bias for token " + std::to_string(id) + ", past the vocabulary (" +
                  std::to_string(candidates_.size()) + " tokens)");
    }
    candidates_[static_cast<std::size_t>(id)].first += bias;
  }
  // The penalties over the last repeat_last_n tokens, each distinct token
  // once: the repetition penalty (CTRL-style) shrinks positive logits and
  // grows negative ones, then frequency x count and presence are subtracted.
  const bool penalize = params_.repeat_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
                        params_.presence_penalty != 0.0f;
  if (penalize && params_.repeat_last_n > 0) {
    const std::size_t n = std::min(history.size(), static_cast<std::size_t>(params_.repeat_last_n));
    std::unordered_map<std::int32_t, int> counts;
    for (auto it = history.end() - static_cast<std::ptrdiff_t>(n); it != history.end(); ++it) {
      ++counts[*it];
    }
    for (const auto& [id, count] : counts) {
      if (id < 0 || static_cast<std::size_t>(id) >= candidates_.size()) continue;
      float& l = candidates_[static_cast<std::size_t>(id)].first;
      l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
      l -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
    }
  }
  if (keep_adjusted) {
    adjusted_.resize(candidates_.size());
    for (std::size_t i = 0; i < candidates_.size(); ++i) adjusted_[i] = candidates_[i].first;
  }
  auto by_logit_desc = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (params_.temperature <= 0.0f) {
    return std::min_element(candidates_.begin(), candidates_.end(), by_logit_desc)->second;
  }

  std::size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < keep) {
    keep = static_cast<std::size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(keep),
                      candidates_.end(), by_logit_desc);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit_desc);
  }
  candidates_.resize(keep);

  // Softmax over the survivors (sorted, so the first is the max).
  std::vector<double> probs(keep);
  const double max_logit = candidates_.front().first;
  double sum = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(candidates_[i].first) - max_logit);
    sum += probs[i];
  }
  for (double& p : probs) p /= sum;

  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    std::size_t n = 0;
    while (n < keep) {
      cumulative += probs[n++];
      if (cumulative >= params_.top_p) break;
    }
    keep = n;
  }
  if (params_.min_p > 0.0f) {
    const double threshold = params_.min_p * probs.front();
    std::size_t n = 1;
    while (n < keep && probs[n] >= threshold) ++n;
    keep = n;
  }

  // Temperature rescales the surviving logits before the draw.
  std::vector<double> weights(keep);
  for (std::size_t i = 0; i < keep; ++i) {
    weights[i] =
        std::exp((static_cast<double>(candidates_[i].first) - max_logit) / params_.temperature);
  }
  std::discrete_distribution<std::size_t> draw(weights.begin(), weights.end());
  return candidates_[draw(rng_)].second;
}

}  // namespace lclm
