#include "compression/adapter.h"

#include <cmath>

#include "util/error.h"

namespace lclm {
namespace {

constexpr float kAdapterNormEps = 1e-6f;

void add_bias_gelu(float* x, const std::vector<float>& bias, std::size_t n) {
  const std::size_t d = bias.size();
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < d; ++j) {
      const float v = x[i * d + j] + bias[j];
      x[i * d + j] = 0.5f * v * (1.0f + std::erf(v * static_cast<float>(M_SQRT1_2)));
    }
  }
}

void add_bias(float* x, const std::vector<float>& bias, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) add_inplace(x + i * bias.size(), bias.data(), bias.size());
}

}  // namespace

Adapter Adapter::load(const std::filesystem::path& file, const LclmConfig& config,
                      const Qwen3Config& encoder, const Qwen3Config& decoder) {
  Adapter a;
  a.store_ = TensorStore::open_file(file);
  a.type_ = config.adapter_type;
  const std::int64_t E = encoder.hidden_size, D = decoder.hidden_size;
  const std::int64_t in = config.pooling == Pooling::Concat ? config.compression_ratio * E : E;
  a.input_dim_ = static_cast<std::size_t>(in);
  a.output_dim_ = static_cast<std::size_t>(D);
  const TensorStore& s = a.store_;
  a.norm_ = as_f32_vector(s.get("norm.weight", {in}));
  a.fc1_ = as_weight_matrix(s.get("fc1.weight", {D, in}));
  a.fc1_bias_ = as_f32_vector(s.get("fc1.bias", {D}));
  a.fc2_ = as_weight_matrix(s.get("fc2.weight", {D, D}));
  a.fc2_bias_ = as_f32_vector(s.get("fc2.bias", {D}));
  if (config.adapter_type != AdapterType::Mlp) {
    a.attention_.config = config.adapter_type == AdapterType::MlpAttn ? decoder : encoder;
    const Qwen3Config& c = a.attention_.config;
    a.attention_.rope = RopeTable(static_cast<std::size_t>(c.head_dim), c.rope_theta);
    for (std::int64_t l = 0; l < config.num_adapter_layers; ++l) {
      a.attention_.blocks.push_back(Qwen3Block::load(
          WeightReader(s), "attention_layers." + std::to_string(l) + ".decoder_layer.", c));
    }
  }
  return a;
}

void Adapter::AttentionStack::run(float* x, std::size_t n) const {
  KVCache cache(blocks.size(), static_cast<std::size_t>(config.num_key_value_heads),
                static_cast<std::size_t>(config.head_dim), n, n);
  cache.reserve_more(n);
  for (std::size_t l = 0; l < blocks.size(); ++l) {
    blocks[l].forward(x, n, cache, l, AttentionMask::Bidirectional, rope);
  }
}

std::vector<float> Adapter::run_mlp(const float* x, std::size_t n) const {
  std::vector<float> normed(n * input_dim_), hidden(n * output_dim_), out(n * output_dim_);
  rms_norm(x, norm_.data(), normed.data(), n, input_dim_, kAdapterNormEps);
  matmul(normed.data(), n, fc1_, hidden.data());
  add_bias_gelu(hidden.data(), fc1_bias_, n);
  matmul(hidden.data(), n, fc2_, out.data());
  add_bias(out.data(), fc2_bias_, n);
  return out;
}

std::vector<float> Adapter::apply(const float* pooled, std::size_t n) const {
  if (n == 0) return {};
  if (type_ == AdapterType::AttnMlp) {
    std::vector<float> x(pooled, pooled + n * input_dim_);
    attention_.run(x.data(), n);
    return run_mlp(x.data(), n);
  }
  std::vector<float> out = run_mlp(pooled, n);
  if (type_ == AdapterType::MlpAttn) attention_.run(out.data(), n);
  return out;
}

}  // namespace lclm
