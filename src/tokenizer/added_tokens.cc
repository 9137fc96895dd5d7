#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <utility>

namespace lclm::tokenizer_detail {

AddedTokenMatcher::AddedTokenMatcher(std::vector<Token> tokens) : tokens_(std::move(tokens)) {
  std::stable_sort(tokens_.begin(), tokens_.end(), [](const Token& a, const Token& b) {
    return a.content.size() > b.content.size();
  });
  for (std::uint32_t i = 0; i < tokens_.size(); ++i) {
    by_first_byte_[static_cast<std::uint8_t>(tokens_[i].content.front())].push_back(i);
  }
}

std::optional<AddedTokenMatcher::Match> AddedTokenMatcher::find(std::string_view text,
                                                                std::size_t from) const {
  for (std::size_t begin = from; begin < text.size(); ++begin) {
    for (const std::uint32_t index : by_first_byte_[static_cast<std::uint8_t>(text[begin])]) {
      const Token& token = tokens_[index];
      if (text.substr(begin).starts_with(token.content)) {
        return Match{begin, token.content.size(), token.id};
      }
    }
  }
  return std::nullopt;
}

}  // namespace lclm::tokenizer_detail
