#include "agent/chunker.h"

#include <algorithm>

#include "util/error.h"

namespace lclm {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}
bool is_sentence_end(char c) {
  return c == '.' || c == '!' || c == '?';
}
bool is_closer(char c) {
  return c == '"' || c == '\'' || c == ')' || c == ']' || c == '}';
}

std::size_t skip_space(std::string_view text, std::size_t i) {
  while (i < text.size() && is_space(text[i])) ++i;
  return i;
}

// Each word with the whitespace after it.
std::vector<std::string_view> split_words(std::string_view text) {
  std::vector<std::string_view> words;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = start;
    while (end < text.size() && !is_space(text[end])) ++end;
    end = skip_space(text, end);
    words.push_back(text.substr(start, end - start));
    start = end;
  }
  return words;
}

std::string_view trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

std::vector<std::string_view> split_sentences(std::string_view text) {
  std::vector<std::string_view> pieces;
  const std::size_t n = text.size();
  std::size_t start = 0, i = 0;
  while (i < n) {
    std::size_t end = 0;
    if (is_sentence_end(text[i])) {
      std::size_t j = i + 1;
      while (j < n && is_closer(text[j])) ++j;
      if (j == n || !is_space(text[j])) {
        i = j;
        continue;
      }
      end = skip_space(text, j);
    } else if (text[i] == '\n') {
      const std::size_t k = skip_space(text, i);
      if (std::count(text.begin() + static_cast<std::ptrdiff_t>(i),
                     text.begin() + static_cast<std::ptrdiff_t>(k), '\n') < 2) {
        i = k;
        continue;
      }
      end = k;
    } else {
      ++i;
      continue;
    }
    pieces.push_back(text.substr(start, end - start));
    start = i = end;
  }
  if (start < n) pieces.push_back(text.substr(start));
  return pieces;
}

std::vector<std::string> chunk_document(std::string_view text, const TokenCounter& count_tokens,
                                        std::size_t max_tokens) {
  if (max_tokens == 0) throw Error("the chunk size must be at least one token");
  std::vector<std::string> chunks;
  // The chunk being filled: text[begin, end), since pieces are contiguous.
  std::size_t begin = 0, end = 0, tokens = 0;
  const auto flush = [&] {
    const std::string_view chunk = trim(text.substr(begin, end - begin));
    if (!chunk.empty()) chunks.emplace_back(chunk);
    begin = end;
    tokens = 0;
  };
  const auto add = [&](std::string_view piece, std::size_t n) {
    if (end > begin && tokens + n > max_tokens) flush();
    end = static_cast<std::size_t>(piece.data() - text.data()) + piece.size();
    tokens += n;
  };
  for (std::string_view sentence : split_sentences(text)) {
    const std::size_t n = count_tokens(sentence);
    if (n <= max_tokens) {
      add(sentence, n);
      continue;
    }
    for (std::string_view word : split_words(sentence)) add(word, count_tokens(word));
  }
  flush();
  return chunks;
}

}  // namespace lclm
