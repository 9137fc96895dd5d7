// Chat prompts: the model's own Jinja chat template (tokenizer_config.json
// `chat_template`), rendered as Hugging Face's apply_chat_template renders
// it, with ChatML when a model has none.
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/jinja.h"

namespace lclm {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "<|im_start|>{role}\n{content}<|im_end|>\n" for each message, then
// "<|im_start|>assistant\n" when add_generation_prompt is set.
std::string format_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// {"role": ..., "content": ...} for each message, the form templates read.
nlohmann::ordered_json messages_json(const std::vector<ChatMessage>& messages);

class ChatTemplate {
 public:
  // ChatML as format_chatml writes it, as a Jinja template.
  static ChatTemplate chatml();
  // The template of a tokenizer_config.json: `chat_template` as a string, or
  // a list of {"name", "template"} (the "default" one, and "tool_use" when
  // tools are given, as transformers picks); ChatML when the file or the
  // key is absent. Its special tokens (bos_token, eos_token, ...) become
  // template variables. Throws Error naming the file and field.
  static ChatTemplate from_tokenizer_config(const std::filesystem::path& file);
  // A Jinja file (--chat-template FILE) with the special tokens of a
  // tokenizer_config.json (when it exists). "chatml" names the built-in one.
  static ChatTemplate from_file(const std::filesystem::path& file,
                                const std::filesystem::path& tokenizer_config);

  // The prompt for `messages` (an array of {"role", "content", ...} as the
  // OpenAI API has them: tool_calls, tool_call_id, reasoning_content pass
  // through). `tools`: an array of tool schemas, or null. `variables`: an
  // object of further template variables (enable_thinking, ...), which win
  // over the others. Throws jinja::TemplateError (raise_exception included).
  std::string render(
      const nlohmann::ordered_json& messages, bool add_generation_prompt,
      const nlohmann::ordered_json& tools = nullptr,
      const nlohmann::ordered_json& variables = nlohmann::ordered_json::object()) const;

  // What the template writes right after an assistant turn's content (its
  // end-of-turn text: "<|im_end|>\n" for ChatML, "<|eot_id|>" for Llama 3,
  // "<end_of_turn>\n" for Gemma, the eos token for Mistral); empty when the
  // template writes nothing there or cannot render a two-turn chat.
  std::string turn_end() const;

  // The Jinja source of the default template (for /props).
  const std::string& source() const { return source_; }
  bool is_chatml() const { return chatml_; }

 private:
  std::shared_ptr<const jinja::Template> default_, tool_use_;
  std::string source_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
  bool chatml_ = false;
};

}  // namespace lclm
