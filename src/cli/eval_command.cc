// lclm eval and lclm bench: the same decoder on the same RULER-style samples
// with the full cache, latent compression and each KV-cache policy (see
// docs/evaluation.md). eval writes results.json, results.md and the
// accuracy-vs-TTFT frontier plot; bench runs one length at one ratio by
// default and adds the comparison with full.
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/eval_report.h"
#include "eval/evaluator.h"
#include "format/json_file.h"
#include "kv/kv_policy.h"
#include "util/error.h"
#include "util/machine.h"
#include "util/threads.h"

namespace lclm::cli {
namespace {

struct EvalArgs {
  std::string model, out;
  std::vector<std::string> methods, tasks, haystack;
  std::string indexmem;
  std::vector<std::int64_t> ratios;
  std::vector<std::size_t> lengths, passages = {32, 64, 128};
  std::size_t samples = 1;
  std::uint64_t seed = 0;
  std::size_t batch = 512;
  int threads = 0;
  bool resume = false;
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
  c.passages = a.passages;
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
  c.threads = a.threads;
  if (!a.haystack.empty()) c.haystack.assign(a.haystack.begin(), a.haystack.end());
  c.indexmem = a.indexmem;
  return c;
}

void add_eval_options(CLI::App& cmd, EvalArgs& a) {
  cmd.add_option("-m,--model", a.model, "LCLM checkpoint directory")->required();
  cmd.add_option("--out", a.out, "Directory to write the results to (created)")->required();
  std::string methods =
      "full, latent, agent (skim-and-expand over chunks compressed at each ratio)";
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
  cmd.add_option("--passages", a.passages,
                 "Passage lengths in tokens for the copy tasks (reconstruction, numbers)")
      ->delimiter(',')
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 16))
      ->capture_default_str();
  cmd.add_option("--tasks", a.tasks,
                 "Comma-separated tasks, or all: niah_single (or needle), niah_multi, "
                 "niah_multikey, niah_multivalue, vt, cwe at each of --lengths; reconstruction "
                 "(a passage of haystack text, word for word) and numbers (random numbers, "
                 "character for character) at each of --passages")
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
                 "Files or directories of haystack text (default: held-out text the trainer never "
                 "reads, the copyright files of 23 Debian packages scripts/install_deps.sh "
                 "installs; docs/evaluation.md lists them)");
  cmd.add_option("--indexmem", a.indexmem,
                 "IndexMem weights directory for the indexmem method (default: MODEL/indexmem)");
  cmd.add_option("-b,--batch-size", a.batch, "Prompt tokens per prefill pass")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("-t,--threads", a.threads, "Threads (0: all cores)")->capture_default_str();
  cmd.add_flag("--resume", a.resume,
               "Continue an interrupted run in --out: the runs in its records.jsonl are kept, "
               "the rest are run (the options must be the run's own)");
}

// "1h02m", "3m10s", "42s".
std::string duration_text(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  if (s >= 3600)
    return std::to_string(s / 3600) + "h" + (s % 3600 / 60 < 10 ? "0" : "") +
           std::to_string(s % 3600 / 60) + "m";
  if (s >= 60)
    return std::to_string(s / 60) + "m" + (s % 60 < 10 ? "0" : "") + std::to_string(s % 60) + "s";
  return std::to_string(s) + "s";
}

// The records of an earlier run in `dir` (config.json and records.jsonl), to
// continue it. Its config must be this one's. A last line cut short by the
// interruption is dropped from the file; any other bad line is an error.
std::vector<EvalRecord> earlier_records(const std::filesystem::path& config_path,
                                        const std::filesystem::path& records_path,
                                        const nlohmann::json& config) {
  const std::filesystem::path dir = config_path.parent_path();
  if (!std::filesystem::exists(config_path) || !std::filesystem::exists(records_path)) {
    throw Error("--resume: " + dir.string() + " holds no interrupted run (" +
                config_path.filename().string() + " and " + records_path.filename().string() + ")");
  }
  const nlohmann::json before = read_json_file(config_path);
  for (const auto& [key, value] : config.items()) {
    if (!before.contains(key) || before[key] != value) {
      throw Error("--resume: the run in " + dir.string() + " had " + key + " " +
                  (before.contains(key) ? before[key].dump() : std::string("unset")) + ", not " +
                  value.dump() + "; give its options, or another --out");
    }
  }
  std::vector<EvalRecord> records;
  const std::string text = read_file(records_path.string(), "records file");
  std::size_t at = 0, line = 0, good_bytes = 0;
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    ++line;
    const std::string row = text.substr(at, end == std::string::npos ? end : end - at);
    const bool last = end == std::string::npos || end + 1 >= text.size();
    try {
      if (end == std::string::npos) throw Error("the line is not finished");
      records.push_back(eval_record_from_json(nlohmann::json::parse(row)));
      good_bytes = end + 1;
    } catch (const std::exception& e) {
      if (!last) {
        throw Error(records_path.string() + ":" + std::to_string(line) + ": " + e.what());
      }
      std::filesystem::resize_file(records_path, good_bytes);  // cut short by the interruption
    }
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return records;
}

