#include "runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

#include "util/error.h"

namespace lclm {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Length of the UTF-8 sequence a lead byte starts (1 for invalid bytes, so
// they pass through rather than stall the stream).
std::size_t utf8_sequence_length(unsigned char lead) {
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  if (lead >= 0xe0) return lead <= 0xef ? 3 : 1;
  if (lead >= 0xc2) return 2;
  return 1;
}

}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Length:
      return "length";
    case StopReason::StopToken:
      return "stop";
    case StopReason::ContextFull:
      return "context-full";
    case StopReason::Callback:
      return "cancelled";
  }
  return "?";
}

Generator::Generator(const Qwen3Model& model) : model_(model) {}

std::vector<std::int32_t> Generator::default_stop_ids(const Qwen3Model& model,
                                                      const Tokenizer& tokenizer) {
  std::vector<std::int32_t> ids = model.config().eos_token_ids;
  for (const char* name : {"<|im_end|>", "<|endoftext|>"}) {
    if (auto id = tokenizer.token_id(name)) ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

GenerationStats Generator::generate(std::span<const std::int32_t> prompt_ids,
                                    const GenerationOptions& options,
                                    const TokenCallback& on_token) const {
  std::vector<float> inputs(prompt_ids.size() *
                            static_cast<std::size_t>(model_.config().hidden_size));
  model_.embed(prompt_ids, inputs.data());
  return generate_from_embeddings(inputs.data(), prompt_ids.size(), prompt_ids, options, on_token);
}

GenerationStats Generator::generate_from_embeddings(const float* inputs, std::size_t n,
                                                    std::span<const std::int32_t> prompt_ids,
                                                    const GenerationOptions& options,
                                                    const TokenCallback& on_token) const {
  const auto& config = model_.config();
  const auto H = static_cast<std::size_t>(config.hidden_size);
  const auto V = static_cast<std::size_t>(config.vocab_size);
  const std::size_t context = options.context > 0
                                  ? options.context
                                  : static_cast<std::size_t>(config.max_position_embeddings);
  if (n == 0) throw Error("the prompt is empty");
  if (n >= context) {
    throw Error("the prompt is " + std::to_string(n) +
                " tokens, which does not fit the context of " + std::to_string(context) +
                " tokens (raise it with -c)");
  }
  const auto t0 = std::chrono::steady_clock::now();
  Sampler sampler(options.sampling);
  const std::size_t planned =
      options.n_predict < 0 ? context : n + static_cast<std::size_t>(options.n_predict);
  KVCache cache = model_.make_cache(context, std::min(context, planned));

  GenerationStats stats;
  stats.prompt_tokens = n;
  std::vector<std::int32_t> history(prompt_ids.begin(), prompt_ids.end());

  // Prefill in chunks so activation memory stays bounded by the chunk size;
  // then the KV policy cuts the prompt's entries down to its budget.
  const std::unique_ptr<KVPolicy> policy = make_kv_policy(options.kv_policy);
  policy->begin_prompt(cache, n);
  const std::size_t chunk = std::max<std::size_t>(1, options.prefill_chunk);
  std::vector<float> x;
  for (std::size_t start = 0; start < n; start += chunk) {
    const std::size_t len = std::min(chunk, n - start);
    x.assign(inputs + start * H, inputs + (start + len) * H);
    model_.forward(x.data(), len, cache, AttentionMask::Causal);
  }
  policy->end_prompt(cache);
  cache.shrink_to_fit(std::min(context, planned) - n);
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
    model_.forward(last.data(), 1, cache, AttentionMask::Causal);
    policy->after_token(cache);
  }
  stats.generated_tokens = stats.tokens.size();
  stats.decode_seconds = seconds_since(decode_start);
  stats.kv_cache_bytes = cache.bytes();
  stats.kv_peak_bytes = cache.peak_bytes();
  return stats;
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  std::size_t complete = 0;
  while (complete < pending_.size()) {
    const std::size_t len = utf8_sequence_length(static_cast<unsigned char>(pending_[complete]));
    if (complete + len > pending_.size()) break;
    complete += len;
  }
  std::string out = pending_.substr(0, complete);
  pending_.erase(0, complete);
  return out;
}

std::string Utf8Stream::flush() {
  return std::exchange(pending_, std::string());
}

}  // namespace lclm
