#include "compression/random_lclm.h"

#include <nlohmann/json.hpp>

#include "compression/memory_regions.h"
#include "format/json_file.h"
#include "model/random_qwen3.h"
#include "util/error.h"

namespace lclm {

namespace fs = std::filesystem;

std::string lclm_config_json(const LclmConfig& c) {
  nlohmann::json j = {
      {"compression_ratio", c.compression_ratio},
      {"encoder_window_size", c.encoder_window_size},
      {"pooling", pooling_name(c.pooling)},
      {"encoder_mask_type", c.encoder_mask == AttentionMask::Causal ? "causal" : "bidirectional"},
      {"boundary_overlap", c.boundary_overlap},
      {"adapter_type", adapter_type_name(c.adapter_type)},
  };
  if (c.adapter_type != AdapterType::Mlp) j["num_adapter_layers"] = c.num_adapter_layers;
  return j.dump(2) + "\n";
}

std::int64_t write_tokenizer_with_added_tokens(const fs::path& in, const fs::path& out,
                                               const std::vector<std::string>& tokens,
                                               std::vector<std::int32_t>* eos_ids) {
  nlohmann::json j = read_json_file(in);
  if (eos_ids) {
    for (const auto& t : j.at("added_tokens")) {
      if (t.at("content") == "<|im_end|>") eos_ids->push_back(t.at("id").get<std::int32_t>());
    }
  }
  std::int64_t next = 0;
  for (const auto& [token, id] : j.at("model").at("vocab").items())
    next = std::max(next, id.get<std::int64_t>() + 1);
  for (const auto& t : j.at("added_tokens"))
    next = std::max(next, t.at("id").get<std::int64_t>() + 1);
  for (const std::string& content : tokens) {
    j["added_tokens"].push_back({{"id", next++},
                                 {"content", content},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  }
  write_text_file(out, j.dump());
  return next;
}

RandomLclmSpec published_lclm_spec(const fs::path& tokenizer_dir, std::int64_t encoder_layers,
                                   std::int64_t decoder_layers) {
  RandomLclmSpec s;
  s.tokenizer_dir = tokenizer_dir;
  s.config.compression_ratio = 4;
  s.config.encoder_window_size = 1024;
  s.encoder = qwen3_0_6b_config();
  s.decoder = qwen3_4b_config();
  if (encoder_layers > 0) s.encoder.num_hidden_layers = encoder_layers;
  if (decoder_layers > 0) s.decoder.num_hidden_layers = decoder_layers;
  s.weight_std = 0.02f;
  return s;
}

RandomLclmSpec tiny_lclm_spec(const fs::path& tokenizer_dir) {
  RandomLclmSpec s;
  s.tokenizer_dir = tokenizer_dir;
  s.config.compression_ratio = 4;
  s.config.encoder_window_size = 32;
  Qwen3Config& e = s.encoder;
  e.hidden_size = 64;
  e.intermediate_size = 128;
  e.num_hidden_layers = 2;
  e.num_attention_heads = 4;
  e.num_key_value_heads = 2;
  e.head_dim = 16;
  e.max_position_embeddings = 32768;
  e.tie_word_embeddings = true;
  Qwen3Config& d = s.decoder;
  d.hidden_size = 96;
  d.intermediate_size = 192;
  d.num_hidden_layers = 2;
  d.num_attention_heads = 4;
  d.num_key_value_heads = 2;
  d.head_dim = 32;
  d.max_position_embeddings = 32768;
  d.tie_word_embeddings = true;
  return s;
}

namespace {

Qwen3Config small_qwen3(std::int64_t hidden, std::int64_t layers, const char* part) {
  if (hidden <= 0 || hidden % 128 != 0 || layers <= 0) {
    throw Error(std::string(part) + ": hidden size " + std::to_string(hidden) + " and " +
                std::to_string(layers) +
                " layers; the hidden size must be a positive multiple of 128 (head_dim 64, "
                "an even number of heads)");
  }
  Qwen3Config c;
  c.hidden_size = hidden;
  c.intermediate_size = 3 * hidden;
  c.num_hidden_layers = layers;
  c.head_dim = 64;
  c.num_attention_heads = hidden / 64;
  c.num_key_value_heads = c.num_attention_heads / 2;
  c.max_position_embeddings = 32768;
  c.tie_word_embeddings = true;
  return c;
}

}  // namespace

RandomLclmSpec small_lclm_spec(const fs::path& tokenizer_dir, const LclmShape& shape) {
  RandomLclmSpec s;
  s.tokenizer_dir = tokenizer_dir;
  s.config.compression_ratio = 4;
  s.config.encoder_window_size = 64;
  s.encoder = small_qwen3(shape.encoder_hidden, shape.encoder_layers, "encoder");
  s.decoder = small_qwen3(shape.decoder_hidden, shape.decoder_layers, "decoder");
  // Init as GPT-2 does (std 0.02): 0.08 suits the tests' hidden sizes of 64-96.
  s.weight_std = 0.02f;
  return s;
}

void write_random_lclm(const fs::path& dir, const RandomLclmSpec& spec) {
  spec.config.validate("random LCLM spec");
  for (const char* part : {"decoder", "encoder", "adapter"}) fs::create_directories(dir / part);
  write_text_file(dir / "model_config.json", lclm_config_json(spec.config));

  const fs::path tokenizer_json = spec.tokenizer_dir / "tokenizer.json";
  const fs::path tokenizer_config = spec.tokenizer_dir / "tokenizer_config.json";
  // The reference adds the memory tokens in this order and resizes the
  // decoder's embeddings to the new tokenizer length.
  std::vector<std::int32_t> eos_ids;  // <|im_end|> ends a chat turn
  const std::int64_t decoder_vocab = write_tokenizer_with_added_tokens(
      tokenizer_json, dir / "decoder" / "tokenizer.json",
      {std::string(kMemoryStart), std::string(kMemoryEnd), std::string(kMemoryPlaceholder)},
      &eos_ids);
  const std::int64_t encoder_vocab =
      write_tokenizer_with_added_tokens(tokenizer_json, dir / "encoder" / "tokenizer.json", {});
  for (const char* part : {"decoder", "encoder"}) {
    fs::copy_file(tokenizer_config, dir / part / "tokenizer_config.json",
                  fs::copy_options::overwrite_existing);
  }

  RandomQwen3Spec decoder{spec.decoder, spec.dtype, spec.seed, 1, spec.weight_std, true};
  decoder.config.vocab_size = decoder_vocab;
  if (decoder.config.eos_token_ids.empty()) decoder.config.eos_token_ids = eos_ids;
  write_random_qwen3(dir / "decoder", decoder);
  // The encoder is a bare Qwen3Model: no "model." prefix, no lm_head.
  RandomQwen3Spec encoder{spec.encoder, spec.dtype, spec.seed + 1, 1, spec.weight_std, false};
  encoder.config.vocab_size = encoder_vocab;
  encoder.config.tie_word_embeddings = true;
  write_random_qwen3(dir / "encoder", encoder);

  const LclmConfig& c = spec.config;
  const std::int64_t E = spec.encoder.hidden_size, D = spec.decoder.hidden_size;
  const std::int64_t in = c.pooling == Pooling::Concat ? c.compression_ratio * E : E;
  const std::uint64_t seed = spec.seed + 2;
  std::vector<OwnedTensor> adapter;
  adapter.push_back(random_tensor("norm.weight", {in}, spec.dtype, seed, 1.0f, 0.1f));
  adapter.push_back(random_tensor("fc1.weight", {D, in}, spec.dtype, seed, 0.0f, spec.weight_std));
  adapter.push_back(random_tensor("fc1.bias", {D}, spec.dtype, seed, 0.0f, spec.weight_std));
  adapter.push_back(random_tensor("fc2.weight", {D, D}, spec.dtype, seed, 0.0f, spec.weight_std));
  adapter.push_back(random_tensor("fc2.bias", {D}, spec.dtype, seed, 0.0f, spec.weight_std));
  if (c.adapter_type != AdapterType::Mlp) {
    const Qwen3Config& attn = c.adapter_type == AdapterType::MlpAttn ? spec.decoder : spec.encoder;
    for (std::int64_t l = 0; l < c.num_adapter_layers; ++l) {
      append_random_block(adapter, "attention_layers." + std::to_string(l) + ".decoder_layer.",
                          attn, spec.dtype, seed, spec.weight_std);
    }
  }
  write_owned_tensors(dir / "adapter" / "adapter.safetensors", adapter, spec.dtype);
}

}  // namespace lclm
