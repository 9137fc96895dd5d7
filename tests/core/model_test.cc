#include <gtest/gtest.h>

#include <limits>
#include <tuple>

#include <nlohmann/json.hpp>

#include "format/json_file.h"
#include "model/qwen3_model.h"
#include "runtime/session.h"
#include "test_models.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::scratch_dir;
using testing::tiny_config;

std::filesystem::path write_tiny(const std::string& name, bool tied = true, int layers = 2) {
  const auto dir = scratch_dir(name);
  RandomQwen3Spec spec;
  spec.config = tiny_config();
  spec.config.tie_word_embeddings = tied;
  spec.config.num_hidden_layers = layers;
  spec.seed = 11;
  spec.weight_std = 0.08f;
  write_random_qwen3(dir, spec);
  return dir;
}

void edit_config(const std::filesystem::path& dir, const std::function<void(nlohmann::json&)>& f) {
  nlohmann::json j = read_json_file(dir / "config.json");
  f(j);
  testing::write_text(dir / "config.json", j.dump());
}

std::string load_error(const std::filesystem::path& dir) {
  try {
    Qwen3Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "load of " << dir << " succeeded";
  return "";
}

std::vector<float> run(const Qwen3Model& m, const std::vector<std::int32_t>& ids, std::size_t chunk,
                       AttentionMask mask) {
  const auto H = static_cast<std::size_t>(m.config().hidden_size);
  auto cache = m.make_cache(64);
  std::vector<float> all(ids.size() * H);
  m.embed(ids, all.data());
  for (std::size_t s = 0; s < ids.size(); s += chunk) {
    const std::size_t n = std::min(chunk, ids.size() - s);
    m.forward(all.data() + s * H, n, cache, mask);
  }
  return all;
}

TEST(Qwen3Config, ReadsFieldsAndEosFromGenerationConfig) {
  const auto dir = write_tiny("cfg_ok");
  testing::write_text(dir / "generation_config.json", R"({"eos_token_id": [151643, 151645]})");
  const auto c = Qwen3Config::from_dir(dir);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int32_t>{151643, 151645}));
}

TEST(Qwen3Config, ErrorsNameTheFileAndKey) {
  const auto dir = write_tiny("cfg_bad");
  edit_config(dir, [](auto& j) { j.erase("hidden_size"); });
  const std::string missing = load_error(dir);
  EXPECT_NE(missing.find("config.json"), std::string::npos) << missing;
  EXPECT_NE(missing.find("hidden_size"), std::string::npos) << missing;

  edit_config(dir, [](auto& j) {
    j["hidden_size"] = 64;
    j["num_key_value_heads"] = 3;
  });
  EXPECT_NE(load_error(dir).find("num_key_value_heads"), std::string::npos);

  edit_config(dir, [](auto& j) {
    j["num_key_value_heads"] = 2;
    j["model_type"] = "llama";
  });
  EXPECT_NE(load_error(dir).find("llama"), std::string::npos);

  // Nonsense values once loaded and ran.
  nlohmann::json original;
  edit_config(dir, [&](auto& j) {
    j["model_type"] = "qwen3";
    original = j;
  });
  for (const auto& [key, value, part] :
       std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"max_position_embeddings", -1, "max_position_embeddings must be in [1, 2^24]"},
           {"rope_theta", 1e308, "rope_theta must be in (1, 1e12]"},
           {"rope_theta", 0.5, "rope_theta"},
           {"num_hidden_layers", 2.5, "\"num_hidden_layers\" must be an integer, not 2.5"},
           {"hidden_size", std::int64_t{1} << 40, "hidden_size 1099511627776 is beyond"},
           {"rms_norm_eps", 2.0, "rms_norm_eps must be in (0, 1)"},
           // 2^64 - 1 was read as -1 (found by tests/fuzz).
           {"num_attention_heads", std::numeric_limits<std::uint64_t>::max(), "out of range"}}) {
    edit_config(dir, [&](auto& j) {
      j = original;
      j[key] = value;
    });
    const std::string e = load_error(dir);
    EXPECT_NE(e.find(part), std::string::npos) << key << ": " << e;
    EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  }

  // INT64_MIN / -1 traps (SIGFPE); the fuzzer's config once killed the process.
  edit_config(dir, [&](auto& j) {
    j = original;
    j["hidden_size"] = std::numeric_limits<std::int64_t>::min();
    j["num_attention_heads"] = -1;
  });
  EXPECT_NE(load_error(dir).find("sizes must be positive"), std::string::npos);

  std::filesystem::remove(dir / "config.json");
  EXPECT_NE(load_error(dir).find("config.json is missing"), std::string::npos);
}

