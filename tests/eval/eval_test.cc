// The evaluation harness: scoring with known answers, the generated tasks
// (length in the model's tokens, answers present in the text, determinism,
// the trainer's needle wording), the evaluator on a tiny random LCLM (every
// method, KV bytes per policy, scores of known answers through the whole
// pipeline), the frontier, and `lclm eval` / `lclm bench` end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli/cli_runner.h"
#include "cli/common.h"
#include "core/test_models.h"
#include "eval/eval_report.h"
#include "eval/evaluator.h"
#include "eval/haystack.h"
#include "eval/ruler_tasks.h"
#include "fixtures/random_lclm.h"
#include "format/json_file.h"
#include "kv/policy_model.h"
#include "tokenizer/tokenizer.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;
using testing::cli;
using testing::scratch_dir;

TEST(EvalScoring, CountsTheShareOfAnswersFoundIgnoringCase) {
  EXPECT_EQ(score_answers("The special magic number for calm-ember is 4417235.", {"4417235"}), 1.0);
  EXPECT_EQ(score_answers("The special magic number is 4417236.", {"4417235"}), 0.0);
  EXPECT_EQ(score_answers("VAR qwert and ASDFG", {"QWERT", "ASDFG", "ZXCVB", "POIUY"}), 0.5);
  EXPECT_EQ(score_answers("", {"x"}), 0.0);
  EXPECT_EQ(score_answers("anything", {}), 0.0);
}

class RulerTasks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = new Tokenizer(Tokenizer::from_dir(testing::qwen3_tokenizer_dir()));
    haystack_ = new Haystack(Haystack::from_paths(default_haystack_paths()));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete haystack_;
  }
  static Tokenizer* tokenizer_;
  static Haystack* haystack_;
};
Tokenizer* RulerTasks::tokenizer_ = nullptr;
Haystack* RulerTasks::haystack_ = nullptr;

TEST_F(RulerTasks, FitTheLengthAndHideTheirAnswers) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 7);
  for (RulerTask task : all_ruler_tasks()) {
    for (std::size_t length : {512, 2048}) {
      const EvalSample s = gen.make(task, length, 0);
      const std::size_t tokens = tokenizer_->encode(eval_prompt(s, false)).size();
      EXPECT_LE(tokens, length) << ruler_task_name(task);
      EXPECT_GE(tokens, length * 97 / 100) << ruler_task_name(task);
      ASSERT_FALSE(s.answers.empty());
      for (const std::string& a : s.answers) {
        EXPECT_NE(s.context.find(a), std::string::npos) << ruler_task_name(task) << " " << a;
      }
      EXPECT_EQ(gen.make(task, length, 0).context, s.context) << "not deterministic";
      EXPECT_NE(gen.make(task, length, 1).context, s.context);
    }
  }
}

