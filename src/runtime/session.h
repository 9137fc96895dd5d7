// One conversation's state: the KV cache of everything the decoder has read
// so far. A new prompt that starts like the last one (prompt and reply, token
// by token, latents included) keeps those positions' keys and values and
// prefills only the rest, so a chat turn or an agent round costs what it adds.
//
// The loop: chunked prefill of the prompt's new positions, then one token at
// a time until n_predict, a stop token, a callback's stop or the context limit.
// A Generation is that loop taken a step at a time, so that a DecodeBatch
// (runtime/decode_batch.h) can run several sessions' generations together.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "compression/lclm_model.h"
#include "kv/kv_policy.h"
#include "model/kv_cache.h"
#include "model/qwen3_model.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"

namespace lclm {

class Generation;

class Session {
 public:
  // Positions reserved past the prompt when n_predict < 0 (the cache grows
  // from there as needed).
  static constexpr std::size_t kOpenEndedReserve = 128;

  // The model must outlive the session. threads > 0: the kernel threads
  // every call applies on its own thread (0: the calling thread's setting).
  // cache_types: what the KV cache stores (f32 here; the engine's sessions
  // take EngineOptions::cache_types).
  explicit Session(const Qwen3Model& model, int threads = 0, KVCacheTypes cache_types = {});

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
  // A Generation runs on it.
  bool busy() const { return busy_; }
  const Qwen3Model& model() const { return model_; }
  KVCacheTypes cache_types() const { return cache_types_; }

 private:
  friend class Generation;
  // Drops every cached position from `n` on.
  void keep_prefix(std::size_t n);

  const Qwen3Model& model_;
  int threads_ = 0;
  KVCacheTypes cache_types_;
  bool busy_ = false;  // a Generation runs on it
  std::optional<KVCache> cache_;
  std::vector<std::uint64_t> row_keys_;  // hash of each cached position's input row
};

// One generation on a session, a step at a time. The caller drives it:
//
//   Generation g(session, ids, inputs, options, on_token);
//   while (g.prefilling()) g.prefill_step();
//   while (!g.done()) {
//     model.logits(g.row(), 1, logits);           // row(): the last hidden state
//     if (g.accept(logits)) {                     // samples; row() = next input
//       model.forward(g.row(), 1, g.cache(), AttentionMask::Causal);
//       g.forwarded();
//     }
//   }
//   GenerationStats stats = g.finish();
//
// which is Session::generate; a DecodeBatch computes the logits and the
// forward pass of several generations' rows in one call each. The session
// runs one generation at a time; one dropped before finish() (an error, a
// cancelled request) leaves the session empty, since its cache is then out
// of step with what it read.
class Generation {
 public:
  // inputs [ids.size(), hidden] must stay valid until prefilling() is false.
  // Throws lclm::Error for an empty prompt, one that does not fit the
  // context, or a session already running a generation.
  Generation(Session& session, std::span<const std::int32_t> ids, const float* inputs,
             const GenerationOptions& options, TokenCallback on_token = {});
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // The prompt has positions left to read: prefill_step() reads the next
  // options.prefill_chunk of them.
  bool prefilling() const { return !done_ && next_ < ids_count_; }
  void prefill_step();
  // Past its prefill and not done: row() is the hidden state [hidden] the
  // next token is sampled from.
  bool done() const { return done_; }
  float* row() { return row_.data(); }
  // Samples a token from logits [vocab] of row(), hands it to the callback
  // and checks the stops. True when the generation goes on: row() then holds
  // the token's embedding, which a forward pass on cache() turns (in place)
  // into the next hidden state, after which forwarded() is called.
  bool accept(const float* logits);
  void forwarded();
  // The last sampled token's log-probabilities, when options.top_logprobs
  // >= 0 (else null): valid in the token's callback.
  const TokenLogprobs* logprobs() const {
    return options_.top_logprobs >= 0 ? &logprobs_ : nullptr;
  }
  KVCache& cache() { return *session_.cache_; }
  // Ends the generation with an error (its step failed), which finish()
  // throws.
  void fail(std::exception_ptr error);
  // The stats of a generation that is done; throws the error of one that
  // failed.
  GenerationStats finish();

 private:
  void end(StopReason reason);

  Session& session_;
  const Qwen3Model& model_;
  GenerationOptions options_;
  TokenCallback on_token_;
  Sampler sampler_;
  std::unique_ptr<KVPolicy> policy_;
  const float* inputs_;
  std::size_t ids_count_, context_, capacity_, next_ = 0, step_ = 0;
  std::vector<std::uint64_t> keys_;    // the prompt's row keys, the session's once read
  std::vector<std::int32_t> history_;  // prompt and answer ids, for the repetition penalty
  TokenLogprobs logprobs_;
  std::vector<float> x_, row_;
  std::vector<float> masked_;  // logits masked by options_.constraint, when a draw was refused
  std::chrono::steady_clock::time_point t0_, decode_start_;
  GenerationStats stats_;
  std::exception_ptr error_;
  bool done_ = false, finished_ = false;
};

}  // namespace lclm
