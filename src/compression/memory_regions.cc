#include "compression/memory_regions.h"

#include "util/error.h"

namespace lclm {

namespace {

// The first <|memory|> that is not the middle of a kLatentSlot (when slots are allowed).
std::size_t stray_placeholder(std::string_view prompt, bool latent_slots) {
  for (std::size_t at = prompt.find(kMemoryPlaceholder); at != std::string_view::npos;
       at = prompt.find(kMemoryPlaceholder, at + 1)) {
    const bool in_slot = latent_slots && at >= kMemoryStart.size() &&
                         prompt.substr(at - kMemoryStart.size()).starts_with(kLatentSlot);
    if (!in_slot) return at;
  }
  return std::string_view::npos;
}

}  // namespace

std::vector<PromptSegment> split_memory_regions(std::string_view prompt, bool latent_slots) {
  if (const auto at = stray_placeholder(prompt, latent_slots); at != std::string_view::npos) {
    throw Error("the prompt contains " + std::string(kMemoryPlaceholder) + " at byte " +
                std::to_string(at) + "; latent slots are made from " + std::string(kMemoryStart) +
                "..." + std::string(kMemoryEnd) + " regions, not written by hand");
  }
  std::vector<PromptSegment> segments;
  std::size_t pos = 0;
  while (pos < prompt.size()) {
    const std::size_t start = prompt.find(kMemoryStart, pos);
    const std::size_t stray_end = prompt.find(kMemoryEnd, pos);
    if (stray_end < start) {
      throw Error(std::string(kMemoryEnd) + " at byte " + std::to_string(stray_end) + " has no " +
                  std::string(kMemoryStart) + " before it");
    }
    if (start == std::string_view::npos) {
      segments.push_back({false, std::string(prompt.substr(pos))});
      break;
    }
    if (start > pos) segments.push_back({false, std::string(prompt.substr(pos, start - pos))});
    const std::size_t text_begin = start + kMemoryStart.size();
    const std::size_t end = prompt.find(kMemoryEnd, text_begin);
    if (end == std::string_view::npos) {
      throw Error(std::string(kMemoryStart) + " at byte " + std::to_string(start) + " has no " +
                  std::string(kMemoryEnd));
    }
    if (const auto nested = prompt.find(kMemoryStart, text_begin); nested < end) {
      throw Error("memory regions cannot nest: " + std::string(kMemoryStart) + " at byte " +
                  std::to_string(nested) + " is inside the region opened at byte " +
                  std::to_string(start));
    }
    const std::string_view text = prompt.substr(text_begin, end - text_begin);
    if (latent_slots && text == kMemoryPlaceholder) {
      segments.push_back({true, {}, true});
    } else {
      segments.push_back({true, std::string(text)});
    }
    pos = end + kMemoryEnd.size();
  }
  return segments;
}

std::string placeholder_prompt(const std::vector<PromptSegment>& segments,
                               const std::vector<std::size_t>& latent_counts) {
  std::string out;
  std::size_t region = 0;
  for (const PromptSegment& s : segments) {
    if (!s.compressed) {
      out += s.text;
      continue;
    }
    if (region >= latent_counts.size()) {
      throw Error("placeholder_prompt: fewer latent counts than compressed regions");
    }
    out += kMemoryStart;
    for (std::size_t i = 0; i < latent_counts[region]; ++i) out += kMemoryPlaceholder;
    out += kMemoryEnd;
    ++region;
  }
  return out;
}

}  // namespace lclm