TEST_F(RulerTasks, SingleNeedleUsesTheTrainersWording) {
  const EvalSample s =
      RulerTaskGenerator(*haystack_, *tokenizer_, 1).make(RulerTask::SingleNeedle, 700, 3);
  const std::regex needle("The special magic number for ([a-z]+-[a-z]+) is ([0-9]{7})\\.");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(s.context, m, needle)) << s.context;
  EXPECT_EQ(m[2].str(), s.answers.at(0));
  EXPECT_EQ(s.question,
            "What is the special magic number for " + m[1].str() + " mentioned in the text above?");
  EXPECT_EQ(eval_prompt(s, true), "<|im_start|>user\n<|memory_start|>" + s.context +
                                      "<|memory_end|>\n" + s.question +
                                      "<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(RulerTasks, VariableChainAndCommonWordsAreWellFormed) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 2);
  const EvalSample vt = gen.make(RulerTask::VariableTracking, 1024, 0);
  ASSERT_EQ(vt.answers.size(), 5u);
  const std::string value = vt.question.substr(vt.question.find("value ") + 6, 5);
  std::size_t at = vt.context.find("VAR " + vt.answers[0] + " = " + value + ".");
  ASSERT_NE(at, std::string::npos);
  for (std::size_t i = 1; i < 5; ++i) {  // each link after the previous one
    const std::size_t next =
        vt.context.find("VAR " + vt.answers[i] + " = " + vt.answers[i - 1] + ".");
    ASSERT_NE(next, std::string::npos);
    EXPECT_GT(next, at);
    at = next;
  }
  const EvalSample cwe = gen.make(RulerTask::CommonWords, 1024, 0);
  std::map<std::string, int> counts;
  const std::regex entry("\n[0-9]+\\. ([a-z]+)");
  for (std::sregex_iterator it(cwe.context.begin(), cwe.context.end(), entry), end; it != end;
       ++it) {
    ++counts[(*it)[1].str()];
  }
  int least_common = 1 << 30, most_rare = 0;
  for (const auto& [word, n] : counts) {
    const bool common =
        std::find(cwe.answers.begin(), cwe.answers.end(), word) != cwe.answers.end();
    if (common)
      least_common = std::min(least_common, n);
    else
      most_rare = std::max(most_rare, n);
  }
  EXPECT_EQ(cwe.answers.size(), 10u);
  EXPECT_GT(least_common, most_rare);
}

TEST(EvalFrontier, KeepsOnlyPointsNoOtherBeats) {
  std::vector<FrontierPoint> points = {{"a", "full", 100, 0.9},
                                       {"b", "latent", 10, 0.8},
                                       {"c", "h2o", 50, 0.5},
                                       {"d", "snapkv", 20, 0.85},
                                       {"e", "streaming", 5, 0.1}};
  std::vector<std::string> labels;
  for (const FrontierPoint& p : pareto_frontier(points)) labels.push_back(p.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"e", "b", "d", "a"}));
  const std::string svg = frontier_svg(points, "t <1>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("t &lt;1&gt;"), std::string::npos);
  std::size_t circles = 0;
  for (std::size_t i = svg.find("<circle"); i != std::string::npos;
       i = svg.find("<circle", i + 1)) {
    ++circles;
  }
  EXPECT_EQ(circles, 2 * points.size());  // plot and legend
}

// A tiny random LCLM with the real Qwen3 tokenizer, window 64, ratio 4.
fs::path tiny_checkpoint(const std::string& name) {
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 9;
  spec.config.encoder_window_size = 64;
  const fs::path dir = scratch_dir(name);
  write_random_lclm(dir, spec);
  return dir;
}

TEST(Evaluator, RunsEveryMethodAndReportsTheCacheEachKeeps) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_methods");
  config.methods = {"full", "latent", "streaming", "h2o", "snapkv", "pyramidkv", "indexmem"};
  config.ratios = {4, 16};
  config.lengths = {300};
  const IndexMemWeights indexmem =
      random_indexmem(Qwen3Config::from_dir(config.checkpoint / "decoder"), 3, 0.5f);
  indexmem.save(config.checkpoint / "indexmem");
  Evaluator evaluator(config);
  const std::vector<EvalRecord> records = evaluator.run();
  ASSERT_EQ(records.size(), 1u + 6 * 2);
  const RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  const auto per_entry =
      std::size_t(2 * spec.decoder.num_key_value_heads * spec.decoder.head_dim * sizeof(float));
  const auto layers = std::size_t(spec.decoder.num_hidden_layers);
  const std::size_t L = records.front().positions;
  EXPECT_EQ(records.front().method, "full");
  EXPECT_EQ(records.front().kv_bytes, layers * L * per_entry);
  for (const EvalRecord& r : records) {
    EXPECT_EQ(r.prompt_tokens, L);
    EXPECT_GT(r.ttft_ms, 0.0);
    // The cache is sized for the prompt and the answer before any eviction.
    EXPECT_EQ(r.kv_peak_bytes, layers * (r.positions + 32) * per_entry) << r.method;
    EXPECT_EQ(r.score, score_answers(r.output, evaluator.tasks().make(r.task, 300, 0).answers));
    if (r.method == "latent") {
      EXPECT_LT(r.positions, L / std::size_t(r.ratio) + 40) << "x" << r.ratio;
      EXPECT_EQ(r.kv_bytes, layers * r.positions * per_entry);
    } else if (r.method != "full") {
      const auto budget = std::size_t(std::ceil(double(L) / double(r.ratio)));
      // IndexMem also holds its memory: M [F, D] and z [F] per layer and kv head.
      const std::size_t memory = r.method == "indexmem"
                                     ? layers * std::size_t(spec.decoder.num_key_value_heads) *
                                           std::size_t(indexmem.config.memory_features) *
                                           (std::size_t(spec.decoder.head_dim) + 1) * sizeof(float)
                                     : 0;
      EXPECT_EQ(r.kv_bytes, layers * budget * per_entry + memory) << r.method << " x" << r.ratio;
    }
  }
}

