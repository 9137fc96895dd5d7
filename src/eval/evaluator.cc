#include "eval/evaluator.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include "agent/agent.h"
#include "kv/kv_policy.h"
#include "util/error.h"
#include "util/process_stats.h"

namespace lclm {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

EngineOptions uncached(int threads) {
  EngineOptions o;
  o.threads = threads;
  o.latent_memory_bytes = 0;  // every latent run compresses: its TTFT is the real cost
  return o;
}

// The checkpoint every method shares, loaded once.
std::unique_ptr<Engine> load_checkpoint(const std::filesystem::path& dir, int threads) {
  if (!LclmModel::is_checkpoint(dir)) {
    throw Error(dir.string() + " is not an LCLM checkpoint (no model_config.json)");
  }
  return Engine::load(dir, uncached(threads));
}

// Greedy answers of the sample's length (the agent's: per round).
GenerationOptions greedy_options(const EvalSample& sample, std::size_t prefill_chunk) {
  GenerationOptions options;
  options.n_predict = sample.n_predict;
  options.prefill_chunk = prefill_chunk;
  options.sampling.temperature = 0;
  return options;
}

// The peak resident set of one run above what was resident when it began.
// Freed heap memory goes back to the system first, so that what the run
// allocates shows in its peak instead of reusing earlier runs' pages.
class RunMemory {
 public:
  RunMemory() {
    malloc_trim(0);
    peak_reset_ = reset_peak_resident();
    at_start_ = current_resident_bytes();
  }
  void record(EvalRecord& rec) const {
    rec.peak_rss_bytes = peak_resident_bytes();
    rec.peak_extra_bytes =
        peak_reset_ && rec.peak_rss_bytes > at_start_ ? rec.peak_rss_bytes - at_start_ : 0;
  }

 private:
  bool peak_reset_ = false;
  std::size_t at_start_ = 0;
};

// The output graded against the sample: expected answers, score, agreement,
// prefix and the needle's place.
void grade_output(const EvalSample& sample, EvalRecord& rec) {
  rec.expected = sample.answers;
  const Grade grade = grade_answer(sample, rec.output);
  rec.score = grade.score;
  rec.agreement = grade.agreement;
  rec.prefix_correct = grade.prefix_correct;
  rec.needle_token = sample.needle_token;
}

}  // namespace

nlohmann::json eval_record_json(const EvalRecord& r) {
  nlohmann::json j = {{"prompt_id", r.prompt_id},
          {"method", r.method},
          {"ratio", r.ratio},
          {"length", r.length},
          {"task", std::string(ruler_task_name(r.task))},
          {"sample", r.sample},
          {"prompt_tokens", r.prompt_tokens},
          {"positions", r.positions},
          {"score", r.score},
          {"agreement", r.agreement},
          {"ttft_ms", r.ttft_ms},
          {"peak_rss_bytes", r.peak_rss_bytes},
          {"peak_extra_bytes", r.peak_extra_bytes},
          {"kv_bytes", r.kv_bytes},
          {"kv_peak_bytes", r.kv_peak_bytes},
          {"expected", r.expected},
          {"output", r.output}};
  if (r.prefix_correct) j["prefix_correct"] = *r.prefix_correct;
  if (r.needle_token) j["needle_token"] = *r.needle_token;
  if (r.rounds) j["rounds"] = *r.rounds;
  if (r.chunks) j["chunks"] = *r.chunks;
  if (r.expanded) j["expanded"] = *r.expanded;
  return j;
}

