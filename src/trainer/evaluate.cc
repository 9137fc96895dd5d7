#include "trainer/evaluate.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <sstream>

#include "compression/lclm_model.h"
#include "compression/memory_regions.h"
#include "eval/ruler_tasks.h"
#include "runtime/engine.h"
#include "trainer/data.h"
#include "util/error.h"
#include "util/hash.h"

namespace lclm::train {

namespace {

// One prompt and what a right answer is, shared by every ratio.
struct Sample {
  std::string text;    // haystack or passage
  std::string answer;  // needle: the number; reconstruction, numbers: the passage
  std::string question;
  std::string prefix;            // what a right answer starts with
  std::size_t needle_token = 0;  // needle: encoder token of the number's first digit
};

// The first `n` space-separated words of text.
std::string first_words(const std::string& text, std::size_t n) {
  std::size_t at = 0;
  for (std::size_t k = 0; k < n && at != std::string::npos; ++k) {
    at = text.find(' ', at == 0 ? 0 : at + 1);
  }
  return at == std::string::npos ? text : text.substr(0, at);
}

constexpr const char* kUserTurn = "<|im_start|>user\n";

// Text of exactly `tokens` encoder tokens, cut from passages of one or more
// documents joined by spaces.
std::string text_of_tokens(const Corpus& corpus, const Tokenizer& tokenizer, std::mt19937_64& rng,
                           std::size_t tokens) {
  std::string text;
  std::vector<std::int32_t> ids;
  while (ids.size() < tokens) {
    if (!text.empty()) text += ' ';
    text += corpus.passage(rng, (tokens - ids.size()) * 5 + 64);
    ids = tokenizer.encode(text);
  }
  ids.resize(tokens);
  return tokenizer.decode(ids);
}

std::vector<Sample> needle_samples(const Corpus& corpus, const Tokenizer& tokenizer,
                                   std::uint64_t seed, std::size_t tokens, std::size_t n) {
  std::vector<Sample> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::mt19937_64 rng(mix64(seed ^ (tokens * 0x9E3779B97F4A7C15ull) ^ (i + 1)));
    const std::string key = needle_key(rng);
    const std::string number = std::to_string(1000000 + rng() % 9000000);
    const std::string needle = needle_sentence(key, number);
    // The haystack with the needle has `tokens` tokens in all.
    std::string haystack = text_of_tokens(
        corpus, tokenizer, rng, tokens - std::min(tokens / 2, tokenizer.encode(needle).size() + 1));
    insert_at_sentence_end(rng, haystack, needle);
    const std::string sentence = needle_sentence(key, "");
    const std::size_t digits = haystack.find(needle) + needle.find(number);
    const std::size_t needle_token = tokenizer.encode(haystack.substr(0, digits)).size();
    out.push_back({std::move(haystack), number, needle_question(key),
                   sentence.substr(0, sentence.size() - 1), needle_token});
  }
  return out;
}

std::vector<Sample> passage_samples(const Corpus& corpus, const Tokenizer& tokenizer,
                                    std::uint64_t seed, std::size_t tokens, std::size_t n) {
  std::vector<Sample> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::mt19937_64 rng(mix64(seed ^ (tokens * 0xD6E8FEB86659FD93ull) ^ (i + 1)));
    std::string passage = text_of_tokens(corpus, tokenizer, rng, tokens);
    out.push_back({passage, passage, "", first_words(passage, 8)});
  }
  return out;
}

std::vector<Sample> number_samples(std::uint64_t seed, std::size_t tokens, std::size_t n) {
  std::vector<Sample> out;
  for (std::size_t i = 0; i < n; ++i) {
    std::mt19937_64 rng(mix64(seed ^ (tokens * 0xA0761D6478BD642Full) ^ (i + 1)));
    // One token a character: cut to `tokens`, without a trailing separator.
    std::string numbers = random_numbers(rng, tokens).substr(0, tokens);
    while (!numbers.empty() && (numbers.back() == ' ' || numbers.back() == ',')) numbers.pop_back();
    out.push_back({numbers, numbers, "", numbers.substr(0, numbers.find(','))});
  }
  return out;
}

std::string region(const std::string& text, bool compressed) {
  if (!compressed) return text;
  return std::string(kMemoryStart) + text + std::string(kMemoryEnd);
}

// The training prompts (trainer/data.cc), the region compressed or not.
std::string needle_prompt(const Sample& s, bool compressed) {
  return kUserTurn + region(s.text, compressed) + "\n" + s.question +
         "<|im_end|>\n<|im_start|>assistant\n";
}
std::string reconstruction_prompt(const Sample& s, bool compressed) {
  return kUserTurn + region(s.text, compressed) + kReconstructionInstruction;
}

struct Answer {
  std::string text;
  std::size_t prompt_positions = 0;
  double ttft_ms = 0;
};

