// lclm-evaluate: needle retrieval and reconstruction of a trained LCLM at
// several ratios against the uncompressed baseline (trainer/evaluate.h).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "trainer/evaluate.h"
#include "util/error.h"
#include "util/threads.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Evaluate a trained LCLM: needle retrieval on held-out haystacks and verbatim "
      "reconstruction, compressed at each ratio and uncompressed (ratio 0)."};
  lclm::train::RecallEvalOptions opts;
  std::string checkpoint, json_out, md_out;
  std::vector<std::string> text;
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
  app.add_option("--samples", opts.samples, "Samples per task and length")->capture_default_str();
  app.add_option("--seed", opts.seed, "Sample seed")->capture_default_str();
  app.add_option("--json", json_out, "Write the results as JSON here");
  app.add_option("--markdown", md_out, "Write the tables as markdown here");
  app.add_option("-t,--threads", threads, "Threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    lclm::set_num_threads(threads);
    opts.checkpoint = checkpoint;
    opts.text.assign(text.begin(), text.end());
    opts.progress = &std::cerr;
    const auto results = lclm::train::evaluate_recall(opts);
    const std::string md = lclm::train::recall_markdown(results);
    std::cout << md;
    if (!md_out.empty()) std::ofstream(md_out) << md;
    if (!json_out.empty()) std::ofstream(json_out) << lclm::train::recall_json(results);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
