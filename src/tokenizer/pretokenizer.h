// The Split pre-tokenizer with "Isolated" behaviour: text is cut into the
// matches of a regex and the stretches between them, each kept as a piece.
// Matching uses PCRE2 with UTF and Unicode properties (\p{L}, \s are
// Unicode-aware) and JIT compilation.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lclm::tokenizer_detail {

class RegexSplitter {
 public:
  // `literal` matches `pattern` as plain text. Throws lclm::Error naming
  // `source` (the tokenizer file) when the pattern does not compile.
  RegexSplitter(std::string_view pattern, bool literal, const std::string& source);
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;
  ~RegexSplitter();

  // Replaces `pieces` with the pieces of `text`, which must be valid UTF-8;
  // throws lclm::Error when it is not.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace lclm::tokenizer_detail
