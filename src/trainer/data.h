// Training data for the LCLM stages: examples built from real text (files of
// Debian packages, see docs/training.md), each a deterministic function of
// (seed, example index), so a resumed run draws the same stream.
//
// An example is a list of pieces: context (seen, no loss), target (loss) and
// memory (compressed: <|memory_start|> + ceil(T / r) x <|memory|> +
// <|memory_end|>, never any loss). Tokenized as the engine does: the decoder
// tokenizer for plain text and markers, the encoder tokenizer for region text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "agent/chunker.h"
#include "tokenizer/tokenizer.h"

namespace lclm::train {

struct TextPiece {
  enum class Kind { Context, Target, Memory };
  Kind kind = Kind::Context;
  std::string text;
};

// A decoder sequence ready for the model.
struct Example {
  std::vector<std::int32_t> ids;                   // [L] decoder ids, placeholders included
  std::vector<std::uint8_t> loss;                  // [L] 1 where ids[i] is predicted with loss
  std::vector<std::vector<std::int32_t>> regions;  // encoder tokens of each memory region
  std::vector<std::int64_t> region_ratios;         // the compression ratio of each region
  // Where each packed example starts (pack_examples); empty: one document.
  std::vector<std::size_t> starts;
};

// Plain text documents; whitespace runs are collapsed to one space.
class Corpus {
 public:
  // Regular files, and the regular files of directories (sorted by name).
  // Throws lclm::Error when a path is missing or nothing usable is found.
  static Corpus from_paths(const std::vector<std::filesystem::path>& paths);

  // About `chars` characters of one document starting and ending at word
  // boundaries (the whole document when it is shorter).
  std::string passage(std::mt19937_64& rng, std::size_t chars) const;
  std::size_t size() const { return documents_.size(); }
  const std::vector<std::string>& documents() const { return documents_; }

 private:
  std::vector<std::string> documents_;
};

// The license texts of base-files: /usr/share/common-licenses.
std::vector<std::filesystem::path> default_corpus_paths();

// Pieces -> Example with a checkpoint's tokenizers and compression ratio.
class ExampleTokenizer {
 public:
  // Reads CKPT/decoder and CKPT/encoder tokenizers and model_config.json.
  explicit ExampleTokenizer(const std::filesystem::path& checkpoint);

  // ratio 0: the checkpoint's compression_ratio.
  Example tokenize(const std::vector<TextPiece>& pieces, std::int64_t ratio = 0) const;
  std::int64_t checkpoint_ratio() const { return ratio_; }

  const Tokenizer& decoder() const { return decoder_; }
  const Tokenizer& encoder() const { return encoder_; }
  std::int32_t memory_start() const { return memory_start_; }
  std::int32_t memory_end() const { return memory_end_; }
  std::int32_t memory() const { return memory_; }

 private:
  Tokenizer decoder_, encoder_;
  std::int32_t memory_start_, memory_end_, memory_;
  std::int64_t ratio_;
};

// Shares of the tasks in the stream; they need not sum to one.
struct TaskMix {
  double continual = 0.6;
  double reconstruction = 0.3;
  double retrieval = 0.1;
  double plain_retrieval = 0.0;       // the haystack as plain text, not compressed
  double plain_reconstruction = 0.0;  // copy a passage shown as plain text
  double facts = 0.0;        // facts in many wordings (eval/facts.h) in a compressed haystack
  double plain_facts = 0.0;  // the same in plain text
  double agent = 0.0;        // one round of the skim-and-expand agent (agent/agent.h)
};

// The task mix of a stage: CPT stages (0-2) mostly continual text with the
// auxiliary reconstruction task, SFT (3) the instruction tasks only. Stages 2
// and 3 also show haystacks uncompressed: a decoder trained from scratch must
// learn to read plain text too (the published decoders start from Qwen3).
TaskMix stage_task_mix(int stage);
// "c,r,q,pq,pr[,f,pf,a]": continual, reconstruction, retrieval, plain
// retrieval, plain reconstruction shares, and optionally facts, plain facts and
// agent rounds. Throws lclm::Error naming the flag for a bad list.
TaskMix parse_task_mix(const std::string& list);

// The instruction between a compressed passage and its verbatim copy.
inline constexpr const char* kReconstructionInstruction =
    "\nRepeat the compressed text above word for word.<|im_end|>\n<|im_start|>assistant\n";

class DataGenerator {
 public:
  // seq_len sizes the passages so that most examples fit one sequence.
  // Each example is compressed at one of `ratios` (empty: the checkpoint's
  // ratio, given as checkpoint_ratio).
  DataGenerator(Corpus corpus, std::uint64_t seed, std::size_t seq_len,
                std::int64_t checkpoint_ratio = 4, std::vector<std::int64_t> ratios = {});

  // The share of the sequence a retrieval haystack fills, drawn in [lo, hi)
  // (default 0.25-0.85). Shorter haystacks put more questions in a sequence.
  void set_haystack_fill(double lo, double hi);
  // The share of the sequence, in tokens, a reconstruction passage fills,
  // drawn in [lo, hi) (default 0.2-0.6). Short passages put more copies in a
  // sequence.
  void set_copy_fill(double lo, double hi);
  // The probability that a reconstruction passage becomes its distinct
  // words shuffled (default 0). Copying shuffled words cannot lean on
  // language-model guesses, so it trains the lookup that copying and
  // retrieval need.
  void set_scramble(double p);
  // The probability that a reconstruction passage becomes random numbers of
  // 3-9 digits, comma-separated (default 0), with the passage's token count
  // (each digit is a token). A number's digits have no order a language
  // model could guess, so copying them back trains each latent to keep the
  // order of its tokens, not only which tokens it holds; the needle numbers
  // that retrieval asks for need exactly that. Drawn before --scramble.
  void set_numbers(double p);
  // Needles per retrieval haystack, drawn in [lo, hi] (default 1-3), and at
  // most `questions` of them asked (default 1), each later one in its own
  // user turn after the first answer: several 7-digit answers per haystack
  // put more retrieval signal in a sequence than one answer does.
  void set_needles(std::size_t lo, std::size_t hi);
  void set_questions(std::size_t questions);
  // The decoder's token count, which the agent task's chunking needs (the
  // agent cuts documents by the decoder tokenizer's count).
  void set_token_counter(TokenCounter count);

