#include "model/random_qwen3.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "util/error.h"
#include "util/hash.h"

namespace lclm {
namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  return mix64(state += 0x9e3779b97f4a7c15ull);
}

std::uint64_t hash_name(const std::string& s, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace

OwnedTensor random_tensor(const std::string& name, std::vector<std::int64_t> shape, DType dtype,
                          std::uint64_t seed, float mean, float std) {
  std::int64_t numel = 1;
  for (auto d : shape) numel *= d;
  OwnedTensor t{name, std::move(shape), std::vector<std::uint8_t>(numel * dtype_size(dtype))};
  std::uint64_t state = hash_name(name, seed);
  const float a = std * std::sqrt(3.0f);
  for (std::int64_t i = 0; i < numel; ++i) {
    const float u = static_cast<float>(splitmix64(state) >> 40) * (1.0f / 16777216.0f);
    const float value = mean + (2.0f * u - 1.0f) * a;
    auto* out = t.bytes.data() + i * dtype_size(dtype);
    if (dtype == DType::F32) {
      std::memcpy(out, &value, 4);
    } else {
      const std::uint16_t half = dtype == DType::BF16 ? f32_to_bf16(value) : f32_to_f16(value);
      std::memcpy(out, &half, 2);
    }
  }
  return t;
}

void append_random_block(std::vector<OwnedTensor>& out, const std::string& lp, const Qwen3Config& c,
                         DType dtype, std::uint64_t seed, float s) {
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const std::int64_t q_rows = c.num_attention_heads * D, kv_rows = c.num_key_value_heads * D;
  const auto w = [&](const std::string& name, std::vector<std::int64_t> shape) {
    out.push_back(random_tensor(lp + name, std::move(shape), dtype, seed, 0.0f, s));
  };
  const auto norm = [&](const std::string& name, std::int64_t n) {
    out.push_back(random_tensor(lp + name, {n}, dtype, seed, 1.0f, 0.1f));
  };
  norm("input_layernorm.weight", H);
  norm("post_attention_layernorm.weight", H);
  norm("self_attn.q_norm.weight", D);
  norm("self_attn.k_norm.weight", D);
  w("self_attn.q_proj.weight", {q_rows, H});
  w("self_attn.k_proj.weight", {kv_rows, H});
  w("self_attn.v_proj.weight", {kv_rows, H});
  w("self_attn.o_proj.weight", {H, q_rows});
  w("mlp.gate_proj.weight", {I, H});
  w("mlp.up_proj.weight", {I, H});
  w("mlp.down_proj.weight", {H, I});
}

void write_owned_tensors(const std::filesystem::path& path, const std::vector<OwnedTensor>& tensors,
                         DType dtype) {
  std::vector<TensorToWrite> views;
  for (const OwnedTensor& t : tensors) views.push_back({t.name, dtype, t.shape, t.bytes});
  write_safetensors(path, views, {{"format", "pt"}});
}

Qwen3Config qwen3_0_6b_config() {
  Qwen3Config c;
  c.vocab_size = 151936;
  c.hidden_size = 1024;
  c.intermediate_size = 3072;
  c.num_hidden_layers = 28;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 40960;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = true;
  c.eos_token_ids = {151645};
  return c;
}

Qwen3Config qwen3_4b_config() {
  Qwen3Config c = qwen3_0_6b_config();
  c.hidden_size = 2560;
  c.intermediate_size = 9728;
  c.num_hidden_layers = 36;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.max_position_embeddings = 262144;
  c.rope_theta = 5e6;
  return c;
}

Qwen3Config tiny_qwen3_config() {
  Qwen3Config c;
  c.vocab_size = 151936;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1e6;
  c.tie_word_embeddings = true;
  c.eos_token_ids = {151645};
  return c;
}

std::string qwen3_config_json(const Qwen3Config& c, DType dtype) {
  nlohmann::json j = {
      {"architectures", {"Qwen3ForCausalLM"}},
      {"model_type", "qwen3"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_dim", c.head_dim},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"torch_dtype", dtype == DType::BF16  ? "bfloat16"
                      : dtype == DType::F16 ? "float16"
                                            : "float32"},
  };
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids.front();
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  return j.dump(2) + "\n";
}

void write_random_qwen3(const std::filesystem::path& dir, const RandomQwen3Spec& spec) {
  const Qwen3Config& c = spec.config;
  c.validate("random model spec");
  if (spec.shards < 1) throw Error("--shards must be >= 1");
  std::filesystem::create_directories(dir);
  {
    std::ofstream cfg(dir / "config.json");
    cfg << qwen3_config_json(c, spec.dtype);
    if (!cfg) throw Error("cannot write " + (dir / "config.json").string());
  }
  const std::string p = spec.tensor_prefix ? "model." : "";
  const std::int64_t H = c.hidden_size;
  std::vector<OwnedTensor> tensors;
  tensors.push_back(random_tensor(p + "embed_tokens.weight", {c.vocab_size, H}, spec.dtype,
                                  spec.seed, 0.0f, spec.weight_std));
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    append_random_block(tensors, p + "layers." + std::to_string(l) + ".", c, spec.dtype, spec.seed,
                        spec.weight_std);
  }
  tensors.push_back(random_tensor(p + "norm.weight", {H}, spec.dtype, spec.seed, 1.0f, 0.1f));
  if (!c.tie_word_embeddings) {
    tensors.push_back(random_tensor("lm_head.weight", {c.vocab_size, H}, spec.dtype, spec.seed,
                                    0.0f, spec.weight_std));
  }

  const auto shards = static_cast<std::size_t>(spec.shards);
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t k = 0; k < shards; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, shards);
    const std::string file = shards == 1 ? "model.safetensors" : name;
    std::vector<OwnedTensor> part;
    for (std::size_t i = k; i < tensors.size(); i += shards) {
      weight_map[tensors[i].name] = file;
      part.push_back(std::move(tensors[i]));
    }
    write_owned_tensors(dir / file, part, spec.dtype);
  }
  if (shards > 1) {
    std::ofstream index(dir / "model.safetensors.index.json");
    index << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}
                 .dump(2);
  }
}

}  // namespace lclm
