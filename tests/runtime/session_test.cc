// A Session keeps the KV cache of what it has read and, for a prompt that
// starts the same way, prefills only the rest: the tokens must be those of a
// fresh run, and the positions kept exactly the shared prefix.
#include "runtime/session.h"

#include <gtest/gtest.h>

#include <random>

#include "core/test_models.h"

namespace lclm {
namespace {

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto dir = testing::scratch_dir("session_model");
    RandomQwen3Spec spec;
    spec.config = testing::tiny_config();
    spec.seed = 5;
    spec.weight_std = 0.08f;
    write_random_qwen3(dir, spec);
    model_ = new Qwen3Model(Qwen3Model::load(dir));
  }
  static void TearDownTestSuite() { delete model_; }

  static std::vector<std::int32_t> random_ids(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::int32_t> ids(n);
    for (auto& id : ids) id = static_cast<std::int32_t>(rng() % 1000);
    return ids;
  }
  static GenerationOptions greedy(int n) {
    GenerationOptions o;
    o.n_predict = n;
    o.sampling.temperature = 0;
    o.prefill_chunk = 7;  // several chunks, not aligned with the reused prefix
    return o;
  }
  static std::vector<std::int32_t> fresh(const std::vector<std::int32_t>& prompt, int n) {
    return Session(*model_).generate(prompt, greedy(n)).tokens;
  }

  static Qwen3Model* model_;
};
Qwen3Model* SessionTest::model_ = nullptr;

TEST_F(SessionTest, TheNextTurnReusesPromptAndReplyAndGivesTheTokensOfAFreshRun) {
  Session s(*model_);
  const std::vector<std::int32_t> first = random_ids(20, 1);
  const GenerationStats a = s.generate(first, greedy(6));
  EXPECT_EQ(a.reused_positions, 0u);
  ASSERT_EQ(a.tokens.size(), 6u);
  EXPECT_EQ(a.tokens, fresh(first, 6));
  // The last generated token was sampled but never run through the model.
  EXPECT_EQ(s.cached_positions(), 20u + 5u);

  std::vector<std::int32_t> next = first;
  next.insert(next.end(), a.tokens.begin(), a.tokens.end());
  const std::vector<std::int32_t> more = random_ids(9, 2);
  next.insert(next.end(), more.begin(), more.end());
  const GenerationStats b = s.generate(next, greedy(6));
  EXPECT_EQ(b.reused_positions, 25u);
  EXPECT_EQ(b.prompt_tokens, next.size());
  EXPECT_EQ(b.tokens, fresh(next, 6));
}

TEST_F(SessionTest, KeepsExactlyTheSharedPrefix) {
  Session s(*model_);
  std::vector<std::int32_t> prompt = random_ids(30, 3);
  s.generate(prompt, greedy(2));

  // The same prompt again: all but its last position, whose hidden state
  // the first token is sampled from.
  GenerationStats again = s.generate(prompt, greedy(4));
  EXPECT_EQ(again.reused_positions, 29u);
  EXPECT_EQ(again.tokens, fresh(prompt, 4));

  // A prompt that differs at position 11 keeps 11 positions.
  prompt[11] = (prompt[11] + 1) % 1000;
  const GenerationStats changed = s.generate(prompt, greedy(4));
  EXPECT_EQ(changed.reused_positions, 11u);
  EXPECT_EQ(changed.tokens, fresh(prompt, 4));

  // A shorter prompt that the cache holds whole.
  const std::vector<std::int32_t> head(prompt.begin(), prompt.begin() + 8);
  const GenerationStats shorter = s.generate(head, greedy(3));
  EXPECT_EQ(shorter.reused_positions, 7u);
  EXPECT_EQ(shorter.tokens, fresh(head, 3));

  s.reset();
  EXPECT_EQ(s.cached_positions(), 0u);
  EXPECT_EQ(s.generate(head, greedy(3)).reused_positions, 0u);
}

TEST_F(SessionTest, AnEvictingPolicyStartsEmptyAndKeepsNothing) {
  Session s(*model_);
  const std::vector<std::int32_t> prompt = random_ids(40, 4);
  s.generate(prompt, greedy(3));
  GenerationOptions o = greedy(3);
  o.kv_policy.kind = KVPolicyKind::StreamingLLM;
  o.kv_policy.ratio = 4;
  const GenerationStats evicted = s.generate(prompt, o);
  EXPECT_EQ(evicted.reused_positions, 0u);
  EXPECT_EQ(s.cached_positions(), 0u);
  EXPECT_EQ(evicted.tokens, Session(*model_).generate(prompt, o).tokens);
  EXPECT_EQ(s.generate(prompt, greedy(3)).reused_positions, 0u);
}

TEST_F(SessionTest, AnotherContextLimitStartsAgain) {
  Session s(*model_);
  const std::vector<std::int32_t> prompt = random_ids(16, 6);
  s.generate(prompt, greedy(2));
  GenerationOptions o = greedy(2);
  o.context = 64;
  EXPECT_EQ(s.generate(prompt, o).reused_positions, 0u);
  EXPECT_EQ(s.generate(prompt, o).reused_positions, 15u);
}

// -n -1 once reserved keys and values for the whole context (256 MiB for a
// 3-token prompt on the shipped model): the cache starts with room for the
// prompt and kOpenEndedReserve tokens and doubles from there.
TEST_F(SessionTest, AnOpenEndedAnswerDoesNotReserveTheWholeContext) {
  const std::vector<std::int32_t> prompt = random_ids(3, 8);
  GenerationOptions o = greedy(-1);
  int left = 4;
  const GenerationStats short_answer =
      Session(*model_).generate(prompt, o, [&](std::int32_t) { return --left > 0; });
  ASSERT_EQ(short_answer.tokens.size(), 4u);
  const auto& c = model_->config();
  const std::size_t per_position =
      2 * static_cast<std::size_t>(c.num_hidden_layers * c.num_key_value_heads * c.head_dim) *
      sizeof(float);
  EXPECT_EQ(short_answer.kv_cache_bytes, (3 + Session::kOpenEndedReserve) * per_position);
  ASSERT_LT(3 + Session::kOpenEndedReserve, static_cast<std::size_t>(c.max_position_embeddings));
  // And it still runs to the context's end when nothing stops it.
  const GenerationStats to_the_end = Session(*model_).generate(prompt, o);
  EXPECT_EQ(to_the_end.stop, StopReason::ContextFull);
  EXPECT_EQ(to_the_end.tokens.size(), static_cast<std::size_t>(c.max_position_embeddings) - 3);
}

TEST_F(SessionTest, AFailedCallLeavesAUsableSession) {
  Session s(*model_);
  const std::vector<std::int32_t> prompt = random_ids(16, 7);
  s.generate(prompt, greedy(2));
  GenerationOptions o = greedy(2);
  o.context = 16;  // the prompt does not fit
  EXPECT_NE(testing::error_of([&] { s.generate(prompt, o); }).find("-c"), std::string::npos);
  const GenerationStats after = s.generate(prompt, greedy(2));
  EXPECT_EQ(after.tokens, fresh(prompt, 2));
}

}  // namespace
}  // namespace lclm