  // Continual text: a passage cut into spans, some compressed; loss on the
  // plain spans; ends with <|endoftext|>.
  std::vector<TextPiece> continual(std::mt19937_64& rng) const;
  // Reconstruction: user turn with a compressed (or plain) passage and the
  // instruction; the assistant's answer is the passage verbatim (the target).
  // The passage is returned in *passage when given.
  std::vector<TextPiece> reconstruction(std::mt19937_64& rng, std::string* passage = nullptr,
                                        bool compressed = true) const;
  // Retrieval: a haystack of real text with 1-3 (set_needles) "The special
  // magic number for KEY is N." needles, a question on one (or several,
  // set_questions), the needle sentence as each answer. The haystack is
  // plain or compressed at `ratio`, of 0.25-0.85 (set_haystack_fill) seq_len
  // tokens, times min(ratio, 6) when compressed.
  std::vector<TextPiece> retrieval(std::mt19937_64& rng, std::int64_t ratio,
                                   bool compressed = true) const;

  // Facts: a haystack of real text with 1-3 facts of the train split
  // (eval/facts.h: several kinds, sentence forms and question phrasings), a
  // question on one, answered in the question's terms ("The SUBJECT is
  // VALUE."). Sized as retrieval.
  std::vector<TextPiece> facts(std::mt19937_64& rng, std::int64_t ratio, bool compressed) const;

  // One round of the skim-and-expand agent, in the agent's own prompt
  // (agent/agent.h build_round_prompt, ChatML): a document of real text cut
  // into chunks of about 450 tokens (chunk_document, as the agent cuts), one
  // train-split fact asked about (a fifth of the time two, in two chunks),
  // 0-3 distractors of the same kind with other keys in other chunks. The
  // round is a first round (reply `EXPAND: a[, b]`, the chunks holding the
  // answer), a later round with the answer's chunks expanded (`ANSWER: The
  // SUBJECT is VALUE.`), or a later round with only other chunks expanded
  // (`EXPAND:` the missing ones). The document is as long as fits seq_len
  // with its chunks at `ratio`, at most 18 chunks (about 8K tokens). Needs
  // set_token_counter.
  struct AgentRoundInfo {
    std::vector<std::string> chunks;         // as shown (facts inserted)
    std::vector<std::size_t> answer_chunks;  // 0-based, sorted: where the asked facts are
    std::vector<std::size_t> expanded;       // 0-based, sorted
    std::string question, answer, reply;     // reply: the target, without <|im_end|>
    int rule = 0;                            // RoundRule
    int rounds_left = 0;
  };
  std::vector<TextPiece> agent_round(std::mt19937_64& rng, std::int64_t ratio,
                                     AgentRoundInfo* info = nullptr) const;

  // The RNG of example `index`: a function of (seed, index) only.
  std::mt19937_64 example_rng(std::uint64_t index) const;
  // The compression ratio of example `index`.
  std::int64_t example_ratio(std::uint64_t index) const;
  // Example `index` of the stream for a mix, at example_ratio(index).
  std::vector<TextPiece> example(std::uint64_t index, const TaskMix& mix) const;

 private:
  Corpus corpus_;
  std::uint64_t seed_;
  std::size_t seq_len_;
  std::int64_t checkpoint_ratio_;
  std::vector<std::int64_t> ratios_;
  double fill_lo_ = 0.25, fill_hi_ = 0.85;
  double copy_lo_ = 0.2, copy_hi_ = 0.6;
  double scramble_ = 0.0;
  double numbers_ = 0.0;
  std::size_t needles_lo_ = 1, needles_hi_ = 3, questions_ = 1;
  TokenCounter count_tokens_;
  // Words for made-up fact subjects (fact_word_pool of the corpus), made on
  // first use: only the facts and agent tasks need them.
  mutable std::shared_ptr<const std::vector<std::string>> fact_words_;
  const std::vector<std::string>* fact_words() const;

  // About `chars` characters of real text: passages of several documents
  // joined when one is too short.
  std::string long_text(std::mt19937_64& rng, std::size_t chars) const;
};

// A prompt with memory regions (`<|memory_start|>TEXT<|memory_end|>`) as
// pieces: the text between regions as context, each region's text as memory.
std::vector<TextPiece> prompt_pieces(std::string_view prompt);

// Inserts `sentence` into text at a random sentence end (or either end).
void insert_at_sentence_end(std::mt19937_64& rng, std::string& text, const std::string& sentence);

// The whitespace-separated words of text.
std::vector<std::string> words_of(const std::string& text);
// The needle's words (needle_key, needle_sentence, needle_question) and the
// --numbers passages (random_numbers) are the evaluation's: eval/ruler_tasks.h.

// Packs examples next_index, next_index + 1, ... into one sequence of at most
// seq_len tokens and advances next_index past them. The last example is cut
// at seq_len, or before a memory region the cut would split (dropping that
// region), and still counts as drawn.
Example pack_examples(const DataGenerator& data, const ExampleTokenizer& tokens, const TaskMix& mix,
                      std::uint64_t& next_index, std::size_t seq_len);

}  // namespace lclm::train
