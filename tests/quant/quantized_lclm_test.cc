#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "compression/lclm_model.h"
#include "core/test_models.h"
#include "fixtures/random_lclm.h"
#include "quant/quantize_checkpoint.h"
#include "util/mapped_file.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

bool same_bytes(const fs::path& a, const fs::path& b) {
  const MappedFile fa(a), fb(b);
  return std::equal(fa.bytes().begin(), fa.bytes().end(), fb.bytes().begin(), fb.bytes().end());
}

// An LCLM checkpoint: decoder and encoder are quantized, the adapter and the
// other files copied; the stored checkpoint compresses exactly as the
// original converted at load, and the latent cache tells them from bf16.
TEST(QuantizedLclm, DecoderAndEncoderQuantizedAdapterCopied) {
  const fs::path dir = testing::scratch_dir("lclm-q") / "ckpt";
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.config.encoder_window_size = 32;
  write_random_lclm(dir, spec);
  const fs::path out = testing::scratch_dir("lclm-q8") / "ckpt";
  const QuantizeSummary s = quantize_checkpoint(dir, out, DType::Q8_0);
  EXPECT_EQ(s.matrices, 2u * (2 * 7 + 1) - 1);  // the encoder has no lm_head
  for (const char* f : {"model_config.json", "adapter/adapter.safetensors", "decoder/config.json",
                        "decoder/tokenizer.json", "encoder/tokenizer_config.json"}) {
    EXPECT_TRUE(same_bytes(dir / f, out / f)) << f;
  }

  LclmOptions convert;
  convert.quant = DType::Q8_0;
  const auto bf16 = LclmModel::load(dir);
  const auto converted = LclmModel::load(dir, convert);
  const auto stored = LclmModel::load(out);
  for (const LclmModel* m : {converted.get(), stored.get()}) {
    EXPECT_EQ(m->decoder().matrix_dtype(), DType::Q8_0);
    EXPECT_EQ(m->encoder().matrix_dtype(), DType::Q8_0);
  }
  EXPECT_EQ(stored->decoder().converted_bytes() + stored->encoder().converted_bytes(), 0u);
  EXPECT_NE(converted->fingerprint(), bf16->fingerprint());

  const std::string text = "The river runs north past the mill, then bends west to the sea.";
  const Latents a = converted->compress(text), b = stored->compress(text);
  EXPECT_EQ(a.data, b.data);
  EXPECT_NE(a.data, bf16->compress(text).data);
}

}  // namespace
}  // namespace lclm