EvalRecord eval_record_from_json(const nlohmann::json& j) {
  const auto get = [&](const char* key, auto& out) {
    if (!j.is_object() || !j.contains(key))
      throw Error(std::string("record lacks \"") + key + "\"");
    try {
      j.at(key).get_to(out);
    } catch (const nlohmann::json::exception&) {
      throw Error(std::string("record field \"") + key + "\" has the wrong type");
    }
  };
  EvalRecord r;
  std::string task;
  get("prompt_id", r.prompt_id);
  get("method", r.method);
  get("ratio", r.ratio);
  get("length", r.length);
  get("task", task);
  r.task = parse_ruler_task(task);
  get("sample", r.sample);
  get("prompt_tokens", r.prompt_tokens);
  get("positions", r.positions);
  get("score", r.score);
  get("agreement", r.agreement);
  get("ttft_ms", r.ttft_ms);
  get("peak_rss_bytes", r.peak_rss_bytes);
  get("peak_extra_bytes", r.peak_extra_bytes);
  get("kv_bytes", r.kv_bytes);
  get("kv_peak_bytes", r.kv_peak_bytes);
  get("expected", r.expected);
  get("output", r.output);
  if (j.contains("prefix_correct")) get("prefix_correct", r.prefix_correct.emplace());
  if (j.contains("needle_token")) get("needle_token", r.needle_token.emplace());
  if (j.contains("rounds")) get("rounds", r.rounds.emplace());
  if (j.contains("chunks")) get("chunks", r.chunks.emplace());
  if (j.contains("expanded")) get("expanded", r.expanded.emplace());
  return r;
}

void check_eval_method(const std::string& method) {
  if (method != "latent" && method != "agent") parse_kv_policy(method);
}

Evaluator::Evaluator(EvalConfig config)
    : config_(std::move(config)),
      engine_(load_checkpoint(config_.checkpoint, config_.threads)),
      haystack_(Haystack::from_paths(config_.haystack)),
      tasks_(std::make_unique<RulerTaskGenerator>(haystack_, engine_->tokenizer(), config_.seed)) {
  for (const std::string& m : config_.methods) {
    check_eval_method(m);
    if (m == kv_policy_name(KVPolicyKind::IndexMem) && !indexmem_) {
      const std::filesystem::path dir =
          config_.indexmem.empty() ? default_indexmem_dir(config_.checkpoint) : config_.indexmem;
      indexmem_ = std::make_shared<const IndexMemWeights>(
          IndexMemWeights::load(dir, engine_->decoder().config()));
    }
  }
  for (RulerTask t : config_.tasks) {
    if (is_copy_task(t) && config_.passages.empty()) {
      throw Error("--passages: " + std::string(ruler_task_name(t)) + " needs a passage length");
    }
  }
  for (std::size_t p : config_.passages) {
    if (p == 0) throw Error("--passages: a passage needs at least 1 token");
  }
  const auto has = [&](const char* m) {
    return std::find(config_.methods.begin(), config_.methods.end(), m) != config_.methods.end();
  };
  const bool latent = has("latent") || has("agent");
  for (std::int64_t r : config_.ratios) {
    if (r < 1)
      throw Error("--ratios: every ratio must be a positive integer, not " + std::to_string(r));
    if (latent) engine_->ratio(r);  // one the checkpoint cannot run fails before any work
  }
}

EvalRecord Evaluator::run_agent_one(const EvalSample& sample, std::int64_t ratio) {
  EvalRecord rec;
  rec.method = "agent";
  rec.ratio = ratio;
  rec.task = sample.task;
  GenerationOptions options = greedy_options(sample, config_.prefill_chunk);
  options.n_predict = std::max(sample.n_predict, 32);  // per round
  const RunMemory memory;
  const auto t0 = std::chrono::steady_clock::now();
  LclmAgentModel model(*engine_, options, ratio);  // a session of its own
  const AgentResult result = run_agent(model, sample.context, sample.question, AgentOptions{});
  const double seconds = seconds_since(t0);
  memory.record(rec);
  // To the final answer's first token: everything but the last reply's decoding.
  rec.ttft_ms = (seconds - result.rounds.back().stats.generation.decode_seconds) * 1e3;
  for (const AgentRound& round : result.rounds) {
    const GenerationStats& g = round.stats.generation;
    rec.positions += g.prompt_tokens - g.reused_positions;
    rec.kv_bytes = g.prompt_kv_bytes;
    rec.kv_peak_bytes = std::max(rec.kv_peak_bytes, g.kv_peak_bytes);
  }
  rec.rounds = result.rounds.size();
  rec.chunks = result.chunks.size();
  rec.expanded = result.expanded.size();
  rec.output = result.answer;
  grade_output(sample, rec);
  return rec;
}

