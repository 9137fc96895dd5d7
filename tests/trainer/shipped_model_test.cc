// The shipped model, models/lclm-small (label e2e): the trainer and the engine
// compute the same logits on it. What it recalls is held to floors by
// tests/eval/shipped_recall_test.cc.
#include <gtest/gtest.h>

#include <filesystem>

#include "compression/lclm_model.h"
#include "trainer/lclm_checkpoint.h"
#include "trainer/trainer_test_models.h"

namespace lclm::train {
namespace {

std::filesystem::path shipped_model() {
  return std::filesystem::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
}

TEST(ShippedModel, TrainerAndEngineComputeTheSameLogits) {
  testing::use_all_cores();
  const lclm::testing::Bf16ActivationsScope exact_x;  // the trainer keeps x in f32
  auto engine = LclmModel::load(shipped_model());
  auto model = load_lclm_checkpoint(shipped_model());
  const torch::NoGradGuard no_grad;
  const std::string prompt = testing::two_region_prompt();
  const testing::TokenizedPrompt tokens = testing::tokenize_prompt(*engine, prompt);
  ASSERT_EQ(tokens.regions.size(), 2u);
  const torch::Tensor want = testing::engine_logits(*engine, prompt);
  const torch::Tensor got = model->forward(tokens.decoder_ids, tokens.regions);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT(testing::relative_error(got, want), 1e-4);
}

}  // namespace
}  // namespace lclm::train
