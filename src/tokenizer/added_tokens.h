// Finds added tokens (<|im_start|>, <think>, ...) in raw text. They are cut out
// before normalisation and pre-tokenization so that they always map to their
// own id, as Hugging Face tokenizers does for tokens with normalized=false.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lclm::tokenizer_detail {

class AddedTokenMatcher {
 public:
  struct Token {
    std::string content;  // non-empty
    std::int32_t id;
  };
  struct Match {
    std::size_t begin;
    std::size_t length;
    std::int32_t id;
  };

  explicit AddedTokenMatcher(std::vector<Token> tokens);

  // The leftmost token in `text` at or after `from`; of several starting
  // there, the longest.
  std::optional<Match> find(std::string_view text, std::size_t from) const;

 private:
  std::vector<Token> tokens_;  // longest first
  // Indices into tokens_ of the tokens starting with each byte, longest first.
  std::array<std::vector<std::uint32_t>, 256> by_first_byte_;
};

}  // namespace lclm::tokenizer_detail
