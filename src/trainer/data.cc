#include "trainer/data.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include "agent/agent.h"
#include "compression/lclm_config.h"
#include "compression/memory_regions.h"
#include "eval/facts.h"
#include "eval/ruler_tasks.h"
#include "runtime/chat_template.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/random.h"

namespace lclm::train {

namespace fs = std::filesystem;

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f';
}

std::string collapse_whitespace(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
    } else {
      if (pending_space) out.push_back(' ');
      pending_space = false;
      out.push_back(c);
    }
  }
  return out;
}

// The distinct words of text (split at spaces) in a random order
// (Fisher-Yates with `below`, so the order is the same on every platform).
// Each word once: after any word of the copy exactly one word follows in
// the source, so copying never has to guess.
std::string shuffle_words(std::mt19937_64& rng, const std::string& text) {
  std::vector<std::string> words;
  for (std::string& w : words_of(text)) {
    if (std::find(words.begin(), words.end(), w) == words.end()) words.push_back(std::move(w));
  }
  for (std::size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[below(rng, i)]);
  std::string out;
  for (const std::string& w : words) out.append(out.empty() ? "" : " ").append(w);
  return out;
}

double unit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Cuts text into spans of about [lo, hi] characters at spaces; each span
// keeps its leading space so the pieces concatenate back to the text.
std::vector<std::string> cut_spans(std::mt19937_64& rng, const std::string& text, std::size_t lo,
                                   std::size_t hi) {
  std::vector<std::string> spans;
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = std::min(text.size(), begin + lo + below(rng, hi - lo + 1));
    if (end < text.size()) {
      const std::size_t space = text.find(' ', end);
      end = space == std::string::npos ? text.size() : space;
    }
    spans.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  return spans;
}

// Sentence ends (index just past ". ") where a needle may go.
std::vector<std::size_t> sentence_ends(const std::string& text) {
  std::vector<std::size_t> ends{0};
  for (std::size_t i = text.find(". "); i != std::string::npos; i = text.find(". ", i + 1)) {
    ends.push_back(i + 2);
  }
  ends.push_back(text.size());
  return ends;
}

}  // namespace

Corpus Corpus::from_paths(const std::vector<fs::path>& paths) {
  std::vector<fs::path> files;
  for (const fs::path& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> inside;
      for (const auto& entry : fs::directory_iterator(p)) {
        if (entry.is_regular_file()) inside.push_back(entry.path());
      }
      std::sort(inside.begin(), inside.end());
      files.insert(files.end(), inside.begin(), inside.end());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      throw Error("training text " + p.string() + " does not exist");
    }
  }
  Corpus corpus;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    std::string doc = collapse_whitespace(text.str());
    // Text with the markers' syntax would be mistaken for special tokens.
    if (doc.size() < 200 || doc.find("<|") != std::string::npos) continue;
    corpus.documents_.push_back(std::move(doc));
  }
  if (corpus.documents_.empty()) {
    throw Error("no usable training text (files of 200+ characters) under the given paths");
  }
  return corpus;
}

std::string Corpus::passage(std::mt19937_64& rng, std::size_t chars) const {
  const std::string& doc = documents_[below(rng, documents_.size())];
  if (doc.size() <= chars) return doc;
  std::size_t begin = below(rng, doc.size() - chars);
  if (begin > 0) begin = std::min(doc.find(' ', begin) + 1, doc.size());
  std::size_t end = std::min(doc.size(), begin + chars);
  if (end < doc.size()) end = std::max(begin + 1, doc.rfind(' ', end));
  return doc.substr(begin, end - begin);
}

std::vector<fs::path> default_corpus_paths() {
  return {"/usr/share/common-licenses"};
}