EvalRecord Evaluator::run_one(const EvalSample& sample, const std::string& method,
                              std::int64_t ratio) {
  if (method == "agent") return run_agent_one(sample, ratio);
  EvalRecord rec;
  rec.method = method;
  rec.ratio = method == "full" ? 1 : ratio;
  rec.task = sample.task;
  const bool latent = method == "latent";

  GenerationOptions options = greedy_options(sample, config_.prefill_chunk);
  options.stop_ids = engine_->stop_ids();
  if (!latent) {
    options.kv_policy.kind = parse_kv_policy(method);
    options.kv_policy.ratio = static_cast<double>(rec.ratio);
    options.kv_policy.indexmem = indexmem_;
  }

  const RunMemory memory;
  const auto t0 = std::chrono::steady_clock::now();
  const PreparedPrompt prompt = engine_->prepare(
      eval_prompt(sample, latent), latent ? std::optional<std::int64_t>(ratio) : std::nullopt);
  const double prepare_seconds = seconds_since(t0);
  const GenerationStats stats = engine_->new_session().generate(prompt, options);
  memory.record(rec);
  rec.ttft_ms = (prepare_seconds + stats.ttft_seconds) * 1e3;
  rec.positions = prompt.ids.size();
  rec.kv_bytes = stats.prompt_kv_bytes;
  rec.kv_peak_bytes = stats.kv_peak_bytes;
  rec.output = engine_->tokenizer().decode(stats.tokens);
  grade_output(sample, rec);
  return rec;
}

std::vector<std::pair<RulerTask, std::size_t>> Evaluator::task_lengths() const {
  std::vector<std::pair<RulerTask, std::size_t>> out;
  for (std::size_t length : config_.lengths) {
    for (RulerTask task : config_.tasks) {
      if (!is_copy_task(task)) out.emplace_back(task, length);
    }
  }
  for (std::size_t length : config_.passages) {
    for (RulerTask task : config_.tasks) {
      if (is_copy_task(task)) out.emplace_back(task, length);
    }
  }
  return out;
}

std::size_t Evaluator::run_count() const {
  std::size_t per_sample = 0;
  for (const std::string& m : config_.methods)
    per_sample += m == "full" ? 1 : config_.ratios.size();
  return task_lengths().size() * config_.samples * per_sample;
}

std::vector<EvalRecord> Evaluator::run(const std::function<void(const EvalRecord&)>& progress,
                                       const std::vector<EvalRecord>& done) {
  std::map<std::string, const EvalRecord*> earlier;
  for (const EvalRecord& r : done) earlier[r.run_key()] = &r;
  // (method, ratio) pairs: full once, every other method at every ratio.
  std::vector<std::pair<std::string, std::int64_t>> runs;
  for (const std::string& m : config_.methods) {
    if (m == "full") {
      runs.emplace_back(m, 1);
    } else {
      for (std::int64_t r : config_.ratios) runs.emplace_back(m, r);
    }
  }
  if (earlier.size() < run_count()) {
    const EvalSample warm_up = tasks_->make(RulerTask::SingleNeedle, 128, 0);
    for (const auto& [method, ratio] : runs) run_one(warm_up, method, ratio);
  }

  std::vector<EvalRecord> records;
  for (const auto& [task, length] : task_lengths()) {
    for (std::size_t i = 0; i < config_.samples; ++i) {
      const std::string prompt_id = std::string(ruler_task_name(task)) + "-" +
                                    std::to_string(length) + "-" + std::to_string(i);
      std::optional<EvalSample> sample;
      std::size_t tokens = 0;
      for (const auto& [method, ratio] : runs) {
        EvalRecord key;
        key.prompt_id = prompt_id;
        key.method = method;
        key.ratio = method == "full" ? 1 : ratio;
        if (const auto it = earlier.find(key.run_key()); it != earlier.end()) {
          records.push_back(*it->second);
          continue;
        }
        if (!sample) {
          sample = tasks_->make(task, length, i);
          tokens = tasks_->prompt_tokens(*sample);
        }
        EvalRecord rec = run_one(*sample, method, ratio);
        rec.prompt_id = prompt_id;
        rec.length = length;
        rec.sample = i;
        rec.prompt_tokens = tokens;
        if (progress) progress(rec);
        records.push_back(std::move(rec));
      }
    }
  }
  return records;
}

}  // namespace lclm
