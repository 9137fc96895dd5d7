#include "runtime/session.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

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

Session::Session(const Qwen3Model& model, int threads, KVCacheTypes cache_types)
    : model_(model), threads_(threads), cache_types_(cache_types) {}

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
  Generation g(*this, ids, inputs, options, on_token);
  while (g.prefilling()) g.prefill_step();
  std::vector<float> logits(static_cast<std::size_t>(model_.config().vocab_size));
  while (!g.done()) {
    model_.logits(g.row(), 1, logits.data());
    if (g.accept(logits.data())) {
      model_.forward(g.row(), 1, g.cache(), AttentionMask::Causal);
      g.forwarded();
    }
  }
  return g.finish();
}

Generation::Generation(Session& session, std::span<const std::int32_t> ids, const float* inputs,
                       const GenerationOptions& options, TokenCallback on_token)
    : session_(session),
      model_(session.model_),
      options_(options),
      on_token_(std::move(on_token)),
      sampler_(options.sampling),
      inputs_(inputs),
      ids_count_(ids.size()),
      history_(ids.begin(), ids.end()) {
  const auto& config = model_.config();
  const auto H = static_cast<std::size_t>(config.hidden_size);
  const std::size_t n = ids.size();
  context_ = options.context > 0 ? options.context
                                 : static_cast<std::size_t>(config.max_position_embeddings);
  if (session.busy_) throw Error("the session is already running a generation");
  if (n == 0) throw Error("the prompt is empty");
  if (session.threads_ > 0) set_num_threads(session.threads_);
  if (n >= context_) {
    throw Error("the prompt is " + std::to_string(n) +
                " tokens, which does not fit the context of " + std::to_string(context_) +
                " tokens (raise it with -c)");
  }
  t0_ = decode_start_ = std::chrono::steady_clock::now();
  // Without a length (-n -1) the cache starts with room for kOpenEndedReserve
  // tokens and doubles as the answer grows, instead of holding the whole
  // context for what may be a short answer.
  const std::size_t planned =
      n + (options.n_predict < 0 ? Session::kOpenEndedReserve
                                 : static_cast<std::size_t>(options.n_predict));
  capacity_ = std::min(context_, planned);

  // What can stay: the cached positions this prompt starts with. A policy
  // that evicts leaves nothing to extend, and another context limit needs
  // another cache.
  keys_.resize(n);
  for (std::size_t i = 0; i < n; ++i) keys_[i] = row_key(inputs + i * H, H);
  const bool full = options.kv_policy.kind == KVPolicyKind::Full;
  if (!full || (session.cache_ && session.cache_->max_positions() != context_)) session.reset();
  const std::size_t reuse =
      shared_prefix(session.row_keys_, n, [&](std::size_t i) { return keys_[i]; });
  if (session.cache_) {
    session.keep_prefix(reuse);
    session.cache_->reserve_more(capacity_ - reuse);
  } else {
    session.cache_.emplace(model_.make_cache(context_, capacity_, session.cache_types_));
  }
  stats_.prompt_tokens = n;
  stats_.reused_positions = reuse;
  next_ = reuse;
  // Prefill in chunks so activation memory stays bounded by the chunk size;
  // then the KV policy cuts the prompt's entries down to its budget.
  policy_ = make_kv_policy(options.kv_policy);
  policy_->begin_prompt(cache(), n);
  session.busy_ = true;
}

Generation::~Generation() {
  if (!finished_) session_.reset();  // a pass cut short leaves the cache and the keys out of step
  session_.busy_ = false;
}

void Generation::prefill_step() {
  const auto H = static_cast<std::size_t>(model_.config().hidden_size);
  const std::size_t n = ids_count_;
  const std::size_t len = std::min(std::max<std::size_t>(1, options_.prefill_chunk), n - next_);
  x_.assign(inputs_ + next_ * H, inputs_ + (next_ + len) * H);
  model_.forward(x_.data(), len, cache(), AttentionMask::Causal);
  next_ += len;
  if (next_ < n) return;
  session_.row_keys_ = std::move(keys_);
  policy_->end_prompt(cache());
  cache().shrink_to_fit(capacity_ - n);
  stats_.prompt_kv_bytes = cache().entry_bytes() + policy_->state_bytes();
  row_.assign(x_.end() - static_cast<std::ptrdiff_t>(H), x_.end());
  x_ = {};
  if (options_.n_predict == 0) end(StopReason::Length);
}

void Generation::end(StopReason reason) {
  stats_.stop = reason;
  stats_.decode_seconds = seconds_since(decode_start_);
  done_ = true;
}

bool Generation::accept(const float* logits) {
  const auto V = static_cast<std::size_t>(model_.config().vocab_size);
  const bool want_logprobs = options_.top_logprobs >= 0;
  std::int32_t id = sampler_.sample(std::span(logits, V), history_,
                                    want_logprobs ? &logprobs_ : nullptr, options_.top_logprobs);
  if (JsonConstraint* constraint = options_.constraint.get()) {
    if (!constraint->allows(id)) {
      // Drawn again from the allowed tokens only: for plain sampling that is
      // exactly the distribution masked from the start, at the cost of a
      // vocabulary walk only when the first draw is refused.
      masked_.assign(logits, logits + V);
      if (constraint->mask(masked_) == 0) {
        end(StopReason::StopToken);  // the document is whole and nothing may follow
        return false;
      }
      id = sampler_.sample(masked_, history_, want_logprobs ? &logprobs_ : nullptr,
                           options_.top_logprobs);
    }
    constraint->accept(id);
  }
  const std::size_t step = step_++;
  if (step == 0) {
    stats_.ttft_seconds = seconds_since(t0_);
    decode_start_ = std::chrono::steady_clock::now();
  }
  const auto& stops = options_.stop_ids;
  if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
    end(StopReason::StopToken);
    return false;
  }
  stats_.tokens.push_back(id);
  history_.push_back(id);
  if (on_token_ && !on_token_(id)) {
    end(StopReason::Callback);
    return false;
  }
  // The last token's keys and values would never be read: skip its pass.
  if (options_.n_predict >= 0 && step + 1 >= static_cast<std::size_t>(options_.n_predict)) {
    end(StopReason::Length);
    return false;
  }
  if (cache().size() + 1 >= context_) {
    end(StopReason::ContextFull);
    return false;
  }
  const auto H = static_cast<std::size_t>(model_.config().hidden_size);
  model_.embed(std::span<const std::int32_t>(&id, 1), row_.data());
  session_.row_keys_.push_back(row_key(row_.data(), H));
  return true;
}

void Generation::forwarded() {
  policy_->after_token(cache());
}

void Generation::fail(std::exception_ptr error) {
  error_ = std::move(error);
  done_ = true;
}

GenerationStats Generation::finish() {
  if (!done_) throw Error("finish: the generation is still running");
  if (finished_) throw Error("finish: called twice");
  if (error_) std::rethrow_exception(error_);  // the session is reset when g goes
  stats_.generated_tokens = stats_.tokens.size();
  stats_.kv_cache_bytes = cache().bytes();
  stats_.kv_peak_bytes = cache().peak_bytes();
  finished_ = true;
  // Evicted entries and the policy's memory cannot be extended.
  if (options_.kv_policy.kind != KVPolicyKind::Full) session_.reset();
  return std::move(stats_);
}

}  // namespace lclm