ExampleTokenizer::ExampleTokenizer(const fs::path& checkpoint)
    : decoder_(Tokenizer::from_dir(checkpoint / "decoder")),
      encoder_(Tokenizer::from_dir(checkpoint / "encoder")),
      ratio_(LclmConfig::from_file(checkpoint / "model_config.json").compression_ratio) {
  const auto id = [&](std::string_view token) {
    const auto found = decoder_.token_id(token);
    if (!found) {
      throw Error((checkpoint / "decoder" / "tokenizer.json").string() + " has no " +
                  std::string(token) + " token");
    }
    return *found;
  };
  memory_start_ = id(kMemoryStart);
  memory_end_ = id(kMemoryEnd);
  memory_ = id(kMemoryPlaceholder);
}

Example ExampleTokenizer::tokenize(const std::vector<TextPiece>& pieces, std::int64_t ratio) const {
  const auto r = static_cast<std::size_t>(ratio > 0 ? ratio : ratio_);
  Example ex;
  for (const TextPiece& piece : pieces) {
    if (piece.kind == TextPiece::Kind::Memory) {
      std::vector<std::int32_t> region = encoder_.encode(piece.text);
      if (region.empty()) continue;
      const std::size_t n = (region.size() + r - 1) / r;
      ex.ids.push_back(memory_start_);
      ex.ids.insert(ex.ids.end(), n, memory_);
      ex.ids.push_back(memory_end_);
      ex.loss.insert(ex.loss.end(), n + 2, 0);
      ex.regions.push_back(std::move(region));
      ex.region_ratios.push_back(static_cast<std::int64_t>(r));
    } else {
      const std::vector<std::int32_t> ids = decoder_.encode(piece.text);
      ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
      ex.loss.insert(ex.loss.end(), ids.size(), piece.kind == TextPiece::Kind::Target ? 1 : 0);
    }
  }
  return ex;
}

TaskMix stage_task_mix(int stage) {
  if (stage == 3) return {0.0, 0.3, 0.4, 0.15, 0.15};
  if (stage == 2) return {0.55, 0.3, 0.1, 0.05, 0.0};
  return {};
}

TaskMix parse_task_mix(const std::string& list) {
  std::vector<double> shares;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || v < 0) {
      throw Error("--mix: \"" + item + "\" is not a share (a number >= 0)");
    }
    shares.push_back(v);
  }
  double sum = 0;
  for (double v : shares) sum += v;
  if ((shares.size() != 5 && shares.size() != 8) || sum <= 0) {
    throw Error(
        "--mix takes five shares (continual, reconstruction, retrieval, plain retrieval, "
        "plain reconstruction), or eight (then facts, plain facts, agent), with a positive "
        "sum, not \"" +
        list + "\"");
  }
  shares.resize(8, 0.0);
  return {shares[0], shares[1], shares[2], shares[3], shares[4], shares[5], shares[6], shares[7]};
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(std::move(w));
  return words;
}

void insert_at_sentence_end(std::mt19937_64& rng, std::string& text, const std::string& sentence) {
  const std::vector<std::size_t> ends = sentence_ends(text);
  const std::size_t at = ends[below(rng, ends.size())];
  const bool space_before = at > 0 && text[at - 1] != ' ';
  text.insert(at, (space_before ? " " : "") + sentence + (at < text.size() ? " " : ""));
}

DataGenerator::DataGenerator(Corpus corpus, std::uint64_t seed, std::size_t seq_len,
                             std::int64_t checkpoint_ratio, std::vector<std::int64_t> ratios)
    : corpus_(std::move(corpus)),
      seed_(seed),
      seq_len_(std::max<std::size_t>(seq_len, 64)),
      checkpoint_ratio_(checkpoint_ratio),
      ratios_(std::move(ratios)) {
  for (std::int64_t r : ratios_) {
    if (r <= 0) throw Error("--ratios: " + std::to_string(r) + " is not a positive ratio");
  }
}

namespace {
void check_fill(const char* flag, double lo, double hi) {
  if (!(lo > 0 && lo <= hi && hi <= 1)) {
    throw Error(std::string(flag) + ": need 0 < LO <= HI <= 1, not " + std::to_string(lo) + "," +
                std::to_string(hi));
  }
}
}  // namespace

