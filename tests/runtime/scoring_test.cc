// Scoring a text must give each token the log-probability a generation that
// produced it saw (the sampler's logprobs), whatever the chunking, and the
// Engine must score exactly the text's tokens after the prepared context.
#include "runtime/scoring.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/test_models.h"
#include "fixtures/random_lclm.h"
#include "runtime/engine.h"
#include "runtime/session.h"

namespace lclm {
namespace {

std::vector<std::int32_t> random_ids(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % 1000);
  return ids;
}

std::vector<float> embed(const Qwen3Model& model, const std::vector<std::int32_t>& ids) {
  std::vector<float> x(ids.size() * static_cast<std::size_t>(model.config().hidden_size));
  model.embed(ids, x.data());
  return x;
}

// log softmax of the model's logits after reading ids[0..n), at `target`,
// from one forward pass over just that prefix.
double prefix_logprob(const Qwen3Model& model, const std::vector<std::int32_t>& ids, std::size_t n,
                      std::int32_t target) {
  std::vector<std::int32_t> prefix(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
  std::vector<float> x = embed(model, prefix);
  KVCache cache = model.make_cache(n, n);
  model.forward(x.data(), n, cache, AttentionMask::Causal);
  const auto H = static_cast<std::size_t>(model.config().hidden_size);
  std::vector<float> logits(static_cast<std::size_t>(model.config().vocab_size));
  model.logits(x.data() + (n - 1) * H, 1, logits.data());
  double z = 0;
  for (const float l : logits) z += std::exp(static_cast<double>(l));
  return logits[static_cast<std::size_t>(target)] - std::log(z);
}

class ScoringTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = testing::scratch_dir("scoring_model");
    RandomQwen3Spec spec;
    spec.config = testing::tiny_config();
    spec.seed = 11;
    spec.weight_std = 0.08f;
    write_random_qwen3(dir, spec);
    model_ = new Qwen3Model(Qwen3Model::load(dir));
  }
  static void TearDownTestSuite() { delete model_; }
  static Qwen3Model* model_;
};
Qwen3Model* ScoringTest::model_ = nullptr;

TEST_F(ScoringTest, GeneratedTokensScoreWhatTheSamplerGaveThem) {
  const std::vector<std::int32_t> prompt = random_ids(13, 3);
  const std::vector<float> inputs = embed(*model_, prompt);
  Session session(*model_);
  GenerationOptions o;
  o.n_predict = 9;
  o.sampling.temperature = 0.9f;  // sampled, so unlikely tokens are scored too
  o.sampling.seed = 4;
  o.sampling.top_k = 0;
  o.sampling.top_p = 1;
  o.top_logprobs = 0;
  std::vector<std::int32_t> tokens;
  std::vector<float> seen;
  Generation g(session, prompt, inputs.data(), o, {});
  while (g.prefilling()) g.prefill_step();
  std::vector<float> logits(static_cast<std::size_t>(model_->config().vocab_size));
  while (!g.done()) {
    model_->logits(g.row(), 1, logits.data());
    const bool more = g.accept(logits.data());
    tokens.push_back(g.logprobs()->id);
    seen.push_back(g.logprobs()->logprob);
    if (more) {
      model_->forward(g.row(), 1, g.cache(), AttentionMask::Causal);
      g.forwarded();
    }
  }
  g.finish();
  ASSERT_EQ(tokens.size(), 9u);

  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), tokens.begin(), tokens.end());
  const std::vector<float> x = embed(*model_, all);
  // The sampler reports log-probabilities of the logits before temperature
  // (OpenAI's logprobs): with no bias or penalty, what scoring gives. It read
  // the answer one token at a time (the decode kernels), scoring reads it in
  // one pass (the prefill kernels): equal to float tolerance.
  const std::vector<float> scored = score_tokens(*model_, all, x.data(), prompt.size());
  ASSERT_EQ(scored.size(), tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_NEAR(scored[i], prefix_logprob(*model_, all, prompt.size() + i, tokens[i]), 1e-4);
    EXPECT_NEAR(scored[i], seen[i], 1e-3);
    EXPECT_LE(scored[i], 0.0f);
  }
}

