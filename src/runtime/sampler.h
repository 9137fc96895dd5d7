// Picks the next token from logits. The filters apply in llama.cpp's order:
// repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
// temperature <= 0 means greedy (argmax after the repetition penalty).
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
  int repeat_last_n = 64;       // tokens the penalty looks back over
  std::uint64_t seed = 0;

  // Throws lclm::Error naming the flag when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams params);

  // history: the tokens so far (prompt and generated), for the penalty.
  std::int32_t sample(std::span<const float> logits, std::span<const std::int32_t> history);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, std::int32_t>> candidates_;
};

}  // namespace lclm
