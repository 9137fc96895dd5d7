// One conversation's state: the KV cache of everything the decoder has read
// so far. A new prompt that starts like the last one (prompt and reply, token
// by token, latents included) keeps those positions' keys and values and
// prefills only the rest, so a chat turn or an agent round costs what it adds.
//
// The loop: chunked prefill of the prompt's new positions, then one token at
// a time until n_predict, a stop token, a callback's stop or the context limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "compression/lclm_model.h"
#include "model/kv_cache.h"
#include "model/qwen3_model.h"
#include "runtime/generator.h"

namespace lclm {

class Session {
 public:
  // Positions reserved past the prompt when n_predict < 0 (the cache grows
  // from there as needed).
  static constexpr std::size_t kOpenEndedReserve = 128;

  // The model must outlive the session. threads > 0: the kernel threads
  // every call applies on its own thread (0: the calling thread's setting).
  explicit Session(const Qwen3Model& model, int threads = 0);

  // inputs [ids.size(), hidden]: the prompt's input embeddings; ids: the
  // token ids of those positions (placeholders where latents sit), for the
  // repetition penalty. Positions are matched by their input row, so two
  // prompts share a prefix only where the decoder would read the same thing.
  // With a KV policy other than full the cache starts empty and is not kept.
  GenerationStats generate(std::span<const std::int32_t> ids, const float* inputs,
                           const GenerationOptions& options, const TokenCallback& on_token = {});
  GenerationStats generate(const PreparedPrompt& prompt, const GenerationOptions& options,
                           const TokenCallback& on_token = {});
  // Token ids only: embeds them first.
  GenerationStats generate(std::span<const std::int32_t> ids, const GenerationOptions& options,
                           const TokenCallback& on_token = {});

  // Positions whose keys and values the session holds for the next call.
  std::size_t cached_positions() const { return row_keys_.size(); }
  // How many of a prompt's positions (inputs [n, hidden]) a call would keep.
  std::size_t reusable_positions(const float* inputs, std::size_t n) const;
  // Forgets the conversation (the cache's memory is freed).
  void reset();
  const Qwen3Model& model() const { return model_; }

 private:
  // Drops every cached position from `n` on.
  void keep_prefix(std::size_t n);

  const Qwen3Model& model_;
  int threads_ = 0;
  std::optional<KVCache> cache_;
  std::vector<std::uint64_t> row_keys_;  // hash of each cached position's input row
};

}  // namespace lclm