TEST_F(ScoringTest, ChunkingDoesNotChangeTheScores) {
  const std::vector<std::int32_t> ids = random_ids(40, 8);
  const std::vector<float> x = embed(*model_, ids);
  const std::vector<float> whole = score_tokens(*model_, ids, x.data(), 1);
  ASSERT_EQ(whole.size(), 39u);
  for (std::size_t chunk : {1u, 3u, 7u, 39u}) {
    SCOPED_TRACE(chunk);
    const std::vector<float> parts = score_tokens(*model_, ids, x.data(), 1, chunk);
    ASSERT_EQ(parts.size(), whole.size());
    for (std::size_t i = 0; i < whole.size(); ++i) EXPECT_NEAR(parts[i], whole[i], 1e-4);
  }
  // Starting later scores the tail only, with the same values.
  const std::vector<float> tail = score_tokens(*model_, ids, x.data(), 30, 4);
  ASSERT_EQ(tail.size(), 10u);
  for (std::size_t i = 0; i < tail.size(); ++i) EXPECT_NEAR(tail[i], whole[29 + i], 1e-4);
}

TEST_F(ScoringTest, BadArgumentsAreErrors) {
  const std::vector<std::int32_t> ids = random_ids(5, 1);
  const std::vector<float> x = embed(*model_, ids);
  EXPECT_NE(testing::error_of([&] { score_tokens(*model_, ids, x.data(), 0); }).find("[1, 5]"),
            std::string::npos);
  std::vector<std::int32_t> bad = ids;
  bad[3] = 1 << 30;
  EXPECT_NE(testing::error_of([&] { score_tokens(*model_, bad, x.data(), 1); }).find("position 3"),
            std::string::npos);
}

TEST(EngineScore, ScoresTheTextsTokensAfterThePreparedContext) {
  const auto dir = testing::scratch_dir("engine_score");
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 2;
  write_random_lclm(dir, spec);
  auto engine = Engine::load(dir);
  const std::string context =
      "<|im_start|>user\n<|memory_start|>The keeper counted thirty-five ships on the fifth "
      "night.<|memory_end|>\nHow many ships?<|im_end|>\n<|im_start|>assistant\n";
  const std::string text = "Thirty-five ships.";
  for (std::int64_t ratio : {4, 8}) {
    SCOPED_TRACE(ratio);
    const ScoredText s = engine->score(context, text, ratio);
    EXPECT_EQ(s.ids, engine->tokenizer().encode(text));
    PreparedPrompt p = engine->prepare(context, ratio);
    EXPECT_EQ(s.context_positions, p.ids.size());
    EXPECT_GT(p.stats.latents, 0u);
    // The same as scoring the joined sequence by hand.
    const auto H = static_cast<std::size_t>(engine->decoder().config().hidden_size);
    const std::size_t c = p.ids.size();
    p.ids.insert(p.ids.end(), s.ids.begin(), s.ids.end());
    p.embeddings.resize(p.ids.size() * H);
    engine->decoder().embed(s.ids, p.embeddings.data() + c * H);
    const std::vector<float> want = score_tokens(engine->decoder(), p.ids, p.embeddings.data(), c);
    ASSERT_EQ(s.logprobs.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(s.logprobs[i], want[i]);
  }
  // No context: every token but the first.
  const ScoredText alone = engine->score("", text);
  EXPECT_EQ(alone.context_positions, 0u);
  EXPECT_EQ(alone.ids.size() + 1, engine->tokenizer().encode(text).size());
  EXPECT_NE(testing::error_of([&] { engine->score(context, ""); }).find("empty"),
            std::string::npos);
  std::string past_context;
  while (engine->tokenizer().encode(past_context).size() <= engine->max_context()) {
    for (int i = 0; i < 500; ++i) {
      past_context += ' ';
      past_context += std::to_string(i * 7919 % 1000);
    }
  }
  EXPECT_NE(testing::error_of([&] { engine->score("", past_context); }).find("context of"),
            std::string::npos);
}

}  // namespace
}  // namespace lclm
