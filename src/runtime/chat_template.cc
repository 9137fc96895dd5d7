#include "runtime/chat_template.h"

#include <fstream>
#include <sstream>

#include "util/error.h"

namespace lclm {

namespace {

using nlohmann::ordered_json;

constexpr const char* kChatmlSource =
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// transformers' SPECIAL_TOKENS_ATTRIBUTES; a token is a string or an
// AddedToken object {"content": ...}.
constexpr const char* kSpecialTokens[] = {
    "bos_token", "eos_token", "unk_token",  "sep_token",
    "pad_token", "cls_token", "mask_token", "additional_special_tokens"};

std::string token_text(const ordered_json& token, const std::string& where) {
  if (token.is_string()) return token.get<std::string>();
  if (token.is_object() && token.contains("content") && token["content"].is_string()) {
    return token["content"].get<std::string>();
  }
  throw Error(where + " must be a string or an object with a \"content\" string");
}

// The special tokens of a tokenizer config as transformers'
// special_tokens_map has them: only those that are set.
ordered_json special_tokens(const ordered_json& config, const std::string& file) {
  ordered_json out = ordered_json::object();
  for (const char* key : kSpecialTokens) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    const std::string where = file + " \"" + key + "\"";
    if (std::string(key) == "additional_special_tokens") {
      if (!it->is_array()) throw Error(where + " must be a list");
      if (it->empty()) continue;
      ordered_json list = ordered_json::array();
      for (const ordered_json& t : *it) list.push_back(token_text(t, where));
      out[key] = std::move(list);
    } else {
      std::string text = token_text(*it, where);
      if (!text.empty()) out[key] = std::move(text);
    }
  }
  return out;
}

std::shared_ptr<const jinja::Template> compile(const std::string& source, const std::string& name) {
  return std::make_shared<const jinja::Template>(source, name);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open the chat template " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ordered_json read_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw Error("cannot open " + file.string());
  ordered_json j = ordered_json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(file.string() + ": not a JSON object");
  return j;
}

}  // namespace

std::string format_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

ordered_json messages_json(const std::vector<ChatMessage>& messages) {
  ordered_json out = ordered_json::array();
  for (const ChatMessage& m : messages) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

ChatTemplate ChatTemplate::chatml() {
  ChatTemplate t;
  t.source_ = kChatmlSource;
  t.default_ = compile(t.source_, "ChatML (built in)");
  t.chatml_ = true;
  return t;
}

ChatTemplate ChatTemplate::from_tokenizer_config(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return chatml();
  const ordered_json config = read_config(file);
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    ChatTemplate t = chatml();
    t.special_tokens_ = special_tokens(config, file.string());
    return t;
  }
  ChatTemplate t;
  t.special_tokens_ = special_tokens(config, file.string());
  const std::string field = file.string() + " chat_template";
  if (it->is_string()) {
    t.source_ = it->get<std::string>();
    t.default_ = compile(t.source_, field);
    return t;
  }
  if (!it->is_array()) throw Error(field + " must be a string or a list of named templates");
  for (const ordered_json& named : *it) {
    if (!named.is_object() || !named.contains("name") || !named["name"].is_string() ||
        !named.contains("template") || !named["template"].is_string()) {
      throw Error(field + " entries must be {\"name\": string, \"template\": string}");
    }
    const std::string name = named["name"].get<std::string>();
    const std::string source = named["template"].get<std::string>();
    if (name == "default") {
      t.source_ = source;
      t.default_ = compile(source, field + " \"default\"");
    } else if (name == "tool_use") {
      t.tool_use_ = compile(source, field + " \"tool_use\"");
    }
  }
  if (!t.default_) throw Error(field + " has no template named \"default\"");
  return t;
}

ChatTemplate ChatTemplate::from_file(const std::filesystem::path& file,
                                     const std::filesystem::path& tokenizer_config) {
  ChatTemplate t = file == "chatml" ? chatml() : ChatTemplate();
  if (!t.chatml_) {
    t.source_ = read_file(file);
    t.default_ = compile(t.source_, file.string());
  }
  if (std::filesystem::exists(tokenizer_config)) {
    t.special_tokens_ = special_tokens(read_config(tokenizer_config), tokenizer_config.string());
  }
  return t;
}

std::string ChatTemplate::render(const ordered_json& messages, bool add_generation_prompt,
                                 const ordered_json& tools, const ordered_json& variables) const {
  // The variables apply_chat_template gives: the special tokens, then
  // messages, tools, documents and add_generation_prompt, then the caller's.
  ordered_json context = special_tokens_;
  context["messages"] = messages;
  context["tools"] = tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  for (const auto& [k, v] : variables.items()) context[k] = v;
  const jinja::Template& t = !tools.is_null() && tool_use_ ? *tool_use_ : *default_;
  return t.render(context);
}

std::string ChatTemplate::turn_end() const {
  // A marker no template changes (no spaces to strip, no markup), as an
  // answer; what follows it up to the end of the prompt is the turn's end.
  constexpr std::string_view kMarker = "LCLMTURNEND7f3a";
  const ordered_json messages =
      ordered_json::array({{{"role", "user"}, {"content", "Hi"}},
                           {{"role", "assistant"}, {"content", std::string(kMarker)}}});
  std::string text;
  try {
    text = render(messages, false);
  } catch (const std::exception&) {
    return {};
  }
  const std::size_t at = text.rfind(kMarker);
  return at == std::string::npos ? std::string() : text.substr(at + kMarker.size());
}

}  // namespace lclm
