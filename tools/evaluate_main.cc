// lclm-evaluate: needle retrieval and reconstruction of a trained LCLM at
// several ratios against the uncompressed baseline (trainer/evaluate.h).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <utility>

#include "trainer/evaluate.h"
#include "util/error.h"
#include "util/threads.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Evaluate a trained LCLM: needle retrieval on held-out haystacks and verbatim "
      "reconstruction, compressed at each ratio and uncompressed (ratio 0)."};
  lclm::train::RecallEvalOptions opts;
  std::string checkpoint, json_out, md_out, answers_out;
  std::vector<std::string> text, tasks;
  int threads = 2;
  app.add_option("-m,--model", checkpoint, "LCLM checkpoint directory")->required();
  app.add_option("--text", text, "Held-out text files or directories")->required();
  app.add_option("--ratios", opts.ratios, "Ratios; 0 is the uncompressed baseline")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--lengths", opts.haystack_tokens, "Needle haystack lengths in tokens")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--passages", opts.passage_tokens, "Reconstruction passage lengths in tokens")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--numbers", opts.number_tokens,
                 "Number-copying passage lengths in tokens: random numbers of 3-9 digits to "
                 "repeat from latents, whose digits' order no language model can guess "
                 "(default: none)")
      ->delimiter(',')
      ->check(CLI::Range(1, 65536));
  app.add_option("--tasks", tasks,
                 "Run only these tasks, e.g. numbers (default: needle and reconstruction, and "
                 "numbers when --numbers is given)")
      ->delimiter(',')
      ->check(CLI::IsMember({"needle", "reconstruction", "numbers"}));
  app.add_option("--samples", opts.samples, "Samples per task and length")->capture_default_str();
  app.add_option("--seed", opts.seed, "Sample seed")->capture_default_str();
  app.add_option("--json", json_out, "Write the results as JSON here");
  app.add_option("--markdown", md_out, "Write the tables as markdown here");
  app.add_option("--answers", answers_out,
                 "Write every sample's answer here as it comes, one JSON object a line (task, "
                 "tokens, ratio, sample, expected, answer, correct, agreement, needle_token, ...)");
  app.add_option("-t,--threads", threads, "Threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    lclm::set_num_threads(threads);
    if (!tasks.empty()) lclm::train::keep_tasks(opts, tasks);
    opts.checkpoint = checkpoint;
    opts.text.assign(text.begin(), text.end());
    opts.progress = &std::cerr;
    // Every output is opened before the evaluation, which takes minutes to
    // hours, so a path that cannot be written fails at once.
    std::ofstream md_file, json_file, answers_file;
    for (auto [path, file] : {std::pair{&md_out, &md_file}, std::pair{&json_out, &json_file},
                              std::pair{&answers_out, &answers_file}}) {
      if (path->empty()) continue;
      file->open(*path);
      if (!*file) throw lclm::Error("cannot write " + *path);
    }
    if (answers_file.is_open()) opts.answers = &answers_file;
    const auto results = lclm::train::evaluate_recall(opts);
    const std::string md = lclm::train::recall_markdown(results);
    std::cout << md;
    if (md_file.is_open()) md_file << md;
    if (json_file.is_open()) json_file << lclm::train::recall_json(results);
    for (std::ofstream* file : {&md_file, &json_file, &answers_file}) {
      if (file->is_open() && !file->flush()) throw lclm::Error("writing the results failed");
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
