#include "runtime/generator.h"

#include <algorithm>
#include <utility>

#include "util/error.h"

namespace lclm {
namespace {

// Length of the UTF-8 sequence a lead byte starts (1 for invalid bytes, so
// they pass through rather than stall the stream).
std::size_t utf8_sequence_length(unsigned char lead) {
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  if (lead >= 0xe0) return lead <= 0xef ? 3 : 1;
  if (lead >= 0xc2) return 2;
  return 1;
}

}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Length:
      return "length";
    case StopReason::StopToken:
      return "stop";
    case StopReason::ContextFull:
      return "context-full";
    case StopReason::Callback:
      return "cancelled";
  }
  return "?";
}

std::vector<std::int32_t> default_stop_ids(const Qwen3Model& model, const Tokenizer& tokenizer) {
  std::vector<std::int32_t> ids = model.config().eos_token_ids;
  for (const char* name : {"<|im_end|>", "<|endoftext|>"}) {
    if (auto id = tokenizer.token_id(name)) ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  std::size_t complete = 0;
  while (complete < pending_.size()) {
    const std::size_t len = utf8_sequence_length(static_cast<unsigned char>(pending_[complete]));
    if (complete + len > pending_.size()) break;
    complete += len;
  }
  std::string out = pending_.substr(0, complete);
  pending_.erase(0, complete);
  return out;
}

std::string Utf8Stream::flush() {
  return std::exchange(pending_, std::string());
}

}  // namespace lclm
