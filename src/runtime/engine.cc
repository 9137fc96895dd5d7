#include "runtime/engine.h"

#include <algorithm>
#include <string>

#include "compression/memory_regions.h"
#include "runtime/scoring.h"
#include "util/error.h"
#include "util/threads.h"

namespace lclm {
namespace {

std::string not_a_checkpoint(const std::filesystem::path& dir, std::string_view what) {
  return dir.string() + " is not an LCLM checkpoint (no model_config.json): " + std::string(what) +
         " need one";
}

}  // namespace

Engine::Engine(std::filesystem::path dir) : dir_(std::move(dir)) {}

std::unique_ptr<Engine> Engine::load(const std::filesystem::path& dir,
                                     const EngineOptions& options) {
  check_latent_store_options(options.latent_store);  // a plain model would not look at it
  std::unique_ptr<Engine> e(new Engine(dir));
  e->threads_ = resolve_threads(options.threads);
  set_num_threads(e->threads_);  // loading converts matrices with --quant
  if (LclmModel::is_checkpoint(dir)) {
    LclmOptions o;
    o.compression_ratio = options.ratio;
    o.quant = options.quant;
    o.memory_cache_bytes = options.latent_memory_bytes;
    o.cache_store = options.latent_store;
    e->lclm_ = LclmModel::load(dir, o);
  } else {
    if (options.ratio) throw Error(not_a_checkpoint(dir, "--ratio and memory regions"));
    if (!options.latent_store.location.empty()) {
      throw Error(not_a_checkpoint(dir, "--latent-cache and memory regions"));
    }
    e->plain_.emplace(Qwen3Model::load(dir, {.quant = options.quant}));
    e->plain_tokenizer_.emplace(Tokenizer::from_dir(dir));
    e->longest_token_ = longest_token_bytes(*e->plain_tokenizer_);
  }
  check_kv_cache_types(options.cache_types,
                       static_cast<std::size_t>(e->decoder().config().head_dim));
  e->cache_types_ = options.cache_types;
  e->stop_ids_ = default_stop_ids(e->decoder(), e->tokenizer());
  const std::filesystem::path tokenizer_config =
      (e->lclm_ ? dir / "decoder" : dir) / "tokenizer_config.json";
  e->chat_template_ = options.chat_template
                          ? ChatTemplate::from_file(*options.chat_template, tokenizer_config)
                          : ChatTemplate::from_tokenizer_config(tokenizer_config);
  // The template's end of turn stops generation too, when it starts with one
  // of the tokenizer's special tokens (Llama 3's <|eot_id|>, Gemma's
  // <end_of_turn>): a chat answer ends where the template ends a turn.
  if (const std::string end = e->chat_template_.turn_end(); !end.empty()) {
    const std::vector<std::int32_t> ids = e->tokenizer().encode(end);
    if (!ids.empty() && e->tokenizer().is_special(ids.front()) &&
        std::find(e->stop_ids_.begin(), e->stop_ids_.end(), ids.front()) == e->stop_ids_.end()) {
      e->stop_ids_.push_back(ids.front());
      std::sort(e->stop_ids_.begin(), e->stop_ids_.end());
    }
  }
  return e;
}

std::size_t Engine::max_context() const {
  return static_cast<std::size_t>(decoder().config().max_position_embeddings);
}

std::int64_t Engine::ratio(std::optional<std::int64_t> ratio) const {
  if (!lclm_) {
    if (ratio) throw Error(not_a_checkpoint(dir_, "a compression ratio and memory regions"));
    return 1;
  }
  return lclm_->config_at(ratio).compression_ratio;
}

PreparedPrompt Engine::prepare(std::string_view prompt, std::optional<std::int64_t> ratio,
                               std::size_t max_positions, std::span<const Latents> supplied) {
  set_num_threads(threads_);
  if (lclm_) return lclm_->prepare(prompt, ratio, max_positions, supplied);
  if (!supplied.empty()) throw Error(not_a_checkpoint(dir_, "latents"));
  if (ratio) throw Error(not_a_checkpoint(dir_, "a compression ratio and memory regions"));
  if (prompt.find(kMemoryStart) != std::string_view::npos) {
    throw Error(not_a_checkpoint(dir_, "memory regions"));
  }
  if (max_positions > 0 && prompt.size() / longest_token_ > max_positions) {
    const std::size_t at_least = prompt.size() / longest_token_;
    throw PromptTooLong(at_least, max_positions, true, at_least, 0);
  }
  PreparedPrompt p;
  p.ids = plain_tokenizer_->encode(prompt);
  if (max_positions > 0 && p.ids.size() > max_positions) {
    throw PromptTooLong(p.ids.size(), max_positions, false, p.ids.size(), 0);
  }
  p.embeddings.resize(p.ids.size() * static_cast<std::size_t>(plain_->config().hidden_size));
  plain_->embed(p.ids, p.embeddings.data());
  p.stats.plain_tokens = p.ids.size();
  return p;
}

ScoredText Engine::score(std::string_view context, std::string_view text,
                         std::optional<std::int64_t> ratio) {
  if (text.empty()) throw Error("the text to score is empty");
  PreparedPrompt p = context.empty() ? PreparedPrompt{} : prepare(context, ratio, max_context());
  const std::vector<std::int32_t> text_ids = tokenizer().encode(text);
  const std::size_t first = std::max<std::size_t>(1, p.ids.size());
  const std::size_t n = p.ids.size() + text_ids.size();
  if (n > max_context()) {
    throw Error("context and text are " + std::to_string(n) +
                " positions, more than the model's context of " + std::to_string(max_context()));
  }
  const auto H = static_cast<std::size_t>(decoder().config().hidden_size);
  p.ids.insert(p.ids.end(), text_ids.begin(), text_ids.end());
  p.embeddings.resize(n * H);
  decoder().embed(text_ids, p.embeddings.data() + (n - text_ids.size()) * H);
  ScoredText s;
  s.context_positions = n - text_ids.size();
  if (first >= n) return s;  // one token and no context: nothing to score
  set_num_threads(threads_);
  s.logprobs = score_tokens(decoder(), p.ids, p.embeddings.data(), first);
  s.ids.assign(p.ids.begin() + static_cast<std::ptrdiff_t>(first), p.ids.end());
  return s;
}

}  // namespace lclm
