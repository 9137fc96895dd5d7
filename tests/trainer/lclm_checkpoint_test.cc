// Checkpoint IO of the trainer: load -> save -> load keeps every parameter,
// the engine reads what the trainer writes (f32 and bf16), and a save either
// replaces the checkpoint whole or leaves the previous one untouched.
#include "trainer/lclm_checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "trainer/trainer_test_models.h"
#include "util/error.h"

namespace lclm::train {
namespace {

namespace fs = std::filesystem;
using lclm::testing::error_of;
using testing::engine_logits;
using testing::relative_error;
using testing::small_vocab_tokenizer_dir;
using testing::tokenize_prompt;
using testing::two_region_prompt;
using testing::write_tiny_lclm;

void expect_same_parameters(const TorchLclm& a, const TorchLclm& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    const torch::Tensor* other = pb.find(item.key());
    ASSERT_NE(other, nullptr) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), *other)) << item.key();
  }
}

// The trainer's logits for the test prompt on `model`, tokenized by `engine`.
torch::Tensor trainer_logits(TorchLclm& model, LclmModel& engine) {
  const torch::NoGradGuard no_grad;
  const testing::TokenizedPrompt tokens = tokenize_prompt(engine, two_region_prompt());
  return model.forward(tokens.decoder_ids, tokens.regions);
}

class LclmCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override { testing::use_all_cores(); }
};