void DataGenerator::set_haystack_fill(double lo, double hi) {
  check_fill("--haystack-fill", lo, hi);
  fill_lo_ = lo;
  fill_hi_ = hi;
}

void DataGenerator::set_copy_fill(double lo, double hi) {
  check_fill("--copy-fill", lo, hi);
  copy_lo_ = lo;
  copy_hi_ = hi;
}

void DataGenerator::set_scramble(double p) {
  if (!(p >= 0 && p <= 1)) throw Error("--scramble: need 0 <= P <= 1, not " + std::to_string(p));
  scramble_ = p;
}

void DataGenerator::set_numbers(double p) {
  if (!(p >= 0 && p <= 1)) throw Error("--numbers: need 0 <= P <= 1, not " + std::to_string(p));
  numbers_ = p;
}

void DataGenerator::set_needles(std::size_t lo, std::size_t hi) {
  if (!(lo >= 1 && lo <= hi && hi <= 64)) {
    throw Error("--needles: need 1 <= LO <= HI <= 64, not " + std::to_string(lo) + "," +
                std::to_string(hi));
  }
  needles_lo_ = lo;
  needles_hi_ = hi;
}

void DataGenerator::set_questions(std::size_t questions) {
  if (questions < 1 || questions > 64) {
    throw Error("--questions: need 1 to 64 questions, not " + std::to_string(questions));
  }
  questions_ = questions;
}

void DataGenerator::set_token_counter(TokenCounter count) {
  count_tokens_ = std::move(count);
}

std::int64_t DataGenerator::example_ratio(std::uint64_t index) const {
  if (ratios_.empty()) return checkpoint_ratio_;
  // Its own hash of (seed, index), so the examples' streams do not depend on
  // the list of ratios.
  return ratios_[mix64(seed_ ^ (index * 0xD6E8FEB86659FD93ull)) % ratios_.size()];
}

std::mt19937_64 DataGenerator::example_rng(std::uint64_t index) const {
  // splitmix64 of (seed, index): neighbouring indices get unrelated streams.
  return std::mt19937_64(mix64(seed_ * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull));
}

// Sizes below assume about 4 characters per token of English prose.
constexpr double kCharsPerToken = 4.0;
std::vector<TextPiece> DataGenerator::continual(std::mt19937_64& rng) const {
  const auto chars =
      static_cast<std::size_t>(static_cast<double>(seq_len_) * (2.0 + 2.0 * unit(rng)));
  const std::string text = corpus_.passage(rng, chars);
  std::vector<TextPiece> pieces;
  bool any_memory = false;
  for (std::string& span : cut_spans(rng, text, 60, 240)) {
    const bool memory = unit(rng) < 0.35;
    any_memory = any_memory || memory;
    pieces.push_back({memory ? TextPiece::Kind::Memory : TextPiece::Kind::Target, std::move(span)});
  }
  if (!any_memory) pieces.front().kind = TextPiece::Kind::Memory;
  pieces.push_back({TextPiece::Kind::Target, "<|endoftext|>"});
  return pieces;
}

std::vector<TextPiece> DataGenerator::reconstruction(std::mt19937_64& rng, std::string* passage,
                                                     bool compressed) const {
  // By default the region (T / r) and the copy (T) fit about 0.8 of the sequence.
  const double tokens =
      static_cast<double>(seq_len_) * (copy_lo_ + (copy_hi_ - copy_lo_) * unit(rng));
  std::string text;
  if (numbers_ > 0 && unit(rng) < numbers_) {
    text = random_numbers(rng, static_cast<std::size_t>(tokens));
  } else {
    text = corpus_.passage(rng, static_cast<std::size_t>(tokens * kCharsPerToken));
    if (scramble_ > 0 && unit(rng) < scramble_) text = shuffle_words(rng, text);
  }
  if (passage) *passage = text;
  return {{TextPiece::Kind::Context, "<|im_start|>user\n"},
          {compressed ? TextPiece::Kind::Memory : TextPiece::Kind::Context, text},
          {TextPiece::Kind::Context, kReconstructionInstruction},
          {TextPiece::Kind::Target, std::move(text)},
          {TextPiece::Kind::Target, "<|im_end|>"}};
}

