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

// The published LCLM's shape (spec: a Qwen3-0.6B encoder, a Qwen3-4B decoder,
// window 1024, mean pooling, causal mask, mlp adapter), with `encoder_layers`
// and `decoder_layers` layers (0 keeps the full 28 and 36): scaled down in
// depth only, every matrix keeps its published size.
RandomLclmSpec published_lclm_spec(const std::filesystem::path& tokenizer_dir,
                                   std::int64_t encoder_layers = 0,
                                   std::int64_t decoder_layers = 0);

// The shape of a small trainable LCLM: Qwen3 blocks with head_dim 64,
// hidden / 64 query heads, half as many KV heads and an MLP 3x as wide.
struct LclmShape {
  std::int64_t encoder_hidden = 128, encoder_layers = 2;
  std::int64_t decoder_hidden = 256, decoder_layers = 4;
};
// Throws lclm::Error when a hidden size is not a positive multiple of 128.
RandomLclmSpec small_lclm_spec(const std::filesystem::path& tokenizer_dir, const LclmShape& shape);

void write_random_lclm(const std::filesystem::path& dir, const RandomLclmSpec& spec);

// Copies a tokenizer.json, appending `tokens` as special added tokens with the
// next free ids (as the reference's add_special_tokens does). Returns the
// tokenizer's new size; appends the id of <|im_end|> to *eos_ids when given.
std::int64_t write_tokenizer_with_added_tokens(const std::filesystem::path& in,
                                               const std::filesystem::path& out,
                                               const std::vector<std::string>& tokens,
                                               std::vector<std::int32_t>* eos_ids = nullptr);

// model_config.json text for c.
std::string lclm_config_json(const LclmConfig& c);

}  // namespace lclm
