#include "server/openai_api.h"

#include <algorithm>
#include <utility>

#include "compression/memory_regions.h"
#include "runtime/chat_template.h"
#include "runtime/jinja.h"
#include "runtime/sampler.h"
#include "server/base64.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace lclm::server {
namespace {

using nlohmann::json;

// At most this many tokens in one request's logit_bias (OpenAI allows 300).
constexpr std::size_t kMaxLogitBias = 1024;
// The most text a chat's messages may hold: what the template renderer may
// write (jinja::Limits). 16 MiB is some 4M tokens, past 250K positions even
// compressed at 16x.
constexpr std::size_t kMaxChatBytes = jinja::Limits{}.max_output_bytes;
// At most this much text per /tokenize request.
constexpr std::size_t kMaxTokenizeBytes = 8u << 20;

[[noreturn]] void bad(const std::string& message, const std::string& param,
                      const std::string& code = "invalid_value") {
  throw RequestError(400, message, param, code);
}

// body[name], or null when absent or null; for request bodies read in
// either key order.
template <typename Json>
const Json* field(const Json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

void require(bool ok, const std::string& param, const char* what) {
  if (!ok) bad("'" + param + "' must be " + what, param, "invalid_type");
}

// OpenAI request fields lclm does not implement yet. A request that uses one
// is refused naming it, never answered as if it were absent; the neutral
// values SDKs send by default pass.
void refuse_unsupported(const json& body, bool chat) {
  const auto refuse = [](const std::string& name, const std::string& what) {
    throw RequestError(400, "'" + name + "' is not supported by lclm yet (" + what + ")", name,
                       "unsupported_parameter");
  };
  // Chat renders tools through the model's template and parses the calls
  // it writes; a call cannot be forced.
  if (const json* v = field(body, "tools"); v && !chat && !(v->is_array() && v->empty())) {
    refuse("tools", "tools are for /v1/chat/completions");
  }
  if (const json* v = field(body, "functions"); v && !(v->is_array() && v->empty())) {
    refuse("functions", "the deprecated function calling; use 'tools'");
  }
  if (const json* v = field(body, "function_call");
      v && !(v->is_string() && (*v == "none" || *v == "auto"))) {
    refuse("function_call", "the deprecated function calling; use 'tool_choice'");
  }
  if (const json* v = field(body, "tool_choice"); v && !chat && *v != "none" && *v != "auto") {
    refuse("tool_choice", "tools are for /v1/chat/completions");
  }
  if (const json* v = field(body, "echo")) {
    if (*v != false) refuse("echo", "the prompt is not echoed");
  }
  if (const json* v = field(body, "best_of")) {
    if (*v != 1) refuse("best_of", "choices are not ranked; 'n' asks for several");
  }
  if (const json* v = field(body, "suffix")) {
    if (!(v->is_string() && v->get<std::string>().empty())) refuse("suffix", "no insertion");
  }
  if (const json* v = field(body, "modalities")) {
    if (*v != json::array({"text"})) refuse("modalities", "text only");
  }
  for (const char* name : {"audio", "prediction", "web_search_options"}) {
    if (field(body, name)) refuse(name, "text generation only");
  }
}

// response_format: {"type": "text"} (none), {"type": "json_object"}, or
// {"type": "json_schema", "json_schema": {"name", "schema", "strict"}},
// compiled here so that a schema lclm cannot follow is a 400 before the queue.
std::shared_ptr<const JsonGrammar> parse_response_format(const json& body) {
  const json* v = field(body, "response_format");
  if (!v) return nullptr;
  require(v->is_object(), "response_format", "an object");
  const json* type = field(*v, "type");
  require(type && type->is_string(), "response_format.type", "a string");
  if (*type == "text") return nullptr;
  if (*type == "json_object") return JsonGrammar::any_object();
  if (*type != "json_schema") {
    bad("'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"",
        "response_format.type");
  }
  const json* spec = field(*v, "json_schema");
  require(spec && spec->is_object(), "response_format.json_schema", "an object");
  const json* schema = field(*spec, "schema");
  if (!schema) return JsonGrammar::any_object();  // OpenAI: a schema-less json_schema is any object
  try {
    return JsonGrammar::from_schema(*schema);
  } catch (const Error& e) {
    throw RequestError(400, e.what(), "response_format.json_schema.schema",
                       "unsupported_schema");
  }
}

// max_tokens, temperature, top_p, top_k, min_p, repetition_penalty,
// frequency_penalty, presence_penalty, logit_bias, seed, stop, stream,
// stream_options, n: the fields both endpoints share; unsupported fields
// are refused.
void parse_common(const json& body, const RequestDefaults& defaults, CompletionRequest& r) {
  if (!body.is_object()) bad("the request body must be a JSON object", "", "invalid_type");
  r.sampling = defaults.sampling;
  if (defaults.seed) {
    r.sampling.seed = *defaults.seed;
    r.seeded = true;
  }
  if (const json* m = field(body, "model")) {
    require(m->is_string(), "model", "a string");
    r.model = *m;
  }
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const json* v = field(body, name)) {
      require(v->is_number_integer(), name, "an integer");
      const auto n = v->get<std::int64_t>();
      if (n < 1) bad(std::string("'") + name + "' must be at least 1", name);
      r.max_tokens = static_cast<int>(std::min<std::int64_t>(n, 1 << 30));
    }
  }
  const auto number = [&](const char* name, float& out) {
    if (const json* v = field(body, name)) {
      require(v->is_number(), name, "a number");
      out = v->get<float>();
    }
  };
  number("temperature", r.sampling.temperature);
  number("top_p", r.sampling.top_p);
  number("min_p", r.sampling.min_p);
  number("repetition_penalty", r.sampling.repeat_penalty);
  if (const json* v = field(body, "top_k")) {
    require(v->is_number_integer(), "top_k", "an integer");
    r.sampling.top_k = v->get<int>();
  }
  if (!(r.sampling.temperature >= 0 && r.sampling.temperature <= 2)) {
    bad("'temperature' must be between 0 and 2", "temperature");
  }
  if (r.sampling.top_p <= 0 || r.sampling.top_p > 1) bad("'top_p' must be in (0, 1]", "top_p");
  // min_p 1 would drop every token but the most likely ones' exact ties.
  if (!(r.sampling.min_p >= 0 && r.sampling.min_p < 1)) bad("'min_p' must be in [0, 1)", "min_p");
  if (r.sampling.repeat_penalty <= 0) {
    bad("'repetition_penalty' must be positive", "repetition_penalty");
  }
  for (const auto& [name, penalty] :
       {std::pair{"frequency_penalty", &r.sampling.frequency_penalty},
        std::pair{"presence_penalty", &r.sampling.presence_penalty}}) {
    number(name, *penalty);
    if (!(*penalty >= -2.0f && *penalty <= 2.0f)) {
      bad(std::string("'") + name + "' must be in [-2, 2]", name);
    }
  }
  if (const json* v = field(body, "logit_bias")) {
    require(v->is_object(), "logit_bias", "an object mapping token ids to biases");
    if (v->size() > kMaxLogitBias) {
      bad("'logit_bias' may name at most " + std::to_string(kMaxLogitBias) + " tokens",
          "logit_bias");
    }
    for (const auto& [key, bias] : v->items()) {
      const std::string p = "logit_bias." + key;
      const bool digits =
          !key.empty() && key.size() <= 9 &&
          std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits) bad("'logit_bias' keys must be token ids (decimal digits)", p);
      require(bias.is_number(), p, "a number");
      const float b = bias.get<float>();
      if (!(b >= -100.0f && b <= 100.0f)) bad("'" + p + "' must be in [-100, 100]", p);
      r.sampling.logit_bias.emplace_back(std::stoi(key), b);
    }
  }
  refuse_unsupported(body, r.chat);
  r.json_grammar = parse_response_format(body);
  if (const json* l = field(body, "lclm")) {
    require(l->is_object(), "lclm", "an object");
    if (const json* v = field(*l, "ratio")) {
      require(v->is_number_integer(), "lclm.ratio", "an integer");
      if (v->get<std::int64_t>() < 1) bad("'lclm.ratio' must be at least 1", "lclm.ratio");
      r.ratio = v->get<std::int64_t>();
    }
  }
  if (const json* v = field(body, "seed")) {
    require(v->is_number_integer(), "seed", "an integer");
    r.sampling.seed = static_cast<std::uint64_t>(v->get<std::int64_t>());
    r.seeded = true;
  }
  if (const json* v = field(body, "n")) {
    require(v->is_number_integer(), "n", "an integer");
    const std::int64_t n = v->get<std::int64_t>();
    if (n < 1 || n > static_cast<std::int64_t>(kMaxChoices)) {
      bad("'n' must be in [1, " + std::to_string(kMaxChoices) + "]", "n");
    }
    r.n = static_cast<std::size_t>(n);
  }
  if (const json* v = field(body, "stream")) {
    require(v->is_boolean(), "stream", "a boolean");
    r.stream = *v;
  }
  const std::string most = std::to_string(kMaxTopLogprobs);
  if (r.chat) {  // logprobs: bool, top_logprobs: 0-20 with it
    const json* v = field(body, "logprobs");
    if (v) require(v->is_boolean(), "logprobs", "a boolean");
    const bool on = v && *v == true;
    std::int64_t k = 0;
    if (const json* t = field(body, "top_logprobs")) {
      require(t->is_number_integer(), "top_logprobs", "an integer");
      k = t->get<std::int64_t>();
      if (k < 0 || k > kMaxTopLogprobs)
        bad("'top_logprobs' must be in [0, " + most + "]", "top_logprobs");
      if (k > 0 && !on) bad("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    }
    r.top_logprobs = on ? static_cast<int>(k) : -1;
  } else if (const json* v = field(body, "logprobs")) {  // logprobs: the count of alternatives
    require(v->is_number_integer(), "logprobs", "an integer");
    const auto k = v->get<std::int64_t>();
    if (k < 0 || k > kMaxTopLogprobs) bad("'logprobs' must be in [0, " + most + "]", "logprobs");
    r.top_logprobs = static_cast<int>(k);
  }
  if (const json* v = field(body, "stream_options")) {
    require(v->is_object(), "stream_options", "an object");
    if (const json* u = field(*v, "include_usage")) {
      require(u->is_boolean(), "stream_options.include_usage", "a boolean");
      r.include_usage = *u;
    }
  }
  if (const json* v = field(body, "stop")) {
    if (v->is_string()) {
      r.stop.push_back(*v);
    } else {
      require(v->is_array() && v->size() <= 4, "stop", "a string or an array of up to 4 strings");
      for (const json& s : *v) {
        require(s.is_string(), "stop", "a string or an array of up to 4 strings");
        r.stop.push_back(s);
      }
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) bad("'stop' strings must not be empty", "stop");
    }
  }
}

