// The OpenAI-style request and response bodies of `lclm serve`: parsing and
// validating /v1/chat/completions, /v1/completions and /v1/compress requests,
// and building their JSON answers. No I/O here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "compression/latent_cache.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"

namespace lclm::server {

// A request the server refuses, with the HTTP status and the fields of an
// OpenAI error object ({"error": {"message", "type", "param", "code"}}).
class RequestError : public std::runtime_error {
 public:
  RequestError(int http_status, const std::string& message, std::string field = "",
               std::string error_code = "", std::string error_type = "invalid_request_error")
      : std::runtime_error(message),
        status(http_status),
        param(std::move(field)),
        code(std::move(error_code)),
        type(std::move(error_type)) {}
  int status;
  std::string param, code, type;
};

// JSON text; invalid UTF-8 (a model may emit any bytes) becomes U+FFFD
// instead of an exception.
inline std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json error_json(const std::string& message, const std::string& type,
                          const std::string& param = "", const std::string& code = "");
inline nlohmann::json error_json(const RequestError& e) {
  return error_json(e.what(), e.type, e.param, e.code);
}

// What a latent id names: the text a /v1/compress id was made from (its
// latents are found in the cache, or computed again), or latents loaded from
// a file (`serve --latents`), which take a latent slot in the prompt.
struct LatentRef {
  std::string text;
  std::shared_ptr<const Latents> latents;  // set: a file's latents (text empty)
};
// Resolves a latent id (nullopt: unknown).
using LatentLookup = std::function<std::optional<LatentRef>(const std::string& id)>;

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::string prompt;             // the decoder's text: chat template applied, regions inline
  std::optional<int> max_tokens;  // none: the server's default, capped by the context
  SamplingParams sampling;
  bool seeded = false;
  std::vector<std::string> stop;  // stop strings
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // "lclm": {"ratio": R}: the ratio memory regions are compressed at (none:
  // the server's default). Whether the checkpoint can run it is the server's
  // check.
  std::optional<std::int64_t> ratio;
  // >= 0: report each token's log-probability and this many alternatives
  // (chat: logprobs true + top_logprobs; completions: logprobs N).
  int top_logprobs = -1;
  // response_format json_object or json_schema: the answer is constrained to
  // JSON of this grammar (none: free text).
  std::shared_ptr<const JsonGrammar> json_grammar;
  // Chat with tools: <tool_call>...</tool_call> in the output become
  // tool_calls (only the first unless parallel_tool_calls).
  bool tools = false;
  bool parallel_tool_calls = true;
  // tool_choice "required" or a named function: the prompt ends with the
  // opening "<tool_call>\n" (kForcedCallOpening) and json_grammar holds the
  // call's JSON ({"name": ..., "arguments": the function's parameters}), so
  // the answer is exactly one call; the server reads it back as one.
  bool forced_call = false;
  // Choices generated for the prompt (1..kMaxChoices), each its own
  // generation; with a seed, choice i samples with seed + i.
  std::size_t n = 1;
  // Latents loaded from files, for the prompt's latent slots in order (memory
  // parts naming a `serve --latents` id).
  std::vector<std::shared_ptr<const Latents>> supplied;
};

inline constexpr std::size_t kMaxChoices = 16;

inline constexpr const char* kForcedCallOpening = "<tool_call>\n";
inline constexpr const char* kForcedCallClosing = "\n</tool_call>";

// Server-wide defaults a request can override.
struct RequestDefaults {
  SamplingParams sampling;
  std::optional<std::uint64_t> seed;  // none: a random seed per request
  // Texts a chat message's content may not hold: the model's control tokens
  // (<|im_start|>, <|im_end|>, <|endoftext|>, ...), which would let a user
  // message forge another turn. Memory markers are not among them. Empty:
  // anything goes (serve --allow-control-tokens).
  std::vector<std::string> refused_in_content;
};

// The special tokens of a tokenizer that message content may not hold: all
// but the memory markers (<|memory_start|>, <|memory_end|>), which mark text
// to compress.
std::vector<std::string> control_token_texts(const Tokenizer& tokenizer);

// Throws RequestError (400) naming the field at fault. Unknown fields are
// ignored, as OpenAI clients send many; known fields of the wrong type are not.
// Message content is a string (memory regions inline as
// <|memory_start|>...<|memory_end|>) or an array of parts:
//   {"type": "text", "text": "..."}
//   {"type": "memory", "text": "..."}          compressed
//   {"type": "memory", "latent_id": "lat_..."}  compressed earlier by /v1/compress
//   {"type": "memory", "latent_id": "NAME"}     a latents file (serve --latents):
//                                               a latent slot, its latents in
//                                               CompletionRequest::supplied
// The parts become one string, memory parts as regions inline, and the
// messages (with tool_calls, tool_call_id, reasoning_content), `tools`,
// `chat_template_kwargs` and `add_generation_prompt` (default true) go
// through the model's chat template; the template's own errors
// (raise_exception) are 400s.
CompletionRequest parse_chat_request(const nlohmann::ordered_json& body,
                                     const RequestDefaults& defaults, const LatentLookup& lookup,
                                     const ChatTemplate& chat_template);
CompletionRequest parse_completion_request(const nlohmann::json& body,
                                           const RequestDefaults& defaults);