TEST(Evaluator, IndexMemNeedsItsWeights) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_no_indexmem");
  config.methods = {"full", "indexmem"};
  const std::string message = testing::error_of([&] { Evaluator evaluator(config); });
  EXPECT_NE(message.find((config.checkpoint / "indexmem").string()), std::string::npos) << message;
}

// Answers known to be in (or not in) what the model says score 1 (or 0)
// through the whole run: generation, detokenizing, scoring.
TEST(Evaluator, ScoresKnownAnswersThroughTheWholeRun) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_known");
  Evaluator evaluator(config);
  EvalSample sample = evaluator.tasks().make(RulerTask::SingleNeedle, 256, 0);
  sample.n_predict = 12;
  const std::string said = evaluator.run_one(sample, "full", 1).output;
  ASSERT_GE(said.size(), 4u);
  sample.answers = {said.substr(said.size() / 2, 3)};
  EXPECT_EQ(evaluator.run_one(sample, "full", 1).score, 1.0);
  sample.answers = {said.substr(0, 3), said + "#never said#"};
  EXPECT_EQ(evaluator.run_one(sample, "full", 1).score, 0.5);
  sample.answers = {"#never said#"};
  EXPECT_EQ(evaluator.run_one(sample, "snapkv", 4).score, 0.0);
}

