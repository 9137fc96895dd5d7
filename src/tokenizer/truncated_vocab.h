// A byte-level BPE tokenizer cut down to its first tokens: the 256 byte
// tokens and the first merges, with the added (special) tokens renumbered
// right after them. Qwen3's merge k makes token 256 + k, so the cut keeps the
// ids of every kept token and tokenizes any text with the merges it keeps:
// the same pre-tokenizer and byte mapping, fewer and shorter-ranked merges.
// Small models use it to shrink the embedding table 20-70x (see
// docs/training.md).
#pragma once

#include <cstdint>
#include <filesystem>

namespace lclm {

// Reads in_dir/tokenizer.json (+ tokenizer_config.json when present) and
// writes out_dir's with the first `vocab` tokens. Returns the new size
// (vocab + the added tokens). Throws lclm::Error when vocab is outside
// (256, the full vocabulary] or the merges do not make tokens 256, 257, ...
// in order.
std::int64_t write_truncated_tokenizer(const std::filesystem::path& in_dir,
                                       const std::filesystem::path& out_dir, std::int64_t vocab);

}  // namespace lclm
