#include "kv/indexmem.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "format/json_file.h"
#include "format/safetensors.h"
#include "kv/kv_selection.h"
#include "ops/simd.h"
#include "util/error.h"

namespace lclm {
namespace {

std::string layer_prefix(std::size_t l) {
  return "layers." + std::to_string(l) + ".";
}

// The tensors of one layer with their shapes, in the order they are written.
struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float>* data;
};

std::vector<NamedTensor> layer_tensors(IndexMemLayer& w, std::size_t l, const IndexMemConfig& c) {
  const std::string p = layer_prefix(l);
  const std::int64_t H = c.indexer_hidden, F = c.memory_features, D = c.head_dim;
  return {{p + "indexer.fc1.weight", {H, D}, &w.indexer_w1},
          {p + "indexer.fc1.bias", {H}, &w.indexer_b1},
          {p + "indexer.fc2.weight", {1, H}, &w.indexer_w2},
          {p + "memory.feature_map.weight", {F, D}, &w.feature_w},
          {p + "memory.feature_map.bias", {F}, &w.feature_b},
          {p + "memory.gate", {c.num_attention_heads}, &w.gate}};
}

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

// Per (layer, kv head) state of a run: the indexer's score of each held
// entry (aligned with the cache's entries; new entries are scored when the
// policy next looks) and the latent memory the evicted entries went into.
class IndexMemPolicy : public KVPolicy {
 public:
  explicit IndexMemPolicy(const KVPolicyConfig& config)
      : KVPolicy(config), weights_(*config.indexmem) {}

  void begin_prompt(KVCache& cache, std::size_t prompt_len) override {
    KVPolicy::begin_prompt(cache, prompt_len);
    const IndexMemConfig& c = weights_.config;
    if (static_cast<std::int64_t>(cache.n_layers()) != c.num_layers ||
        static_cast<std::int64_t>(cache.n_kv_heads()) != c.num_key_value_heads ||
        static_cast<std::int64_t>(cache.head_dim()) != c.head_dim) {
      throw Error("the IndexMem weights do not fit this decoder's KV cache");
    }
    const auto F = static_cast<std::size_t>(c.memory_features);
    const std::size_t G = cache.n_kv_heads(), D = cache.head_dim();
    scores_.assign(cache.n_layers(), std::vector<std::vector<float>>(G));
    memory_.assign(cache.n_layers(), LayerMemory{});
    for (std::size_t l = 0; l < cache.n_layers(); ++l) {
      LayerMemory& m = memory_[l];
      m.M.assign(G * F * D, 0.0f);
      m.z.assign(G * F, 0.0f);
      const IndexMemLayer& w = weights_.layers[l];
      m.residual =
          AttentionResidual{F,          w.feature_w.data(), w.feature_b.data(),       w.gate.data(),
                            m.M.data(), m.z.data(),         static_cast<float>(c.eps)};
      cache.set_attention_residual(l, nullptr);
    }
  }
  void end_prompt(KVCache& cache) override { evict_into_memory(cache); }
  void after_token(KVCache& cache) override { evict_into_memory(cache); }
  // M and z of every layer whose memory holds anything.
  std::size_t state_bytes() const override {
    std::size_t floats = 0;
    for (const LayerMemory& m : memory_) floats += m.empty ? 0 : m.M.size() + m.z.size();
    return floats * sizeof(float);
  }

 protected:
  std::vector<std::size_t> keep(const KVCache& cache, std::size_t layer, std::size_t head,
                                std::size_t budget) const override {
    const std::vector<float>& s = scores_[layer][head];
    return indexmem_keep({s.data(), cache.entries(layer)},
                         static_cast<std::size_t>(weights_.config.sinks),
                         static_cast<std::size_t>(weights_.config.recent), budget);
  }

 private:
  struct LayerMemory {
    std::vector<float> M, z;  // [G, F, D], [G, F]
    AttentionResidual residual;
    bool empty = true;
  };

  void score_new_entries(const KVCache& cache, std::size_t l) {
    std::vector<float> key(cache.head_dim());
    for (std::size_t g = 0; g < cache.n_kv_heads(); ++g) {
      std::vector<float>& s = scores_[l][g];
      for (std::size_t j = s.size(); j < cache.entries(l); ++j) {
        cache.read_key(l, g, j, key.data());
        s.push_back(weights_.score(l, key.data()));
      }
    }
  }

