// The trainer's TorchLclm against the engine: the same latents and logits on
// tiny random checkpoints in every configuration the loader accepts, and
// gradients reaching every parameter of encoder, adapter and decoder.
#include "trainer/torch_lclm.h"

#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <functional>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "trainer/lclm_checkpoint.h"
#include "trainer/trainer_test_models.h"

namespace lclm::train {
namespace {

using testing::engine_logits;
using testing::relative_error;
using testing::small_vocab_tokenizer_dir;
using testing::tokenize_prompt;
using testing::two_region_prompt;
using testing::write_tiny_lclm;

constexpr double kParityTolerance = 1e-4;

// "1.06e-06", for the test report.
std::string scientific(double x) {
  std::ostringstream out;
  out << std::setprecision(3) << x;
  return out.str();
}

struct ParityCase {
  std::string name;
  DType dtype;
  bool full_vocab;  // the real Qwen3 tokenizer, else its 2048-token cut
  std::function<void(RandomLclmSpec&)> edit;
};

void PrintTo(const ParityCase& c, std::ostream* os) {
  *os << c.name;
}

class TorchLclmParity : public ::testing::TestWithParam<ParityCase> {
 protected:
  void SetUp() override { testing::use_all_cores(); }
  const lclm::testing::Bf16ActivationsScope exact_x_;  // the trainer keeps x in f32
};

TEST_P(TorchLclmParity, LatentsAndLogitsMatchTheEngine) {
  const ParityCase& c = GetParam();
  const auto dir = write_tiny_lclm(
      "parity_" + c.name,
      c.full_vocab ? lclm::testing::qwen3_tokenizer_dir() : small_vocab_tokenizer_dir(), c.dtype,
      31, c.edit);
  auto engine = LclmModel::load(dir);
  auto model = load_lclm_checkpoint(dir);
  const torch::NoGradGuard no_grad;

  const std::string prompt = two_region_prompt();
  const testing::TokenizedPrompt tokens = tokenize_prompt(*engine, prompt);
  ASSERT_EQ(tokens.regions.size(), 2u);
  const auto window = static_cast<std::size_t>(engine->config().encoder_window_size);
  ASSERT_GT(tokens.regions[0].size(), window) << "the long region should span several windows";

  std::size_t region = 0;
  for (const PromptSegment& s : split_memory_regions(prompt)) {
    if (!s.compressed) continue;
    const Latents want = engine->compress(s.text);
    const torch::Tensor got = model->encode_region(tokens.regions[region++]);
    ASSERT_EQ(got.size(0), static_cast<std::int64_t>(want.count()));
    const torch::Tensor want_tensor =
        torch::from_blob(const_cast<float*>(want.data.data()),
                         {static_cast<std::int64_t>(want.count()), got.size(1)})
            .clone();
    const double error = relative_error(got, want_tensor);
    RecordProperty("latents_relative_error_" + std::to_string(region), scientific(error));
    EXPECT_LT(error, kParityTolerance) << "latents of region " << region;
  }

  EXPECT_EQ(model->encode_region({}).sizes(),
            torch::IntArrayRef({0, model->adapter->output_dim()}));

  const torch::Tensor want = engine_logits(*engine, prompt);
  const torch::Tensor got = model->forward(tokens.decoder_ids, tokens.regions);
  ASSERT_EQ(got.sizes(), want.sizes());
  const double error = relative_error(got, want);
  RecordProperty("logits_relative_error", scientific(error));
  EXPECT_LT(error, kParityTolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Configurations, TorchLclmParity,
    ::testing::Values(
        // The released configuration: mean pooling, causal encoder, MLP adapter.
        ParityCase{"mean_causal_mlp_f32", DType::F32, true, {}},
        ParityCase{"mean_causal_mlp_bf16", DType::BF16, false, {}},
        ParityCase{"eos_causal", DType::F32, false,
                   [](RandomLclmSpec& s) { s.config.pooling = Pooling::Eos; }},
        // eos slots come after the right context.
        ParityCase{"eos_bidirectional_overlap2", DType::F32, false,
                   [](RandomLclmSpec& s) {
                     s.config.pooling = Pooling::Eos;
                     s.config.encoder_mask = AttentionMask::Bidirectional;
                     s.config.boundary_overlap = 2;
                   }},
        ParityCase{"concat_bidirectional", DType::F32, false,
                   [](RandomLclmSpec& s) {
                     s.config.pooling = Pooling::Concat;
                     s.config.encoder_mask = AttentionMask::Bidirectional;
                   }},
        ParityCase{"mean_causal_overlap5_r8", DType::F32, false,
                   [](RandomLclmSpec& s) {
                     s.config.compression_ratio = 8;
                     s.config.encoder_window_size = 24;
                     s.config.boundary_overlap = 5;
                   }},
        ParityCase{"mlp_attn_2_layers", DType::F32, false,
                   [](RandomLclmSpec& s) {
                     s.config.adapter_type = AdapterType::MlpAttn;
                     s.config.num_adapter_layers = 2;
                   }},
        ParityCase{"attn_mlp_1_layer", DType::F32, false,
                   [](RandomLclmSpec& s) {
                     s.config.adapter_type = AdapterType::AttnMlp;
                     s.config.num_adapter_layers = 1;
                   }}),
    [](const ::testing::TestParamInfo<ParityCase>& instance) { return instance.param.name; });

// A checkpoint run at another ratio, as the engine's --ratio does and as
// mixed-ratio training (--ratios) compresses its regions.
TEST(TorchLclmRatios, RegionsAtAnotherRatioMatchTheEngineAtThatRatio) {
  testing::use_all_cores();
  const auto dir =
      write_tiny_lclm("parity_ratio_override", small_vocab_tokenizer_dir(), DType::F32, 37);
  auto model = load_lclm_checkpoint(dir);
  const torch::NoGradGuard no_grad;
  const std::string prompt = two_region_prompt();
  for (std::int64_t r : {8, 16, 5}) {
    LclmOptions options;
    options.compression_ratio = r;
    auto engine = LclmModel::load(dir, options);
    const testing::TokenizedPrompt tokens = tokenize_prompt(*engine, prompt);
    const std::vector<std::int64_t> ratios(tokens.regions.size(), r);
    const torch::Tensor want = engine_logits(*engine, prompt);
    const torch::Tensor got = model->forward(tokens.decoder_ids, tokens.regions, ratios);
    ASSERT_EQ(got.sizes(), want.sizes()) << "ratio " << r;
    EXPECT_LT(relative_error(got, want), kParityTolerance) << "ratio " << r;
  }
  // One ratio per region.
  EXPECT_THROW(model->decoder_inputs({}, {}, std::vector<std::int64_t>{4}), Error);
}

// A few AdamW steps on one sequence, the loss on plain-text targets only.
TEST(TorchLclmTraining, AdamWStepsLowerTheLossAndEveryParameterGetsAGradient) {
  testing::use_all_cores();
  const auto dir = write_tiny_lclm("training", small_vocab_tokenizer_dir(), DType::F32, 41);
  auto engine = LclmModel::load(dir);
  const testing::TokenizedPrompt tokens = tokenize_prompt(*engine, two_region_prompt());
  auto model = load_lclm_checkpoint(dir);

  // targets[i] predicts decoder_ids[i + 1]; memory markers and placeholders
  // are not text and take no loss.
  const Tokenizer& tokenizer = engine->decoder_tokenizer();
  const std::vector<std::int32_t> memory_tokens = {*tokenizer.token_id(kMemoryStart),
                                                   *tokenizer.token_id(kMemoryEnd),
                                                   *tokenizer.token_id(kMemoryPlaceholder)};
  const auto L = static_cast<std::int64_t>(tokens.decoder_ids.size());
  torch::Tensor targets = torch::full({L - 1}, -100, torch::kLong);
  std::int64_t n_targets = 0;
  for (std::int64_t i = 0; i + 1 < L; ++i) {
    const std::int32_t next = tokens.decoder_ids[static_cast<std::size_t>(i + 1)];
    if (std::find(memory_tokens.begin(), memory_tokens.end(), next) != memory_tokens.end()) {
      continue;
    }
    targets[i] = next;
    ++n_targets;
  }
  ASSERT_GT(n_targets, 10);
  ASSERT_LT(n_targets, L - 10) << "the placeholders should be excluded";

  torch::optim::AdamW optimizer(
      model->parameters(), torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).weight_decay(0.01));

  std::vector<double> losses;
  for (int step = 0; step < 5; ++step) {
    optimizer.zero_grad();
    const torch::Tensor logits = model->forward(tokens.decoder_ids, tokens.regions);  // [L, V]
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.narrow(0, 0, L - 1), targets,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
    loss.backward();
    losses.push_back(loss.item<double>());
    if (step == 0) {
      std::vector<std::string> without_gradient;
      for (const auto& p : model->named_parameters()) {
        if (!p.value().grad().defined() || p.value().grad().abs().sum().item<double>() == 0) {
          without_gradient.push_back(p.key());
        }
      }
      EXPECT_TRUE(without_gradient.empty())
          << without_gradient.size() << " parameters got no gradient, the first "
          << without_gradient.front();
    }
    optimizer.step();
  }
  for (std::size_t i = 1; i < losses.size(); ++i) EXPECT_LT(losses[i], losses[i - 1]);
}

}  // namespace
}  // namespace lclm::train
