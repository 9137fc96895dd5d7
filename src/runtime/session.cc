#include "runtime/session.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "util/error.h"
#include "util/threads.h"

namespace lclm {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::uint64_t row_key(const float* row, std::size_t hidden) {
  return XXH3_64bits(row, hidden * sizeof(float));
}

// The positions of a prompt of n that the cache can keep: those whose keys
// (key_at(i)) match the cached ones, short of the prompt's last position,
// whose hidden state the first token is sampled from.
template <typename KeyAt>
std::size_t shared_prefix(const std::vector<std::uint64_t>& cached, std::size_t n, KeyAt key_at) {
  const std::size_t most = std::min(n > 0 ? n - 1 : 0, cached.size());
  std::size_t reuse = 0;
  while (reuse < most && cached[reuse] == key_at(reuse)) ++reuse;
  return reuse;
}

}  // namespace

Session::Session(const Qwen3Model& model, int threads) : model_(model), threads_(threads) {}

void Session::reset() {
  cache_.reset();
  row_keys_.clear();
}

std::size_t Session::reusable_positions(const float* inputs, std::size_t n) const {
  const auto H = static_cast<std::size_t>(model_.config().hidden_size);
  return shared_prefix(row_keys_, n, [&](std::size_t i) { return row_key(inputs + i * H, H); });
}

void Session::keep_prefix(std::size_t n) {
  cache_->truncate(n);
  row_keys_.resize(n);
}

GenerationStats Session::generate(const PreparedPrompt& prompt, const GenerationOptions& options,
                                  const TokenCallback& on_token) {
  return generate(prompt.ids, prompt.embeddings.data(), options, on_token);
}

GenerationStats Session::generate(std::span<const std::int32_t> ids,
                                  const GenerationOptions& options, const TokenCallback& on_token) {
  std::vector<float> inputs(ids.size() * static_cast<std::size_t>(model_.config().hidden_size));
  model_.embed(ids, inputs.data());
  return generate(ids, inputs.data(), options, on_token);
}

GenerationStats Session::generate(std::span<const std::int32_t> ids, const float* inputs,
                                  const GenerationOptions& options, const TokenCallback& on_token) {
  const auto& config = model_.config();
  const auto H = static_cast<std::size_t>(config.hidden_size);
  const auto V = static_cast<std::size_t>(config.vocab_size);
  const std::size_t n = ids.size();
  const std::size_t context = options.context > 0
                                  ? options.context
                                  : static_cast<std::size_t>(config.max_position_embeddings);
  if (n == 0) throw Error("the prompt is empty");
  if (threads_ > 0) set_num_threads(threads_);
  if (n >= context) {
    throw Error("the prompt is " + std::to_string(n) +
                " tokens, which does not fit the context of " + std::to_string(context) +
                " tokens (raise it with -c)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Without a length (-n -1) the cache starts with room for kOpenEndedReserve
  // tokens and doubles as the answer grows, instead of holding the whole
  // context for what may be a short answer.
  const std::size_t planned =
      n + (options.n_predict < 0 ? kOpenEndedReserve : static_cast<std::size_t>(options.n_predict));
  const std::size_t capacity = std::min(context, planned);

  // What can stay: the cached positions this prompt starts with. A policy
  // that evicts leaves nothing to extend, and another context limit needs
  // another cache.
  std::vector<std::uint64_t> keys(n);
  for (std::size_t i = 0; i < n; ++i) keys[i] = row_key(inputs + i * H, H);
  const bool full = options.kv_policy.kind == KVPolicyKind::Full;
  if (!full || (cache_ && cache_->max_positions() != context)) reset();
  const std::size_t reuse = shared_prefix(row_keys_, n, [&](std::size_t i) { return keys[i]; });
  if (cache_) {
    keep_prefix(reuse);
    cache_->reserve_more(capacity - reuse);
  } else {
    cache_.emplace(model_.make_cache(context, capacity));
  }
  KVCache& cache = *cache_;

  GenerationStats stats;
  stats.prompt_tokens = n;
  stats.reused_positions = reuse;
  Sampler sampler(options.sampling);
  std::vector<std::int32_t> history(ids.begin(), ids.end());
  try {
    // Prefill in chunks so activation memory stays bounded by the chunk
    // size; then the KV policy cuts the prompt's entries down to its budget.
    const std::unique_ptr<KVPolicy> policy = make_kv_policy(options.kv_policy);
    policy->begin_prompt(cache, n);
    const std::size_t chunk = std::max<std::size_t>(1, options.prefill_chunk);
    std::vector<float> x;
    for (std::size_t start = reuse; start < n; start += chunk) {
      const std::size_t len = std::min(chunk, n - start);
      x.assign(inputs + start * H, inputs + (start + len) * H);
      model_.forward(x.data(), len, cache, AttentionMask::Causal);
    }
    row_keys_ = std::move(keys);
    policy->end_prompt(cache);
    cache.shrink_to_fit(capacity - n);
    stats.prompt_kv_bytes = cache.entry_bytes() + policy->state_bytes();
    std::vector<float> last(x.end() - static_cast<std::ptrdiff_t>(H), x.end());
    std::vector<float> logits(V);

    const auto is_stop = [&](std::int32_t id) {
      return std::find(options.stop_ids.begin(), options.stop_ids.end(), id) !=
             options.stop_ids.end();
    };
    auto decode_start = t0;
    for (std::size_t step = 0;; ++step) {
      if (options.n_predict >= 0 && step >= static_cast<std::size_t>(options.n_predict)) {
        stats.stop = StopReason::Length;
        break;
      }
      model_.logits(last.data(), 1, logits.data());
      const std::int32_t id = sampler.sample(logits, history);
      if (step == 0) {
        stats.ttft_seconds = seconds_since(t0);
        decode_start = std::chrono::steady_clock::now();
      }
      if (is_stop(id)) {
        stats.stop = StopReason::StopToken;
        break;
      }
      stats.tokens.push_back(id);
      history.push_back(id);
      if (on_token && !on_token(id)) {
        stats.stop = StopReason::Callback;
        break;
      }
      // The last token's keys and values would never be read: skip its pass.
      if (options.n_predict >= 0 && step + 1 >= static_cast<std::size_t>(options.n_predict)) {
        stats.stop = StopReason::Length;
        break;
      }
      if (cache.size() + 1 >= context) {
        stats.stop = StopReason::ContextFull;
        break;
      }
      model_.embed(std::span<const std::int32_t>(&id, 1), last.data());
      row_keys_.push_back(row_key(last.data(), H));
      model_.forward(last.data(), 1, cache, AttentionMask::Causal);
      policy->after_token(cache);
    }
    stats.decode_seconds = seconds_since(decode_start);
  } catch (...) {
    reset();  // a pass cut short leaves the cache and the keys out of step
    throw;
  }
  stats.generated_tokens = stats.tokens.size();
  stats.kv_cache_bytes = cache.bytes();
  stats.kv_peak_bytes = cache.peak_bytes();
  if (!full) reset();  // evicted entries and the policy's memory cannot be extended
  return stats;
}

}  // namespace lclm
