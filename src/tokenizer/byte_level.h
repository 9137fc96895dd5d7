// GPT-2's byte-level alphabet: a reversible map from the 256 byte values to
// printable code points, so that any byte string is spelled with vocabulary
// characters (space is 'Ġ', newline 'Ċ', printable ASCII stands for itself).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lclm::tokenizer_detail {

// UTF-8 of the character that stands for `byte`.
std::string byte_level_char(std::uint8_t byte);

// `bytes` spelled in the byte-level alphabet.
std::string to_byte_level(std::string_view bytes);

// The bytes a byte-level token spells; nullopt when a character is outside the
// alphabet (or the token is not valid UTF-8).
std::optional<std::string> from_byte_level(std::string_view token);

}  // namespace lclm::tokenizer_detail
