// lclm-train-indexmem: trains IndexMem's indexer and latent memory on a frozen
// decoder and writes the weights the engine's `indexmem` KV policy reads
// (docs/indexmem.md). Parsing only; the loop is lclm::train::train_indexmem.
#include <torch/utils.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "trainer/indexmem_trainer.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Train IndexMem (learned KV eviction with a latent memory) on a frozen decoder."};
  lclm::train::IndexMemTrainOptions o;
  std::string init, out;
  std::vector<std::string> text;
  int threads = 2;
  app.add_option("--init", init, "Qwen3 decoder directory or LCLM checkpoint")->required();
  app.add_option("-o,--output", out,
                 "Weights directory to write (the engine's default: CKPT/indexmem)")
      ->required();
  app.add_option("--steps", o.steps, "Optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "Examples per step")->capture_default_str();
  app.add_option("--ratio", o.ratio, "Budget: prompt tokens per kept entry")
      ->check(CLI::Range(1.0, 1e6))
      ->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "Sizes the prompts (haystacks, copied passages)")
      ->capture_default_str();
  app.add_option("--max-answer", o.max_answer, "Answer tokens trained on per example")
      ->capture_default_str();
  app.add_option("--lr", o.lr, "Adam learning rate")->capture_default_str();
  app.add_option("--seed", o.seed, "Data and initialisation seed")->capture_default_str();
  app.add_option("--indexer-hidden", o.indexer_hidden, "Indexer MLP width")->capture_default_str();
  app.add_option("--memory-features", o.memory_features, "Memory feature map size F")
      ->capture_default_str();
  app.add_option("--sinks", o.sinks, "First entries always kept")->capture_default_str();
  app.add_option("--recent", o.recent, "Last entries always kept")->capture_default_str();
  app.add_option("--retrieval-share", o.retrieval_share,
                 "Share of retrieval examples (the rest copy a passage)")
      ->capture_default_str();
  app.add_option("--held-out", o.held_out, "Held-out examples measured at the end")
      ->capture_default_str();
  app.add_option("--log-every", o.log_every, "Progress line every N steps")->capture_default_str();
  app.add_option("-t,--threads", threads, "Threads for libtorch")->capture_default_str();
  app.add_option("--text", text, "Training text files or directories")
      ->default_str("/usr/share/common-licenses");
  CLI11_PARSE(app, argc, argv);

  try {
    if (threads < 1) throw lclm::Error("--threads must be at least 1");
    torch::set_num_threads(threads);
    o.init = init;
    o.out = out;
    if (!text.empty()) o.text.assign(text.begin(), text.end());
    o.log = &std::cerr;
    lclm::train::train_indexmem(o);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