std::vector<TextPiece> DataGenerator::retrieval(std::mt19937_64& rng, std::int64_t ratio,
                                                bool compressed) const {
  // The haystack fills 0.25-0.85 of the sequence as tokens, or as latents up
  // to ratio 6: beyond, the encoder's cost would dwarf the decoder's.
  const double tokens = static_cast<double>(seq_len_) *
                        (fill_lo_ + (fill_hi_ - fill_lo_) * unit(rng)) *
                        (compressed ? static_cast<double>(std::min<std::int64_t>(ratio, 6)) : 1.0);
  std::string haystack = corpus_.passage(rng, static_cast<std::size_t>(tokens * kCharsPerToken));
  const std::size_t n_needles = needles_lo_ + below(rng, needles_hi_ - needles_lo_ + 1);
  std::vector<std::string> keys, needles;
  while (keys.size() < n_needles) {
    std::string key = needle_key(rng);
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
    const std::size_t number = 1000000 + below(rng, 9000000);
    needles.push_back(needle_sentence(key, std::to_string(number)));
    keys.push_back(std::move(key));
  }
  for (const std::string& needle : needles) insert_at_sentence_end(rng, haystack, needle);
  // The asked needles: a random first one, then (with set_questions) others
  // in a random order, each asked once.
  std::vector<std::size_t> asked{below(rng, keys.size())};
  if (questions_ > 1) {
    std::vector<std::size_t> rest;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (i != asked[0]) rest.push_back(i);
    }
    for (std::size_t i = rest.size(); i > 1; --i) std::swap(rest[i - 1], rest[below(rng, i)]);
    const std::size_t more = below(rng, std::min(questions_, keys.size()));
    asked.insert(asked.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(more));
  }
  std::vector<TextPiece> pieces{
      {TextPiece::Kind::Context, "<|im_start|>user\n"},
      {compressed ? TextPiece::Kind::Memory : TextPiece::Kind::Context, std::move(haystack)}};
  for (std::size_t q = 0; q < asked.size(); ++q) {
    // Appended: GCC 12 misreports "\n" + s as -Wrestrict.
    std::string question = q == 0 ? "\n" : "\n<|im_start|>user\n";
    question.append(needle_question(keys[asked[q]])).append("<|im_end|>\n<|im_start|>assistant\n");
    pieces.push_back({TextPiece::Kind::Context, std::move(question)});
    pieces.push_back({TextPiece::Kind::Target, needles[asked[q]] + "<|im_end|>"});
  }
  return pieces;
}

const std::vector<std::string>* DataGenerator::fact_words() const {
  if (!fact_words_) {
    fact_words_ =
        std::make_shared<const std::vector<std::string>>(fact_word_pool(corpus_.documents(), 4000));
  }
  return fact_words_.get();
}

std::string DataGenerator::long_text(std::mt19937_64& rng, std::size_t chars) const {
  std::string text = corpus_.passage(rng, chars);
  for (int joined = 0; text.size() + 200 < chars && joined < 64; ++joined) {
    text.append(" ").append(corpus_.passage(rng, chars - text.size()));
  }
  return text;
}

