// The Engine loads a plain Qwen3 model or an LCLM checkpoint once and takes
// the compression ratio per call: a call at ratio r must give exactly what a
// checkpoint loaded at r gives, and a Session must keep latents only where
// they are the same.
#include "runtime/engine.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "core/test_models.h"
#include "fixtures/random_lclm.h"

namespace lclm {
namespace {

const char* kDoc =
    "The lighthouse stands on the northern cape. Its keeper logs every ship that passes. "
    "On the fifth night she counted thirty-five ships, and on the sixth none at all. ";

std::filesystem::path tiny_lclm(const std::string& name) {
  const auto dir = testing::scratch_dir(name);
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 9;
  write_random_lclm(dir, spec);
  return dir;
}

std::string prompt_with_memory() {
  return std::string("<|im_start|>user\n<|memory_start|>") + kDoc +
         "<|memory_end|>\nHow many ships on the fifth night?<|im_end|>\n<|im_start|>assistant\n";
}

TEST(Engine, ARatioPerCallGivesWhatACheckpointLoadedAtThatRatioGives) {
  const auto dir = tiny_lclm("engine_ratio");
  auto engine = Engine::load(dir);
  EXPECT_EQ(engine->ratio(), 4);
  for (std::int64_t r : {2, 4, 8, 16}) {
    SCOPED_TRACE(r);
    LclmOptions at_r;
    at_r.compression_ratio = r;
    auto loaded = LclmModel::load(dir, at_r);
    const PreparedPrompt got = engine->prepare(prompt_with_memory(), r);
    const PreparedPrompt want = loaded->prepare(prompt_with_memory());
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.embeddings, want.embeddings);
    EXPECT_EQ(got.stats.latents, want.stats.latents);
    // The same latent cache keys: a cache written at load-time ratio r is
    // found by a call at ratio r.
    EXPECT_EQ(engine->lclm()->fingerprint(r), loaded->fingerprint());
    EXPECT_EQ(engine->ratio(r), r);
  }
  EXPECT_NE(engine->lclm()->fingerprint(4), engine->lclm()->fingerprint(8));
  EXPECT_NE(testing::error_of([&] { engine->prepare(prompt_with_memory(), 0); }).find("--ratio"),
            std::string::npos);
}

TEST(Engine, TheDefaultRatioIsTheLoadOption) {
  const auto dir = tiny_lclm("engine_default");
  EngineOptions o;
  o.ratio = 8;
  auto engine = Engine::load(dir, o);
  EXPECT_EQ(engine->ratio(), 8);
  EXPECT_EQ(engine->prepare(prompt_with_memory()).embeddings,
            engine->prepare(prompt_with_memory(), 8).embeddings);
  EXPECT_NE(engine->prepare(prompt_with_memory()).stats.latents,
            engine->prepare(prompt_with_memory(), 4).stats.latents);
}

TEST(Engine, ASessionKeepsLatentsOnlyAtTheRatioTheyWereMadeAt) {
  const auto dir = tiny_lclm("engine_session");
  auto engine = Engine::load(dir);
  GenerationOptions o;
  o.n_predict = 4;
  o.sampling.temperature = 0;
  o.stop_ids = engine->stop_ids();
  Session s = engine->new_session();
  const PreparedPrompt at4 = engine->prepare(prompt_with_memory(), 4);
  const PreparedPrompt at8 = engine->prepare(prompt_with_memory(), 8);
  s.generate(at4, o);
  // "<|im_start|>user\n<|memory_start|>" comes before the first latent.
  const std::size_t first_latent = static_cast<std::size_t>(
      std::find(at4.ids.begin(), at4.ids.end(), engine->lclm()->memory_token_id()) -
      at4.ids.begin());
  ASSERT_GT(first_latent, 0u);
  const GenerationStats b = s.generate(at8, o);
  EXPECT_EQ(b.reused_positions, first_latent);
  EXPECT_EQ(b.tokens, engine->new_session().generate(at8, o).tokens);
  const GenerationStats c = s.generate(at8, o);
  EXPECT_EQ(c.reused_positions, at8.ids.size() - 1);
  EXPECT_EQ(c.tokens, b.tokens);
}

// The context is checked before anything is compressed: from the bytes when
// they alone rule the prompt out, else from its tokens and the latents they
// will make; a refused region is never encoded nor stored.
TEST(Engine, APromptTooLongIsRefusedBeforeCompression) {
  const auto dir = tiny_lclm("engine_too_long");
  auto engine = Engine::load(dir);
  const std::string big(1 << 20, 'x');
  try {
    engine->prepare("<|memory_start|>" + big + "<|memory_end|>", 4, 200);
    FAIL() << "a 1 MiB region fit 200 positions";
  } catch (const PromptTooLong& e) {
    EXPECT_TRUE(e.at_least);
    EXPECT_GT(e.positions, 200u);
  }
  EXPECT_EQ(engine->lclm()->cache().stats().misses, 0u);  // not even looked up

  const PreparedPrompt fits = engine->prepare(prompt_with_memory(), 4);
  const std::size_t n = fits.ids.size();
  auto fresh = Engine::load(dir);
  try {
    fresh->prepare(prompt_with_memory(), 4, n - 1);
    FAIL() << "a prompt of " << n << " positions fit " << n - 1;
  } catch (const PromptTooLong& e) {
    EXPECT_FALSE(e.at_least);
    EXPECT_EQ(e.positions, n);
    EXPECT_EQ(e.latents, fits.stats.latents);
    EXPECT_NE(std::string(e.what()).find("-c"), std::string::npos);
  }
  // Nothing was encoded: the next call finds no latents in the cache.
  EXPECT_EQ(fresh->prepare(prompt_with_memory(), 4, n).stats.cache_hits, 0u);
  EXPECT_EQ(fresh->prepare(prompt_with_memory(), 4, n).stats.cache_hits, 1u);

  const auto plain_dir = testing::tiny_model_with_tokenizer("engine_too_long_plain");
  auto plain = Engine::load(plain_dir);
  EXPECT_THROW(plain->prepare(big, std::nullopt, 100), PromptTooLong);
  EXPECT_THROW(plain->prepare("one two three four five six", std::nullopt, 3), PromptTooLong);
  EXPECT_EQ(plain->prepare("one two", std::nullopt, 3).ids.size(), 2u);
}

TEST(Engine, APlainModelRefusesRatiosRegionsAndALatentCache) {
  const auto dir = testing::tiny_model_with_tokenizer("engine_plain");
  auto engine = Engine::load(dir);
  EXPECT_EQ(engine->lclm(), nullptr);
  EXPECT_EQ(engine->ratio(), 1);
  EXPECT_EQ(engine->prepare("Hello there").ids, engine->tokenizer().encode("Hello there"));
  EXPECT_NE(testing::error_of([&] { engine->prepare("Hello", 4); }).find("not an LCLM checkpoint"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              engine->prepare(prompt_with_memory());
            }).find("not an LCLM checkpoint"),
            std::string::npos);
  EngineOptions with_ratio;
  with_ratio.ratio = 4;
  EXPECT_NE(testing::error_of([&] { Engine::load(dir, with_ratio); }).find("--ratio"),
            std::string::npos);
  EngineOptions with_cache;
  with_cache.latent_store.location = (dir / "latents.db").string();
  EXPECT_NE(testing::error_of([&] { Engine::load(dir, with_cache); }).find("--latent-cache"),
            std::string::npos);
}

