// KV-cache compression policies: run a prompt through the decoder with a
// bounded number of cached entries per layer and kv head. Each policy is
// selected per run, and its budget is given as a ratio, like the latent
// compression it is compared against: a prompt of L tokens keeps
// ceil(L / ratio) entries per layer per kv head (PyramidKV spreads the same
// total unevenly over the layers).
//
//   full       keeps everything
//   streaming  StreamingLLM: attention sinks + a recent window (prompt and decode)
//   h2o        H2O: heavy hitters by accumulated attention + recent (prompt and decode)
//   snapkv     SnapKV: observation-window attention, pooled, per-head top-k (prompt)
//   pyramidkv  PyramidKV: SnapKV's selection with budgets falling over the layers (prompt)
//   indexmem   IndexMem: a learned indexer ranks entries, evicted ones fold into a
//              latent memory read out by attention (prompt and decode; kv/indexmem.h)
//
// The generator calls begin_prompt before the prefill, end_prompt after it,
// and after_token after each decoded token's forward pass. A policy sees the
// cache (entries, the positions they came from, and the attention scores it
// asked the forward pass to accumulate) and compacts it.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/kv_cache.h"

namespace lclm {

enum class KVPolicyKind { Full, StreamingLLM, H2O, SnapKV, PyramidKV, IndexMem };

struct IndexMemWeights;

// "full", "streaming", "h2o", "snapkv", "pyramidkv", "indexmem".
std::string_view kv_policy_name(KVPolicyKind kind);
// Throws lclm::Error naming the known policies.
KVPolicyKind parse_kv_policy(std::string_view name);
const std::vector<KVPolicyKind>& all_kv_policies();

struct KVPolicyConfig {
  KVPolicyKind kind = KVPolicyKind::Full;
  double ratio = 1.0;                   // prompt tokens per kept entry
  std::size_t budget = 0;               // > 0: entries per layer per kv head, instead of the ratio
  std::size_t sinks = 4;                // StreamingLLM's attention sinks
  std::size_t observation_window = 32;  // SnapKV/PyramidKV: last prompt queries that vote
  std::size_t pool_kernel = 5;          // SnapKV/PyramidKV: average-pooling width
  double pyramid_beta = 20.0;           // PyramidKV: first/last layer budget spread
  std::shared_ptr<const IndexMemWeights> indexmem;  // IndexMem: its trained weights
};

// Entries per layer per kv head for a prompt of prompt_len tokens.
std::size_t kv_budget(const KVPolicyConfig& config, std::size_t prompt_len);

class KVPolicy {
 public:
  explicit KVPolicy(KVPolicyConfig config) : config_(config) {}
  virtual ~KVPolicy() = default;

  const KVPolicyConfig& config() const { return config_; }
  // Before the prompt is prefilled into the empty `cache`: sets the budgets
  // and turns on the attention scores the policy ranks entries by.
  virtual void begin_prompt(KVCache& cache, std::size_t prompt_len);
  // After the prefill: every layer down to its budget.
  virtual void end_prompt(KVCache& cache);
  // After each decoded token's forward pass.
  virtual void after_token(KVCache& cache);
  // Bytes the policy holds beside the cache's entries (IndexMem: its latent
  // memory), counted with them in the KV bytes a run reports.
  virtual std::size_t state_bytes() const { return 0; }
  // Entries each layer keeps after the prompt (per kv head); set by begin_prompt.
  const std::vector<std::size_t>& budgets() const { return budgets_; }

 protected:
  // The entries of (layer, kv head) to keep when it holds more than `budget`.
  virtual std::vector<std::size_t> keep(const KVCache& cache, std::size_t layer, std::size_t head,
                                        std::size_t budget) const = 0;
  // Compacts every layer holding more entries than its budget.
  void evict(KVCache& cache) const;

  KVPolicyConfig config_;
  std::vector<std::size_t> budgets_;
};

std::unique_ptr<KVPolicy> make_kv_policy(const KVPolicyConfig& config);

}  // namespace lclm
