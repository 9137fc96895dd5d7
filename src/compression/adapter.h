// The LCLM adapter: maps pooled encoder states into the decoder's embedding
// space. mlp: RMSNorm(in) -> Linear(in->D, bias) -> GELU(erf) -> Linear(D->D,
// bias). mlp_attn adds bidirectional Qwen3 layers (decoder config) after the
// MLP, attn_mlp adds them (encoder config) before it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <vector>

#include "compression/lclm_config.h"
#include "format/safetensors.h"
#include "model/qwen3_block.h"
#include "model/qwen3_config.h"
#include "ops/transformer_ops.h"

namespace lclm {

class Adapter {
 public:
  // file: CKPT/adapter/adapter.safetensors. Shapes follow from the configs;
  // a mismatch names the tensor and both shapes.
  static Adapter load(const std::filesystem::path& file, const LclmConfig& config,
                      const Qwen3Config& encoder, const Qwen3Config& decoder);

  std::size_t input_dim() const { return input_dim_; }    // E (r*E for concat pooling)
  std::size_t output_dim() const { return output_dim_; }  // D

  // The pooled states of one memory region [n, input_dim] -> [n, output_dim].
  // Attention layers see the region's latents together, positions 0..n-1.
  std::vector<float> apply(const float* pooled, std::size_t n) const;

 private:
  struct AttentionStack {
    Qwen3Config config;
    std::vector<Qwen3Block> blocks;
    RopeTable rope{2, 1.0};
    void run(float* x, std::size_t n) const;
  };
  std::vector<float> run_mlp(const float* x, std::size_t n) const;

  TensorStore store_;
  AdapterType type_ = AdapterType::Mlp;
  std::size_t input_dim_ = 0, output_dim_ = 0;
  std::vector<float> norm_, fc1_bias_, fc2_bias_;
  WeightMatrix fc1_, fc2_;
  AttentionStack attention_;
};

}  // namespace lclm
