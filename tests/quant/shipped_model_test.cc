// Accuracy of quantized matrices on the shipped model (models/lclm-small),
// labelled e2e: skipped, with a message, until that checkpoint exists.
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "model/qwen3_model.h"
#include "quant/logit_error.h"
#include "tokenizer/tokenizer.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

// The decoder's logits on real prose, bf16 against q8_0 and q4_0, through the
// decode path (one position a pass; it also rounds x to 8 bits).
TEST(ShippedModelQuantization, LogitErrorAndPerplexityStayClose) {
  const fs::path ckpt = fs::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
  const fs::path dir = ckpt / "decoder";
  const std::string text =
      "The river rises in the hills north of the town and runs south for forty miles before it "
      "reaches the sea. In spring the snow melts and the water climbs the stone walls of the old "
      "mill; in late summer it is shallow enough to cross on foot. The town grew up around the "
      "bridge, and the market is still held there every Saturday morning.";
  const std::vector<std::int32_t> ids = Tokenizer::from_dir(dir).encode(text);
  const Qwen3Model bf16 = Qwen3Model::load(dir);
  const auto H = static_cast<std::size_t>(bf16.config().hidden_size);
  const auto V = static_cast<std::size_t>(bf16.config().vocab_size);
  // Relative RMS bound and the largest perplexity ratio allowed for each type.
  // q4_0's bounds follow the model: RMS 0.275 on the recall-trained s9
  // (sharper logits than the s4 it replaced, which measured well under 0.25),
  // so 0.35; perplexity x1.16 on s12 and x1.14 on s13, which trained on
  // licence text only and put this prose at 1,040 and 1,439 (on held-out
  // licence text, 6.7 and 5.1, q4_0 costs 7% and 9%: docs/quantization.md),
  // so x1.25. A broken q4_0 is far outside both.
  for (const auto& [type, rms_bound, ppl_ratio] :
       {std::tuple{DType::Q8_0, 0.03, 1.01}, std::tuple{DType::Q4_0, 0.35, 1.25}}) {
    const Qwen3Model q = Qwen3Model::load(dir, {.quant = type});
    KVCache cache_ref = bf16.make_cache(ids.size()), cache_q = q.make_cache(ids.size());
    std::vector<float> x_ref(H), x_q(H), l_ref(V), l_q(V);
    LogitError e;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::span<const std::int32_t> id(ids.data() + i, 1);
      bf16.embed(id, x_ref.data());
      q.embed(id, x_q.data());
      bf16.forward(x_ref.data(), 1, cache_ref, AttentionMask::Causal);
      q.forward(x_q.data(), 1, cache_q, AttentionMask::Causal);
      bf16.logits(x_ref.data(), 1, l_ref.data());
      q.logits(x_q.data(), 1, l_q.data());
      const std::int32_t next = i + 1 < ids.size() ? ids[i + 1] : -1;
      e.add(l_ref.data(), l_q.data(), 1, V, &next);
    }
    std::printf("%s: relative RMS %.4f, max abs %.3f, top-1 %.3f, KL %.5f, ppl %.3f -> %.3f\n",
                std::string(dtype_name(type)).c_str(), e.relative_rms(), e.max_abs(),
                e.top1_agreement(), e.mean_kl(), e.perplexity_ref(), e.perplexity_got());
    EXPECT_LT(e.relative_rms(), rms_bound) << dtype_name(type);
    EXPECT_LT(e.perplexity_got(), e.perplexity_ref() * ppl_ratio) << dtype_name(type);
  }
}

}  // namespace
}  // namespace lclm
