// What a trained LCLM can recall, measured with the engine: needle
// retrieval from haystacks of real held-out text, verbatim reconstruction
// of passages and (on request) of random numbers, each compressed at
// several ratios and, as the baseline, read uncompressed by the same
// decoder. The prompts are the training tasks' (trainer/data.h); answers
// are generated greedily.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

namespace lclm::train {

struct RecallEvalOptions {
  std::filesystem::path checkpoint;
  std::vector<std::filesystem::path> text;        // held-out haystack and passage text
  std::vector<std::int64_t> ratios{0, 4, 8, 16};  // 0: uncompressed
  std::vector<std::size_t> haystack_tokens{1024, 2048, 4096, 8192};
  std::vector<std::size_t> passage_tokens{32, 64, 128};
  // Number-copying passages (task "numbers"): random numbers of 3-9 digits
  // (trainer/data.h random_numbers) cut to this many tokens, to repeat from
  // latents; a language model cannot guess their digits' order, so this
  // measures what the latents keep of it. None by default.
  std::vector<std::size_t> number_tokens{};
  std::size_t samples = 20;  // per task and length; every ratio sees the same ones
  std::uint64_t seed = 20261123;
  std::ostream* progress = nullptr;
  // When set, one JSON object per line for every sample at every ratio, as
  // it is answered: task, tokens, ratio, sample (its index, the same at every
  // ratio), expected, answer, correct, prefix_correct, agreement,
  // prompt_positions, ttft_ms and, for needles, needle_token: the encoder
  // token at which the number's first digit sits in the haystack (so
  // needle_token % ratio is its place in its latent's group).
  std::ostream* answers = nullptr;
};

// One cell of the result tables: a task at a length and ratio.
struct RecallResult {
  std::string task;        // "needle", "reconstruction" or "numbers"
  std::int64_t ratio = 0;  // 0: uncompressed
  std::size_t tokens = 0;  // haystack or passage length in encoder tokens
  std::size_t samples = 0;
  std::size_t correct = 0;  // needle: the number appears in the answer;
                            // reconstruction, numbers: the answer is the passage exactly
  // needle: answers that begin "The special magic number for KEY is" with the
  // asked KEY (the format and the key copied, whatever the number);
  // reconstruction: answers whose first 8 words are the passage's; numbers:
  // answers that start with the passage's first number.
  std::size_t prefix_correct = 0;
  // Graded, in [0, 1] (mean over samples): needle: digit_agreement of the
  // answer with the number (chance is 0.1); reconstruction: word_agreement
  // of the answer with the passage; numbers: char_agreement.
  double mean_agreement = 0;
  double mean_prompt_positions = 0;
  double mean_ttft_ms = 0;  // compression included
  double accuracy() const { return samples ? static_cast<double>(correct) / samples : 0.0; }
};

// The share of the number's digits that the first run of digits in `answer`
// after `after` (the needle prefix; the whole answer when absent) has at the
// same place: 1 for the right number, about 0.1 for a guess.
double digit_agreement(const std::string& answer, const std::string& number,
                       const std::string& after = "");
// The share of `reference`'s space-separated words that `answer` has at the
// same word index.
double word_agreement(const std::string& answer, const std::string& reference);

// The share of `reference`'s characters that `answer` has at the same index
// (numbers: every character is a token, so this is tokens in place).
double char_agreement(const std::string& answer, const std::string& reference);

// Keeps only the listed tasks ("needle", "reconstruction", "numbers") by
// clearing the other tasks' lengths. Throws lclm::Error for an unknown task
// or a listed one with no lengths (e.g. "numbers" without number_tokens).
void keep_tasks(RecallEvalOptions& options, const std::vector<std::string>& tasks);

// Throws lclm::Error for a missing checkpoint or text.
std::vector<RecallResult> evaluate_recall(const RecallEvalOptions& options);

// Markdown tables (one per task: rows = lengths, columns = ratios) and JSON.
std::string recall_markdown(const std::vector<RecallResult>& results);
std::string recall_json(const std::vector<RecallResult>& results);

}  // namespace lclm::train
