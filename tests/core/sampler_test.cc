#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "util/error.h"

namespace lclm {
namespace {

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

std::map<std::int32_t, int> histogram(SamplingParams p, const std::vector<float>& logits,
                                      int draws) {
  Sampler s(p);
  std::map<std::int32_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[s.sample(logits, {})];
  return counts;
}

// NaN weights once ran to exit 0, printing token 0 over and over.
TEST(Sampler, NaNOrInfiniteLogitsAreAnErrorNamingTheCause) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    for (float temperature : {0.0f, 0.8f}) {
      SamplingParams p;
      p.temperature = temperature;
      Sampler s(p);
      const std::vector<float> logits = {0.1f, bad, -1.0f};
      std::string message;
      try {
        s.sample(logits, {});
      } catch (const Error& e) {
        message = e.what();
      }
      EXPECT_NE(message.find("weights hold NaN or Inf"), std::string::npos) << message;
      EXPECT_NE(message.find("token 1"), std::string::npos) << message;
    }
  }
  // -Inf is a masked token, not an error.
  Sampler s(greedy());
  EXPECT_EQ(s.sample(std::vector<float>{-INFINITY, 0.5f}, {}), 1);
}

TEST(Sampler, GreedyTakesArgmaxAndBreaksTiesByLowestId) {
  Sampler s(greedy());
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 2.0f, -1.0f, 2.0f}, {}), 1);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p = greedy();
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  // 3.0 -> 1.5 for the repeated id 0, so id 1 (2.0) wins.
  EXPECT_EQ(s.sample(std::vector<float>{3.0f, 2.0f, 0.0f}, std::vector<std::int32_t>{0}), 1);
  // -0.5 -> -1.0 for repeated id 1, so id 0 (-0.9) wins.
  EXPECT_EQ(s.sample(std::vector<float>{-0.9f, -0.5f}, std::vector<std::int32_t>{1}), 0);
  // Outside repeat_last_n the token is not penalised.
  p.repeat_last_n = 1;
  Sampler window(p);
  EXPECT_EQ(window.sample(std::vector<float>{3.0f, 2.0f}, std::vector<std::int32_t>{0, 1}), 0);
}

// OpenAI's penalties over the window: frequency x count, presence once per
// distinct token; the margins (0.1) show the exact amounts subtracted.
TEST(Sampler, FrequencyAndPresencePenaltiesSubtractPerCountAndOnce) {
  const std::vector<float> logits{3.0f, 2.0f, 1.0f};
  const std::vector<std::int32_t> three_zeros{0, 0, 0};
  const auto pick = [&](float frequency, float presence, const std::vector<std::int32_t>& history) {
    SamplingParams p = greedy();
    p.frequency_penalty = frequency;
    p.presence_penalty = presence;
    return Sampler(p).sample(logits, history);
  };
  EXPECT_EQ(pick(0.4f, 0.0f, three_zeros), 1);  // 3 - 3 x 0.4 = 1.8 < 2
  EXPECT_EQ(pick(0.3f, 0.0f, three_zeros), 0);  // 3 - 0.9 = 2.1
  EXPECT_EQ(pick(0.0f, 1.1f, three_zeros), 1);  // 3 - 1.1 = 1.9: once, not per count
  EXPECT_EQ(pick(0.0f, 0.9f, three_zeros), 0);  // 2.1
  EXPECT_EQ(pick(0.2f, 0.5f, three_zeros), 1);  // 3 - 0.6 - 0.5 = 1.9
  // A negative penalty favours repeats: 2 + 1.5 > 3.
  EXPECT_EQ(pick(0.0f, -1.5f, std::vector<std::int32_t>{1}), 1);
  // Outside repeat_last_n nothing is subtracted.
  SamplingParams p = greedy();
  p.frequency_penalty = 2.0f;
  p.repeat_last_n = 1;
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<std::int32_t>{0, 0, 2}), 0);
}

// The bias is added before everything else: +2.5 lifts token 2 (1.0) over
// token 0 (3.0), -100 bans the top one, and an id past the vocabulary is
// an error naming it.
TEST(Sampler, LogitBiasIsAddedFirst) {
  const std::vector<float> logits{3.0f, 2.0f, 1.0f};
  SamplingParams p = greedy();
  p.logit_bias = {{2, 2.5f}};
  EXPECT_EQ(Sampler(p).sample(logits, {}), 2);
  p.logit_bias = {{2, 1.9f}};
  EXPECT_EQ(Sampler(p).sample(logits, {}), 0);
  p.logit_bias = {{0, -100.0f}};
  EXPECT_EQ(Sampler(p).sample(logits, {}), 1);
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  Sampler sampled(p);
  for (int i = 0; i < 200; ++i) EXPECT_NE(sampled.sample(logits, {}), 0);
  p.logit_bias = {{3, 1.0f}};
  try {
    Sampler(p).sample(logits, {});
    FAIL() << "no error for a bias past the vocabulary";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 3, past the vocabulary (3 tokens)"),
              std::string::npos)
        << e.what();
  }
}