// An untied decoder (lm_head) and adapter attention layers cover every kind
// of tensor name.
TEST_F(LclmCheckpoint, F32RoundTripKeepsEveryParameterAndTheEngineAgrees) {
  const fs::path source = write_tiny_lclm("roundtrip_source", small_vocab_tokenizer_dir(),
                                          DType::F32, 51, [](RandomLclmSpec& s) {
                                            s.decoder.tie_word_embeddings = false;
                                            s.config.adapter_type = AdapterType::MlpAttn;
                                            s.config.num_adapter_layers = 1;
                                          });
  const fs::path saved = lclm::testing::scratch_dir("roundtrip") / "saved";
  const auto model = load_lclm_checkpoint(source);
  ASSERT_NE(model->decoder->lm_head, nullptr);
  save_lclm_checkpoint(*model, saved, DType::F32, source);
  EXPECT_FALSE(fs::exists(saved.string() + ".tmp"));
  for (const char* file : {"model_config.json", "decoder/config.json", "decoder/tokenizer.json",
                           "decoder/tokenizer_config.json", "encoder/tokenizer.json",
                           "encoder/model.safetensors", "adapter/adapter.safetensors"}) {
    EXPECT_TRUE(fs::exists(saved / file)) << file;
  }
  const TensorStore decoder = TensorStore::open_dir(saved / "decoder");
  EXPECT_NE(decoder.find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE(decoder.find("lm_head.weight"), nullptr);
  EXPECT_NE(TensorStore::open_dir(saved / "encoder").find("embed_tokens.weight"), nullptr);

  const auto reloaded = load_lclm_checkpoint(saved);
  expect_same_parameters(*model, *reloaded);

  auto engine_source = LclmModel::load(source);
  auto engine_saved = LclmModel::load(saved);
  const torch::Tensor want = engine_logits(*engine_source, two_region_prompt());
  EXPECT_TRUE(torch::equal(engine_logits(*engine_saved, two_region_prompt()), want));
  EXPECT_LT(relative_error(trainer_logits(*reloaded, *engine_saved), want), 1e-4);
}

TEST_F(LclmCheckpoint, Bf16SaveLoadsInTheEngine) {
  const fs::path source =
      write_tiny_lclm("bf16_source", small_vocab_tokenizer_dir(), DType::F32, 52);
  const fs::path saved = lclm::testing::scratch_dir("bf16") / "saved";
  const auto model = load_lclm_checkpoint(source);
  save_lclm_checkpoint(*model, saved, DType::BF16, source);
  for (const fs::path& part : {saved / "decoder", saved / "encoder", saved / "adapter"}) {
    const TensorStore store = TensorStore::open_dir(part);
    for (const std::string& name : store.names()) {
      EXPECT_EQ(store.find(name)->dtype, DType::BF16) << part << " " << name;
    }
  }

  // Both sides now read the same bf16-rounded weights, and the engine keeps
  // x exact.
  const lclm::testing::Bf16ActivationsScope exact_x;
  auto engine = LclmModel::load(saved);
  EXPECT_EQ(engine->decoder().weight_dtype(), DType::BF16);
  const auto reloaded = load_lclm_checkpoint(saved);
  const double error = relative_error(trainer_logits(*reloaded, *engine),
                                      engine_logits(*engine, two_region_prompt()));
  EXPECT_LT(error, 1e-4);
}

// bf16 -> float32 -> bf16 is exact, so a bf16 checkpoint survives unchanged.
TEST_F(LclmCheckpoint, Bf16CheckpointSurvivesLoadAndSaveBitForBit) {
  const fs::path source =
      write_tiny_lclm("bf16_exact_source", small_vocab_tokenizer_dir(), DType::BF16, 53);
  const fs::path saved = lclm::testing::scratch_dir("bf16_exact") / "saved";
  save_lclm_checkpoint(*load_lclm_checkpoint(source), saved, DType::BF16, source);
  for (const char* part : {"decoder", "encoder", "adapter"}) {
    const TensorStore before = TensorStore::open_dir(source / part);
    const TensorStore after = TensorStore::open_dir(saved / part);
    ASSERT_EQ(before.names(), after.names()) << part;
    for (const std::string& name : before.names()) {
      const TensorView& a = *before.find(name);
      const TensorView& b = *after.find(name);
      ASSERT_EQ(a.shape, b.shape) << name;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << name;
    }
  }
}

TEST_F(LclmCheckpoint, SaveReplacesTheCheckpointWholeOrNotAtAll) {
  const fs::path source =
      write_tiny_lclm("replace_source", small_vocab_tokenizer_dir(), DType::BF16, 54);
  const fs::path scratch = lclm::testing::scratch_dir("replace");
  const fs::path saved = scratch / "saved";
  const auto model = load_lclm_checkpoint(source);
  save_lclm_checkpoint(*model, saved, DType::F32, source);

  // A second save takes the first one's place, the directory being its own
  // tokenizer source.
  {
    const torch::NoGradGuard no_grad;
    model->adapter->fc2->bias.add_(1.0f);
  }
  save_lclm_checkpoint(*model, saved, DType::F32, saved);
  EXPECT_FALSE(fs::exists(saved.string() + ".tmp"));
  expect_same_parameters(*model, *load_lclm_checkpoint(saved));

  // A save that fails part way (no tokenizer to copy) leaves it as it was.
  const fs::path no_tokenizer = scratch / "no_tokenizer";
  fs::create_directories(no_tokenizer / "decoder");
  {
    const torch::NoGradGuard no_grad;
    model->adapter->fc2->bias.add_(1.0f);
  }
  EXPECT_NE(error_of([&] {
              save_lclm_checkpoint(*model, saved, DType::F32, no_tokenizer);
            }).find("tokenizer.json"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(saved.string() + ".tmp"));
  const auto kept = load_lclm_checkpoint(saved);
  EXPECT_TRUE(torch::equal(kept->adapter->fc2->bias, model->adapter->fc2->bias - 1.0f));

  // A directory that is not a checkpoint is never replaced.
  const fs::path other = scratch / "notes";
  fs::create_directories(other);
  lclm::testing::write_text(other / "notes.txt", "keep me");
  EXPECT_NE(error_of([&] {
              save_lclm_checkpoint(*model, other, DType::F32, source);
            }).find("not an LCLM checkpoint"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(other / "notes.txt"));
}

// lclm-train --export --deepen-encoder / --deepen-decoder: the grown part
// computes what the old one did, in the trainer and, once saved, in the
// engine; then training moves its new layers (their gradients are not all
// zero).
void expect_deepened_part_computes_the_same_until_trained(
    const std::string& part, std::shared_ptr<TorchQwen3> TorchLclm::*grown_part,
    const std::string& tensor_prefix) {
  const fs::path source =
      write_tiny_lclm("deepen_source_" + part, small_vocab_tokenizer_dir(), DType::F32, 56);
  const fs::path saved = lclm::testing::scratch_dir("deepen_" + part) / "saved";
  const auto model = load_lclm_checkpoint(source);
  TorchQwen3& grown = *((*model).*grown_part);
  const std::int64_t old_layers = grown.config().num_hidden_layers;
  auto engine_source = LclmModel::load(source);
  const torch::Tensor before = trainer_logits(*model, *engine_source);

  grown.deepen(old_layers + 2);
  EXPECT_EQ(grown.config().num_hidden_layers, old_layers + 2);
  EXPECT_TRUE(torch::equal(trainer_logits(*model, *engine_source), before));
  save_lclm_checkpoint(*model, saved, DType::F32, source);
  const TensorStore stored = TensorStore::open_dir(saved / part);
  const std::string last = tensor_prefix + "layers." + std::to_string(old_layers + 1) + ".";
  EXPECT_NE(stored.find(last + "self_attn.q_proj.weight"), nullptr);
  auto engine_saved = LclmModel::load(saved);
  EXPECT_TRUE(torch::equal(engine_logits(*engine_saved, two_region_prompt()),
                           engine_logits(*engine_source, two_region_prompt())));

  // The zero output projections get a gradient, so the new layers can learn.
  const auto reloaded = load_lclm_checkpoint(saved);
  const testing::TokenizedPrompt tokens = tokenize_prompt(*engine_saved, two_region_prompt());
  reloaded->forward(tokens.decoder_ids, tokens.regions).square().sum().backward();
  const auto new_layer = ((*reloaded).*grown_part)
                             ->layers[static_cast<std::size_t>(old_layers + 1)]
                             ->as<TorchQwen3Layer>();
  EXPECT_GT(new_layer->self_attn->o_proj->weight.grad().abs().sum().item<float>(), 0.0f);
  EXPECT_GT(new_layer->mlp->down_proj->weight.grad().abs().sum().item<float>(), 0.0f);

  EXPECT_NE(error_of([&] { grown.deepen(old_layers + 2); }).find("already"), std::string::npos);
}

TEST_F(LclmCheckpoint, DeepenedEncoderComputesTheSameUntilTrained) {
  expect_deepened_part_computes_the_same_until_trained("encoder", &TorchLclm::encoder, "");
}

TEST_F(LclmCheckpoint, DeepenedDecoderComputesTheSameUntilTrained) {
  expect_deepened_part_computes_the_same_until_trained("decoder", &TorchLclm::decoder, "model.");
}

// lclm-train --export --widen-encoder: the widened encoder and adapter give
// the old logits in the trainer and, once saved, in the engine; then training
// reaches the new dimensions. The encoder's RMS norms differ only through
// their epsilon (rsqrt(S / 2H + eps) against rsqrt(S / H + eps) / sqrt(2)),
// which this test makes negligible (1e-12): on the tiny model's small
// activations (weights of std 0.08) the default 1e-6 moves the logits by
// about 7e-5; with 1e-12 they agree to about 1.3e-6 (float rounding and the
// adapter's norm).
TEST_F(LclmCheckpoint, WidenedEncoderComputesTheSameUntilTrained) {
  const fs::path source =
      write_tiny_lclm("widen_source", small_vocab_tokenizer_dir(), DType::F32, 57,
                      [](RandomLclmSpec& s) { s.encoder.rms_norm_eps = 1e-12; });
  const fs::path saved = lclm::testing::scratch_dir("widen_encoder") / "saved";
  const auto model = load_lclm_checkpoint(source);
  const Qwen3Config narrow = model->encoder->config();
  const std::int64_t H = narrow.hidden_size;
  auto engine_source = LclmModel::load(source);
  const torch::Tensor before = trainer_logits(*model, *engine_source);

  model->widen_encoder(2 * H);
  const Qwen3Config& wide = model->encoder->config();
  EXPECT_EQ(wide.hidden_size, 2 * H);
  EXPECT_EQ(wide.num_attention_heads, 2 * narrow.num_attention_heads);
  EXPECT_EQ(wide.num_key_value_heads, 2 * narrow.num_key_value_heads);
  EXPECT_EQ(wide.intermediate_size, 2 * narrow.intermediate_size);
  EXPECT_EQ(wide.head_dim, narrow.head_dim);
  EXPECT_EQ(model->adapter->input_dim(), 2 * H);
  const torch::Tensor after = trainer_logits(*model, *engine_source);
  EXPECT_LT(relative_error(after, before), 1e-5);
  save_lclm_checkpoint(*model, saved, DType::F32, source);
  auto engine_saved = LclmModel::load(saved);
  EXPECT_LT(relative_error(engine_logits(*engine_saved, two_region_prompt()),
                           engine_logits(*engine_source, two_region_prompt())),
            1e-5);

  // What writes the new dimensions starts at zero and gets a gradient.
  const auto reloaded = load_lclm_checkpoint(saved);
  const testing::TokenizedPrompt tokens = tokenize_prompt(*engine_saved, two_region_prompt());
  reloaded->forward(tokens.decoder_ids, tokens.regions).square().sum().backward();
  const auto& layer = *reloaded->encoder->layers[0]->as<TorchQwen3Layer>();
  for (const torch::Tensor& writer :
       {layer.self_attn->o_proj->weight, layer.mlp->down_proj->weight}) {
    EXPECT_EQ(writer.narrow(0, H, H).abs().sum().item<float>(), 0.0f);
    EXPECT_GT(writer.grad().narrow(0, H, H).abs().sum().item<float>(), 0.0f);
  }
  EXPECT_GT(
      reloaded->encoder->embed_tokens->weight.grad().narrow(1, H, H).abs().sum().item<float>(),
      0.0f);

  EXPECT_NE(error_of([&] { model->widen_encoder(3 * H); }).find("multiple"), std::string::npos);
  const auto attention_adapter =
      load_lclm_checkpoint(write_tiny_lclm("widen_attention_adapter", small_vocab_tokenizer_dir(),
                                           DType::F32, 58, [](RandomLclmSpec& s) {
                                             s.config.adapter_type = AdapterType::MlpAttn;
                                             s.config.num_adapter_layers = 1;
                                           }));
  EXPECT_NE(error_of([&] { attention_adapter->widen_encoder(2 * H); }).find("mlp adapter"),
            std::string::npos);
}

TEST_F(LclmCheckpoint, LoadNamesATensorTheModelHasNoPlaceFor) {
  const fs::path dir = write_tiny_lclm("extra_tensor", small_vocab_tokenizer_dir(), DType::F32, 55);
  const fs::path adapter = dir / "adapter" / "adapter.safetensors";
  {
    const SafetensorsFile file(adapter);
    std::vector<TensorToWrite> tensors;
    for (const TensorView& t : file.tensors()) {
      tensors.push_back({t.name, t.dtype, t.shape, {t.data, t.nbytes}});
    }
    const float extra[2] = {1.0f, 2.0f};
    tensors.push_back({"unused.weight",
                       DType::F32,
                       {2},
                       {reinterpret_cast<const std::uint8_t*>(extra), sizeof extra}});
    write_safetensors(adapter, tensors);
  }
  const std::string error = error_of([&] { load_lclm_checkpoint(dir); });
  EXPECT_NE(error.find("unused.weight"), std::string::npos) << error;
}

}  // namespace
}  // namespace lclm::train