std::string wrap_region(const std::string& text) {
  return std::string(kMemoryStart) + text + std::string(kMemoryEnd);
}

// What an id names (a memory part's latent_id, a file part's file_id): the
// text behind a /v1/compress id, or a latents file's latents; an unknown one
// is a 400 "unknown_KIND_id" naming `param`.
LatentRef source_of_id(const std::string& id, const std::string& kind, const std::string& param,
                          const LatentLookup& lookup) {
  std::optional<LatentRef> source = lookup(id);
  if (!source) {
    bad("unknown " + kind + " id '" + id +
            "': ids come from /v1/compress on this server or one sharing its --latent-cache, "
            "or name a file of serve --latents",
        param, "unknown_" + kind + "_id");
  }
  return std::move(*source);
}

// A memory region of the message: the text to compress, or a latent slot
// whose latents go to `supplied`.
std::string memory_region(LatentRef source,
                          std::vector<std::shared_ptr<const Latents>>& supplied) {
  if (!source.latents) return wrap_region(source.text);
  supplied.push_back(std::move(source.latents));
  return std::string(kLatentSlot);
}

// Media types whose bytes are text a model can read.
bool is_text_media_type(std::string_view type) {
  if (type.substr(0, 5) == "text/") return true;
  for (std::string_view t : {"application/json", "application/xml", "application/yaml",
                             "application/x-yaml", "application/x-ndjson", "application/csv"}) {
    if (type == t) return true;
  }
  return false;
}