// log softmax of the logits after the bias (and penalties), at temperature
// 1 whatever the sampling temperature; the top alternatives most likely
// first, ties by lower id.
TEST(Sampler, LogprobsAreTheLogSoftmaxAfterBiasAndPenalties) {
  const std::vector<float> logits{1.0f, 3.0f, 2.0f, 3.0f};
  const double log_z = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0));
  SamplingParams p = greedy();
  TokenLogprobs lp;
  EXPECT_EQ(Sampler(p).sample(logits, {}, &lp, 3), 1);
  EXPECT_EQ(lp.id, 1);
  EXPECT_NEAR(lp.logprob, 3.0 - log_z, 1e-6);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_EQ(lp.top[2].first, 2);
  EXPECT_NEAR(lp.top[2].second, 2.0 - log_z, 1e-6);
  // A bias moves the distribution reported, not only the choice.
  p.logit_bias = {{0, 3.0f}};
  p.temperature = 0.1f;
  EXPECT_EQ(Sampler(p).sample(logits, {}, &lp, 0), 0);
  const double biased_z = std::log(std::exp(4.0) + 2 * std::exp(3.0) + std::exp(2.0));
  EXPECT_NEAR(lp.logprob, 4.0 - biased_z, 1e-6);
  EXPECT_TRUE(lp.top.empty());
  // Without the out-parameter the draws are the same (same seed, same rng use).
  SamplingParams s;
  s.seed = 3;
  s.temperature = 1.0f;
  Sampler a(s), b(s);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits, {}, &lp, 5), b.sample(logits, {}));
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 1;
  p.min_p = 0.0f;
  p.top_p = 1.0f;
  const auto counts = histogram(p, {0.0f, 0.5f, 0.4f}, 200);
  EXPECT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts.begin()->first, 1);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.min_p = 0.0f;
  p.top_p = 0.7f;
  // Probabilities 0.5, 0.3, 0.2: top-p 0.7 keeps ids 0 and 1 only.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  const auto counts = histogram(p, logits, 2000);
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_GT(counts.at(0), counts.at(1));
  EXPECT_NEAR(counts.at(0) / 2000.0, 0.5 / 0.8, 0.05);
}

TEST(Sampler, MinPDropsTokensBelowTheFractionOfTheTop) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.3f;
  // 0.6, 0.25, 0.15: the threshold is 0.18, so id 2 goes.
  const std::vector<float> logits = {std::log(0.6f), std::log(0.25f), std::log(0.15f)};
  const auto counts = histogram(p, logits, 2000);
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_EQ(counts.size(), 2u);
}

TEST(Sampler, TemperatureFlattensOrSharpens) {
  SamplingParams p;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  const std::vector<float> logits = {1.0f, 0.0f};
  p.temperature = 0.25f;  // p0 = 1 / (1 + e^-4) = 0.982
  EXPECT_NEAR(histogram(p, logits, 4000)[0] / 4000.0, 0.982, 0.02);
  p.temperature = 4.0f;  // p0 = 1 / (1 + e^-0.25) = 0.562
  EXPECT_NEAR(histogram(p, logits, 4000)[0] / 4000.0, 0.562, 0.03);
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 0;
  p.min_p = 0.0f;
  p.seed = 42;
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
  Sampler a(p), b(p);
  std::vector<std::int32_t> da, db;
  for (int i = 0; i < 50; ++i) {
    da.push_back(a.sample(logits, {}));
    db.push_back(b.sample(logits, {}));
  }
  EXPECT_EQ(da, db);
  p.seed = 43;
  Sampler c(p);
  std::vector<std::int32_t> dc;
  for (int i = 0; i < 50; ++i) dc.push_back(c.sample(logits, {}));
  EXPECT_NE(da, dc);
}

TEST(Sampler, RejectsOutOfRangeParameters) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler{p}, std::runtime_error);
  p = {};
  p.temperature = -1.0f;
  EXPECT_THROW(Sampler{p}, std::runtime_error);
  p = {};
  p.min_p = 1.0f;
  EXPECT_THROW(Sampler{p}, std::runtime_error);
  p = {};
  p.frequency_penalty = 2.5f;
  EXPECT_THROW(Sampler{p}, std::runtime_error);
  p = {};
  p.presence_penalty = -2.5f;
  EXPECT_THROW(Sampler{p}, std::runtime_error);
  p = {};
  p.logit_bias = {{5, 101.0f}};
  EXPECT_THROW(Sampler{p}, std::runtime_error);
  p.logit_bias = {{-1, 1.0f}};
  EXPECT_THROW(Sampler{p}, std::runtime_error);
}

TEST(ChatTemplate, FormatsChatMLExactly) {
  EXPECT_EQ(format_chatml({{"system", "Be brief."}, {"user", "Hi"}}, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(format_chatml({{"user", "x"}}, false), "<|im_start|>user\nx<|im_end|>\n");
}

TEST(Utf8Stream, HoldsBackSplitCharacters) {
  Utf8Stream s;
  const std::string euro = "\xe2\x82\xac";  // U+20AC in three bytes
  EXPECT_EQ(s.push("a" + euro.substr(0, 1)), "a");
  EXPECT_EQ(s.push(euro.substr(1, 1)), "");
  EXPECT_EQ(s.push(euro.substr(2) + "b"), euro + "b");
  EXPECT_EQ(s.push("\xf0\x9f"), "");
  EXPECT_EQ(s.flush(), "\xf0\x9f");
}

}  // namespace
}  // namespace lclm