  // M_g += phi(k) v^T, z_g += phi(k) for the entries of kv head g not in `kept`.
  void fold(const KVCache& cache, std::size_t l, std::size_t g,
            const std::vector<std::size_t>& kept) {
    LayerMemory& m = memory_[l];
    const std::size_t D = cache.head_dim(), F = m.residual.n_features;
    float* M = m.M.data() + g * F * D;
    float* z = m.z.data() + g * F;
    std::vector<float> phi(F), key(D), value(D);
    std::size_t next_kept = 0;
    for (std::size_t j = 0; j < cache.entries(l); ++j) {
      if (next_kept < kept.size() && kept[next_kept] == j) {
        ++next_kept;
        continue;
      }
      cache.read_key(l, g, j, key.data());
      cache.read_value(l, g, j, value.data());
      memory_features(m.residual, key.data(), D, phi.data());
      for (std::size_t f = 0; f < F; ++f) {
        z[f] += phi[f];
        axpy_f32(phi[f], value.data(), M + f * D, D);
      }
      m.empty = false;
    }
  }

  void evict_into_memory(KVCache& cache) {
    std::vector<std::vector<std::size_t>> keep_per_head(cache.n_kv_heads());
    for (std::size_t l = 0; l < cache.n_layers(); ++l) {
      if (cache.entries(l) <= budgets_[l]) continue;
      score_new_entries(cache, l);
      for (std::size_t g = 0; g < cache.n_kv_heads(); ++g) {
        keep_per_head[g] = keep(cache, l, g, budgets_[l]);
        fold(cache, l, g, keep_per_head[g]);
        std::vector<float>& s = scores_[l][g];
        for (std::size_t i = 0; i < keep_per_head[g].size(); ++i) s[i] = s[keep_per_head[g][i]];
        s.resize(keep_per_head[g].size());
      }
      cache.compact(l, keep_per_head);
      if (!memory_[l].empty) cache.set_attention_residual(l, &memory_[l].residual);
    }
  }

  const IndexMemWeights& weights_;
  std::vector<std::vector<std::vector<float>>> scores_;  // [layer][kv head][entry]
  std::vector<LayerMemory> memory_;                      // [layer]
};

}  // namespace

IndexMemWeights IndexMemWeights::zeros(const Qwen3Config& decoder, std::int64_t indexer_hidden,
                                       std::int64_t memory_features) {
  IndexMemWeights w;
  w.config.num_layers = decoder.num_hidden_layers;
  w.config.num_attention_heads = decoder.num_attention_heads;
  w.config.num_key_value_heads = decoder.num_key_value_heads;
  w.config.head_dim = decoder.head_dim;
  w.config.indexer_hidden = indexer_hidden;
  w.config.memory_features = memory_features;
  w.layers.resize(static_cast<std::size_t>(decoder.num_hidden_layers));
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    for (NamedTensor& t : layer_tensors(w.layers[l], l, w.config)) {
      t.data->assign(static_cast<std::size_t>(numel(t.shape)), 0.0f);
    }
  }
  return w;
}

IndexMemWeights IndexMemWeights::load(const std::filesystem::path& dir,
                                      const Qwen3Config& decoder) {
  if (!std::filesystem::is_directory(dir)) {
    throw Error("IndexMem weights directory " + dir.string() +
                " does not exist (train it with lclm-train-indexmem, or pass --indexmem DIR)");
  }
  const std::filesystem::path config_path = dir / "config.json";
  const nlohmann::json j = read_json_file(config_path);
  const std::string method = key_or<std::string>(j, "method", "indexmem", config_path);
  if (method != "indexmem") {
    throw Error(config_path.string() + ": method \"" + method +
                "\" is not indexmem (the weights of another policy?)");
  }
  IndexMemConfig c;
  c.num_layers = require_key<std::int64_t>(j, "num_layers", config_path);
  c.num_attention_heads = require_key<std::int64_t>(j, "num_attention_heads", config_path);
  c.num_key_value_heads = require_key<std::int64_t>(j, "num_key_value_heads", config_path);
  c.head_dim = require_key<std::int64_t>(j, "head_dim", config_path);
  c.indexer_hidden = require_key<std::int64_t>(j, "indexer_hidden", config_path);
  c.memory_features = require_key<std::int64_t>(j, "memory_features", config_path);
  c.sinks = require_key<std::int64_t>(j, "sinks", config_path);
  c.recent = require_key<std::int64_t>(j, "recent", config_path);
  c.eps = require_key<double>(j, "eps", config_path);
  if (c.num_layers != decoder.num_hidden_layers ||
      c.num_attention_heads != decoder.num_attention_heads ||
      c.num_key_value_heads != decoder.num_key_value_heads || c.head_dim != decoder.head_dim) {
    throw Error(config_path.string() + " describes " + std::to_string(c.num_layers) + " layers, " +
                std::to_string(c.num_attention_heads) + "/" +
                std::to_string(c.num_key_value_heads) + " heads of " + std::to_string(c.head_dim) +
                "; the decoder has " + std::to_string(decoder.num_hidden_layers) + " layers, " +
                std::to_string(decoder.num_attention_heads) + "/" +
                std::to_string(decoder.num_key_value_heads) + " heads of " +
                std::to_string(decoder.head_dim));
  }
  if (c.indexer_hidden <= 0 || c.memory_features <= 0 || c.sinks < 0 || c.recent < 0 ||
      !(c.eps > 0)) {
    throw Error(config_path.string() +
                ": indexer_hidden and memory_features must be positive, sinks and recent at "
                "least 0, eps positive");
  }
  IndexMemWeights w;
  w.config = c;
  w.layers.resize(static_cast<std::size_t>(c.num_layers));
  const TensorStore store = TensorStore::open_file(dir / "model.safetensors");
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    for (NamedTensor& t : layer_tensors(w.layers[l], l, c)) {
      const TensorView& view = store.get(t.name, t.shape);
      if (view.dtype != DType::F32) {
        throw Error("tensor \"" + t.name + "\" in " + (dir / "model.safetensors").string() +
                    " must be F32");
      }
      t.data->resize(static_cast<std::size_t>(view.numel()));
      std::memcpy(t.data->data(), view.data, view.nbytes);
    }
  }
  return w;
}