// An OpenAI `file` content part, {"type": "file", "file": {"file_data":
// "data:text/plain;base64,...", "filename": ...}} or {"file_id": ID} (an id
// from /v1/compress, or of a latents file): its text, which the message holds
// as a memory region (an attached document is what an LCLM compresses), or
// the file's latents.
template <typename Json>
LatentRef file_part(const Json& part, const std::string& p, const LatentLookup& lookup) {
  const Json* file = field(part, "file");
  require(file && file->is_object(), p + ".file", "an object with 'file_data' or 'file_id'");
  const Json* data = field(*file, "file_data");
  const Json* id = field(*file, "file_id");
  if ((data != nullptr) == (id != nullptr)) {
    bad("'" + p + ".file' needs exactly one of 'file_data' and 'file_id'", p + ".file",
        "missing_field");
  }
  if (id) {
    require(id->is_string(), p + ".file.file_id", "a string");
    return source_of_id(id->template get<std::string>(), "file", p + ".file.file_id", lookup);
  }
  const std::string param = p + ".file.file_data";
  require(data->is_string(), param, "a data: URL (data:text/plain;base64,...)");
  const std::string& url = data->template get_ref<const std::string&>();
  const std::size_t comma = url.find(',');
  const std::string_view head = std::string_view(url).substr(0, comma);
  constexpr std::string_view kBase64 = ";base64";
  if (url.rfind("data:", 0) != 0 || comma == std::string::npos || head.size() < kBase64.size() ||
      head.substr(head.size() - kBase64.size()) != kBase64) {
    bad("'" + param + "' must be a base64 data: URL (data:text/plain;base64,...)", param);
  }
  const std::string_view media = head.substr(5, head.find(';') - 5);
  if (!is_text_media_type(media)) {
    bad("'" + param + "' is " + (media.empty() ? std::string("untyped") : std::string(media)) +
            "; lclm reads text files (text/*, application/json, xml, yaml, csv) as documents",
        param, "unsupported_file_type");
  }
  std::optional<std::string> text = base64_decode(std::string_view(url).substr(comma + 1));
  if (!text) bad("'" + param + "' is not valid base64", param);
  if (text->find('\0') != std::string::npos || valid_utf8(*text) != *text) {
    bad("'" + param + "' is not UTF-8 text", param, "unsupported_file_type");
  }
  if (text->empty()) bad("'" + param + "' holds an empty file", param);
  return {std::move(*text), nullptr};
}

