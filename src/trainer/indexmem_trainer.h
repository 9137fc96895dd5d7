// Training IndexMem's indexer and memory on a frozen decoder (see
// docs/indexmem.md): plain retrieval and copy examples from the trainer's
// data generators, each evicted to ceil(prompt / ratio) entries per layer and
// kv head; the indexer learns the answer's attention mass over the prompt,
// the memory (feature map and gates) the answer tokens under eviction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <vector>

#include "kv/indexmem.h"
#include "tokenizer/tokenizer.h"
#include "trainer/data.h"
#include "trainer/torch_indexmem.h"

namespace lclm::train {

struct IndexMemTrainOptions {
  std::filesystem::path init;  // a Qwen3 decoder directory or an LCLM checkpoint
  std::filesystem::path out;   // the weights directory written (config.json, model.safetensors)
  std::int64_t steps = 200;
  std::size_t batch = 4;        // examples per optimizer step
  double ratio = 8;             // prompt tokens per kept entry
  std::size_t seq_len = 768;    // sizes the prompts (retrieval haystacks, copied passages)
  std::size_t max_answer = 48;  // answer tokens trained on per example
  double lr = 3e-3;
  std::uint64_t seed = 0;
  std::int64_t indexer_hidden = 64, memory_features = 64, sinks = 4, recent = 32;
  double retrieval_share = 0.7;  // the rest: copying a plain passage
  std::size_t held_out = 8;      // examples measured at the end, with and without the memory
  std::int64_t log_every = 10;
  std::vector<std::filesystem::path> text = default_corpus_paths();
  std::ostream* log = nullptr;
};

// Where a model's decoder lives: CKPT/decoder for an LCLM checkpoint, else
// the directory itself.
std::filesystem::path decoder_dir_of(const std::filesystem::path& model);

// Example `index` of the stream: plain pieces tokenized with the decoder's
// tokenizer; the prompt is everything before the target, the answer at most
// max_answer tokens of it.
IndexMemExample indexmem_example(const DataGenerator& data, const Tokenizer& tokenizer,
                                 const IndexMemTrainOptions& options, std::uint64_t index);

// Held-out measures after training: the answer loss with the trained memory
// and with the gates at zero (eviction alone), the indexer's loss, and the
// share of the answer's attention mass the kept entries hold: the indexer's
// choice against StreamingLLM's at the same budget.
struct IndexMemReport {
  double answer_loss = 0, answer_loss_without_memory = 0, indexer_loss = 0;
  double kept_mass = 0, streaming_kept_mass = 0;
};

// Trains from options.init, writes options.out and returns the held-out report.
IndexMemReport train_indexmem(const IndexMemTrainOptions& options);

}  // namespace lclm::train