void IndexMemWeights::save(const std::filesystem::path& dir) const {
  std::filesystem::create_directories(dir);
  const IndexMemConfig& c = config;
  const nlohmann::json j = {{"method", "indexmem"},
                            {"num_layers", c.num_layers},
                            {"num_attention_heads", c.num_attention_heads},
                            {"num_key_value_heads", c.num_key_value_heads},
                            {"head_dim", c.head_dim},
                            {"indexer_hidden", c.indexer_hidden},
                            {"memory_features", c.memory_features},
                            {"sinks", c.sinks},
                            {"recent", c.recent},
                            {"eps", c.eps}};
  std::vector<TensorToWrite> tensors;
  IndexMemWeights copy = *this;  // layer_tensors hands out mutable views
  for (std::size_t l = 0; l < copy.layers.size(); ++l) {
    for (const NamedTensor& t : layer_tensors(copy.layers[l], l, c)) {
      if (static_cast<std::int64_t>(t.data->size()) != numel(t.shape)) {
        throw Error("IndexMem tensor \"" + t.name + "\" has " + std::to_string(t.data->size()) +
                    " values, its shape " + shape_string(t.shape) + " needs " +
                    std::to_string(numel(t.shape)));
      }
      tensors.push_back({t.name,
                         DType::F32,
                         t.shape,
                         {reinterpret_cast<const std::uint8_t*>(t.data->data()),
                          t.data->size() * sizeof(float)}});
    }
  }
  write_safetensors(dir / "model.safetensors", tensors);
  write_text_file(dir / "config.json", j.dump(2) + "\n");
}

float IndexMemWeights::score(std::size_t layer, const float* key) const {
  const IndexMemLayer& w = layers[layer];
  const auto H = static_cast<std::size_t>(config.indexer_hidden);
  const auto D = static_cast<std::size_t>(config.head_dim);
  float s = 0.0f;
  for (std::size_t h = 0; h < H; ++h) {
    const float a = dot_f32(w.indexer_w1.data() + h * D, key, D) + w.indexer_b1[h];
    if (a > 0.0f) s += w.indexer_w2[h] * a;
  }
  return s;
}

std::filesystem::path default_indexmem_dir(const std::filesystem::path& model) {
  if (std::filesystem::exists(model / "model_config.json")) return model / "indexmem";
  std::filesystem::path decoder = model.lexically_normal();
  if (!decoder.has_filename()) decoder = decoder.parent_path();  // "decoder/"
  return decoder.parent_path() / "indexmem";
}

std::vector<std::size_t> indexmem_keep(std::span<const float> scores, std::size_t sinks,
                                       std::size_t recent, std::size_t budget) {
  const std::size_t n = scores.size();
  if (budget >= n) return streaming_keep(n, 0, n);
  const std::size_t first = std::min(sinks, budget);
  const std::size_t last = std::min(recent, budget - first);
  std::vector<std::size_t> kept;
  kept.reserve(budget);
  for (std::size_t j = 0; j < first; ++j) kept.push_back(j);
  for (std::size_t j :
       top_k_indices(scores.subspan(first, n - first - last), budget - first - last))
    kept.push_back(first + j);
  for (std::size_t j = n - last; j < n; ++j) kept.push_back(j);
  return kept;
}

std::unique_ptr<KVPolicy> make_indexmem_policy(const KVPolicyConfig& config) {
  if (!config.indexmem) {
    throw Error("the indexmem KV policy needs its trained weights (--indexmem DIR)");
  }
  return std::make_unique<IndexMemPolicy>(config);
}

}  // namespace lclm