std::vector<TextPiece> DataGenerator::facts(std::mt19937_64& rng, std::int64_t ratio,
                                            bool compressed) const {
  const double tokens = static_cast<double>(seq_len_) *
                        (fill_lo_ + (fill_hi_ - fill_lo_) * unit(rng)) *
                        (compressed ? static_cast<double>(std::min<std::int64_t>(ratio, 6)) : 1.0);
  std::string haystack = long_text(rng, static_cast<std::size_t>(tokens * kCharsPerToken));
  const std::size_t n_facts = needles_lo_ + below(rng, needles_hi_ - needles_lo_ + 1);
  std::vector<Fact> facts;
  std::vector<std::string> subjects;
  const int family = make_fact(rng, FactSplit::Train, -1, {}, fact_words()).family;
  while (facts.size() < n_facts) {
    // Half the others of the asked one's kind: distractors that differ only
    // in the key or name.
    Fact f =
        make_fact(rng, FactSplit::Train, unit(rng) < 0.5 ? family : -1, subjects, fact_words());
    subjects.push_back(f.subject);
    facts.push_back(std::move(f));
  }
  for (const Fact& f : facts) insert_at_sentence_end(rng, haystack, f.sentence);
  std::vector<TextPiece> pieces{
      {TextPiece::Kind::Context, "<|im_start|>user\n"},
      {compressed ? TextPiece::Kind::Memory : TextPiece::Kind::Context, std::move(haystack)}};
  // Asked: a random first one, then (set_questions) others, each in its own turn.
  std::vector<std::size_t> order(facts.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[below(rng, i)]);
  const std::size_t asked = 1 + below(rng, std::min(questions_, facts.size()));
  for (std::size_t q = 0; q < asked; ++q) {
    const Fact& f = facts[order[q]];
    std::string turn = q == 0 ? "\n" : "\n<|im_start|>user\n";
    turn.append(f.question).append("<|im_end|>\n<|im_start|>assistant\n");
    pieces.push_back({TextPiece::Kind::Context, std::move(turn)});
    pieces.push_back({TextPiece::Kind::Target, f.answer + "<|im_end|>"});
  }
  return pieces;
}

std::vector<TextPiece> prompt_pieces(std::string_view prompt) {
  std::vector<TextPiece> pieces;
  while (!prompt.empty()) {
    const std::size_t start = prompt.find(kMemoryStart);
    if (start == std::string_view::npos) break;
    const std::size_t text = start + kMemoryStart.size();
    const std::size_t end = prompt.find(kMemoryEnd, text);
    if (end == std::string_view::npos) throw Error("a memory region without its end marker");
    if (start > 0)
      pieces.push_back({TextPiece::Kind::Context, std::string(prompt.substr(0, start))});
    pieces.push_back({TextPiece::Kind::Memory, std::string(prompt.substr(text, end - text))});
    prompt.remove_prefix(end + kMemoryEnd.size());
  }
  if (!prompt.empty()) pieces.push_back({TextPiece::Kind::Context, std::string(prompt)});
  return pieces;
}

namespace {
std::string chunk_list(const std::vector<std::size_t>& chunks) {
  std::string out;
  for (std::size_t c : chunks) out.append(out.empty() ? "" : ", ").append(std::to_string(c + 1));
  return out;
}
}  // namespace

