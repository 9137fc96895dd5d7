// Writes a Qwen3ForCausalLM directory with seeded random weights in the HF
// layout (config.json + safetensors, optionally sharded with an index). The
// test models and the benchmarks are made with it; the same seed always gives
// the same bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "model/qwen3_config.h"

namespace lclm {

struct RandomQwen3Spec {
  Qwen3Config config;
  DType dtype = DType::BF16;
  std::uint64_t seed = 0;
  int shards = 1;             // > 1 writes model-0000i-of-0000n.safetensors + index
  float weight_std = 0.02f;   // of the projection and embedding weights
  bool tensor_prefix = true;  // "model." prefix (Qwen3ForCausalLM) or bare (Qwen3Model)
};

// The shape of Qwen3-0.6B (28 layers, hidden 1024, 16/8 heads of 128, tied).
Qwen3Config qwen3_0_6b_config();
// Qwen3-4B's shape (the published LCLM decoder): 36 layers, hidden 2560,
// 32 query / 8 KV heads of 128, intermediate 9728, tied embeddings.
Qwen3Config qwen3_4b_config();
// A tiny Qwen3 for tests and demos: 2 layers, hidden 64, 4/2 heads of 32
// (so heads x head_dim differs from hidden, as in the real models), the Qwen3
// vocabulary size, tied embeddings.
Qwen3Config tiny_qwen3_config();

void write_random_qwen3(const std::filesystem::path& dir, const RandomQwen3Spec& spec);

// config.json text for c (architectures Qwen3ForCausalLM).
std::string qwen3_config_json(const Qwen3Config& c, DType dtype);

// A tensor with its own storage, for writers of random checkpoints.
struct OwnedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
};

// Values mean + uniform(-a, a) with a = std * sqrt(3), so the spread is `std`.
// Each tensor's stream is seeded from (seed, name): independent of write order.
OwnedTensor random_tensor(const std::string& name, std::vector<std::int64_t> shape, DType dtype,
                          std::uint64_t seed, float mean, float std);

// Appends the tensors of one Qwen3 block named PREFIX{input_layernorm, ...}.
// Norm weights scatter around 1 so that a wrong norm shows in the output.
void append_random_block(std::vector<OwnedTensor>& out, const std::string& prefix,
                         const Qwen3Config& c, DType dtype, std::uint64_t seed, float weight_std);

void write_owned_tensors(const std::filesystem::path& path, const std::vector<OwnedTensor>& tensors,
                         DType dtype);

}  // namespace lclm
