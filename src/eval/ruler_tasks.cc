#include "eval/ruler_tasks.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <random>

#include "compression/memory_regions.h"
#include "eval/facts.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/random.h"

namespace lclm {
namespace {

// The needle keys' words, shared with the trainer (src/trainer/data.cc).
constexpr std::array<const char*, 16> kAdjectives = {
    "amber",  "brave", "calm",  "dusty", "eager",  "frozen", "gentle", "hollow",
    "silent", "jolly", "lucky", "misty", "narrow", "orange", "proud",  "quiet"};
constexpr std::array<const char*, 16> kNouns = {
    "anchor", "badger", "canyon", "dolphin", "ember",  "falcon", "garden", "harbor",
    "island", "jungle", "kettle", "lantern", "meadow", "nebula", "orchid", "pebble"};

// `count` distinct adjective-noun keys.
std::vector<std::string> draw_keys(std::mt19937_64& rng, std::size_t count) {
  std::vector<std::string> keys;
  while (keys.size() < count) {
    std::string key = needle_key(rng);
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
  }
  return keys;
}

std::string seven_digits(std::mt19937_64& rng) {
  return std::to_string(1000000 + below(rng, 9000000));
}

// Inserts each statement into the words at its depth (a fraction of the
// text), after the next word that ends a sentence; depths ascend so the
// statements keep their order.
std::string insert_at_depths(std::vector<std::string> words,
                             const std::vector<std::string>& statements,
                             std::vector<double> depths) {
  std::sort(depths.begin(), depths.end());
  std::size_t from = 0;
  std::vector<std::pair<std::size_t, std::string>> inserts;
  for (std::size_t s = 0; s < statements.size(); ++s) {
    std::size_t at = std::max(from, static_cast<std::size_t>(depths[s] * words.size()));
    while (at > 0 && at < words.size() && words[at - 1].back() != '.') ++at;
    at = std::min(at, words.size());
    inserts.emplace_back(at, statements[s]);
    from = at;
  }
  for (auto it = inserts.rbegin(); it != inserts.rend(); ++it) {
    words.insert(words.begin() + static_cast<std::ptrdiff_t>(it->first), it->second);
  }
  std::string text;
  for (const std::string& w : words) text += (text.empty() ? "" : " ") + w;
  return text;
}

std::vector<double> draw_depths(std::mt19937_64& rng, std::size_t n) {
  std::vector<double> d(n);
  for (double& x : d) x = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  return d;
}

std::string join_quoted(const std::vector<std::string>& keys) {
  std::string out;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    out += (i == 0 ? "" : i + 1 == keys.size() ? " and " : ", ") + keys[i];
  }
  return out;
}

// Whether `s` ends inside a UTF-8 character (a token cut can split one).
bool ends_mid_character(const std::string& s) {
  std::size_t continuation = 0;
  for (auto it = s.rbegin(); it != s.rend() && continuation < 4; ++it) {
    const auto c = static_cast<unsigned char>(*it);
    if ((c & 0xC0) == 0x80) {
      ++continuation;
      continue;
    }
    const std::size_t length = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
    return continuation + 1 < length;
  }
  return continuation > 0;
}

// The share of `want`'s elements that `got` has at the same index.
template <typename Sequence>
double share_in_place(const Sequence& got, const Sequence& want) {
  if (want.empty()) return 0.0;
  std::size_t same = 0;
  for (std::size_t i = 0; i < want.size() && i < got.size(); ++i) same += want[i] == got[i] ? 1 : 0;
  return static_cast<double>(same) / static_cast<double>(want.size());
}

std::vector<std::string_view> words_of(std::string_view text) {
  std::vector<std::string_view> words;
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  for (std::size_t at = text.find_first_not_of(kSpace); at != std::string_view::npos;) {
    const std::size_t end = text.find_first_of(kSpace, at);
    words.push_back(text.substr(at, end == std::string_view::npos ? end : end - at));
    at = end == std::string_view::npos ? end : text.find_first_not_of(kSpace, end);
  }
  return words;
}

// The first `n` words of text, joined by single spaces.
std::string first_words(std::string_view text, std::size_t n) {
  std::string out;
  for (std::string_view w : words_of(text)) {
    if (n-- == 0) break;
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string_view ruler_task_name(RulerTask task) {
  switch (task) {
    case RulerTask::SingleNeedle:
      return "niah_single";
    case RulerTask::MultiNeedle:
      return "niah_multi";
    case RulerTask::MultiKey:
      return "niah_multikey";
    case RulerTask::MultiValue:
      return "niah_multivalue";
    case RulerTask::VariableTracking:
      return "vt";
    case RulerTask::CommonWords:
      return "cwe";
    case RulerTask::Reconstruction:
      return "reconstruction";
    case RulerTask::Numbers:
      return "numbers";
    case RulerTask::Facts:
      return "facts";
  }
  return "?";
}

const std::vector<RulerTask>& all_ruler_tasks() {
  static const std::vector<RulerTask> all = {
      RulerTask::SingleNeedle, RulerTask::MultiNeedle,      RulerTask::MultiKey,
      RulerTask::MultiValue,   RulerTask::VariableTracking, RulerTask::CommonWords,
      RulerTask::Facts,        RulerTask::Reconstruction,   RulerTask::Numbers};
  return all;
}

bool is_copy_task(RulerTask task) {
  return task == RulerTask::Reconstruction || task == RulerTask::Numbers;
}

RulerTask parse_ruler_task(std::string_view name) {
  if (name == "needle") return RulerTask::SingleNeedle;
  std::string known = "needle";
  for (RulerTask t : all_ruler_tasks()) {
    if (ruler_task_name(t) == name) return t;
    known += (known.empty() ? "" : ", ") + std::string(ruler_task_name(t));
  }
  throw Error("unknown task \"" + std::string(name) + "\" (known: " + known + ")");
}

std::string needle_key(std::mt19937_64& rng) {
  return std::string(kAdjectives[below(rng, kAdjectives.size())]) + "-" +
         kNouns[below(rng, kNouns.size())];
}

std::vector<std::string> needle_key_words() {
  std::vector<std::string> words(kAdjectives.begin(), kAdjectives.end());
  words.insert(words.end(), kNouns.begin(), kNouns.end());
  return words;
}

std::string needle_sentence(std::string_view key, std::string_view value) {
  return "The special magic number for " + std::string(key) + " is " + std::string(value) + ".";
}

std::string needle_question(std::string_view key) {
  return "What is the special magic number for " + std::string(key) +
         " mentioned in the text above?";
}

std::string eval_prompt(const EvalSample& sample, bool compressed) {
  const std::string context =
      compressed ? std::string(kMemoryStart) + sample.context + std::string(kMemoryEnd)
                 : sample.context;
  return "<|im_start|>user\n" + context + "\n" + sample.question +
         "<|im_end|>\n<|im_start|>assistant\n";
}

double score_answers(std::string_view output, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const std::string text = lower(output);
  std::size_t found = 0;
  for (const std::string& a : answers) found += text.find(lower(a)) != std::string::npos;
  return static_cast<double>(found) / static_cast<double>(answers.size());
}

double digit_agreement(std::string_view answer, std::string_view number, std::string_view after) {
  if (number.empty()) return 0.0;
  std::size_t at = after.empty() ? 0 : answer.find(after);
  at = at == std::string_view::npos ? 0 : at + after.size();
  // The first run of digits from there, scored against the number.
  constexpr std::string_view kDigits = "0123456789";
  at = answer.find_first_of(kDigits, at);
  if (at == std::string_view::npos) return 0.0;
  return share_in_place(answer.substr(at, answer.find_first_not_of(kDigits, at) - at), number);
}

double word_agreement(std::string_view answer, std::string_view reference) {
  return share_in_place(words_of(answer), words_of(reference));
}

double char_agreement(std::string_view answer, std::string_view reference) {
  return share_in_place(answer, reference);
}

std::string random_numbers(std::mt19937_64& rng, std::size_t tokens) {
  std::string out;
  std::size_t used = 0;
  do {
    if (!out.empty()) {
      out += ", ";
      used += 2;
    }
    const std::size_t digits = 3 + below(rng, 7);
    out += static_cast<char>('1' + below(rng, 9));
    for (std::size_t d = 1; d < digits; ++d) out += static_cast<char>('0' + below(rng, 10));
    used += digits;
  } while (used < tokens);
  return out;
}

Grade grade_answer(const EvalSample& sample, std::string_view output) {
  Grade g;
  if (!sample.prefix.empty()) g.prefix_correct = output.substr(0, sample.prefix.size()) == sample.prefix;
  switch (sample.task) {
    case RulerTask::Reconstruction:
    case RulerTask::Numbers: {
      const std::string& passage = sample.answers.at(0);
      g.score = output == passage ? 1.0 : 0.0;
      g.agreement = sample.task == RulerTask::Numbers ? char_agreement(output, passage)
                                                      : word_agreement(output, passage);
      return g;
    }
    case RulerTask::SingleNeedle:
    case RulerTask::MultiKey:
      g.score = score_answers(output, sample.answers);
      g.agreement = digit_agreement(output, sample.answers.at(0), sample.prefix);
      return g;
    case RulerTask::Facts: {
      g.score = score_answers(output, sample.answers);
      const std::string& value = sample.answers.at(0);
      const bool numeric =
          std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
      g.agreement = numeric ? digit_agreement(output, value, sample.prefix) : g.score;
      return g;
    }
    default:
      g.score = score_answers(output, sample.answers);
      g.agreement = g.score;
      return g;
  }
}

RulerTaskGenerator::RulerTaskGenerator(const Haystack& haystack, const Tokenizer& tokenizer,
                                       std::uint64_t seed)
    : haystack_(haystack), tokenizer_(tokenizer), seed_(seed) {}

std::size_t RulerTaskGenerator::prompt_tokens(const EvalSample& sample) const {
  return tokenizer_.encode(eval_prompt(sample, false)).size();
}

// `size` is the haystack's words (the list's entries for cwe). Everything
// drawn before the haystack is independent of size, so resizing a sample
// keeps its keys, values and depths.
EvalSample RulerTaskGenerator::build(RulerTask task, std::size_t size,
                                     std::uint64_t sample_seed) const {
  std::mt19937_64 rng(sample_seed);
  EvalSample s;
  s.task = task;
  std::vector<std::string> statements;
  switch (task) {
    case RulerTask::SingleNeedle:
    case RulerTask::MultiKey:
    case RulerTask::MultiNeedle: {
      const std::size_t n = task == RulerTask::SingleNeedle ? 1
                            : task == RulerTask::MultiKey   ? 4
                                                            : 3;
      const std::vector<std::string> keys = draw_keys(rng, n);
      for (const std::string& key : keys) {
        s.answers.push_back(seven_digits(rng));
        statements.push_back(needle_sentence(key, s.answers.back()));
      }
      if (task == RulerTask::MultiNeedle) {
        s.question = "What are the special magic numbers for " + join_quoted(keys) +
                     " mentioned in the text above?";
        s.n_predict = 96;
      } else {
        s.question = needle_question(keys.front());
        s.answers.resize(1);  // multikey: the other needles are distractors
        s.n_predict = 32;
        const std::string sentence = needle_sentence(keys.front(), "");
        s.prefix = sentence.substr(0, sentence.size() - 1);  // "... for KEY is "
      }
      std::shuffle(statements.begin(), statements.end(), rng);
      break;
    }
    case RulerTask::MultiValue: {
      const std::string key = draw_keys(rng, 1).front();
      for (int i = 0; i < 4; ++i) {
        s.answers.push_back(seven_digits(rng));
        statements.push_back(needle_sentence(key, s.answers.back()));
      }
      s.question =
          "What are all the special magic numbers for " + key + " mentioned in the text above?";
      s.n_predict = 96;
      break;
    }
    case RulerTask::Facts: {
      const Fact asked = make_fact(rng, FactSplit::Heldout);
      std::vector<std::string> subjects{asked.subject};
      statements.push_back(asked.sentence);
      for (int d = 0; d < 2; ++d) {
        const Fact other = make_fact(rng, FactSplit::Heldout, asked.family, subjects);
        subjects.push_back(other.subject);
        statements.push_back(other.sentence);
      }
      std::shuffle(statements.begin(), statements.end(), rng);
      s.question = asked.question;
      s.answers = {asked.value};
      s.prefix = asked.prefix;
      s.n_predict = 48;
      break;
    }
    case RulerTask::VariableTracking: {
      const std::string value = std::to_string(10000 + below(rng, 90000));
      std::string previous = value;
      while (s.answers.size() < 5) {
        std::string name;
        for (int i = 0; i < 5; ++i) name.push_back(static_cast<char>('A' + below(rng, 26)));
        if (std::find(s.answers.begin(), s.answers.end(), name) != s.answers.end()) continue;
        statements.push_back("VAR " + name + " = " + previous + ".");
        s.answers.push_back(name);
        previous = name;
      }
      s.question =
          "Find all variables that are assigned the value " + value + " in the text above.";
      s.n_predict = 48;
      break;
    }
    case RulerTask::Reconstruction:
    case RulerTask::Numbers:
      throw Error(std::string(ruler_task_name(task)) + " is a copy task (passage)");
    case RulerTask::CommonWords: {
      std::vector<std::string> vocabulary = haystack_.vocabulary();
      std::shuffle(vocabulary.begin(), vocabulary.end(), rng);
      const std::size_t common = 2 + size / 50;  // appearances of each of the ten common words
      const std::size_t rare = 1 + common / 4;   // appearances of every other word
      const std::size_t distinct_rare = size > 10 * common ? (size - 10 * common) / rare : 0;
      if (vocabulary.size() < 10 + distinct_rare) {
        throw Error("the haystack has " + std::to_string(vocabulary.size()) +
                    " distinct words; cwe at this length needs " +
                    std::to_string(10 + distinct_rare));
      }
      std::vector<std::string> list;
      for (std::size_t w = 0; w < 10 + distinct_rare; ++w) {
        list.insert(list.end(), w < 10 ? common : rare, vocabulary[w]);
      }
      s.answers.assign(vocabulary.begin(), vocabulary.begin() + 10);
      std::mt19937_64 order(sample_seed ^ size);
      std::shuffle(list.begin(), list.end(), order);
      s.context =
          "Below is a numbered list of words. In these words, some appear more often than "
          "others. Memorize the ones that appear most often.";
      for (std::size_t i = 0; i < list.size(); ++i) {
        s.context += "\n" + std::to_string(i + 1) + ". " + list[i];
      }
      s.question = "What are the 10 most common words in the above list?";
      s.n_predict = 64;
      return s;
    }
  }
  const std::vector<double> depths = draw_depths(rng, statements.size());
  s.context = insert_at_depths(haystack_.words(rng, size), statements, depths);
  return s;
}

// A copy task's passage of `tokens` tokens: haystack words cut at that
// token, or random numbers cut at that character.
EvalSample RulerTaskGenerator::passage(RulerTask task, std::size_t tokens,
                                       std::uint64_t sample_seed) const {
  std::mt19937_64 rng(sample_seed);
  EvalSample s;
  s.task = task;
  std::string text;
  if (task == RulerTask::Numbers) {
    // One token a character: cut to `tokens`, without a trailing separator.
    text = random_numbers(rng, tokens).substr(0, tokens);
    while (!text.empty() && (text.back() == ' ' || text.back() == ',')) text.pop_back();
    s.prefix = text.substr(0, text.find(','));
  } else {
    // Every word is at least one token, so `tokens` words are enough.
    std::string words;
    for (const std::string& w : haystack_.words(rng, tokens)) {
      if (!words.empty()) words += ' ';
      words += w;
    }
    std::vector<std::int32_t> ids = tokenizer_.encode(words);
    if (ids.size() > tokens) ids.resize(tokens);
    text = tokenizer_.decode(ids);
    while (!ids.empty() && ends_mid_character(text)) {
      ids.pop_back();
      text = tokenizer_.decode(ids);
    }
    s.prefix = first_words(text, 8);
  }
  s.context = text;
  s.answers = {std::move(text)};
  s.question = kCopyQuestion;
  s.n_predict = static_cast<int>(tokens) + 16;
  return s;
}

EvalSample RulerTaskGenerator::make(RulerTask task, std::size_t tokens, std::size_t index) const {
  const std::uint64_t sample_seed = mix64(mix64(seed_ ^ (static_cast<std::uint64_t>(task) << 56)) +
                                          tokens * 0x9E3779B97F4A7C15ull + index);
  if (is_copy_task(task)) {
    if (tokens == 0) throw Error(std::string(ruler_task_name(task)) + ": a passage of 0 tokens");
    return passage(task, tokens, sample_seed);
  }
  // The largest size whose prompt fits: sizes start at ~0.7 words (or 0.25
  // list entries) per token and are rescaled by the measured count, which
  // brackets the answer when the text's density holds; then bisection, since
  // it need not (a file of short lines or non-English text changes it). A
  // sample's draws do not depend on its size, so more words only add text
  // and the count grows with the size.
  const double per_token = task == RulerTask::CommonWords ? 0.25 : 0.7;
  std::size_t size = std::max<std::size_t>(1, static_cast<std::size_t>(per_token * tokens));
  std::size_t fits = 0, too_big = 0;  // 0: none known yet
  std::size_t best_got = 0;
  std::optional<EvalSample> best;
  const auto try_size = [&](std::size_t n) {
    EvalSample s = build(task, n, sample_seed);
    const std::size_t got = prompt_tokens(s);
    if (got <= tokens) {
      if (n > fits) {
        fits = n;
        best_got = got;
        best = std::move(s);
      }
    } else if (too_big == 0 || n < too_big) {
      too_big = n;
    }
    return got;
  };
  for (int round = 0; round < 3; ++round) {
    const std::size_t got = try_size(size);
    if (got == tokens) break;
    size = std::max<std::size_t>(
        1, static_cast<std::size_t>(static_cast<double>(size) * tokens / got * 0.995));
    if ((too_big != 0 && size >= too_big) || size <= fits) break;
  }
  if (fits == 0 && try_size(1) > tokens) {
    throw Error(std::string(ruler_task_name(task)) + " does not fit in " + std::to_string(tokens) +
                " tokens");
  }
  while (too_big == 0) try_size(fits + fits / 8 + 1);  // the text wraps, so this ends
  while (too_big - fits > 1 && best_got != tokens) try_size(fits + (too_big - fits) / 2);
  EvalSample s = std::move(*best);
  if (task == RulerTask::SingleNeedle) {
    const std::size_t digits = s.context.find(s.prefix + s.answers[0]) + s.prefix.size();
    s.needle_token = tokenizer_.encode(s.context.substr(0, digits)).size();
  }
  return s;
}

}  // namespace lclm
