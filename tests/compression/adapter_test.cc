// The adapter against its formula, computed by hand in double precision, on
// inputs small enough that the RMSNorm epsilon (1e-6) matters.
#include "compression/adapter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/test_models.h"
#include "format/safetensors.h"

namespace lclm {
namespace {

TEST(Adapter, MlpMatchesTheFormulaIncludingTheNormEpsilon) {
  const std::size_t E = 3, D = 2;
  const std::vector<float> norm = {1.0f, 0.5f, 2.0f};
  const std::vector<float> fc1 = {0.3f, -0.2f, 0.1f, 0.5f, 0.4f, -0.6f};  // [D, E]
  const std::vector<float> fc1_bias = {0.05f, -0.1f};
  const std::vector<float> fc2 = {1.0f, -0.5f, 0.25f, 2.0f};  // [D, D]
  const std::vector<float> fc2_bias = {0.01f, 0.02f};
  const auto bytes = [](const std::vector<float>& v) {
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(v.data()),
                                         v.size() * sizeof(float));
  };
  const auto dir = testing::scratch_dir("adapter_formula");
  const std::vector<TensorToWrite> tensors = {{"norm.weight", DType::F32, {3}, bytes(norm)},
                                              {"fc1.weight", DType::F32, {2, 3}, bytes(fc1)},
                                              {"fc1.bias", DType::F32, {2}, bytes(fc1_bias)},
                                              {"fc2.weight", DType::F32, {2, 2}, bytes(fc2)},
                                              {"fc2.bias", DType::F32, {2}, bytes(fc2_bias)}};
  write_safetensors(dir / "adapter.safetensors", tensors);
  Qwen3Config encoder, decoder;
  encoder.hidden_size = 3;
  decoder.hidden_size = 2;
  const Adapter adapter =
      Adapter::load(dir / "adapter.safetensors", LclmConfig{}, encoder, decoder);

  // Row 0 has mean square 1e-6, equal to eps: a wrong eps moves it by ~30%.
  const std::vector<float> x = {1e-3f, -1e-3f, 1e-3f, 0.7f, -1.2f, 0.4f};
  const std::vector<float> y = adapter.apply(x.data(), 2);
  ASSERT_EQ(y.size(), 2 * D);
  for (std::size_t r = 0; r < 2; ++r) {
    double ms = 0;
    for (std::size_t i = 0; i < E; ++i) ms += double(x[r * E + i]) * x[r * E + i];
    const double inv = 1.0 / std::sqrt(ms / E + 1e-6);
    double h[2];
    for (std::size_t j = 0; j < D; ++j) {
      double a = fc1_bias[j];
      for (std::size_t i = 0; i < E; ++i) a += fc1[j * E + i] * (x[r * E + i] * inv * norm[i]);
      h[j] = 0.5 * a * (1.0 + std::erf(a / std::sqrt(2.0)));
    }
    for (std::size_t j = 0; j < D; ++j) {
      const double expected = fc2_bias[j] + fc2[j * D] * h[0] + fc2[j * D + 1] * h[1];
      EXPECT_NEAR(y[r * D + j], expected, 1e-6) << "row " << r << " col " << j;
    }
  }
}

}  // namespace
}  // namespace lclm
