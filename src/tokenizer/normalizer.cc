#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "util/error.h"

namespace lclm::tokenizer_detail {
namespace {

utf8proc_option_t utf8proc_options(Normalizer::Form form) {
  switch (form) {
    case Normalizer::Form::kNfc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case Normalizer::Form::kNfd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case Normalizer::Form::kNfkc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case Normalizer::Form::kNfkd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
    case Normalizer::Form::kNone:
      break;
  }
  return static_cast<utf8proc_option_t>(0);
}

}  // namespace

std::string_view Normalizer::apply(std::string_view text, std::string& storage) const {
  // ASCII is invariant under every normal form.
  const bool ascii = std::all_of(text.begin(), text.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (form_ == Form::kNone || ascii) return text;

  utf8proc_uint8_t* normalized = nullptr;
  const utf8proc_ssize_t length = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
      static_cast<utf8proc_ssize_t>(text.size()), &normalized, utf8proc_options(form_));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(normalized, &std::free);
  if (length < 0) {
    throw Error(std::string("tokenizer input cannot be normalized: ") + utf8proc_errmsg(length));
  }
  storage.assign(reinterpret_cast<const char*>(normalized), static_cast<std::size_t>(length));
  return storage;
}

}  // namespace lclm::tokenizer_detail
