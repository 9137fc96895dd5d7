// The Unicode normalisation step of a tokenizer.json "normalizer" (Qwen uses
// NFC), done with utf8proc.
#pragma once

#include <string>
#include <string_view>

namespace lclm::tokenizer_detail {

class Normalizer {
 public:
  enum class Form { kNone, kNfc, kNfd, kNfkc, kNfkd };

  explicit Normalizer(Form form) : form_(form) {}

  // `text` in the normal form. Returns a view of `text` itself when nothing
  // can change (no normalizer, or ASCII-only text), else of `storage`.
  // Throws lclm::Error when `text` is not valid UTF-8.
  std::string_view apply(std::string_view text, std::string& storage) const;

 private:
  Form form_;
};

}  // namespace lclm::tokenizer_detail
