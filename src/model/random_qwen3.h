// Writes a Qwen3ForCausalLM directory with seeded random weights in the HF
// layout (config.json + safetensors, optionally sharded with an index). The
// test models and the benchmarks are made with it; the same seed always gives
// the same bytes.
#pragma once

#include <cstdint>
#include <filesystem>

#include "format/dtype.h"
#include "model/qwen3_config.h"

namespace lclm {

struct RandomQwen3Spec {
  Qwen3Config config;
  DType dtype = DType::BF16;
  std::uint64_t seed = 0;
  int shards = 1;           // > 1 writes model-0000i-of-0000n.safetensors + index
  float weight_std = 0.02f;  // of the projection and embedding weights
  bool tensor_prefix = true;  // "model." prefix (Qwen3ForCausalLM) or bare (Qwen3Model)
};

// The shape of Qwen3-0.6B (28 layers, hidden 1024, 16/8 heads of 128, tied).
Qwen3Config qwen3_0_6b_config();

void write_random_qwen3(const std::filesystem::path& dir, const RandomQwen3Spec& spec);

// config.json text for c (architectures Qwen3ForCausalLM).
std::string qwen3_config_json(const Qwen3Config& c, DType dtype);

}  // namespace lclm
