// Continuous batching: generations that join a DecodeBatch at different
// steps, with different prompts, lengths and samplers, each get exactly the
// tokens they get alone; one that is cancelled or fails leaves the others
// untouched.
#include "runtime/decode_batch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>

#include "core/test_models.h"
#include "format/quant_blocks.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace lclm {
namespace {

struct Request {
  std::vector<std::int32_t> ids;
  GenerationOptions options;
  std::size_t join_step = 0;  // the batch step it joins at
  TokenCallback on_token;
};

std::vector<std::int32_t> random_ids(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % 1000);
  return ids;
}

// Request i: a prompt of 5 + 9 i tokens (several 7-position chunks for the
// longer ones), 6 + 2 i tokens, seeded sampling at temperature 0.9 for the
// odd ones and greedy for the even ones; it joins at step 2 i.
std::vector<Request> requests(std::size_t count) {
  std::vector<Request> out;
  for (std::size_t i = 0; i < count; ++i) {
    Request r;
    r.ids = random_ids(5 + 9 * i, static_cast<unsigned>(100 + i));
    r.options.n_predict = static_cast<int>(6 + 2 * i);
    r.options.prefill_chunk = 7;
    r.options.sampling.temperature = i % 2 == 1 ? 0.9f : 0.0f;
    r.options.sampling.seed = 1000 + i;
    r.join_step = 2 * i;
    out.push_back(std::move(r));
  }
  return out;
}

// Runs the requests through one DecodeBatch (each joining at its step),
// returning each one's stats or, where it failed, its error message.
struct Outcome {
  std::optional<GenerationStats> stats;
  std::string error;
};
std::vector<Outcome> run_batched(const Qwen3Model& model, const std::vector<Request>& rs) {
  std::vector<Session> sessions;
  for (std::size_t i = 0; i < rs.size(); ++i) sessions.emplace_back(model);
  std::vector<std::vector<float>> inputs(rs.size());
  std::vector<std::unique_ptr<Generation>> gens(rs.size());
  std::vector<Outcome> out(rs.size());
  DecodeBatch batch(model);
  std::size_t finished = 0;
  for (std::size_t step = 0; finished < rs.size(); ++step) {
    EXPECT_LT(step, 1000u) << "the batch does not finish";
    if (step >= 1000) break;
    std::vector<Generation*> running;
    for (std::size_t i = 0; i < rs.size(); ++i) {
      if (rs[i].join_step == step) {
        const auto H = static_cast<std::size_t>(model.config().hidden_size);
        inputs[i].resize(rs[i].ids.size() * H);
        model.embed(rs[i].ids, inputs[i].data());
        gens[i] = std::make_unique<Generation>(sessions[i], rs[i].ids, inputs[i].data(),
                                               rs[i].options, rs[i].on_token);
      }
      if (gens[i]) running.push_back(gens[i].get());
    }
    if (!running.empty()) batch.step(running);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      if (!gens[i] || !gens[i]->done()) continue;
      try {
        out[i].stats = gens[i]->finish();
      } catch (const std::exception& e) {
        out[i].error = e.what();
      }
      gens[i].reset();
      ++finished;
    }
  }
  return out;
}

GenerationStats alone(const Qwen3Model& model, const Request& r) {
  return Session(model).generate(r.ids, r.options, r.on_token);
}

class DecodeBatchTest : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::scratch_dir("decode_batch_model");
    RandomQwen3Spec spec;
    spec.config = testing::tiny_config();
    spec.seed = 9;
    spec.weight_std = 0.08f;
    write_random_qwen3(dir_, spec);
  }
  Qwen3Model load() const {
    Qwen3LoadOptions o;
    if (std::string(GetParam()) != "bf16") o.quant = parse_quant_type(GetParam(), "test");
    return Qwen3Model::load(dir_, o);
  }
  static std::filesystem::path dir_;
};
std::filesystem::path DecodeBatchTest::dir_;