// Runs the evaluation, appending each record to OUT/{records} as it comes
// (OUT/{config} says what the run is: records.jsonl and config.json for eval,
// bench_records.jsonl and bench_config.json for bench), so an interrupted run
// loses at most the run in progress and --resume continues it. Progress goes
// to err: "[k/N] ... ETA".
std::vector<EvalRecord> run_evaluation(const EvalArgs& a, std::ostream& err,
                                       const std::string& file_prefix) {
  const EvalConfig config = eval_config(a);
  const std::filesystem::path dir(a.out);
  const std::filesystem::path config_path = dir / (file_prefix + "config.json"),
                              records_path = dir / (file_prefix + "records.jsonl");
  const nlohmann::json config_json = eval_results_json(config, {})["config"];
  std::vector<EvalRecord> done;
  if (a.resume) {
    done = earlier_records(config_path, records_path, config_json);
  } else if (std::filesystem::exists(records_path)) {
    throw Error(records_path.string() +
                " holds the records of an earlier run: --resume continues it, or give another "
                "--out");
  }
  Evaluator evaluator(config);
  std::filesystem::create_directories(dir);
  write_text_file(config_path, config_json.dump(2) + "\n");
  std::ofstream records(records_path, std::ios::app);
  if (!records) throw Error("cannot write " + records_path.string());

  const std::size_t total = evaluator.run_count();
  std::size_t k = std::min(done.size(), total), new_runs = 0;
  if (!done.empty()) err << "resuming: " << k << " of " << total << " runs already done\n";
  const auto t0 = std::chrono::steady_clock::now();
  return evaluator.run(
      [&](const EvalRecord& r) {
        records << eval_record_json(r).dump(-1, ' ', false,
                                            nlohmann::json::error_handler_t::replace)
                << "\n"
                << std::flush;
        if (!records) throw Error("cannot write " + records_path.string());
        ++k;
        ++new_runs;
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double eta = elapsed / static_cast<double>(new_runs) * static_cast<double>(total - k);
        err << std::fixed << std::setprecision(1) << "[" << k << "/" << total << "] " << r.prompt_id
            << " " << r.method << (r.method == "full" ? "" : " x" + std::to_string(r.ratio))
            << ": score " << r.score << ", in place " << r.agreement << ", TTFT " << r.ttft_ms << " ms, " << r.positions
            << " positions | " << duration_text(elapsed) << " elapsed, ETA " << duration_text(eta)
            << "\n";
      },
      done);
}

// Under the plot: what was measured, on what, when.
std::string frontier_caption(const EvalArgs& a, std::size_t runs) {
  std::string tasks, methods;
  for (const std::string& t : a.tasks) tasks += (tasks.empty() ? "" : ", ") + t;
  const std::time_t now = std::time(nullptr);
  char date[16];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  return "Model " + std::filesystem::path(a.model).filename().string() + " (" + a.model +
         "); tasks " + tasks + "; " + std::to_string(a.samples) + " sample(s) per task and length, " +
         std::to_string(runs) + " runs in all (n per point in frontier.csv and each point's tooltip); "
         "error bars: 95% Wilson intervals of the mean score. Machine: " + machine_description() +
         ", " + std::to_string(resolve_threads(a.threads)) + " thread(s); " + date + ".";
}

// frontier.svg and frontier.csv: accuracy against TTFT, one point per
// method x ratio x length.
void write_frontier(const EvalArgs& a, const std::vector<EvalRecord>& records,
                    const std::vector<EvalCell>& cells, const std::filesystem::path& dir) {
  const std::vector<FrontierPoint> points = frontier_points(cells);
  write_text_file((dir / "frontier.svg").string(),
                  frontier_svg(points, "Accuracy against time to first token",
                               frontier_caption(a, records.size())));
  write_text_file((dir / "frontier.csv").string(), frontier_csv(points));
}

int run_eval(const EvalArgs& a, std::ostream& out, std::ostream& err) {
  const std::vector<EvalRecord> records = run_evaluation(a, err, "");
  const std::filesystem::path dir(a.out);
  write_text_file((dir / "results.json").string(),
                  eval_results_json(eval_config(a), records)
                          .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                      "\n");
  const std::vector<EvalCell> cells = summarize_records(records);
  const std::string md = eval_results_markdown(cells) + recall_markdown(records);
  write_text_file((dir / "results.md").string(), md);
  write_frontier(a, records, cells, dir);
  out << md;
  err << "wrote results.json, results.md, frontier.svg and frontier.csv to " << dir.string()
      << "\n";
  return 0;
}

int run_bench(const EvalArgs& a, std::ostream& out, std::ostream& err) {
  if (std::find(a.methods.begin(), a.methods.end(), "full") == a.methods.end()) {
    throw Error("--methods: bench compares against full, which must be among them");
  }
  const std::vector<EvalRecord> records = run_evaluation(a, err, "bench_");
  const std::vector<EvalCell> cells = summarize_records(records);
  const std::filesystem::path dir(a.out);
  write_text_file((dir / "bench.json").string(),
                  eval_results_json(eval_config(a), records)
                          .dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
                      "\n");
  const std::string md = bench_markdown(cells);
  write_text_file((dir / "bench.md").string(), md);
  write_frontier(a, records, cells, dir);
  out << md;
  err << "wrote bench.json, bench.md, frontier.svg and frontier.csv to " << dir.string() << "\n";
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
      "same decoder; writes results.json, results.md and the accuracy-vs-TTFT frontier "
      "(frontier.svg, frontier.csv)");
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
