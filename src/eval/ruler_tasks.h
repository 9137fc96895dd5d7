// RULER-style synthetic long-context tasks, generated from real haystack text
// at a target length in decoder tokens, with exact answers to score against.
//
//   niah_single      one needle "The special magic number for KEY is N."; asks for N
//                    (the trainer's retrieval task, word for word)
//   niah_multi       three needles with different keys; asks for all three numbers
//   niah_multikey    one needle among three distractor needles; asks for its number
//   niah_multivalue  four needles with one key; asks for all four numbers
//   vt               variable tracking: VAR A = 12345, VAR B = A, ... spread over the
//                    text; asks which variables hold 12345
//   cwe              common-word extraction: a numbered list of words in which ten
//                    appear most often; asks for those ten
//
// Every sample is a function of (seed, task, length, index) only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "eval/haystack.h"
#include "tokenizer/tokenizer.h"

namespace lclm {

enum class RulerTask {
  SingleNeedle,
  MultiNeedle,
  MultiKey,
  MultiValue,
  VariableTracking,
  CommonWords
};

std::string_view ruler_task_name(RulerTask task);
// Throws lclm::Error naming the known tasks.
RulerTask parse_ruler_task(std::string_view name);
const std::vector<RulerTask>& all_ruler_tasks();

struct EvalSample {
  RulerTask task = RulerTask::SingleNeedle;
  std::string context;               // the long text (what the latent method compresses)
  std::string question;              // follows the context on a new line
  std::vector<std::string> answers;  // each must appear in the model's answer
  int n_predict = 32;                // tokens the answer may take
};

// The ChatML user turn: context (inside <|memory_start|>..<|memory_end|>
// when `compressed`), a newline and the question, then the assistant header.
std::string eval_prompt(const EvalSample& sample, bool compressed);

// A needle key: an adjective-noun pair such as "misty-harbor" (256 in all),
// the same words in evaluation and in the trainer's retrieval examples.
std::string needle_key(std::mt19937_64& rng);
// "The special magic number for KEY is N." and the question about it, as
// the trainer's retrieval examples write them.
std::string needle_sentence(std::string_view key, std::string_view value);
std::string needle_question(std::string_view key);

// RULER's string_match_all: the fraction of answers that occur in the output,
// ignoring case.
double score_answers(std::string_view output, const std::vector<std::string>& answers);

class RulerTaskGenerator {
 public:
  // `tokenizer` counts tokens (the decoder's); both must outlive this object.
  RulerTaskGenerator(const Haystack& haystack, const Tokenizer& tokenizer, std::uint64_t seed);

  // Sample `index`: its uncompressed prompt (eval_prompt(sample, false)) is
  // at most `tokens` decoder tokens, and within a few tokens of it.
  EvalSample make(RulerTask task, std::size_t tokens, std::size_t index) const;

  std::size_t prompt_tokens(const EvalSample& sample) const;

 private:
  EvalSample build(RulerTask task, std::size_t size, std::uint64_t sample_seed) const;

  const Haystack& haystack_;
  const Tokenizer& tokenizer_;
  std::uint64_t seed_;
};

}  // namespace lclm
