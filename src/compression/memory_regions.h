// Finding the <|memory_start|>TEXT<|memory_end|> regions of a prompt, and the
// decoder-side text in which each region's TEXT is replaced by N placeholders.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lclm {

inline constexpr std::string_view kMemoryStart = "<|memory_start|>";
inline constexpr std::string_view kMemoryEnd = "<|memory_end|>";
inline constexpr std::string_view kMemoryPlaceholder = "<|memory|>";
// A region that stands for latents computed earlier (a latents file) and
// handed over with the prompt, instead of text to compress.
inline constexpr std::string_view kLatentSlot = "<|memory_start|><|memory|><|memory_end|>";

// A prompt cut into plain text and regions to compress, in order.
struct PromptSegment {
  bool compressed = false;
  std::string text;   // without the markers
  bool slot = false;  // a kLatentSlot region (text empty)
};

// Throws lclm::Error (with the byte offset) for a start marker without an
// end, an end without a start, a nested start, or a literal <|memory|> in the
// prompt, which would be mistaken for a latent slot; with latent_slots, a
// region that is exactly kLatentSlot is a slot segment instead.
std::vector<PromptSegment> split_memory_regions(std::string_view prompt, bool latent_slots = false);

// The decoder's view of the prompt: each compressed segment becomes
// <|memory_start|> + latent_counts[k] x <|memory|> + <|memory_end|>, where k
// counts compressed segments in order.
std::string placeholder_prompt(const std::vector<PromptSegment>& segments,
                               const std::vector<std::size_t>& latent_counts);

}  // namespace lclm
