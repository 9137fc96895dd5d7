// Base64 (RFC 4648, padded) with OpenSSL: JSON carries bytes this way both
// out (/v1/compress prompt embeddings for vLLM) and in (a chat message's
// `file` content part, whose file_data is a data: URL).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace lclm {

std::string base64_encode(std::string_view bytes);
// The bytes, or nothing when `text` is not padded base64 (whitespace is not
// allowed either).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace lclm
