// `lclm eval` and `lclm bench`: the same decoder answers the same RULER-style
// samples with the whole text in its KV cache (full), with the text
// compressed to latents by the LCLM encoder (latent, at ratio r), with the
// skim-and-expand agent reading the text in chunks compressed at r and
// expanding the ones it asks for (agent), or with the plain text and a
// KV-cache policy keeping 1/r of the entries (streaming, h2o, snapkv,
// pyramidkv, indexmem). Each run is scored against the sample's answers and
// timed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "compression/lclm_model.h"
#include "eval/haystack.h"
#include "eval/ruler_tasks.h"
#include "kv/indexmem.h"
#include "runtime/engine.h"

namespace lclm {

struct EvalConfig {
  std::filesystem::path checkpoint;               // an LCLM checkpoint
  std::vector<std::string> methods = {"full"};    // "full", "latent", "agent", or a KV policy
  std::vector<std::int64_t> ratios = {4, 8, 16};  // compression ratios (not for "full")
  std::vector<std::size_t> lengths = {1024};      // prompt lengths in decoder tokens
  std::vector<std::size_t> passages = {32, 64, 128};  // copy tasks: passage lengths in tokens
  std::vector<RulerTask> tasks = {RulerTask::SingleNeedle};
  std::size_t samples = 1;  // per (length, task)
  std::uint64_t seed = 0;
  std::size_t prefill_chunk = 512;
  std::vector<std::filesystem::path> haystack = default_haystack_paths();
  std::filesystem::path indexmem;  // IndexMem weights; empty: CHECKPOINT/indexmem
  int threads = 0;                 // kernel threads (0: every hardware thread)
};

// "latent", "agent" and the KV policy names; throws lclm::Error for anything else.
void check_eval_method(const std::string& method);

struct EvalRecord {
  std::string prompt_id;  // "TASK-LENGTH-SAMPLE": the same prompt for every method and ratio
  std::string method;
  std::int64_t ratio = 1;  // 1 for full
  std::size_t length = 0;  // the length asked for (copy tasks: the passage's)
  RulerTask task = RulerTask::SingleNeedle;
  std::size_t sample = 0;
  std::size_t prompt_tokens = 0;  // decoder tokens of the uncompressed prompt
  std::size_t positions = 0;      // decoder positions prefilled (latent: after the splice; agent:
                                  // computed over all rounds, the reused prefix not counted)
  double score = 0;               // fraction of the answers found (copy tasks: exact match)
  double agreement = 0;           // graded in place (grade_answer: digits, words, characters)
  std::optional<bool> prefix_correct;     // the output starts as a right one does (grade_answer)
  std::optional<std::size_t> needle_token;  // niah_single: the number's token in the context
  double ttft_ms = 0;  // prompt text to first token: tokenize, compress, prefill, sample
                       // (agent: to the final answer's first token, every round before it
                       // included)
  std::optional<std::size_t> rounds;    // agent: model calls made
  std::optional<std::size_t> chunks;    // agent: chunks of the document
  std::optional<std::size_t> expanded;  // agent: chunks it read in full
  std::size_t peak_rss_bytes = 0;     // peak resident set during the run
  std::size_t peak_extra_bytes = 0;   // that peak minus the resident set at the start of the run
  std::size_t kv_bytes = 0;           // keys and values held once the prompt is in
  std::size_t kv_peak_bytes = 0;      // the most the KV cache allocated (before eviction)
  std::vector<std::string> expected;  // the answers the output is scored against
  std::string output;

  // The run this record is of: prompt, method and ratio.
  std::string run_key() const { return prompt_id + " " + method + " " + std::to_string(ratio); }
};

// A record as one JSON object, and back (throws lclm::Error naming the field).
nlohmann::json eval_record_json(const EvalRecord& r);
EvalRecord eval_record_from_json(const nlohmann::json& j);

class Evaluator {
 public:
  explicit Evaluator(EvalConfig config);

  // Every (length, task, sample) x method x ratio, in that order (the copy
  // tasks' passages after the other tasks' lengths); each new
  // record goes to `progress` as it is made. Runs found in `done` (records
  // of an interrupted run of the same config, by run_key()) are not run
  // again: their records take their place. A short warm-up run per (method,
  // ratio) comes first, so the first measured run does not pay for paging in
  // weights.
  std::vector<EvalRecord> run(const std::function<void(const EvalRecord&)>& progress = {},
                              const std::vector<EvalRecord>& done = {});
  // How many runs run() makes in all.
  std::size_t run_count() const;
  // The (task, length) pairs run() goes through, in its order: every task at
  // every length, and the copy tasks at every passage length.
  std::vector<std::pair<RulerTask, std::size_t>> task_lengths() const;

  // One method on one sample.
  EvalRecord run_one(const EvalSample& sample, const std::string& method, std::int64_t ratio);

  const EvalConfig& config() const { return config_; }
  const RulerTaskGenerator& tasks() const { return *tasks_; }

 private:
  EvalConfig config_;
  std::unique_ptr<Engine> engine_;  // one load serves every method and ratio
  Haystack haystack_;
  std::unique_ptr<RulerTaskGenerator> tasks_;
  std::shared_ptr<const IndexMemWeights> indexmem_;  // loaded when a method needs it

  EvalRecord run_agent_one(const EvalSample& sample, std::int64_t ratio);
};

}  // namespace lclm
