// IndexMem in libtorch (the engine's side is kv/indexmem.h): the indexer and
// the latent memory with autograd, the decoder forward with the prompt's
// cache evicted to a budget, and the two losses that train them on a frozen
// decoder. Parameter names are the weight file's ("layers.0.indexer.fc1.weight").
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kv/indexmem.h"
#include "trainer/torch_qwen3.h"

namespace lclm::train {

// One decoder layer's indexer and memory parameters.
class TorchIndexMemLayer : public torch::nn::Module {
 public:
  TorchIndexMemLayer(const IndexMemConfig& c);
  // keys [..., D] -> scores [...]: w2 . relu(W1 k + b1).
  torch::Tensor score(const torch::Tensor& keys) const;
  // x [..., D] -> phi(x) [..., F] = elu(Wf x + bf) + 1.
  torch::Tensor features(const torch::Tensor& x) const;

  std::shared_ptr<torch::nn::Module> indexer, memory;  // hold the parameters below
  std::shared_ptr<TorchLinear> fc1, fc2, feature_map;
  torch::Tensor gate;  // [n_heads]
};

class TorchIndexMem : public torch::nn::Module {
 public:
  explicit TorchIndexMem(const IndexMemConfig& config);
  const IndexMemConfig& config() const { return config_; }
  TorchIndexMemLayer& layer(std::size_t l) const { return *layers->ptr<TorchIndexMemLayer>(l); }

  // Parameters <-> the engine's weights (exact float32 copies).
  void load(const IndexMemWeights& w);
  IndexMemWeights weights() const;

  torch::nn::ModuleList layers;

 private:
  IndexMemConfig config_;
};

// The memory of kv heads holding keys, values [G, E, D] (evicted entries):
// M [G, F, D] = sum phi(k) v^T, z [G, F] = sum phi(k).
struct TorchMemoryState {
  torch::Tensor M, z;
};
TorchMemoryState fold_into_memory(const TorchIndexMemLayer& layer, const torch::Tensor& keys,
                                  const torch::Tensor& values);
// q [H, n, D] (query head h reads kv head h / (H / G)) -> the readout
// gate[h] (phi(q)^T M) / (phi(q)^T z + eps), [H, n, D].
torch::Tensor memory_readout(const TorchIndexMemLayer& layer, const TorchMemoryState& memory,
                             const torch::Tensor& q, double eps);

// One training sequence: ids[0..prompt_len) are the prompt (prefilled with
// the whole cache, then evicted), the rest the answer.
struct IndexMemExample {
  std::vector<std::int32_t> ids;
  std::size_t prompt_len = 0;
};

struct IndexMemForward {
  torch::Tensor indexer_loss;   // listwise cross-entropy of the indexer against the attention mass
  torch::Tensor answer_loss;    // next-token loss on answer tokens 2.. under eviction + memory
  torch::Tensor answer_logits;  // [A, vocab] at the answer positions
  std::int64_t answer_targets = 0;
  // The share of the answer queries' attention mass on the prompt that the
  // kept entries hold (mean over layers and kv heads; 1 without eviction),
  // for the indexer's choice and for StreamingLLM's at the same budget.
  double kept_mass = 1.0, streaming_kept_mass = 1.0;
};

// The decoder on `example` as the engine runs it with the IndexMem policy at
// `budget` entries per (layer, kv head): the prompt with the whole cache, the
// indexer's choice kept (kv/indexmem.h: indexmem_keep) and the rest folded
// into the memory; then each answer token attends to the held entries, itself
// and the memory's readout, after which every layer evicts back to the budget
// (folding too), as the engine's after_token does. The decoder's parameters
// should not require grad.
IndexMemForward indexmem_forward(TorchQwen3& decoder, const TorchIndexMem& indexmem,
                                 const IndexMemExample& example, std::size_t budget);

}  // namespace lclm::train