template <typename Json>
std::string message_content(const Json& content, const std::string& param,
                            const LatentLookup& lookup,
                            std::vector<std::shared_ptr<const Latents>>& supplied) {
  if (content.is_string()) return content;
  require(content.is_array(), param, "a string or an array of content parts");
  std::string out;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const Json& part = content[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    require(part.is_object(), p, "an object");
    const Json* type = field(part, "type");
    require(type && type->is_string(), p + ".type", "\"text\", \"memory\" or \"file\"");
    const Json* text = field(part, "text");
    if (text) require(text->is_string(), p + ".text", "a string");
    if (*type == "text") {
      if (!text) bad("'" + p + ".text' is required", p + ".text", "missing_field");
      out += text->template get<std::string>();
    } else if (*type == "memory") {
      const Json* id = field(part, "latent_id");
      if (id) require(id->is_string(), p + ".latent_id", "a string");
      if ((text != nullptr) == (id != nullptr)) {
        bad("'" + p + "' needs exactly one of 'text' and 'latent_id'", p, "missing_field");
      }
      if (text) {
        out += wrap_region(*text);
      } else {
        out += memory_region(
            source_of_id(id->template get<std::string>(), "latent", p + ".latent_id", lookup),
            supplied);
      }
    } else if (*type == "file") {
      out += memory_region(file_part(part, p, lookup), supplied);
    } else {
      bad("'" + p + ".type' must be \"text\", \"memory\" or \"file\"", p + ".type");
    }
  }
  return out;
}

std::string without_latent_slots(std::string text) {
  for (std::size_t at = text.find(kLatentSlot); at != std::string::npos;
       at = text.find(kLatentSlot, at)) {
    text.erase(at, kLatentSlot.size());
  }
  return text;
}

// Regions are checked here so a malformed one is a 400 before the queue.
void check_regions(const std::string& prompt, const std::string& param) {
  try {
    split_memory_regions(prompt);
  } catch (const Error& e) {
    bad(std::string("bad memory region: ") + e.what(), param, "invalid_memory_region");
  }
}

}  // namespace

std::vector<std::string> control_token_texts(const Tokenizer& tokenizer) {
  std::vector<std::string> out;
  const auto n = static_cast<std::int32_t>(tokenizer.size());
  for (std::int32_t id = 0; id < n; ++id) {
    if (!tokenizer.is_special(id)) continue;
    std::string text = tokenizer.token_bytes(id);
    if (text.empty() || text == kMemoryStart || text == kMemoryEnd) continue;
    out.push_back(std::move(text));
  }
  return out;
}

json error_json(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

nlohmann::ordered_json parse_body(const std::string& body) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    throw RequestError(400, "the request body is not valid JSON", "", "invalid_json");
  }
  if (!j.is_object()) bad("the request body must be a JSON object", "", "invalid_type");
  return j;
}

namespace {

using nlohmann::ordered_json;

void refuse_control_tokens(const std::string& text, const std::string& param,
                           const RequestDefaults& defaults) {
  for (const std::string& token : defaults.refused_in_content) {
    if (text.find(token) != std::string::npos) {
      bad("'" + param + "' holds the control token " + token +
              ", which would end or start a turn; the server refuses it in messages (plain "
              "/v1/completions take a whole prompt, control tokens included)",
          param, "control_token_in_content");
    }
  }
}

// An assistant message's tool_calls as templates read them: arguments given
// as a JSON string become the object it holds (vLLM and llama-server do the
// same, since templates write arguments with tojson, the form models are
// trained on); other strings stay strings.
ordered_json tool_calls_json(const ordered_json& calls, const std::string& p,
                             const RequestDefaults& defaults) {
  require(calls.is_array(), p, "an array of tool calls");
  ordered_json out = ordered_json::array();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const ordered_json& c = calls[i];
    const std::string q = p + "[" + std::to_string(i) + "]";
    require(c.is_object(), q, "an object");
    const ordered_json* fn = field(c, "function");
    require(fn && fn->is_object(), q + ".function", "an object with 'name' and 'arguments'");
    const ordered_json* name = field(*fn, "name");
    require(name && name->is_string(), q + ".function.name", "a string");
    const ordered_json* args = field(*fn, "arguments");
    ordered_json arguments = ordered_json::object();
    if (args) {
      require(args->is_string() || args->is_object(), q + ".function.arguments",
              "a JSON string or an object");
      if (args->is_string()) {
        refuse_control_tokens(*args, q + ".function.arguments", defaults);
        ordered_json parsed = ordered_json::parse(args->get<std::string>(), nullptr, false);
        arguments = parsed.is_object() ? parsed : *args;
      } else {
        refuse_control_tokens(args->dump(), q + ".function.arguments", defaults);
        arguments = *args;
      }
    }
    ordered_json call = {{"type", "function"},
                         {"function", {{"name", *name}, {"arguments", arguments}}}};
    if (const ordered_json* id = field(c, "id")) {
      require(id->is_string(), q + ".id", "a string");
      call["id"] = *id;
    }
    out.push_back(std::move(call));
  }
  return out;
}

