// What a generation is asked to do and what it reports. The loop itself
// (chunked prefill, then one token at a time until n_predict, a stop token or
// the context limit) is a Session's (runtime/session.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/kv_policy.h"
#include "model/qwen3_model.h"
#include "runtime/json_schema.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace lclm {

struct GenerationOptions {
  int n_predict = 128;              // < 0: until a stop token or the context is full
  std::size_t context = 0;          // 0: the model's max_position_embeddings
  std::size_t prefill_chunk = 512;  // prompt positions per forward pass
  SamplingParams sampling;
  std::vector<std::int32_t> stop_ids;
  KVPolicyConfig kv_policy;  // which entries the KV cache keeps (full: all)
  // >= 0: each sampled token's log-probability and this many alternatives
  // are computed (Generation::logprobs(), during the token's callback).
  int top_logprobs = -1;
  // Tokens the answer may take (response_format's JSON); none: any. A token
  // the sampler draws that the constraint refuses is drawn again from the
  // logits masked to the allowed ones. Stateful: one per generation.
  std::shared_ptr<JsonConstraint> constraint;
};

enum class StopReason { Length, StopToken, ContextFull, Callback };
std::string_view stop_reason_name(StopReason r);

struct GenerationStats {
  std::size_t prompt_tokens = 0;
  std::size_t reused_positions = 0;  // prompt positions whose keys and values a Session kept
  std::size_t generated_tokens = 0;
  double ttft_seconds = 0;    // start to the first sampled token (prefill + one sample)
  double decode_seconds = 0;  // the rest
  StopReason stop = StopReason::Length;
  std::size_t kv_cache_bytes = 0;    // allocated at the end of the run
  std::size_t prompt_kv_bytes = 0;   // keys and values held once the prompt is in (after
                                     // eviction), plus the policy's state (IndexMem's memory)
  std::size_t kv_peak_bytes = 0;     // the most the cache allocated during the run
  std::vector<std::int32_t> tokens;  // generated ids, the stop token excluded

  // Tokens after the first (which belongs to the prefill) per decode second.
  double decode_tokens_per_second() const {
    return generated_tokens > 1 ? (generated_tokens - 1) / decode_seconds : 0.0;
  }
};

// Receives each generated token; return false to stop. An empty callback
// lets generation run to a stop token or n_predict.
using TokenCallback = std::function<bool(std::int32_t id)>;

// The prompt's stop ids: the model's eos ids plus <|im_end|> and <|endoftext|>
// when the tokenizer has them.
std::vector<std::int32_t> default_stop_ids(const Qwen3Model& model, const Tokenizer& tokenizer);

// Turns a stream of token byte strings into complete UTF-8 text: a character
// split across tokens is held back until its last byte arrives.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string flush();  // whatever is left (possibly an incomplete sequence)

 private:
  std::string pending_;
};

}  // namespace lclm
