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
//   facts            one fact of the held-out split of eval/facts.h (kinds, keys,
//                    names, sentence forms and question phrasings the trainer
//                    never shows) among two distractors of its kind; the answer
//                    must hold the value and, to count as in the question's own
//                    terms (prefix), start "The SUBJECT is "
//
// and two copying tasks, whose length is the passage's in tokens (not the
// prompt's), asked with the trainer's reconstruction instruction:
//
//   reconstruction   a passage of haystack text; the answer is the passage, word
//                    for word
//   numbers          random numbers of 3-9 digits, comma-separated (one token a
//                    character); the answer is them, in order. No language model
//                    can guess a digit's place, so this measures what the
//                    latents keep of the order of their tokens.
//
// Every sample is a function of (seed, task, length, index) only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
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
  CommonWords,
  Reconstruction,
  Numbers,
  Facts  // last: a task's samples are seeded by its number
};

std::string_view ruler_task_name(RulerTask task);
// Throws lclm::Error naming the known tasks. "needle" is niah_single.
RulerTask parse_ruler_task(std::string_view name);
// Every task, in the order above.
const std::vector<RulerTask>& all_ruler_tasks();
// Reconstruction and numbers: lengths are the passage's tokens.
bool is_copy_task(RulerTask task);

struct EvalSample {
  RulerTask task = RulerTask::SingleNeedle;
  std::string context;               // the long text (what the latent method compresses)
  std::string question;              // follows the context on a new line
  std::vector<std::string> answers;  // each must appear in the model's answer
                                     // (copy tasks: the one answer is the whole answer)
  int n_predict = 32;                // tokens the answer may take
  // What a right answer starts with: niah_single and niah_multikey "The
  // special magic number for KEY is " with the asked key, facts "The
  // SUBJECT is ", reconstruction
  // the passage's first 8 words, numbers its first number; empty for the
  // other tasks.
  std::string prefix;
  // niah_single: tokens of the context before the number's first digit (so
  // needle_token % r is its place in its latent's group at ratio r).
  std::optional<std::size_t> needle_token;
};

// The instruction after a passage to copy, as the trainer writes it.
inline constexpr const char* kCopyQuestion = "Repeat the compressed text above word for word.";

// The ChatML user turn: context (inside <|memory_start|>..<|memory_end|>
// when `compressed`), a newline and the question, then the assistant header.
std::string eval_prompt(const EvalSample& sample, bool compressed);

// A needle key: an adjective-noun pair such as "misty-harbor" (256 in all),
// the same words in evaluation and in the trainer's retrieval examples.
std::string needle_key(std::mt19937_64& rng);
// The words needle keys are made of: the adjectives, then the nouns.
std::vector<std::string> needle_key_words();
// "The special magic number for KEY is N." and the question about it, as
// the trainer's retrieval examples write them.
std::string needle_sentence(std::string_view key, std::string_view value);
std::string needle_question(std::string_view key);

// RULER's string_match_all: the fraction of answers that occur in the output,
// ignoring case.
double score_answers(std::string_view output, const std::vector<std::string>& answers);

// The share of the number's digits that the first run of digits in `answer`
// after `after` (the needle prefix; the whole answer when absent) has at the
// same place: 1 for the right number, about 0.1 for a guess.
double digit_agreement(std::string_view answer, std::string_view number,
                       std::string_view after = "");
// The share of `reference`'s whitespace-separated words that `answer` has at
// the same word index.
double word_agreement(std::string_view answer, std::string_view reference);
// The share of `reference`'s characters that `answer` has at the same index
// (numbers: every character is a token, so this is tokens in place).
double char_agreement(std::string_view answer, std::string_view reference);

// Random numbers of 3-9 digits (no leading zero), ", "-separated, of at
// least `tokens` tokens and at most 10 more: Qwen3 makes each digit, the
// comma and the space a token (the numbers task, and the trainer's
// --numbers passages).
std::string random_numbers(std::mt19937_64& rng, std::size_t tokens);

// How an output does on a sample.
struct Grade {
  // Copy tasks: 1 when the output is the passage exactly, else 0; the others:
  // score_answers.
  double score = 0;
  // Graded in [0, 1]: digits in place (digit_agreement after the prefix) for
  // niah_single and niah_multikey, words in place for reconstruction,
  // characters in place for numbers; the score for the other tasks.
  double agreement = 0;
  // Whether the output starts with the sample's prefix; unset without one.
  std::optional<bool> prefix_correct;
};
Grade grade_answer(const EvalSample& sample, std::string_view output);

class RulerTaskGenerator {
 public:
  // `tokenizer` counts tokens (the decoder's); both must outlive this object.
  RulerTaskGenerator(const Haystack& haystack, const Tokenizer& tokenizer, std::uint64_t seed);

  // Sample `index`: its uncompressed prompt (eval_prompt(sample, false)) is
  // at most `tokens` decoder tokens, and within a few tokens of it. For the
  // copy tasks `tokens` is the passage's: reconstruction has exactly that
  // many (fewer only where the cut would split a character), numbers that
  // many less a trailing separator.
  EvalSample make(RulerTask task, std::size_t tokens, std::size_t index) const;

  std::size_t prompt_tokens(const EvalSample& sample) const;

 private:
  EvalSample build(RulerTask task, std::size_t size, std::uint64_t sample_seed) const;
  EvalSample passage(RulerTask task, std::size_t tokens, std::uint64_t sample_seed) const;

  const Haystack& haystack_;
  const Tokenizer& tokenizer_;
  std::uint64_t seed_;
};

}  // namespace lclm