// "tools": [{"type": "function", "function": {"name", "description",
// "parameters"}}], passed to the template as the client wrote them.
ordered_json tools_json(const ordered_json& tools) {
  require(tools.is_array(), "tools", "an array of tools");
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const std::string p = "tools[" + std::to_string(i) + "]";
    const ordered_json& t = tools[i];
    require(t.is_object(), p, "an object");
    const ordered_json* type = field(t, "type");
    require(type && *type == "function", p + ".type", "\"function\"");
    const ordered_json* fn = field(t, "function");
    require(fn && fn->is_object(), p + ".function", "an object");
    const ordered_json* name = field(*fn, "name");
    require(name && name->is_string() && !name->get_ref<const std::string&>().empty(),
            p + ".function.name", "a non-empty string");
  }
  return tools;
}

// tool_choice: "none" and "auto" force nothing (null); "required" forces a
// call of any of the tools, {"type": "function", "function": {"name": N}}
// a call of N: the schema of the call's JSON as the Hermes/Qwen templates
// write it, {"name": N, "arguments": {...}}, the arguments those of N's
// "parameters" (any object when it has none).
ordered_json forced_call_schema(const ordered_json& choice, const ordered_json& tools) {
  if (choice == "none" || choice == "auto") return nullptr;
  const auto call_of = [](const ordered_json& fn) {
    const ordered_json* params = field(fn, "parameters");
    return ordered_json{{"type", "object"},
                        {"properties",
                         {{"name", {{"const", fn.at("name")}}},
                          {"arguments", params ? *params : ordered_json{{"type", "object"}}}}},
                        {"required", {"name", "arguments"}},
                        {"additionalProperties", false}};
  };
  if (tools.is_null()) {
    bad("'tool_choice' forces a tool call, but the request has no 'tools'", "tool_choice",
        "invalid_value");
  }
  if (choice == "required") {
    ordered_json any = ordered_json::array();
    for (const ordered_json& t : tools) any.push_back(call_of(t.at("function")));
    return any.size() == 1 ? any[0] : ordered_json{{"anyOf", any}};
  }
  const ordered_json* type = choice.is_object() ? field(choice, "type") : nullptr;
  const ordered_json* fn = choice.is_object() ? field(choice, "function") : nullptr;
  const ordered_json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
  if (!type || *type != "function" || !name || !name->is_string()) {
    bad("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
        "\"function\": {\"name\": ...}}",
        "tool_choice", "invalid_value");
  }
  for (const ordered_json& t : tools) {
    if (t.at("function").at("name") == *name) return call_of(t.at("function"));
  }
  bad("'tool_choice.function.name' \"" + name->get<std::string>() + "\" is none of the tools",
      "tool_choice.function.name", "invalid_value");
}

}  // namespace

