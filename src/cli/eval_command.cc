// lclm eval and lclm bench: the same decoder on the same RULER-style samples
// with the full cache, latent compression and each KV-cache policy (see
// docs/evaluation.md). eval writes results.json and results.md; bench runs
// one length at one ratio by default and adds the comparison with full and
// the accuracy-vs-TTFT frontier plot.
#include <filesystem>
#include <iomanip>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/eval_report.h"
#include "eval/evaluator.h"
#include "kv/kv_policy.h"
#include "util/error.h"
#include "util/threads.h"

namespace lclm::cli {
namespace {

struct EvalArgs {
  std::string model, out;
  std::vector<std::string> methods, tasks, haystack;
  std::string indexmem;
  std::vector<std::int64_t> ratios;
  std::vector<std::size_t> lengths;
  std::size_t samples = 1;
  std::uint64_t seed = 0;
  std::size_t batch = 512;
  int threads = 0;
};

// A CLI11 check that runs one of the engine's name parsers.
template <typename Parse>
CLI::Validator name_check(const char* what, Parse parse) {
  return CLI::Validator(
      [parse](std::string& name) -> std::string {
        try {
          parse(name);
        } catch (const Error& e) {
          return e.what();
        }
        return "";
      },
      what);
}

EvalConfig eval_config(const EvalArgs& a) {
  EvalConfig c;
  c.checkpoint = a.model;
  c.methods = a.methods;
  c.ratios = a.ratios;
  c.lengths = a.lengths;
  c.tasks.clear();
  for (const std::string& t : a.tasks) {
    if (t == "all") {
      c.tasks = all_ruler_tasks();
      break;
    }
    c.tasks.push_back(parse_ruler_task(t));
  }
  c.samples = a.samples;
  c.seed = a.seed;
  c.prefill_chunk = a.batch;
  if (!a.haystack.empty()) c.haystack.assign(a.haystack.begin(), a.haystack.end());
  c.indexmem = a.indexmem;
  return c;
}

void add_eval_options(CLI::App& cmd, EvalArgs& a) {
  cmd.add_option("-m,--model", a.model, "LCLM checkpoint directory")->required();
  cmd.add_option("--out", a.out, "Directory to write the results to (created)")->required();
  std::string methods = "full, latent";
  for (KVPolicyKind k : all_kv_policies()) {
    if (k != KVPolicyKind::Full) methods += ", " + std::string(kv_policy_name(k));
  }
  cmd.add_option("--methods", a.methods, "Comma-separated methods: " + methods)
      ->delimiter(',')
      ->check(name_check("METHOD", [](const std::string& m) { check_eval_method(m); }))
      ->capture_default_str();
  cmd.add_option("--ratios", a.ratios,
                 "Compression ratios: latent tokens per latent, and for KV policies prompt "
                 "tokens per kept entry")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--lengths", a.lengths, "Prompt lengths in decoder tokens")
      ->delimiter(',')
      ->check(CLI::Range(std::size_t{128}, std::size_t{1} << 20))
      ->capture_default_str();
  cmd.add_option("--tasks", a.tasks,
                 "Comma-separated tasks, or all: niah_single, niah_multi, niah_multikey, "
                 "niah_multivalue, vt, cwe")
      ->delimiter(',')
      ->check(name_check("TASK",
                         [](const std::string& t) {
                           if (t != "all") parse_ruler_task(t);
                         }))
      ->capture_default_str();
  cmd.add_option("--samples", a.samples, "Samples per length and task")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("-s,--seed", a.seed, "Seed of the generated samples")->capture_default_str();
  cmd.add_option("--haystack", a.haystack,
                 "Files or directories of haystack text (default: /usr/share/common-licenses)");
  cmd.add_option("--indexmem", a.indexmem,
                 "IndexMem weights directory for the indexmem method (default: MODEL/indexmem)");
  cmd.add_option("-b,--batch-size", a.batch, "Prompt tokens per prefill pass")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("-t,--threads", a.threads, "Threads (0: all cores)")->capture_default_str();
}

std::vector<EvalRecord> run_evaluation(const EvalArgs& a, std::ostream& err) {
  set_num_threads(a.threads);
  Evaluator evaluator(eval_config(a));
  std::filesystem::create_directories(a.out);
  return evaluator.run([&](const EvalRecord& r) {
    err << std::fixed << std::setprecision(1) << r.length << " " << ruler_task_name(r.task) << " #"
        << r.sample << " " << r.method << (r.method == "full" ? "" : " x" + std::to_string(r.ratio))
        << ": score " << r.score << ", TTFT " << r.ttft_ms << " ms, " << r.positions
        << " positions\n";
  });
}

int run_eval(const EvalArgs& a, std::ostream& out, std::ostream& err) {
  const std::vector<EvalRecord> records = run_evaluation(a, err);
  const std::filesystem::path dir(a.out);
  write_text_file((dir / "results.json").string(),
                  eval_results_json(eval_config(a), records)
                          .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                      "\n");
  const std::string md = eval_results_markdown(summarize_records(records));
  write_text_file((dir / "results.md").string(), md);
  out << md;
  err << "wrote " << (dir / "results.json").string() << " and " << (dir / "results.md").string()
      << "\n";
  return 0;
}

int run_bench(const EvalArgs& a, std::ostream& out, std::ostream& err) {
  if (std::find(a.methods.begin(), a.methods.end(), "full") == a.methods.end()) {
    throw Error("--methods: bench compares against full, which must be among them");
  }
  const std::vector<EvalRecord> records = run_evaluation(a, err);
  const std::vector<EvalCell> cells = summarize_records(records);
  const std::filesystem::path dir(a.out);
  write_text_file((dir / "bench.json").string(),
                  eval_results_json(eval_config(a), records)
                          .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                      "\n");
  const std::string md = bench_markdown(cells);
  write_text_file((dir / "bench.md").string(), md);
  std::string title = "accuracy vs TTFT, " + std::to_string(records.size()) + " runs at ";
  for (std::size_t i = 0; i < a.lengths.size(); ++i) {
    title += (i ? "/" : "") + std::to_string(a.lengths[i]);
  }
  write_text_file((dir / "frontier.svg").string(),
                  frontier_svg(frontier_points(cells), title + " tokens"));
  out << md;
  err << "wrote bench.json, bench.md and frontier.svg to " << dir.string() << "\n";
  return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  args->methods = {"full", "latent", "streaming", "h2o", "snapkv", "pyramidkv"};
  args->ratios = {4, 8, 16};
  args->lengths = {1024, 2048, 4096, 8192};
  args->tasks = {"all"};
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "RULER-style evaluation: full context, latent compression and KV-cache policies on the "
      "same decoder; writes results.json and results.md");
  add_eval_options(*cmd, *args);
  return {cmd, [args](std::ostream& out, std::ostream& err) { return run_eval(*args, out, err); }};
}

Command add_bench_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  args->methods = {"full", "latent", "streaming", "h2o", "snapkv", "pyramidkv"};
  args->ratios = {8};
  args->lengths = {4096};
  args->tasks = {"niah_single"};
  args->samples = 3;
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Latent compression vs full context vs each KV-cache policy at the same ratio, timed in "
      "one run: TTFT and peak memory ratios, and the accuracy-vs-TTFT frontier (frontier.svg)");
  add_eval_options(*cmd, *args);
  return {cmd, [args](std::ostream& out, std::ostream& err) { return run_bench(*args, out, err); }};
}

}  // namespace lclm::cli
