#include "model/qwen3_model.h"

#include <algorithm>

#include "util/error.h"

namespace lclm {

std::string qwen3_tensor_prefix(const TensorStore& store) {
  return store.find("model.embed_tokens.weight") != nullptr ? "model." : "";
}

Qwen3Model::Qwen3Model(Qwen3Config config, TensorStore store)
    : config_(std::move(config)),
      store_(std::move(store)),
      rope_(static_cast<std::size_t>(config_.head_dim), config_.rope_theta) {}

Qwen3Model Qwen3Model::load(const std::filesystem::path& dir, const Qwen3LoadOptions& options) {
  Qwen3Config config = Qwen3Config::from_dir(dir);
  Qwen3Model m(config, TensorStore::open_dir(dir));
  const auto& c = m.config_;
  const TensorStore& s = m.store_;
  const WeightReader weights(s, options.quant, m.converted_,
                             rows_interleaved_at_load() ? &m.repacked_ : nullptr);
  m.parameter_count_ = stored_parameter_count(s);
  if (c.tie_word_embeddings && s.find("lm_head.weight") != nullptr) {
    m.parameter_count_ -= c.vocab_size * c.hidden_size;  // a stored copy of the embeddings
  }

  const std::string prefix = qwen3_tensor_prefix(s);
  if (s.find(prefix + "embed_tokens.weight") == nullptr) {
    throw Error("no embed_tokens.weight (with or without a \"model.\" prefix) in " + dir.string());
  }
  const std::int64_t H = c.hidden_size;
  m.embed_tokens_ = as_weight_matrix(s.get(prefix + "embed_tokens.weight", {c.vocab_size, H}));
  m.final_norm_ = as_f32_vector(s.get(prefix + "norm.weight", {H}));
  if (options.lm_head && s.find("lm_head.weight") != nullptr) {
    m.lm_head_ = weights.matrix("lm_head.weight", c.vocab_size, H);
  } else if (options.lm_head && c.tie_word_embeddings) {
    m.lm_head_ = weights.converted(m.embed_tokens_);
  }
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    m.layers_.push_back(Qwen3Block::load(weights, prefix + "layers." + std::to_string(l) + ".", c));
  }
  return m;
}

std::size_t Qwen3Model::decode_matrix_bytes() const {
  std::size_t n = lm_head_ ? lm_head_->bytes() : 0;
  for (const Qwen3Block& b : layers_) n += b.matrix_bytes();
  return n;
}

std::size_t Qwen3Model::converted_bytes() const {
  std::size_t n = 0;
  for (const auto& m : converted_) n += m.size();
  return n;
}

std::size_t Qwen3Model::repacked_bytes() const {
  std::size_t n = 0;
  for (const auto& m : repacked_) n += m.size();
  return n;
}

DType Qwen3Model::matrix_dtype() const {
  return layers_.empty() ? embed_tokens_.dtype : layers_.front().matrix_dtype();
}

KVCache Qwen3Model::make_cache(std::size_t max_positions, std::size_t initial_capacity,
                               KVCacheTypes types) const {
  return KVCache(layers_.size(), static_cast<std::size_t>(config_.num_key_value_heads),
                 static_cast<std::size_t>(config_.head_dim), max_positions, initial_capacity,
                 types);
}

void Qwen3Model::embed(std::span<const std::int32_t> ids, float* out) const {
  gather_rows(embed_tokens_, ids.data(), ids.size(), out);
}

void Qwen3Model::forward(float* x, std::size_t n, KVCache& cache, AttentionMask mask) const {
  const SequenceRows one{&cache, n};
  forward(x, std::span(&one, 1), mask);
}

void Qwen3Model::forward(float* x, std::span<const SequenceRows> sequences,
                         AttentionMask mask) const {
  std::size_t n = 0;
  for (const SequenceRows& s : sequences) {
    for (const SequenceRows& t : sequences) {
      if (&t != &s && t.cache == s.cache) throw Error("forward: two sequences share one KV cache");
    }
    s.cache->reserve_more(s.rows);
    n += s.rows;
  }
  if (n == 0) return;
  for (std::size_t l = 0; l < layers_.size(); ++l) layers_[l].forward(x, sequences, l, mask, rope_);
  for (const SequenceRows& s : sequences) s.cache->advance(s.rows);
  const auto H = static_cast<std::size_t>(config_.hidden_size);
  rms_norm(x, final_norm_.data(), x, n, H, static_cast<float>(config_.rms_norm_eps));
}

void Qwen3Model::logits(const float* hidden, std::size_t n, float* out) const {
  if (!lm_head_) {
    throw Error(dir().string() +
                " has no lm_head.weight and tie_word_embeddings is false: "
                "it is an encoder and cannot produce logits");
  }
  matmul(hidden, n, *lm_head_, out);
}

}  // namespace lclm