TEST(EvalCli, EvalAndBenchWriteTheirFiles) {
  const fs::path ckpt = tiny_checkpoint("eval_cli");
  const fs::path out = scratch_dir("eval_cli_out");
  const auto eval =
      cli({"eval", "-m", ckpt.string(), "--methods", "full,latent,snapkv", "--ratios", "4",
           "--lengths", "256", "--tasks", "niah_single,vt", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(eval.code, 0) << eval.err;
  const nlohmann::json j = read_json_file(out / "results.json");
  EXPECT_EQ(j["records"].size(), 2u * 3);
  EXPECT_EQ(j["cells"].size(), 3u);
  const std::string md = cli::read_file((out / "results.md").string(), "results");
  EXPECT_NE(md.find("| snapkv | 4x | 256 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| full | - | 256 |"), std::string::npos) << md;

  const auto bench =
      cli({"bench", "-m", ckpt.string(), "--methods", "full,latent,h2o", "--ratios", "4",
           "--lengths", "256", "--samples", "1", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(bench.code, 0) << bench.err;
  EXPECT_NE(bench.out.find("| 256 | full | - |"), std::string::npos) << bench.out;
  EXPECT_NE(bench.out.find("| 1.00x |"), std::string::npos) << bench.out;  // full against itself
  const std::string svg = cli::read_file((out / "frontier.svg").string(), "plot");
  EXPECT_NE(svg.find("h2o 4x"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);

  const auto bad =
      cli({"eval", "-m", ckpt.string(), "--methods", "full,lru", "--out", out.string()});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("lru"), std::string::npos) << bad.err;
  EXPECT_EQ(testing::count_lines(bad.err), 1);
  const auto no_full =
      cli({"bench", "-m", ckpt.string(), "--methods", "latent", "--out", out.string()});
  EXPECT_EQ(no_full.code, 1);
  EXPECT_NE(no_full.err.find("full"), std::string::npos) << no_full.err;
}

// Every record names its prompt and carries the expected answers and the
// output; records are written as they come, and --resume runs only what an
// interrupted run had not done.
TEST(EvalCli, RecordsComeAsTheyAreMadeAndAnInterruptedRunResumes) {
  const fs::path ckpt = tiny_checkpoint("eval_resume");
  const fs::path out = scratch_dir("eval_resume_out");
  const std::vector<std::string> args = {
      "eval",        "-m",        ckpt.string(), "--methods", "full,latent",
      "--ratios",    "4,8",       "--lengths",   "256",       "--tasks",
      "niah_single", "--samples", "2",           "--out",     out.string(),
      "-t",          "1"};
  const auto first = cli(args);
  ASSERT_EQ(first.code, 0) << first.err;
  // Progress: one line a run, counted, with an ETA.
  EXPECT_NE(first.err.find("[1/6] niah_single-256-0 full"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("[6/6] niah_single-256-1 latent x8"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("ETA"), std::string::npos);
  const nlohmann::json all = read_json_file(out / "results.json");
  ASSERT_EQ(all["records"].size(), 6u);
  const nlohmann::json& r0 = all["records"][0];
  EXPECT_EQ(r0["prompt_id"], "niah_single-256-0");
  ASSERT_EQ(r0["expected"].size(), 1u);
  EXPECT_EQ(r0["expected"][0].get<std::string>().size(), 7u);  // the needle's number
  EXPECT_TRUE(r0["output"].is_string());
  const std::string jsonl = cli::read_file((out / "records.jsonl").string(), "records");
  ASSERT_EQ(testing::count_lines(jsonl), 6);

  // The same --out again without --resume: refused, nothing overwritten.
  const auto again = cli(args);
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;

  // Interrupted after two runs, in the middle of writing the third.
  std::size_t cut = 0;
  for (int i = 0; i < 2; ++i) cut = jsonl.find('\n', cut) + 1;
  testing::write_text(out / "records.jsonl", jsonl.substr(0, cut) + "{\"prompt_id\": \"nia");
  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  const auto resumed = cli(resume);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming: 2 of 6 runs already done"), std::string::npos)
      << resumed.err;
  EXPECT_EQ(resumed.err.find("[2/6]"), std::string::npos) << resumed.err;  // not run again
  EXPECT_NE(resumed.err.find("[6/6]"), std::string::npos) << resumed.err;
  const nlohmann::json after = read_json_file(out / "results.json");
  ASSERT_EQ(after["records"].size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(after["records"][i]["prompt_id"], all["records"][i]["prompt_id"]);
    EXPECT_EQ(after["records"][i]["method"], all["records"][i]["method"]);
    EXPECT_EQ(after["records"][i]["output"], all["records"][i]["output"]);
  }
  EXPECT_EQ(after["records"][0]["ttft_ms"], all["records"][0]["ttft_ms"]);  // kept, not re-run
  EXPECT_EQ(testing::count_lines(cli::read_file((out / "records.jsonl").string(), "records")), 6);

  // --resume with other options names the one that differs.
  std::vector<std::string> other = resume;
  other[6] = "4,16";
  const auto mismatch = cli(other);
  EXPECT_EQ(mismatch.code, 1);
  EXPECT_NE(mismatch.err.find("ratios"), std::string::npos) << mismatch.err;
  const auto nothing = cli({"eval", "-m", ckpt.string(), "--out",
                            scratch_dir("eval_resume_empty").string(), "--resume"});
  EXPECT_EQ(nothing.code, 1);
  EXPECT_NE(nothing.err.find("no interrupted run"), std::string::npos) << nothing.err;
}

}  // namespace
}  // namespace lclm