// Generation stops where the chat template ends a turn: a template that
// ends turns with another special token adds it to the stop ids (the
// defaults stay); one whose turn end is plain text adds nothing.
TEST(Engine, TheTemplatesEndOfTurnStopsGeneration) {
  const auto dir = testing::tiny_model_with_tokenizer("engine_turn_end");
  auto plain = Engine::load(dir);
  const auto vision_pad = plain->tokenizer().token_id("<|vision_pad|>");
  ASSERT_TRUE(vision_pad);
  EXPECT_EQ(std::count(plain->stop_ids().begin(), plain->stop_ids().end(), *vision_pad), 0);
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return dir / name;
  };
  EngineOptions o;
  o.chat_template = write(
      "fim.jinja", "{% for m in messages %}[{{ m.role }}]{{ m.content }}<|vision_pad|>{% endfor %}");
  auto custom = Engine::load(dir, o);
  std::vector<std::int32_t> expected = plain->stop_ids();
  expected.push_back(*vision_pad);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(custom->stop_ids(), expected);

  // Forced to write it, generation stops at once.
  SamplingParams forced;
  forced.temperature = 0;
  forced.logit_bias = {{*vision_pad, 100.0f}};
  GenerationOptions g;
  g.n_predict = 8;
  g.context = 64;
  g.sampling = forced;
  g.stop_ids = custom->stop_ids();
  Session session = custom->new_session();
  const GenerationStats s = session.generate(custom->prepare("[user]Hi"), g);
  EXPECT_EQ(s.stop, StopReason::StopToken);
  EXPECT_LE(s.generated_tokens, 1u);

  o.chat_template =
      write("text.jinja", "{% for m in messages %}{{ m.content }}\nEND\n{% endfor %}");
  EXPECT_EQ(Engine::load(dir, o)->stop_ids(), plain->stop_ids());
}

TEST(Engine, QuantAppliesToPlainModelsAndCheckpointsAlike) {
  EngineOptions q8;
  q8.quant = DType::Q8_0;
  const auto plain = testing::tiny_model_with_tokenizer("engine_quant_plain");
  EXPECT_EQ(Engine::load(plain, q8)->decoder().matrix_dtype(), DType::Q8_0);
  EXPECT_EQ(Engine::load(plain)->decoder().matrix_dtype(), DType::BF16);
  const auto ckpt = tiny_lclm("engine_quant_lclm");
  auto engine = Engine::load(ckpt, q8);
  EXPECT_EQ(engine->decoder().matrix_dtype(), DType::Q8_0);
  EXPECT_EQ(engine->lclm()->encoder().matrix_dtype(), DType::Q8_0);
}

// OpenMP's thread count belongs to the calling thread: a count set on main
// never reaches a server's worker thread. The engine applies its own on the
// thread of every call.
TEST(Engine, AppliesItsThreadCountOnTheThreadThatCallsIt) {
  const auto dir = testing::tiny_model_with_tokenizer("engine_threads");
  EngineOptions o;
  o.threads = 1;
  auto engine = Engine::load(dir, o);
  EXPECT_EQ(engine->threads(), 1);
  int in_prepare = -1, in_generate = -1;
  std::thread worker([&] {
    const PreparedPrompt p = engine->prepare("Hello there");
    in_prepare = omp_get_max_threads();
    omp_set_num_threads(3);  // whatever the thread had before
    GenerationOptions g;
    g.n_predict = 2;
    g.sampling.temperature = 0;
    engine->new_session().generate(p, g, [&](std::int32_t) {
      in_generate = omp_get_max_threads();
      return true;
    });
  });
  worker.join();
  EXPECT_EQ(in_prepare, 1);
  EXPECT_EQ(in_generate, 1);
}

}  // namespace
}  // namespace lclm
