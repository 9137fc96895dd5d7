// What the trainer's tests share: tiny random LCLM checkpoints with the real
// Qwen3 tokenizer, a prompt with two memory regions, and the engine's logits
// for it as the reference the trainer must reproduce.
#pragma once

#include <torch/types.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "compression/lclm_model.h"
#include "compression/memory_regions.h"
#include "core/test_models.h"
#include "fixtures/random_lclm.h"
#include "format/json_file.h"
#include "tokenizer/truncated_vocab.h"

namespace lclm::train::testing {

// Runs torch on every core; each test process sets it once.
inline void use_all_cores() {
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

// The Qwen3 tokenizer cut down to its first 2048 tokens (the 256 bytes and
// the first 1792 merges, merge k making token 256 + k) with its added tokens
// renumbered after them: the same tokenization with embeddings 70 times
// smaller, for tests whose cost is the vocabulary (training steps, writing
// and reading checkpoints). Made once per build tree, since parsing the full
// tokenizer.json would cost every test process a second.
inline std::filesystem::path small_vocab_tokenizer_dir() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(LCLM_BINARY_DIR) / "test-models" / "qwen3-tokenizer-2048";
  if (fs::exists(dir)) return dir;
  // Test processes run in parallel: each writes its own copy and the first
  // rename wins.
  const fs::path staged = dir.string() + "." + std::to_string(::getpid());
  write_truncated_tokenizer(lclm::testing::qwen3_tokenizer_dir(), staged, 2048);
  std::error_code lost_the_race;
  fs::rename(staged, dir, lost_the_race);
  fs::remove_all(staged);
  return dir;
}

// A tiny LCLM checkpoint (encoder hidden 64, decoder hidden 96, two layers
// each) with windows of W = 16 tokens and r = 4; `edit` adjusts the spec.
inline std::filesystem::path write_tiny_lclm(
    const std::string& name, const std::filesystem::path& tokenizer_dir, DType dtype,
    std::uint64_t seed, const std::function<void(RandomLclmSpec&)>& edit = {}) {
  RandomLclmSpec spec = tiny_lclm_spec(tokenizer_dir);
  spec.dtype = dtype;
  spec.seed = seed;
  spec.config.compression_ratio = 4;
  spec.config.encoder_window_size = 16;
  if (edit) edit(spec);
  const std::filesystem::path dir = lclm::testing::scratch_dir(name);
  write_random_lclm(dir, spec);
  return dir;
}

// About 60 encoder tokens, so with W = 16 several windows and a short last
// window and group; the second region is shorter than one group.
inline std::string two_region_prompt() {
  return "<|im_start|>user\nRead this:<|memory_start|>The old lighthouse keeper climbed the "
         "spiral stairs every evening, counting one hundred and twelve steps, to light the lamp "
         "that guided fishing boats home through fog, storms and the long dark winter "
         "nights.<|memory_end|> and this:<|memory_start|>Short one.<|memory_end|> How many steps "
         "did he climb?<|im_end|>\n<|im_start|>assistant\n";
}

// A prompt as the trainer takes it: decoder ids with <|memory|> placeholders
// and each region's encoder tokens, tokenized as the engine does.
struct TokenizedPrompt {
  std::vector<std::int32_t> decoder_ids;
  std::vector<std::vector<std::int32_t>> regions;
};

inline TokenizedPrompt tokenize_prompt(LclmModel& engine, std::string_view prompt) {
  TokenizedPrompt out;
  for (const PromptSegment& s : split_memory_regions(prompt)) {
    if (s.compressed) out.regions.push_back(engine.encoder_tokenizer().encode(s.text));
  }
  out.decoder_ids = engine.prepare(prompt).ids;
  return out;
}

// The engine's logits [L, vocab] at every position of the prompt.
inline torch::Tensor engine_logits(LclmModel& engine, std::string_view prompt) {
  PreparedPrompt p = engine.prepare(prompt);
  const Qwen3Model& decoder = engine.decoder();
  const std::size_t n = p.ids.size();
  KVCache cache = decoder.make_cache(n, n);
  decoder.forward(p.embeddings.data(), n, cache, AttentionMask::Causal);
  torch::Tensor logits = torch::empty(
      {static_cast<std::int64_t>(n), static_cast<std::int64_t>(decoder.config().vocab_size)});
  decoder.logits(p.embeddings.data(), n, logits.data_ptr<float>());
  return logits;
}

// max |got - want| / max |want|.
inline double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

}  // namespace lclm::train::testing
