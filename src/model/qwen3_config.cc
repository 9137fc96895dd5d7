#include "model/qwen3_config.h"

#include <algorithm>
#include <string>
#include <utility>

#include "format/json_file.h"
#include "util/error.h"

namespace lclm {
namespace {

// eos_token_id may be an integer or a list of integers.
void collect_eos(const nlohmann::json& j, std::vector<std::int32_t>& out) {
  if (!j.contains("eos_token_id")) return;
  const auto& e = j["eos_token_id"];
  if (e.is_number_integer()) out.push_back(e.get<std::int32_t>());
  if (e.is_array()) {
    for (const auto& x : e) {
      if (x.is_number_integer()) out.push_back(x.get<std::int32_t>());
    }
  }
}

}  // namespace

Qwen3Config Qwen3Config::from_dir(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  if (!std::filesystem::exists(path)) throw Error("config.json is missing from " + dir.string());
  const nlohmann::json j = read_json_file(path);
  const auto model_type = key_or<std::string>(j, "model_type", "qwen3", path);
  if (model_type != "qwen3") {
    throw Error(path.string() + ": model_type \"" + model_type +
                "\" is not supported (qwen3 only)");
  }
  Qwen3Config c;
  c.vocab_size = require_key<std::int64_t>(j, "vocab_size", path);
  c.hidden_size = require_key<std::int64_t>(j, "hidden_size", path);
  c.intermediate_size = require_key<std::int64_t>(j, "intermediate_size", path);
  c.num_hidden_layers = require_key<std::int64_t>(j, "num_hidden_layers", path);
  c.num_attention_heads = require_key<std::int64_t>(j, "num_attention_heads", path);
  c.num_key_value_heads =
      key_or<std::int64_t>(j, "num_key_value_heads", c.num_attention_heads, path);
  // (The default is computed whether or not it is used: only from sizes
  // that can divide, INT64_MIN / -1 traps.)
  c.head_dim = key_or<std::int64_t>(
      j, "head_dim",
      c.num_attention_heads > 0 && c.hidden_size > 0 ? c.hidden_size / c.num_attention_heads : 0,
      path);
  c.max_position_embeddings = key_or<std::int64_t>(j, "max_position_embeddings", 40960, path);
  c.rms_norm_eps = key_or<double>(j, "rms_norm_eps", 1e-6, path);
  c.rope_theta = key_or<double>(j, "rope_theta", 1e6, path);
  c.tie_word_embeddings = key_or<bool>(j, "tie_word_embeddings", false, path);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    throw Error(path.string() + ": rope_scaling is not supported yet");
  }
  collect_eos(j, c.eos_token_ids);
  const auto gen_path = dir / "generation_config.json";
  if (std::filesystem::exists(gen_path)) collect_eos(read_json_file(gen_path), c.eos_token_ids);
  std::sort(c.eos_token_ids.begin(), c.eos_token_ids.end());
  c.eos_token_ids.erase(std::unique(c.eos_token_ids.begin(), c.eos_token_ids.end()),
                        c.eos_token_ids.end());
  c.validate(path.string());
  return c;
}

void Qwen3Config::validate(const std::string& where) const {
  auto fail = [&](const std::string& why) { throw Error(where + ": " + why); };
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers <= 0 ||
      num_attention_heads <= 0 || num_key_value_heads <= 0 || head_dim <= 0) {
    fail("sizes must be positive");
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    fail("num_attention_heads (" + std::to_string(num_attention_heads) +
         ") is not a multiple of num_key_value_heads (" + std::to_string(num_key_value_heads) +
         ")");
  }
  if (head_dim % 2 != 0) fail("head_dim must be even for rotate-half RoPE");
  if (!(rms_norm_eps > 0 && rms_norm_eps < 1)) fail("rms_norm_eps must be in (0, 1)");
  // Real models use 1e4 to 1e8; past 1e12 every frequency but the first is
  // zero in float, and infinity or NaN computes nothing at all.
  if (!(rope_theta > 1 && rope_theta <= 1e12)) {
    fail("rope_theta must be in (1, 1e12], not " + std::to_string(rope_theta));
  }
  if (max_position_embeddings < 1 || max_position_embeddings > (std::int64_t{1} << 24)) {
    fail("max_position_embeddings must be in [1, 2^24], not " +
         std::to_string(max_position_embeddings));
  }
  // Beyond these no checkpoint exists, and the products of sizes overflow.
  constexpr std::int64_t kMaxSize = std::int64_t{1} << 20;
  for (const auto& [name, value] : {std::pair<const char*, std::int64_t>{"vocab_size", vocab_size},
                                    {"hidden_size", hidden_size},
                                    {"intermediate_size", intermediate_size},
                                    {"num_hidden_layers", num_hidden_layers},
                                    {"num_attention_heads", num_attention_heads},
                                    {"head_dim", head_dim}}) {
    if (value > kMaxSize * (std::string(name) == "vocab_size" ? 16 : 1)) {
      fail(std::string(name) + " " + std::to_string(value) + " is beyond any model's");
    }
  }
}

}  // namespace lclm