CompletionRequest parse_chat_request(const ordered_json& body, const RequestDefaults& defaults,
                                     const LatentLookup& lookup,
                                     const ChatTemplate& chat_template) {
  CompletionRequest r;
  r.chat = true;
  parse_common(body, defaults, r);
  const ordered_json* messages = field(body, "messages");
  if (!messages) bad("'messages' is required", "messages", "missing_field");
  require(messages->is_array() && !messages->empty(), "messages", "a non-empty array");
  ordered_json chat = ordered_json::array();
  std::size_t content_bytes = 0;
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const ordered_json& m = (*messages)[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    require(m.is_object(), p, "an object");
    const ordered_json* role = field(m, "role");
    require(role && role->is_string(), p + ".role", "a string");
    if (*role == "function") {
      throw RequestError(400,
                         "'" + p +
                             ".role' \"function\" (the deprecated function calling) is not "
                             "supported; use \"tool\"",
                         p + ".role", "unsupported_value");
    }
    if (*role != "system" && *role != "developer" && *role != "user" && *role != "assistant" &&
        *role != "tool") {
      bad("'" + p + ".role' must be \"system\", \"developer\", \"user\", \"assistant\" or \"tool\"",
          p + ".role");
    }
    const ordered_json* content = field(m, "content");
    // A tool-calling assistant turn may have no content (OpenAI sends null).
    const std::size_t slots_before = r.supplied.size();
    std::string text = content ? message_content(*content, p + ".content", lookup, r.supplied) : "";
    // The template cannot render more than its output limit: more text is
    // refused here, before the checks' and the rendering's copies.
    content_bytes += text.size();
    if (content_bytes > kMaxChatBytes) {
      throw RequestError(
          400,
          "the messages hold more than " + std::to_string(kMaxChatBytes >> 20) + " MiB of text (" +
              std::to_string(content_bytes) + " bytes up to '" + p +
              "'), the most a chat prompt may have; no context holds it even compressed at 16x",
          "messages", "context_length_exceeded");
    }
    // The checks read what the client wrote: the slots the parts made are
    // taken out (one typed by hand leaves more slots than latents, which
    // prepare() refuses).
    const bool took_slots = r.supplied.size() != slots_before;
    const std::string stripped = took_slots ? without_latent_slots(text) : std::string();
    const std::string& written = took_slots ? stripped : text;
    refuse_control_tokens(written, p + ".content", defaults);
    check_regions(written, p + ".content");
    // "developer" is OpenAI's newer name for the system turn.
    ordered_json message = {
        {"role", *role == "developer" ? std::string("system") : role->get<std::string>()},
        {"content", std::move(text)}};
    if (*role == "assistant") {
      if (const ordered_json* calls = field(m, "tool_calls")) {
        message["tool_calls"] = tool_calls_json(*calls, p + ".tool_calls", defaults);
      }
      if (const ordered_json* reasoning = field(m, "reasoning_content")) {
        require(reasoning->is_string(), p + ".reasoning_content", "a string");
        refuse_control_tokens(*reasoning, p + ".reasoning_content", defaults);
        message["reasoning_content"] = *reasoning;
      }
    }
    for (const char* key : {"tool_call_id", "name"}) {
      if (const ordered_json* v = field(m, key)) {
        require(v->is_string(), p + "." + key, "a string");
        message[key] = *v;
      }
    }
    chat.push_back(std::move(message));
  }
  ordered_json tools = nullptr;
  if (const ordered_json* t = field(body, "tools"); t && !(t->is_array() && t->empty())) {
    tools = tools_json(*t);
  }
  ordered_json forced_schema;  // the forced call's JSON, when a call is forced
  if (const ordered_json* choice = field(body, "tool_choice")) {
    forced_schema = forced_call_schema(*choice, tools);
    if (*choice == "none") tools = nullptr;  // the model is not to call any: it is not shown them
  }
  r.tools = !tools.is_null();
  if (!forced_schema.is_null()) {
    if (r.json_grammar) {
      bad("'response_format' and a forced 'tool_choice' both constrain the answer; ask for one",
          "tool_choice", "invalid_value");
    }
    try {
      r.json_grammar = JsonGrammar::from_schema(forced_schema);
    } catch (const Error& e) {
      throw RequestError(
          400, std::string("a forced tool call needs parameters lclm can follow: ") + e.what(),
          "tools", "unsupported_schema");
    }
    r.forced_call = true;
    r.parallel_tool_calls = false;
  }
  if (const ordered_json* v = field(body, "parallel_tool_calls")) {
    require(v->is_boolean(), "parallel_tool_calls", "a boolean");
    r.parallel_tool_calls = *v;
  }
  ordered_json variables = ordered_json::object();
  if (const ordered_json* v = field(body, "chat_template_kwargs")) {
    require(v->is_object(), "chat_template_kwargs", "an object of template variables");
    variables = *v;
  }
  bool generation_prompt = true;
  if (const ordered_json* v = field(body, "add_generation_prompt")) {
    require(v->is_boolean(), "add_generation_prompt", "a boolean");
    generation_prompt = *v;
  }
  try {
    r.prompt = chat_template.render(chat, generation_prompt, tools, variables);
    if (r.forced_call) r.prompt += kForcedCallOpening;
  } catch (const jinja::TemplateError& e) {
    throw RequestError(400,
                       "the chat template cannot render these messages: " + std::string(e.what()),
                       "messages", "chat_template_error");
  }
  return r;
}

CompletionRequest parse_completion_request(const json& body, const RequestDefaults& defaults) {
  CompletionRequest r;
  parse_common(body, defaults, r);
  const json* prompt = field(body, "prompt");
  if (!prompt) bad("'prompt' is required", "prompt", "missing_field");
  if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) prompt = &(*prompt)[0];
  require(prompt->is_string(), "prompt", "a string");
  r.prompt = *prompt;
  if (r.prompt.empty()) bad("'prompt' is empty", "prompt");
  check_regions(r.prompt, "prompt");
  return r;
}

TokenizeRequest parse_tokenize_request(const json& body) {
  if (!body.is_object()) bad("the request body must be a JSON object", "", "invalid_type");
  const json* content = field(body, "content");
  if (!content) bad("'content' is required", "content", "missing_field");
  require(content->is_string(), "content", "a string");
  // The answer holds a JSON number (or object) per token: bounded so that a
  // 64 MiB body cannot make a reply of gigabytes.
  if (content->get_ref<const std::string&>().size() > kMaxTokenizeBytes) {
    bad("'content' is longer than " + std::to_string(kMaxTokenizeBytes) +
            " bytes; tokenize it in parts",
        "content", "content_too_long");
  }
  TokenizeRequest r;
  r.content = *content;
  if (const json* v = field(body, "add_special"))
    require(v->is_boolean(), "add_special", "a boolean");
  if (const json* v = field(body, "with_pieces")) {
    require(v->is_boolean(), "with_pieces", "a boolean");
    r.with_pieces = *v;
  }
  return r;
}