std::vector<TextPiece> DataGenerator::agent_round(std::mt19937_64& rng, std::int64_t ratio,
                                                  AgentRoundInfo* info) const {
  if (!count_tokens_) throw Error("the agent task needs the decoder's token count");
  constexpr std::size_t kChunkTokens = 450;  // AgentOptions::chunk_tokens
  constexpr int kMaxRounds = 5;              // AgentOptions::max_rounds
  // The round, drawn first since it sizes the document: a first round
  // (45%), a later one with the answer in view (40%) or not yet (15%).
  enum class Kind { First, Answer, Recover } kind = Kind::First;
  const double k = unit(rng);
  if (k >= 0.45) kind = k < 0.85 ? Kind::Answer : Kind::Recover;
  bool two = unit(rng) < 0.2;
  const bool extra = unit(rng) < 0.3;  // one more chunk in view
  const std::size_t shown = kind == Kind::First    ? 0
                            : kind == Kind::Answer ? (two ? 2 : 1) + (extra ? 1 : 0)
                                                   : 1 + (two ? 1 : 0);
  // What fits: each chunk compressed takes about T / r latents, its markers
  // and "Chunk i: "; each expanded chunk T; the rule, the question and the
  // chat frame about 200.
  const double per_chunk = static_cast<double>(kChunkTokens) / static_cast<double>(ratio) + 8.0;
  const double room =
      static_cast<double>(seq_len_) - 200.0 - static_cast<double>(shown * (kChunkTokens + 8));
  const auto most = static_cast<std::size_t>(std::clamp(room / per_chunk, 3.0, 18.0));
  const std::size_t want = 3 + below(rng, most - 2);
  std::vector<std::string> chunks = chunk_document(
      long_text(rng, static_cast<std::size_t>(static_cast<double>(want * kChunkTokens) * 3.2)),
      count_tokens_, kChunkTokens);
  if (chunks.size() > want) chunks.resize(want);
  const std::size_t n = chunks.size();
  if (n < 2) throw Error("the training text gave a document of one chunk");
  two = two && n >= 3;

  // The asked fact(s) and the distractors, each in a chunk of its own kind.
  std::vector<Fact> asked;
  std::vector<std::string> subjects;
  for (std::size_t i = 0; i < (two ? 2u : 1u); ++i) {
    asked.push_back(make_fact(rng, FactSplit::Train, -1, subjects, fact_words()));
    subjects.push_back(asked.back().subject);
  }
  std::vector<std::size_t> answer_chunks;
  while (answer_chunks.size() < asked.size()) {
    const std::size_t c = below(rng, n);
    if (std::find(answer_chunks.begin(), answer_chunks.end(), c) == answer_chunks.end()) {
      answer_chunks.push_back(c);
    }
  }
  for (std::size_t i = 0; i < asked.size(); ++i) {
    insert_at_sentence_end(rng, chunks[answer_chunks[i]], asked[i].sentence);
  }
  std::vector<std::size_t> others;
  for (std::size_t c = 0; c < n; ++c) {
    if (std::find(answer_chunks.begin(), answer_chunks.end(), c) == answer_chunks.end()) {
      others.push_back(c);
    }
  }
  std::vector<std::size_t> distractor_chunks;
  if (!others.empty()) {
    const std::size_t distractors = below(rng, 4);
    for (std::size_t d = 0; d < distractors; ++d) {
      const Fact f = make_fact(rng, FactSplit::Train, asked[0].family, subjects, fact_words());
      subjects.push_back(f.subject);
      const std::size_t c = others[below(rng, others.size())];
      insert_at_sentence_end(rng, chunks[c], f.sentence);
      distractor_chunks.push_back(c);
    }
  }
  std::sort(answer_chunks.begin(), answer_chunks.end());
  const std::string question =
      two ? two_fact_question(rng, FactSplit::Train, asked[0], asked[1]) : asked[0].question;
  const std::string answer = two ? two_fact_answer(asked[0], asked[1]) : asked[0].answer;

  std::vector<std::size_t> expanded;
  RoundRule rule = RoundRule::MustExpand;
  int left = kMaxRounds - 1;
  std::string reply;
  if (kind == Kind::First) {
    reply = "EXPAND: " + chunk_list(answer_chunks);
  } else if (kind == Kind::Answer || others.empty()) {
    expanded = answer_chunks;
    if (!others.empty() && extra) expanded.push_back(others[below(rng, others.size())]);
    left = 1 + static_cast<int>(below(rng, 3));
    rule = unit(rng) < 0.25 ? RoundRule::MustAnswer : RoundRule::ExpandOrAnswer;
    reply = "ANSWER: " + answer;
  } else {
    // Wrong chunks read first: a distractor's chunk half the time, and with
    // two answers perhaps one of them.
    expanded.push_back(!distractor_chunks.empty() && unit(rng) < 0.5
                           ? distractor_chunks[below(rng, distractor_chunks.size())]
                           : others[below(rng, others.size())]);
    if (two && unit(rng) < 0.5) expanded.push_back(answer_chunks[below(rng, 2)]);
    std::vector<std::size_t> missing;
    for (std::size_t c : answer_chunks) {
      if (std::find(expanded.begin(), expanded.end(), c) == expanded.end()) missing.push_back(c);
    }
    left = 2 + static_cast<int>(below(rng, 2));
    rule = RoundRule::ExpandOrAnswer;
    reply = "EXPAND: " + chunk_list(missing);
  }
  std::sort(expanded.begin(), expanded.end());
  const std::string user = build_round_prompt(chunks, expanded, question, rule, left);
  std::vector<TextPiece> pieces = prompt_pieces(format_chatml({{"user", user}}, true));
  pieces.push_back({TextPiece::Kind::Target, reply + "<|im_end|>"});
  if (info) {
    *info = {std::move(chunks),
             std::move(answer_chunks),
             std::move(expanded),
             question,
             answer,
             std::move(reply),
             static_cast<int>(rule),
             left};
  }
  return pieces;
}

