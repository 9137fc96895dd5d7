// The fields of a Hugging Face Qwen3 config.json that the forward pass uses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lclm {

struct Qwen3Config {
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  bool tie_word_embeddings = false;
  std::vector<std::int32_t> eos_token_ids;  // from config.json / generation_config.json

  // Reads DIR/config.json (and eos ids from DIR/generation_config.json when present);
  // throws lclm::Error naming the file and key for missing or inconsistent values.
  static Qwen3Config from_dir(const std::filesystem::path& dir);
  // Checks the sizes fit together (heads divide, head_dim even, ...).
  void validate(const std::string& where) const;
};

}  // namespace lclm