std::vector<std::int32_t> parse_detokenize_request(const json& body, std::size_t vocab) {
  if (!body.is_object()) bad("the request body must be a JSON object", "", "invalid_type");
  const json* tokens = field(body, "tokens");
  if (!tokens) bad("'tokens' is required", "tokens", "missing_field");
  require(tokens->is_array(), "tokens", "an array of token ids");
  std::vector<std::int32_t> ids;
  ids.reserve(tokens->size());
  for (std::size_t i = 0; i < tokens->size(); ++i) {
    const json& t = (*tokens)[i];
    const std::string p = "tokens[" + std::to_string(i) + "]";
    require(t.is_number_integer(), p, "a token id (an integer)");
    const auto id = t.get<std::int64_t>();
    if (id < 0 || static_cast<std::uint64_t>(id) >= vocab) {
      bad("'" + p + "' = " + std::to_string(id) + " is not a token id (the vocabulary has " +
              std::to_string(vocab) + ")",
          p);
    }
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

std::vector<std::string> parse_compress_request(const json& body) {
  if (!body.is_object()) bad("the request body must be a JSON object", "", "invalid_type");
  const json* input = field(body, "input");
  if (!input) bad("'input' is required", "input", "missing_field");
  std::vector<std::string> texts;
  if (input->is_string()) {
    texts.push_back(*input);
  } else {
    require(input->is_array() && !input->empty(), "input",
            "a string or a non-empty array of strings");
    for (const json& t : *input) {
      require(t.is_string(), "input", "a string or a non-empty array of strings");
      texts.push_back(t);
    }
  }
  for (const std::string& t : texts) {
    if (t.empty()) bad("'input' holds an empty text", "input");
    check_regions(wrap_region(t), "input");
  }
  return texts;
}

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& s : stops_) longest_ = std::max(longest_, s.size());
}

std::string StopStringFilter::push(std::string_view piece) {
  if (stopped_) return {};
  text_.append(piece);
  // A stop string can only end inside the new piece: search from where it could start.
  const std::size_t from = sent_ > longest_ ? sent_ - longest_ : 0;
  std::size_t cut = std::string::npos;
  for (const std::string& s : stops_) cut = std::min(cut, text_.find(s, from));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = text_.substr(sent_, cut - std::min(cut, sent_));
    sent_ = text_.size();
    return out;
  }
  // Keep back the last longest_-1 bytes (a stop string may be starting there),
  // moved back to the start of a UTF-8 character.
  std::size_t safe = text_.size() - std::min(text_.size(), longest_ > 0 ? longest_ - 1 : 0);
  while (safe > sent_ && safe < text_.size() &&
         (static_cast<unsigned char>(text_[safe]) & 0xc0) == 0x80) {
    --safe;
  }
  if (safe <= sent_) return {};
  std::string out = text_.substr(sent_, safe - sent_);
  sent_ = safe;
  return out;
}

std::string StopStringFilter::flush() {
  if (stopped_) return {};
  std::string out = text_.substr(sent_);
  sent_ = text_.size();
  return out;
}

namespace {

constexpr std::string_view kToolCallOpen = "<tool_call>", kToolCallClose = "</tool_call>";

// The call a <tool_call> block holds: {"name": string, "arguments": object
// or JSON string} ("parameters" is accepted for "arguments", as Llama
// writes it).
std::optional<ToolCall> parse_tool_call(std::string_view block) {
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(block, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  const auto name = j.find("name");
  if (name == j.end() || !name->is_string()) return std::nullopt;
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  ToolCall call;
  call.name = name->get<std::string>();
  if (args == j.end() || args->is_null()) {
    call.arguments = "{}";
  } else if (args->is_string()) {
    call.arguments = args->get<std::string>();
  } else if (args->is_object()) {
    call.arguments = dump_json(*args);
  } else {
    return std::nullopt;
  }
  return call;
}

}  // namespace

std::string ToolCallParser::push(std::string_view piece, std::vector<ToolCall>& calls) {
  held_.append(piece);
  std::string out;
  for (;;) {
    if (!in_block_) {
      const std::size_t open = held_.find(kToolCallOpen);
      if (open != std::string::npos) {
        out.append(held_, 0, open);
        held_.erase(0, open + kToolCallOpen.size());
        in_block_ = true;
        continue;
      }
      // Keep back what could be the start of "<tool_call>".
      std::size_t keep = std::min(held_.size(), kToolCallOpen.size() - 1);
      while (keep > 0 &&
             kToolCallOpen.substr(0, keep) != std::string_view(held_).substr(held_.size() - keep)) {
        --keep;
      }
      out.append(held_, 0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return out;
    }
    const std::size_t close = held_.find(kToolCallClose);
    if (close == std::string::npos) return out;
    const std::string block = held_.substr(0, close);
    held_.erase(0, close + kToolCallClose.size());
    in_block_ = false;
    if (std::optional<ToolCall> call = parse_tool_call(block)) {
      if (parallel_ || calls_ == 0) {
        call->id = new_id_();
        calls.push_back(std::move(*call));
        ++calls_;
      }
    } else {
      out.append(kToolCallOpen).append(block).append(kToolCallClose);
    }
  }
}

std::string ToolCallParser::flush() {
  std::string out = in_block_ ? std::string(kToolCallOpen) + held_ : held_;
  held_.clear();
  in_block_ = false;
  return out;
}

json usage_json(const CompletionUsage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"lclm",
           {{"ratio", u.ratio},
            {"compressed_tokens", u.compressed_tokens},
            {"latents", u.latents},
            {"regions", u.regions},
            {"cache_hits", u.cache_hits},
            {"remote_cache_hits", u.remote_cache_hits},
            {"compress_ms", u.compress_ms},
            {"ttft_ms", u.ttft_ms}}}};
}

