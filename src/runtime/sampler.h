// Picks the next token from logits. The steps apply in llama.cpp's order:
// logit bias -> penalties (repetition, frequency, presence) -> top-k ->
// top-p -> min-p -> temperature -> draw. temperature <= 0 means greedy
// (argmax after the bias and the penalties).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace lclm {

struct SamplingParams {
  float temperature = 0.8f;
  int top_k = 40;               // <= 0: keep all
  float top_p = 0.95f;          // >= 1: keep all
  float min_p = 0.05f;          // <= 0: keep all
  float repeat_penalty = 1.0f;  // 1: off
  // OpenAI's penalties, subtracted from the logit of each token in the
  // window: frequency_penalty once per occurrence, presence_penalty once.
  // In [-2, 2]; 0: off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int repeat_last_n = 64;  // tokens the penalties look back over
  // (token id, bias in [-100, 100]) added to the logits first; -100 in
  // effect bans a token. Ids past the vocabulary are an error at sampling.
  std::vector<std::pair<std::int32_t, float>> logit_bias;
  std::uint64_t seed = 0;

  // Throws lclm::Error naming the flag when a value is out of range.
  void validate() const;
};

// A sampled token's log-probability and the most likely alternatives, from
// the distribution the sampler drew from before its filters: softmax of the
// logits after the logit bias and the penalties, at temperature 1 (what
// OpenAI's logprobs report). top: the k most likely, most likely first
// (ties: lower id first).
struct TokenLogprobs {
  std::int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<std::int32_t, float>> top;
};

// The most top_logprobs a request may ask (OpenAI's limit).
inline constexpr int kMaxTopLogprobs = 20;

class Sampler {
 public:
  explicit Sampler(SamplingParams params);

  // history: the tokens so far (prompt and generated), for the penalty.
  // logprobs (when given): the drawn token's log-probability and the
  // top_logprobs (0 to kMaxTopLogprobs) most likely tokens.
  std::int32_t sample(std::span<const float> logits, std::span<const std::int32_t> history,
                      TokenLogprobs* logprobs = nullptr, int top_logprobs = 0);

  const SamplingParams& params() const { return params_; }

 private:
  // The token, from the logits after bias and penalties (kept in adjusted_
  // when asked).
  std::int32_t draw(std::span<const float> logits, std::span<const std::int32_t> history,
                    bool keep_adjusted);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, std::int32_t>> candidates_;
  std::vector<float> adjusted_;  // the logits after bias and penalties, for logprobs
  std::vector<std::int32_t> order_;  // token ids, partly sorted for top_logprobs (kept per call)
};

}  // namespace lclm