// Greedy answer from a fresh session; ratio 0 reads plain text.
Answer answer(Engine& engine, const std::string& prompt, std::int64_t ratio, int max_tokens) {
  const auto t0 = std::chrono::steady_clock::now();
  const PreparedPrompt p =
      engine.prepare(prompt, ratio > 0 ? std::optional<std::int64_t>(ratio) : std::nullopt);
  GenerationOptions options;
  options.n_predict = max_tokens;
  options.sampling.temperature = 0.0f;
  options.stop_ids = engine.stop_ids();
  const GenerationStats stats = engine.new_session().generate(p, options);
  Answer a;
  a.text = engine.tokenizer().decode(stats.tokens);
  a.prompt_positions = p.ids.size();
  a.ttft_ms = (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() -
               stats.decode_seconds) *
              1e3;
  return a;
}

// The share of `want`'s elements that `got` has at the same index.
template <typename Sequence>
double share_in_place(const Sequence& got, const Sequence& want) {
  if (want.empty()) return 0.0;
  std::size_t same = 0;
  for (std::size_t i = 0; i < want.size() && i < got.size(); ++i) same += want[i] == got[i] ? 1 : 0;
  return static_cast<double>(same) / static_cast<double>(want.size());
}

}  // namespace

double digit_agreement(const std::string& answer, const std::string& number,
                       const std::string& after) {
  if (number.empty()) return 0.0;
  std::size_t at = after.empty() ? 0 : answer.find(after);
  at = at == std::string::npos ? 0 : at + after.size();
  // The first run of digits from there, scored against the number.
  constexpr const char* kDigits = "0123456789";
  at = answer.find_first_of(kDigits, at);
  if (at == std::string::npos) return 0.0;
  return share_in_place(answer.substr(at, answer.find_first_not_of(kDigits, at) - at), number);
}

double char_agreement(const std::string& answer, const std::string& reference) {
  return share_in_place(answer, reference);
}

double word_agreement(const std::string& answer, const std::string& reference) {
  return share_in_place(words_of(answer), words_of(reference));
}

void keep_tasks(RecallEvalOptions& options, const std::vector<std::string>& tasks) {
  const std::map<std::string, std::vector<std::size_t>*> lengths = {
      {"needle", &options.haystack_tokens},
      {"reconstruction", &options.passage_tokens},
      {"numbers", &options.number_tokens}};
  for (const std::string& task : tasks) {
    const auto it = lengths.find(task);
    if (it == lengths.end()) {
      throw Error("unknown task " + task + " (needle, reconstruction or numbers)");
    }
    if (it->second->empty()) {
      throw Error("task " + task + " has no lengths to run (--lengths, --passages, --numbers)");
    }
  }
  for (const auto& [task, task_lengths] : lengths) {
    if (std::find(tasks.begin(), tasks.end(), task) == tasks.end()) task_lengths->clear();
  }
}