CompletionUsage usage_of_choices(const std::vector<CompletionUsage>& choices) {
  CompletionUsage u = choices.at(0);
  for (std::size_t i = 1; i < choices.size(); ++i)
    u.completion_tokens += choices[i].completion_tokens;
  return u;
}

json logprobs_json(const CompletionRequest& r, const std::vector<TokenLogprob>& tokens,
                   std::size_t text_offset) {
  const auto bytes = [](const std::string& t) {
    json b = json::array();
    for (const char c : t) b.push_back(static_cast<unsigned char>(c));
    return b;
  };
  if (r.chat) {
    json content = json::array();
    for (const TokenLogprob& t : tokens) {
      json top = json::array();
      for (const auto& [token, logprob] : t.top) {
        top.push_back({{"token", token}, {"logprob", logprob}, {"bytes", bytes(token)}});
      }
      content.push_back({{"token", t.token},
                         {"logprob", t.logprob},
                         {"bytes", bytes(t.token)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const TokenLogprob& t : tokens) {
    out["tokens"].push_back(t.token);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& [token, logprob] : t.top) top[token] = logprob;
    out["top_logprobs"].push_back(t.top.empty() ? json(nullptr) : top);
    out["text_offset"].push_back(text_offset);
    text_offset += t.token.size();
  }
  return out;
}

namespace {

json tool_call_json(const ToolCall& call) {
  return {{"id", call.id},
          {"type", "function"},
          {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
}

}  // namespace

json completion_json(const CompletionRequest& r, const std::string& id, std::int64_t created,
                     const std::vector<Choice>& choices, const CompletionUsage& usage) {
  json out = json::array();
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice = {{"index", i},
                   {"finish_reason", c.tool_calls.empty() ? c.finish_reason : "tool_calls"}};
    if (r.chat && !c.tool_calls.empty()) {
      const bool blank = std::all_of(c.text.begin(), c.text.end(), [](char ch) {
        return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r';
      });
      json calls = json::array();
      for (const ToolCall& call : c.tool_calls) calls.push_back(tool_call_json(call));
      choice["message"] = {{"role", "assistant"},
                           {"content", blank ? json(nullptr) : json(c.text)},
                           {"tool_calls", calls}};
    } else if (r.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = r.top_logprobs >= 0 ? logprobs_json(r, c.logprobs) : json(nullptr);
    out.push_back(std::move(choice));
  }
  return {{"id", id},           {"object", r.chat ? "chat.completion" : "text_completion"},
          {"created", created}, {"model", r.model},
          {"choices", out},     {"usage", usage_json(usage)}};
}

json chunk_json(const CompletionRequest& r, const std::string& id, std::int64_t created,
                const std::string* text, const std::string* finish_reason, bool role,
                const std::vector<TokenLogprob>* logprobs, std::size_t text_offset,
                std::size_t choice_index) {
  json choice = {{"index", choice_index},
                 {"finish_reason", finish_reason ? json(*finish_reason) : json(nullptr)}};
  if (r.chat) {
    json delta = json::object();
    if (role) delta["role"] = "assistant";
    if (text) delta["content"] = *text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text ? *text : std::string();
  }
  if (logprobs != nullptr) choice["logprobs"] = logprobs_json(r, *logprobs, text_offset);
  return {{"id", id},
          {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", r.model},
          {"choices", json::array({choice})}};
}

json tool_call_chunk_json(const CompletionRequest& r, const std::string& id, std::int64_t created,
                          const ToolCall& call, std::size_t index, std::size_t choice) {
  json delta_call = tool_call_json(call);
  delta_call["index"] = index;
  json chunk = chunk_json(r, id, created, nullptr, nullptr, false, nullptr, 0, choice);
  chunk["choices"][0]["delta"]["tool_calls"] = json::array({delta_call});
  return chunk;
}

}  // namespace lclm::server