std::vector<TextPiece> DataGenerator::example(std::uint64_t index, const TaskMix& mix) const {
  std::mt19937_64 rng = example_rng(index);
  const double shares[] = {mix.continual,
                           mix.reconstruction,
                           mix.retrieval,
                           mix.plain_retrieval,
                           mix.plain_reconstruction,
                           mix.facts,
                           mix.plain_facts,
                           mix.agent};
  constexpr std::size_t kTasks = sizeof(shares) / sizeof(shares[0]);
  double total = 0;
  for (double v : shares) total += v;
  double pick = unit(rng) * total;
  // The last task with a share takes what rounding leaves.
  std::size_t last = kTasks - 1;
  while (last > 0 && shares[last] <= 0) --last;
  std::size_t task = 0;
  while (task < last && pick >= shares[task]) pick -= shares[task++];
  switch (task) {
    case 0:
      return continual(rng);
    case 1:
      return reconstruction(rng);
    case 2:
      return retrieval(rng, example_ratio(index), true);
    case 3:
      return retrieval(rng, example_ratio(index), false);
    case 4:
      return reconstruction(rng, nullptr, false);
    case 5:
      return facts(rng, example_ratio(index), true);
    case 6:
      return facts(rng, example_ratio(index), false);
    default:
      return agent_round(rng, example_ratio(index));
  }
}

Example pack_examples(const DataGenerator& data, const ExampleTokenizer& tokens, const TaskMix& mix,
                      std::uint64_t& next_index, std::size_t seq_len) {
  Example packed;
  while (packed.ids.size() < seq_len) {
    const std::uint64_t index = next_index++;
    Example ex = tokens.tokenize(data.example(index, mix), data.example_ratio(index));
    const std::size_t room = seq_len - packed.ids.size();
    const bool cut = ex.ids.size() > room;
    if (cut) {
      // Keep the first `room` tokens, less a region the cut would split.
      std::size_t open = room, kept_regions = 0;
      for (std::size_t i = 0; i < room; ++i) {
        if (ex.ids[i] == tokens.memory_start()) open = i;
        if (ex.ids[i] == tokens.memory_end()) {
          open = room;
          ++kept_regions;
        }
      }
      ex.ids.resize(open);
      ex.loss.resize(open);
      ex.regions.resize(kept_regions);
      ex.region_ratios.resize(kept_regions);
    }
    if (!ex.ids.empty()) packed.starts.push_back(packed.ids.size());
    packed.ids.insert(packed.ids.end(), ex.ids.begin(), ex.ids.end());
    packed.loss.insert(packed.loss.end(), ex.loss.begin(), ex.loss.end());
    for (auto& r : ex.regions) packed.regions.push_back(std::move(r));
    packed.region_ratios.insert(packed.region_ratios.end(), ex.region_ratios.begin(),
                                ex.region_ratios.end());
    if (cut) break;
  }
  return packed;
}

}  // namespace lclm::train
