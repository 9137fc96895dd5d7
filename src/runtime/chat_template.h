// The ChatML prompt format of Qwen3 instruct models.
#pragma once

#include <string>
#include <vector>

namespace lclm {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "<|im_start|>{role}\n{content}<|im_end|>\n" for each message, then
// "<|im_start|>assistant\n" when add_generation_prompt is set.
std::string format_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace lclm
