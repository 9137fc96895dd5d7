#include "tokenizer/byte_level.h"

#include <utf8proc.h>

#include <array>

namespace lclm::tokenizer_detail {
namespace {

// bytes_to_unicode() from GPT-2's encoder.py: printable Latin-1 bytes map to
// themselves, the others to 256, 257, ... in byte order.
constexpr std::array<char32_t, 256> kByteToChar = [] {
  std::array<char32_t, 256> table{};
  char32_t next_unprintable = 256;
  for (int byte = 0; byte < 256; ++byte) {
    const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                           (byte >= 0xAE && byte <= 0xFF);
    table[byte] = printable ? static_cast<char32_t>(byte) : next_unprintable++;
  }
  return table;
}();

// 68 bytes are unprintable, so every alphabet code point is below 256 + 68.
constexpr std::size_t kAlphabetEnd = 256 + 68;

constexpr std::array<std::int16_t, kAlphabetEnd> kCharToByte = [] {
  std::array<std::int16_t, kAlphabetEnd> table{};
  table.fill(-1);
  for (int byte = 0; byte < 256; ++byte) table[kByteToChar[byte]] = static_cast<std::int16_t>(byte);
  return table;
}();

// UTF-8 of each alphabet character, so encoding is a table look-up.
const std::array<std::string, 256>& byte_level_utf8() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> utf8;
    for (int byte = 0; byte < 256; ++byte) {
      utf8proc_uint8_t buffer[4];
      const auto length =
          utf8proc_encode_char(static_cast<utf8proc_int32_t>(kByteToChar[byte]), buffer);
      utf8[byte].assign(reinterpret_cast<const char*>(buffer), static_cast<std::size_t>(length));
    }
    return utf8;
  }();
  return table;
}

}  // namespace

std::string byte_level_char(std::uint8_t byte) {
  return byte_level_utf8()[byte];
}

std::string to_byte_level(std::string_view bytes) {
  const auto& utf8 = byte_level_utf8();
  std::string spelled;
  spelled.reserve(bytes.size() * 2);
  for (const char byte : bytes) spelled += utf8[static_cast<std::uint8_t>(byte)];
  return spelled;
}

std::optional<std::string> from_byte_level(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  const auto* cursor = reinterpret_cast<const utf8proc_uint8_t*>(token.data());
  auto remaining = static_cast<utf8proc_ssize_t>(token.size());
  while (remaining > 0) {
    utf8proc_int32_t code_point = 0;
    const utf8proc_ssize_t length = utf8proc_iterate(cursor, remaining, &code_point);
    if (length <= 0 || static_cast<std::size_t>(code_point) >= kAlphabetEnd ||
        kCharToByte[code_point] < 0) {
      return std::nullopt;
    }
    bytes += static_cast<char>(kCharToByte[code_point]);
    cursor += length;
    remaining -= length;
  }
  return bytes;
}

}  // namespace lclm::tokenizer_detail