std::vector<RecallResult> evaluate_recall(const RecallEvalOptions& options) {
  if (!LclmModel::is_checkpoint(options.checkpoint)) {
    throw Error(options.checkpoint.string() + " is not an LCLM checkpoint (no model_config.json)");
  }
  const Corpus corpus = Corpus::from_paths(options.text);
  const std::unique_ptr<Engine> engine = Engine::load(options.checkpoint);
  for (std::int64_t r : options.ratios) {
    if (r < 0) throw Error("ratio " + std::to_string(r) + ": give 0 (uncompressed) or more");
    if (r > 0) engine->ratio(r);  // one the checkpoint cannot run fails before any work
  }
  const Tokenizer& tokenizer = engine->lclm()->encoder_tokenizer();

  std::vector<RecallResult> results;
  const auto run_task = [&](const std::string& task, std::size_t tokens,
                            const std::vector<Sample>& samples) {
    for (std::int64_t r : options.ratios) {
      RecallResult cell{task, r, tokens, samples.size()};
      for (std::size_t i = 0; i < samples.size(); ++i) {
        const Sample& s = samples[i];
        const bool needle = task == "needle";
        const std::string prompt =
            needle ? needle_prompt(s, r > 0) : reconstruction_prompt(s, r > 0);
        const int max_tokens = needle ? 32 : static_cast<int>(tokens) + 16;
        const Answer a = answer(*engine, prompt, r, max_tokens);
        const bool right = needle ? a.text.find(s.answer) != std::string::npos : a.text == s.answer;
        const bool prefix_right = a.text.rfind(s.prefix, 0) == 0;
        const double agreement = needle              ? digit_agreement(a.text, s.answer, s.prefix)
                                 : task == "numbers" ? char_agreement(a.text, s.answer)
                                                     : word_agreement(a.text, s.answer);
        cell.correct += right ? 1 : 0;
        cell.prefix_correct += prefix_right ? 1 : 0;
        cell.mean_agreement += agreement;
        cell.mean_prompt_positions += static_cast<double>(a.prompt_positions);
        cell.mean_ttft_ms += a.ttft_ms;
        if (options.answers) {
          nlohmann::json line = {{"task", task},
                                 {"tokens", tokens},
                                 {"ratio", r},
                                 {"sample", i},
                                 {"expected", s.answer},
                                 {"answer", a.text},
                                 {"correct", right},
                                 {"prefix_correct", prefix_right},
                                 {"agreement", agreement},
                                 {"prompt_positions", a.prompt_positions},
                                 {"ttft_ms", a.ttft_ms}};
          if (needle) line["needle_token"] = s.needle_token;
          // Replace: a model may stop inside a multi-byte character.
          *options.answers << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                           << std::endl;
        }
      }
      if (!samples.empty()) {
        cell.mean_agreement /= static_cast<double>(samples.size());
        cell.mean_prompt_positions /= static_cast<double>(samples.size());
        cell.mean_ttft_ms /= static_cast<double>(samples.size());
      }
      if (options.progress) {
        *options.progress << task << " " << tokens << " tokens, "
                          << (r > 0 ? std::to_string(r) + "x" : std::string("uncompressed")) << ": "
                          << cell.correct << "/" << cell.samples << ", agreement "
                          << cell.mean_agreement << std::endl;
      }
      results.push_back(cell);
    }
  };
  for (std::size_t tokens : options.haystack_tokens) {
    run_task("needle", tokens,
             needle_samples(corpus, tokenizer, options.seed, tokens, options.samples));
  }
  for (std::size_t tokens : options.passage_tokens) {
    run_task("reconstruction", tokens,
             passage_samples(corpus, tokenizer, options.seed, tokens, options.samples));
  }
  for (std::size_t tokens : options.number_tokens) {
    run_task("numbers", tokens, number_samples(options.seed, tokens, options.samples));
  }
  return results;
}

std::string recall_markdown(const std::vector<RecallResult>& results) {
  std::ostringstream out;
  struct Table {
    std::string task;
    const char* title;
    const char* graded;  // what mean_agreement counts in place
  };
  for (const auto& [task, title, graded] :
       {Table{"needle", "Needle retrieval accuracy", "digits"},
        Table{"reconstruction", "Reconstruction exact match", "words"},
        Table{"numbers", "Number copying exact match", "characters"}}) {
    std::vector<std::int64_t> ratios;
    std::vector<std::size_t> lengths;
    for (const RecallResult& r : results) {
      if (r.task != task) continue;
      if (std::find(ratios.begin(), ratios.end(), r.ratio) == ratios.end())
        ratios.push_back(r.ratio);
      if (std::find(lengths.begin(), lengths.end(), r.tokens) == lengths.end()) {
        lengths.push_back(r.tokens);
      }
    }
    if (lengths.empty()) continue;
    out << "\n"
        << title << " (correct / samples, answers with the right prefix, " << graded
        << " in place; mean TTFT)\n\n| tokens |";
    for (std::int64_t r : ratios) {
      if (r > 0) {
        out << " " << r << "x |";
      } else {
        out << " uncompressed |";
      }
    }
    out << "\n|---|";
    for (std::size_t i = 0; i < ratios.size(); ++i) out << "---|";
    out << "\n";
    for (std::size_t len : lengths) {
      out << "| " << len << " |";
      for (std::int64_t ratio : ratios) {
        for (const RecallResult& r : results) {
          if (r.task != task || r.tokens != len || r.ratio != ratio) continue;
          char cell[128];
          std::snprintf(cell, sizeof cell,
                        " %.0f%% (%zu/%zu, prefix %zu, %.0f%% in place; %.0f ms) |",
                        100.0 * r.accuracy(), r.correct, r.samples, r.prefix_correct,
                        100.0 * r.mean_agreement, r.mean_ttft_ms);
          out << cell;
        }
      }
      out << "\n";
    }
  }
  return out.str();
}

std::string recall_json(const std::vector<RecallResult>& results) {
  nlohmann::json j = nlohmann::json::array();
  for (const RecallResult& r : results) {
    j.push_back({{"task", r.task},
                 {"ratio", r.ratio},
                 {"tokens", r.tokens},
                 {"samples", r.samples},
                 {"correct", r.correct},
                 {"prefix_correct", r.prefix_correct},
                 {"mean_agreement", r.mean_agreement},
                 {"accuracy", r.accuracy()},
                 {"mean_prompt_positions", r.mean_prompt_positions},
                 {"mean_ttft_ms", r.mean_ttft_ms}});
  }
  return j.dump(2) + "\n";
}

}  // namespace lclm::train
