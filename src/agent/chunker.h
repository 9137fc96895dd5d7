// Cutting a document into chunks of about N tokens at sentence ends, the
// units the skim-and-expand agent shows compressed and expands on request.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace lclm {

// Tokens in a piece of text (the decoder tokenizer's count).
using TokenCounter = std::function<std::size_t(std::string_view text)>;

// The document's sentences in order, each with the whitespace that follows it,
// so that the pieces concatenate back to the document. A sentence ends at
// '.', '!' or '?' (and any closing quotes or brackets after it) followed by
// whitespace, or at a blank line.
std::vector<std::string_view> split_sentences(std::string_view text);

// Greedy packing of whole sentences into chunks of at most max_tokens tokens
// (counted per sentence, so a chunk's own count can differ by a token or two
// at the joins). A sentence longer than max_tokens is cut between words; a
// single word longer than that stays whole. Chunks are contiguous pieces of
// the document with surrounding whitespace trimmed; blank chunks are dropped.
std::vector<std::string> chunk_document(std::string_view text, const TokenCounter& count_tokens,
                                        std::size_t max_tokens = 450);

}  // namespace lclm
