// lclm-train: trains an LCLM checkpoint through the four published stages
// (see docs/training.md). Parsing only; the loop is lclm::train::Trainer.
#include <torch/utils.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "compression/random_lclm.h"
#include "trainer/trainer.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Train an LCLM (encoder, adapter, decoder) on packed next-token prediction."};
  lclm::train::TrainOptions opts;
  std::string init, out, stages = "0,1,2,3", tokenizer_dir = LCLM_DEFAULT_TOKENIZER_DIR;
  std::vector<std::string> corpus;
  std::int64_t steps = 100;
  bool init_random = false;
  lclm::LclmConfig random_config;
  random_config.compression_ratio = 4;
  random_config.encoder_window_size = 32;
  std::uint64_t random_seed = 0;
  auto* init_opt = app.add_option("--init", init, "Checkpoint to start from (published layout)");
  auto* random_opt = app.add_flag("--init-random", init_random,
                                  "Start from a tiny random LCLM written into -o first");
  init_opt->excludes(random_opt);
  app.add_option("-o,--output", out, "Output directory: checkpoint and trainer_state/")->required();
  app.add_option("--stages", stages,
                 "Stages to run in order: 0 adapter warm-up, 1 encoder CPT, "
                 "2 decoder CPT, 3 SFT")
      ->capture_default_str();
  app.add_option("--steps", steps, "Optimizer steps per stage")->capture_default_str();
  app.add_option("--seq-len", opts.seq_len, "Tokens per packed sequence")->capture_default_str();
  app.add_option("--lr-scale", opts.lr_scale, "Factor on every published learning rate")
      ->capture_default_str();
  app.add_option("--warmup", opts.warmup, "Warm-up steps per stage (-1: min(250, steps/10))")
      ->capture_default_str();
  app.add_option("--seed", opts.seed, "Data seed")->capture_default_str();
  app.add_option("--save-every", opts.save_every, "Save every N steps (0: at the end only)")
      ->capture_default_str();
  app.add_option("--log-every", opts.log_every, "Progress line every N steps")
      ->capture_default_str();
  app.add_flag("--resume", opts.resume, "Continue the run in -o exactly where it was saved");
  app.add_option("--text", corpus, "Training text files or directories")
      ->default_str("/usr/share/common-licenses");
  app.add_option("--ratio", random_config.compression_ratio, "--init-random: compression_ratio")
      ->capture_default_str();
  app.add_option("--window", random_config.encoder_window_size,
                 "--init-random: encoder_window_size")
      ->capture_default_str();
  app.add_option("--random-seed", random_seed, "--init-random: weight seed")->capture_default_str();
  app.add_option("--tokenizer-dir", tokenizer_dir, "--init-random: Qwen3 tokenizer files")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    torch::set_num_threads(2);
    opts.out = out;
    opts.log = &std::cerr;
    if (!corpus.empty()) opts.corpus.assign(corpus.begin(), corpus.end());
    if (!opts.resume) {
      opts.stages = lclm::train::parse_stage_list(stages, steps);
      if (init_random) {
        if (std::filesystem::exists(out) && !std::filesystem::is_empty(out)) {
          throw lclm::Error("--init-random: " + out + " exists and is not empty");
        }
        lclm::RandomLclmSpec spec = lclm::tiny_lclm_spec(tokenizer_dir);
        spec.config = random_config;
        spec.seed = random_seed;
        spec.dtype = lclm::DType::F32;
        lclm::write_random_lclm(out, spec);
        opts.init = out;
      } else if (!init.empty()) {
        opts.init = init;
      } else {
        throw lclm::Error("give --init CKPT, --init-random or --resume");
      }
    }
    lclm::train::Trainer trainer(std::move(opts));
    trainer.run();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