// Up to kMatvecMaxRows at once (five here): every token as alone, for greedy
// and seeded sampling, with prompts read in chunks between others' tokens.
TEST_P(DecodeBatchTest, EachGenerationGetsTheTokensItGetsAlone) {
  const Qwen3Model model = load();
  const std::vector<Request> rs = requests(5);
  const std::vector<Outcome> batched = run_batched(model, rs);
  for (std::size_t i = 0; i < rs.size(); ++i) {
    ASSERT_TRUE(batched[i].stats) << i << ": " << batched[i].error;
    const GenerationStats a = alone(model, rs[i]);
    EXPECT_EQ(batched[i].stats->tokens, a.tokens) << "request " << i;
    EXPECT_EQ(batched[i].stats->tokens.size(), static_cast<std::size_t>(rs[i].options.n_predict));
    EXPECT_EQ(batched[i].stats->prompt_tokens, rs[i].ids.size());
    EXPECT_EQ(batched[i].stats->stop, StopReason::Length);
  }
}

// One stopped by its callback after three tokens and one whose callback
// throws: the first ends as a callback stop, the second fails with its
// error, and the others still get the tokens they get alone.
TEST_P(DecodeBatchTest, ACancelledAndAFailingGenerationLeaveTheOthersAlone) {
  const Qwen3Model model = load();
  std::vector<Request> rs = requests(4);
  int seen = 0;
  rs[1].on_token = [&seen](std::int32_t) { return ++seen < 3; };
  rs[2].on_token = [](std::int32_t) -> bool { throw std::runtime_error("client went away"); };
  const std::vector<Outcome> batched = run_batched(model, rs);
  ASSERT_TRUE(batched[1].stats);
  EXPECT_EQ(batched[1].stats->stop, StopReason::Callback);
  EXPECT_EQ(batched[1].stats->tokens.size(), 3u);
  EXPECT_FALSE(batched[2].stats);
  EXPECT_EQ(batched[2].error, "client went away");
  for (std::size_t i : {0u, 3u}) {
    ASSERT_TRUE(batched[i].stats) << i << ": " << batched[i].error;
    EXPECT_EQ(batched[i].stats->tokens, alone(model, rs[i]).tokens) << "request " << i;
  }
}

// More generations than the fused matvec takes: the batch runs on the
// prefill kernels and still finishes every one, with the tokens (greedy,
// so rounding would have to flip an argmax) they get alone.
TEST_P(DecodeBatchTest, ABatchLargerThanTheMatvecStillDecodesEveryOne) {
  const Qwen3Model model = load();
  std::vector<Request> rs = requests(kMatvecMaxRows + 3);
  for (Request& r : rs) {
    r.options.sampling.temperature = 0;
    r.join_step = 0;
  }
  const std::vector<Outcome> batched = run_batched(model, rs);
  for (std::size_t i = 0; i < rs.size(); ++i) {
    ASSERT_TRUE(batched[i].stats) << i << ": " << batched[i].error;
    EXPECT_EQ(batched[i].stats->tokens, alone(model, rs[i]).tokens) << "request " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Bf16AndQuantized, DecodeBatchTest,
                         ::testing::Values("bf16", "q8_0", "q4_0"),
                         [](const auto& p) { return std::string(p.param); });

// A session runs one generation at a time.
TEST(Generation, ASessionRunsOneGenerationAtATime) {
  const auto dir = testing::scratch_dir("one_generation_model");
  RandomQwen3Spec spec;
  spec.config = testing::tiny_config();
  write_random_qwen3(dir, spec);
  const Qwen3Model model = Qwen3Model::load(dir);
  Session s(model);
  const std::vector<std::int32_t> ids = random_ids(4, 1);
  std::vector<float> inputs(ids.size() * static_cast<std::size_t>(spec.config.hidden_size));
  model.embed(ids, inputs.data());
  GenerationOptions o;
  o.n_predict = 2;
  {
    Generation g(s, ids, inputs.data(), o);
    EXPECT_NE(testing::error_of([&] { Generation(s, ids, inputs.data(), o); }).find("already"),
              std::string::npos);
    EXPECT_NE(testing::error_of([&] { g.finish(); }).find("still running"), std::string::npos);
  }
  // Dropped mid-prefill: the session is free again, and empty.
  EXPECT_EQ(s.cached_positions(), 0u);
  EXPECT_EQ(s.generate(ids, o).tokens.size(), 2u);
}

}  // namespace
}  // namespace lclm