// {"input": "text" or ["text", ...]} -> the texts.
std::vector<std::string> parse_compress_request(const nlohmann::json& body);

// Parses a request body: RequestError 400 for invalid JSON or a non-object.
// Keys keep their order: tool schemas reach the template as the client
// wrote them.
nlohmann::ordered_json parse_body(const std::string& body);

// POST /tokenize {"content": TEXT, "add_special": bool, "with_pieces": bool}
// (llama-server's fields; Qwen3 adds no special tokens, so add_special
// changes nothing).
struct TokenizeRequest {
  std::string content;
  bool with_pieces = false;
};
TokenizeRequest parse_tokenize_request(const nlohmann::json& body);
// POST /detokenize {"tokens": [ids]}: ids in [0, vocab), else a 400 naming
// the element.
std::vector<std::int32_t> parse_detokenize_request(const nlohmann::json& body, std::size_t vocab);

// Holds back generated text that could be the start of a stop string, so that
// a stop string never reaches the client. Text is cut at UTF-8 boundaries.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  // Appends a piece; returns the text now safe to send. stopped() tells
  // whether a stop string was found (what follows it is dropped).
  std::string push(std::string_view piece);
  std::string flush();  // the held-back rest, at the end of generation
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::size_t longest_ = 0;
  std::string text_;      // everything generated
  std::size_t sent_ = 0;  // bytes of text_ already returned
  bool stopped_ = false;
};

// A tool call as the model wrote it, in the form Qwen3's template (and
// Hermes') asks for: <tool_call>{"name": NAME, "arguments": {...}}</tool_call>.
struct ToolCall {
  std::string id;  // call_..., made by the server
  std::string name;
  std::string arguments;  // JSON text, as OpenAI's API carries it
};

// Splits a chat's output into content and tool calls as it streams: a
// <tool_call> block is held back until it closes, then becomes a call (a
// block that does not hold a call stays content). Without parallel calls
// the blocks after the first are dropped.
class ToolCallParser {
 public:
  ToolCallParser(std::function<std::string()> new_id, bool parallel)
      : new_id_(std::move(new_id)), parallel_(parallel) {}
  // Appends a piece; returns the content now safe to send and appends the
  // calls it completed to `calls`.
  std::string push(std::string_view piece, std::vector<ToolCall>& calls);
  // The held-back rest, at the end (an unclosed block is content).
  std::string flush();
  std::size_t calls() const { return calls_; }

 private:
  std::function<std::string()> new_id_;
  bool parallel_;
  std::string held_;
  bool in_block_ = false;
  std::size_t calls_ = 0;
};

// What a finished generation reports.
struct CompletionUsage {
  std::size_t prompt_tokens = 0;  // decoder positions (latents included)
  std::size_t cached_tokens = 0;  // of those, kept from an earlier request's KV cache
  std::size_t completion_tokens = 0;
  std::int64_t ratio = 1;  // regions compressed at (1: a plain model)
  std::size_t compressed_tokens = 0, latents = 0, regions = 0, cache_hits = 0;
  std::size_t remote_cache_hits = 0;  // of cache_hits, from the Redis store
  double compress_ms = 0, ttft_ms = 0;
};

nlohmann::json usage_json(const CompletionUsage& u);
// A request's usage from its choices' (n >= 1): the prompt counted once (the
// first choice's figures), the completion tokens of all.
CompletionUsage usage_of_choices(const std::vector<CompletionUsage>& choices);

// One generated token as logprobs report it: its bytes (which may be part of
// a UTF-8 character), its log-probability and the top alternatives.
struct TokenLogprob {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};
// A choice's "logprobs": chat's {"content": [{token, logprob, bytes,
// top_logprobs}]}, or the completions' {tokens, token_logprobs,
// top_logprobs, text_offset} with offsets counted from text_offset.
nlohmann::json logprobs_json(const CompletionRequest& r, const std::vector<TokenLogprob>& tokens,
                             std::size_t text_offset = 0);

// One choice of a full (non-streaming) answer.
struct Choice {
  std::string text;
  std::string finish_reason;
  std::vector<TokenLogprob> logprobs;
  std::vector<ToolCall> tool_calls;
};
// A full answer, choices indexed in order. With tool calls, a choice's
// message carries them (content null when only whitespace is left) and its
// finish_reason is "tool_calls".
nlohmann::json completion_json(const CompletionRequest& r, const std::string& id,
                               std::int64_t created, const std::vector<Choice>& choices,
                               const CompletionUsage& usage);
// A streamed chunk of choice `choice` whose delta is one tool call, whole.
nlohmann::json tool_call_chunk_json(const CompletionRequest& r, const std::string& id,
                                    std::int64_t created, const ToolCall& call, std::size_t index,
                                    std::size_t choice = 0);
// One server-sent event's data for choice `choice_index`: a piece of text
// (delta), or the end (finish_reason set), or the usage chunk (choices
// empty).
nlohmann::json chunk_json(const CompletionRequest& r, const std::string& id, std::int64_t created,
                          const std::string* text, const std::string* finish_reason,
                          bool role = false, const std::vector<TokenLogprob>* logprobs = nullptr,
                          std::size_t text_offset = 0, std::size_t choice_index = 0);

}  // namespace lclm::server
