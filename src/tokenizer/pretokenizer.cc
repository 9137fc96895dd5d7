#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdint>
#include <new>
#include <string>

#include "util/error.h"

namespace lclm::tokenizer_detail {
namespace {

std::string pcre2_message(int error_code) {
  std::array<PCRE2_UCHAR, 256> buffer{};
  pcre2_get_error_message(error_code, buffer.data(), buffer.size());
  return reinterpret_cast<const char*>(buffer.data());
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(std::string_view pattern, bool literal, const std::string& source)
    : compiled_(std::make_unique<Compiled>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  const std::uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  options, &error_code, &error_offset, nullptr);
  if (compiled_->code == nullptr) {
    throw Error(source + ": pre_tokenizer regex does not compile at offset " +
                std::to_string(error_offset) + ": " + pcre2_message(error_code));
  }
  // Without JIT (unsupported platform) pcre2_match falls back to the
  // interpreter, which gives the same matches, only slower.
  pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);
}

RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;
RegexSplitter::~RegexSplitter() = default;

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  pieces.clear();
  const std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr));
  if (!match_data) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // PCRE2 checks the whole subject for valid UTF-8 on each call unless told
  // not to; checking it on the first call only keeps splitting linear.
  std::uint32_t options = 0;
  std::size_t gap_begin = 0;
  std::size_t search_from = 0;
  while (search_from < text.size()) {
    const int result = pcre2_match(compiled_->code, subject, text.size(), search_from, options,
                                   match_data.get(), nullptr);
    if (result == PCRE2_ERROR_NOMATCH) break;
    if (result < 0) {
      if (result <= PCRE2_ERROR_UTF8_ERR1 && result >= PCRE2_ERROR_UTF8_ERR21) {
        throw Error("tokenizer input is not valid UTF-8: " + pcre2_message(result));
      }
      throw Error("tokenizer pre_tokenizer regex failed: " + pcre2_message(result));
    }
    options = PCRE2_NO_UTF_CHECK;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const std::size_t match_begin = ovector[0];
    const std::size_t match_end = ovector[1];
    if (match_end == match_begin) {
      // An empty match cuts nothing; step over one whole character.
      search_from = match_end + 1;
      while (search_from < text.size() &&
             (static_cast<unsigned char>(text[search_from]) & 0xC0) == 0x80) {
        ++search_from;
      }
      continue;
    }
    if (match_begin > gap_begin) pieces.push_back(text.substr(gap_begin, match_begin - gap_begin));
    pieces.push_back(text.substr(match_begin, match_end - match_begin));
    gap_begin = search_from = match_end;
  }
  if (gap_begin < text.size()) pieces.push_back(text.substr(gap_begin));
}

}  // namespace lclm::tokenizer_detail
