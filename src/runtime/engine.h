// The one way into the model for every front end (CLI, server, agent,
// evaluation, benchmarks): an Engine loads a model directory once, a plain
// Qwen3 model or an LCLM checkpoint, and turns prompt text into the decoder's
// input at any compression ratio the checkpoint allows; a Session
// (runtime/session.h) holds one conversation's KV cache and runs generation.
//
//   auto engine = Engine::load("models/lclm-small");
//   Session chat = engine->new_session();
//   GenerationOptions o;  o.stop_ids = engine->stop_ids();
//   chat.generate(engine->prepare(prompt, /*ratio=*/8), o, on_token);
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "compression/lclm_model.h"
#include "model/qwen3_model.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace lclm {

struct EngineOptions {
  std::optional<DType> quant;  // matrices converted at load (Q8_0, Q4_0); none: as stored
  // Kernel threads, applied on whichever thread calls the engine or one of
  // its sessions (0: every hardware thread).
  int threads = 0;
  // LCLM checkpoints only (a plain model refuses them):
  std::optional<std::int64_t> ratio;             // for calls that name none; default: the file's
  std::size_t latent_memory_bytes = 256u << 20;  // in-memory latent cache (0: off)
  LatentStoreOptions latent_store;               // an SQLite file or a Redis server behind it
  // A Jinja file to render chats with instead of the model's own template
  // (--chat-template); "chatml" names the built-in ChatML.
  std::optional<std::filesystem::path> chat_template;
  // What the sessions' KV caches store (--cache-type-k / --cache-type-v).
  KVCacheTypes cache_types = kDefaultKVCacheTypes;
};

// Engine::score's result: the scored tokens and, for each, log p(token |
// everything before it).
struct ScoredText {
  std::vector<std::int32_t> ids;
  std::vector<float> logprobs;
  std::size_t context_positions = 0;  // decoder positions before the text (latents included)
};

class Engine {
 public:
  // Throws lclm::Error naming the directory, file or option at fault.
  static std::unique_ptr<Engine> load(const std::filesystem::path& dir,
                                      const EngineOptions& options = {});
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  // The LCLM checkpoint, or null for a plain model.
  LclmModel* lclm() { return lclm_.get(); }
  const LclmModel* lclm() const { return lclm_.get(); }
  const Qwen3Model& decoder() const { return lclm_ ? lclm_->decoder() : *plain_; }
  const Tokenizer& tokenizer() const {
    return lclm_ ? lclm_->decoder_tokenizer() : *plain_tokenizer_;
  }
  // The decoder's eos ids plus <|im_end|> and <|endoftext|>.
  const std::vector<std::int32_t>& stop_ids() const { return stop_ids_; }
  // How chats become prompts: the decoder tokenizer's chat_template
  // (tokenizer_config.json), EngineOptions::chat_template, or ChatML.
  const ChatTemplate& chat_template() const { return chat_template_; }
  // The decoder's max_position_embeddings.
  std::size_t max_context() const;

  // The ratio a call at `ratio` runs at: the default when none is given.
  // Throws lclm::Error for a plain model given a ratio, or a ratio the
  // checkpoint cannot run.
  std::int64_t ratio(std::optional<std::int64_t> ratio = std::nullopt) const;

  // The decoder's input for a prompt: its <|memory_start|>...<|memory_end|>
  // regions compressed at `ratio` (none: the default). Throws lclm::Error for
  // a region or a ratio with a plain model, or a malformed region; with
  // max_positions > 0, PromptTooLong for a longer prompt, found from its
  // bytes and tokens before anything is compressed or embedded.
  // supplied: latents for the prompt's kLatentSlot regions (LclmModel::prepare).
  PreparedPrompt prepare(std::string_view prompt, std::optional<std::int64_t> ratio = std::nullopt,
                         std::size_t max_positions = 0, std::span<const Latents> supplied = {});

  // The log-probability of each token of `text` read after `context` (whose
  // memory regions are compressed at `ratio`): the two are tokenized apart
  // and joined, as an answer is scored after its question. With an empty
  // context the text's first token is not scored (nothing predicts it).
  // Throws lclm::Error for an empty text or one past the context limit.
  ScoredText score(std::string_view context, std::string_view text,
                   std::optional<std::int64_t> ratio = std::nullopt);

  // A new conversation with an empty KV cache, run on threads().
  Session new_session() const { return Session(decoder(), threads_, cache_types_); }
  int threads() const { return threads_; }
  KVCacheTypes cache_types() const { return cache_types_; }

 private:
  explicit Engine(std::filesystem::path dir);

  std::filesystem::path dir_;
  std::unique_ptr<LclmModel> lclm_;
  std::optional<Qwen3Model> plain_;
  std::optional<Tokenizer> plain_tokenizer_;
  std::vector<std::int32_t> stop_ids_;
  ChatTemplate chat_template_;
  int threads_ = 1;
  KVCacheTypes cache_types_;
  std::size_t longest_token_ = 1;  // plain models: bytes of the longest token
};

}  // namespace lclm