TEST(Qwen3Model, MisShapedTensorNamesTensorAndBothShapes) {
  const auto dir = write_tiny("shape_bad");
  edit_config(dir, [](auto& j) { j["intermediate_size"] = 128; });
  const std::string msg = load_error(dir);
  EXPECT_NE(msg.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[160, 64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[128, 64]"), std::string::npos) << msg;
}

TEST(Qwen3Model, EncoderWithoutLmHeadCannotProduceLogits) {
  const auto dir = write_tiny("encoder");
  edit_config(dir, [](auto& j) { j["tie_word_embeddings"] = false; });
  const auto m = Qwen3Model::load(dir);
  EXPECT_FALSE(m.has_lm_head());
  std::vector<float> h(64), logits(m.config().vocab_size);
  EXPECT_THROW(m.logits(h.data(), 1, logits.data()), Error);
}

// With x exact: rounded to bf16 (the default on CPUs with AVX512_BF16), a
// value at a rounding boundary may round the other way after sums in
// another order, which moves a logit by up to ~1e-3 on this model.
TEST(Qwen3Model, ChunkedPrefillThroughTheCacheEqualsOnePass) {
  const testing::Bf16ActivationsScope exact_x(Bf16Precision::kSplit);
  const auto m = Qwen3Model::load(write_tiny("chunks", false));
  const std::vector<std::int32_t> ids = {9707, 11, 1879, 0, 151644, 872, 198, 3838, 374, 220, 17};
  const auto one = run(m, ids, ids.size(), AttentionMask::Causal);
  for (std::size_t chunk : {1, 3, 4}) {
    const auto parts = run(m, ids, chunk, AttentionMask::Causal);
    for (std::size_t i = 0; i < one.size(); ++i) ASSERT_NEAR(parts[i], one[i], 1e-4) << chunk;
  }
}

// With one layer the last position sees the same keys under either mask, so
// only the earlier positions may change.
TEST(Qwen3Model, BidirectionalMaskChangesAllButTheLastPosition) {
  const auto m = Qwen3Model::load(write_tiny("mask", true, 1));
  const std::vector<std::int32_t> ids = {100, 200, 300, 400, 500};
  const auto causal = run(m, ids, ids.size(), AttentionMask::Causal);
  const auto bidi = run(m, ids, ids.size(), AttentionMask::Bidirectional);
  const std::size_t H = 64, last = (ids.size() - 1) * H;
  double first_diff = 0;
  for (std::size_t i = 0; i < H; ++i) {
    first_diff = std::max(first_diff, double(std::abs(causal[i] - bidi[i])));
    EXPECT_NEAR(causal[last + i], bidi[last + i], 1e-5);
  }
  EXPECT_GT(first_diff, 1e-3);
}

TEST(KVCache, GrowsWithTheRequestAndStopsAtTheLimit) {
  KVCache cache(2, 2, 4, 100, 10);
  EXPECT_EQ(cache.capacity(), 10u);
  cache.reserve_more(10);
  cache.advance(10);
  cache.f32_keys(1)[(1 * cache.capacity() + 9) * 4 + 3] = 42.0f;  // head 1, position 9
  cache.reserve_more(1);
  EXPECT_EQ(cache.capacity(), 20u);
  EXPECT_EQ(cache.f32_keys(1)[(1 * cache.capacity() + 9) * 4 + 3], 42.0f);
  EXPECT_EQ(cache.bytes(), 2u * 2 * 2 * 20 * 4 * sizeof(float));
  cache.reserve_more(90);
  EXPECT_EQ(cache.capacity(), 100u);
  cache.advance(90);
  try {
    cache.reserve_more(1);
    FAIL() << "reserve past the limit succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("-c"), std::string::npos);
  }
}

TEST(Session, GreedyGenerationFollowsTheArgmaxOfTheLogits) {
  const auto m = Qwen3Model::load(write_tiny("greedy"));
  const std::vector<std::int32_t> prompt = {151644, 872, 198, 9707};
  GenerationOptions options;
  options.n_predict = 6;
  options.sampling.temperature = 0.0f;
  options.prefill_chunk = 3;
  std::vector<std::int32_t> streamed;
  const auto stats = Session(m).generate(prompt, options, [&](std::int32_t id) {
    streamed.push_back(id);
    return true;
  });
  EXPECT_EQ(stats.stop, StopReason::Length);
  ASSERT_EQ(stats.tokens.size(), 6u);
  EXPECT_EQ(streamed, stats.tokens);
  EXPECT_GT(stats.ttft_seconds, 0.0);
  // The KV cache is sized to the request, not to max_position_embeddings.
  EXPECT_EQ(stats.kv_cache_bytes, 2u * 2 * 2 * (prompt.size() + 6) * 32 * sizeof(float));

  // Recompute each step without the cache and take the argmax by hand.
  std::vector<std::int32_t> seq = prompt;
  const std::size_t H = 64, V = static_cast<std::size_t>(m.config().vocab_size);
  for (std::int32_t expected : stats.tokens) {
    const auto hidden = run(m, seq, seq.size(), AttentionMask::Causal);
    std::vector<float> logits(V);
    m.logits(hidden.data() + (seq.size() - 1) * H, 1, logits.data());
    const auto argmax =
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(argmax, expected);
    seq.push_back(argmax);
  }
}

TEST(Session, StopsOnStopTokenCallbackAndContextLimit) {
  const auto m = Qwen3Model::load(write_tiny("stops"));
  const std::vector<std::int32_t> prompt = {1, 2, 3};
  GenerationOptions options;
  options.n_predict = 4;
  options.sampling.temperature = 0.0f;
  const auto always = [](std::int32_t) { return true; };
  const auto first = Session(m).generate(prompt, options, always).tokens.at(0);
  // No callback: the same run, to n_predict.
  EXPECT_EQ(Session(m).generate(prompt, options).tokens.size(), 4u);
  EXPECT_EQ(Session(m).generate(prompt, options).tokens,
            Session(m).generate(prompt, options, always).tokens);

  options.stop_ids = {first};
  const auto stopped = Session(m).generate(prompt, options, always);
  EXPECT_EQ(stopped.stop, StopReason::StopToken);
  EXPECT_TRUE(stopped.tokens.empty());

  options.stop_ids.clear();
  const auto cancelled = Session(m).generate(prompt, options, [](std::int32_t) { return false; });
  EXPECT_EQ(cancelled.stop, StopReason::Callback);
  EXPECT_EQ(cancelled.tokens.size(), 1u);

  options.context = 5;
  options.n_predict = -1;
  const auto full = Session(m).generate(prompt, options, always);
  EXPECT_EQ(full.stop, StopReason::ContextFull);
  EXPECT_EQ(full.tokens.size(), 2u);

  options.context = 3;
  try {
    Session(m).generate(prompt, options, always);
    FAIL() << "a prompt as long as the context was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 tokens"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lclm
