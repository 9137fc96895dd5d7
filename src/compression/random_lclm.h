// Writes an LCLM checkpoint in the published layout with seeded random
// weights: the project's test checkpoints, in every configuration the loader
// accepts (pooling, mask, overlap, adapter type).
#pragma once

#include <cstdint>
#include <filesystem>

#include "compression/lclm_config.h"
#include "format/dtype.h"
#include "model/qwen3_config.h"

namespace lclm {

struct RandomLclmSpec {
  LclmConfig config;
  Qwen3Config encoder;  // vocab_size is taken from the tokenizer
  Qwen3Config decoder;  // vocab_size: the tokenizer's size plus the memory tokens
  DType dtype = DType::BF16;
  std::uint64_t seed = 0;
  float weight_std = 0.08f;
  // Holds the base Qwen3 tokenizer.json and tokenizer_config.json.
  std::filesystem::path tokenizer_dir;
};

// A small encoder/decoder pair for tests: hidden sizes 64 and 96, two layers each.
RandomLclmSpec tiny_lclm_spec(const std::filesystem::path& tokenizer_dir);

void write_random_lclm(const std::filesystem::path& dir, const RandomLclmSpec& spec);

// Copies a tokenizer.json, appending `tokens` as special added tokens with the
// next free ids (as the reference's add_special_tokens does). Returns the
// tokenizer's new size.
std::int64_t write_tokenizer_with_added_tokens(const std::filesystem::path& in,
                                               const std::filesystem::path& out,
                                               const std::vector<std::string>& tokens);

// model_config.json text for c.
std::string lclm_config_json(const LclmConfig& c);

}  // namespace lclm
