// `lclm eval` on the shipped model (models/lclm-small), when it is there.
#include <gtest/gtest.h>

#include <filesystem>

#include "compression/lclm_config.h"
#include "eval/evaluator.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

// The shipped model was trained on the single-needle task word for word:
// through its latents it must find some of the needles at 1K tokens.
TEST(EvalShippedModel, FindsNeedlesThroughLatents) {
  const fs::path ckpt = fs::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
  if (!fs::exists(ckpt)) GTEST_SKIP() << ckpt << " is not there yet (the lead commits it)";
  EvalConfig config;
  config.checkpoint = ckpt;
  config.methods = {"full", "latent", "snapkv"};
  config.ratios = {LclmConfig::from_file(ckpt / "model_config.json").compression_ratio};
  config.lengths = {1024};
  config.samples = 4;
  const std::vector<EvalRecord> records = Evaluator(config).run();
  ASSERT_EQ(records.size(), 4u * 3);
  double latent = 0;
  for (const EvalRecord& r : records) latent += r.method == "latent" ? r.score / 4 : 0.0;
  EXPECT_GT(latent, 0.0) << "no needle found through the latents";
}

}  // namespace
}  // namespace lclm
