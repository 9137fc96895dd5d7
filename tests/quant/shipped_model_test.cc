// Accuracy of quantized matrices on the shipped model (models/lclm-small),
// labelled e2e: skipped, with a message, until that checkpoint exists.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/qwen3_model.h"
#include "quant/logit_error.h"
#include "tokenizer/tokenizer.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

// 128 tokens of held-out licence text (the first 4,000 bytes of sed's
// copyright file with every run of white space made one space, as
// docs/quantization.md measures it with lclm-quant-error): the shipped model
// knows licence text, so its perplexity there (about 5) is a measure, where
// on ordinary prose (about 1,200) it is nearly flat and moves by tens of per
// cent with any weight change.
std::string held_out_licence_text() {
  const fs::path path = "/usr/share/doc/sed/copyright";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path.string() + " (Debian's sed package)");
  std::string text;
  char c = 0;
  while (in.get(c) && text.size() < 4000) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (!space)
      text += c;
    else if (text.empty() || text.back() != ' ')
      text += ' ';
  }
  return text;
}

// The decoder's logits on that text, bf16 against q8_0 and q4_0, through the
// decode path (one position a pass; it also rounds x to 8 bits).
TEST(ShippedModelQuantization, LogitErrorAndPerplexityStayClose) {
  const fs::path ckpt = fs::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
  const fs::path dir = ckpt / "decoder";
  std::vector<std::int32_t> ids = Tokenizer::from_dir(dir).encode(held_out_licence_text());
  ASSERT_GE(ids.size(), 128u);
  ids.resize(128);
  const Qwen3Model bf16 = Qwen3Model::load(dir);
  const auto H = static_cast<std::size_t>(bf16.config().hidden_size);
  const auto V = static_cast<std::size_t>(bf16.config().vocab_size);
  // Relative RMS bound and the largest perplexity ratio allowed for each type.
  // q4_0's RMS bound follows the recall-trained models' sharper logits: 0.275
  // on s9, 0.178 on s14, 0.168 on s15, 0.186 on s16, 0.214 on s19, 0.219 on
  // s20 (whose perplexity ratios here are x1.001 for q8_0 and x1.068 for
  // q4_0; s19 x1.045, s16 x1.093, s15 x1.123, s14 x1.117, s13 x1.09, s12
  // x1.07 for q4_0).
  // A broken q4_0 is far outside both bounds.
  for (const auto& [type, rms_bound, ppl_ratio] :
       {std::tuple{DType::Q8_0, 0.03, 1.01}, std::tuple{DType::Q4_0, 0.35, 1.2}}) {
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
