// lclm-train: trains an LCLM checkpoint through the four published stages
// (see docs/training.md). Parsing only; the loop is lclm::train::Trainer.
#include <malloc.h>
#include <torch/utils.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>

#include "fixtures/random_lclm.h"
#include "format/dtype.h"
#include "tokenizer/truncated_vocab.h"
#include "trainer/data_parallel.h"
#include "trainer/lclm_checkpoint.h"
#include "trainer/trainer.h"
#include "util/error.h"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};

extern "C" void on_stop_signal(int sig) {
  g_signal.store(sig);
  g_stop.store(true);
  std::signal(sig, SIG_DFL);
}

}  // namespace

// Every step allocates and frees tensors of tens of megabytes. glibc's
// defaults hand blocks over 128 KiB back to the kernel at each free and
// trim the heap's top, so every step page-faults its memory in afresh
// (zeroed by the kernel): at sequences of 2,048 with the agent task, 4 steps
// took 53 s, 42 of them in the kernel. Keeping freed memory in the process
// (blocks up to 32 MiB from the heap, no trimming, 1 GiB of headroom at
// the top) took 35 s
// (docs/journal/2026-12-05-agent-training.md).
static void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  mallopt(M_TOP_PAD, 1 << 30);
}

int main(int argc, char** argv) {
  keep_freed_memory();
  CLI::App app{"Train an LCLM (encoder, adapter, decoder) on packed next-token prediction."};
  lclm::train::TrainOptions opts;
  std::string init, out, stages = "0,1,2,3", tokenizer_dir = LCLM_DEFAULT_TOKENIZER_DIR;
  std::vector<std::string> corpus;
  std::int64_t steps = 100;
  bool init_random = false;
  lclm::LclmConfig random_config;
  random_config.compression_ratio = 4;
  random_config.encoder_window_size = 64;
  std::uint64_t random_seed = 0;
  lclm::LclmShape shape;
  std::int64_t vocab = 0;
  int threads = 2;
  std::vector<std::int64_t> ratios;
  std::string export_dir, save_dtype = "f32", mix;
  std::vector<double> fill, copy_fill;
  std::vector<std::int64_t> needles;
  auto* init_opt = app.add_option("--init", init, "Checkpoint to start from (published layout)");
  auto* random_opt = app.add_flag("--init-random", init_random,
                                  "Start from a random LCLM (--vocab, --encoder-*, --decoder-* "
                                  "shape it) written into -o first");
  init_opt->excludes(random_opt);
  app.add_option("-o,--output", out, "Output directory: checkpoint and trainer_state/");
  app.add_option("--stages", stages,
                 "Stages to run in order: 0 adapter warm-up, 1 encoder CPT, "
                 "2 decoder CPT, 3 SFT")
      ->capture_default_str();
  app.add_option("--steps", steps, "Optimizer steps per stage")->capture_default_str();
  app.add_option("--seq-len", opts.seq_len, "Tokens per packed sequence")->capture_default_str();
  app.add_option("--batch", opts.batch,
                 "Packed sequences per optimizer step on each process (gradients "
                 "accumulated; the step's loss and gradient are their mean; --resume keeps "
                 "the run's global batch)")
      ->capture_default_str();
  double dist_timeout = 300;
  app.add_option("--dist-timeout", dist_timeout,
                 "Seconds to wait for the other ranks (WORLD_SIZE > 1): to start, and at "
                 "each step's gradient sum; a rank that exits fails the others at once")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--lr-scale", opts.lr_scale, "Factor on every published learning rate")
      ->capture_default_str();
  app.add_option("--warmup", opts.warmup, "Warm-up steps per stage (-1: min(250, steps/10))")
      ->capture_default_str();
  app.add_option("--seed", opts.seed, "Data seed")->capture_default_str();
  std::int64_t save_every = 0, log_every = lclm::train::kDefaultLogEvery;
  auto* save_every_opt = app.add_option(
      "--save-every", save_every,
      "Save every N steps (0: at the end only; --resume: the saved run's unless given)");
  save_every_opt->capture_default_str();
  app.add_option("--until", opts.until,
                 "Stop and save once the run reaches this global step (continue later with "
                 "--resume); 0 runs the whole plan")
      ->capture_default_str();
  auto* log_every_opt = app.add_option(
      "--log-every", log_every,
      "Progress line every N steps (0: none; --resume: the saved run's unless given)");
  log_every_opt->capture_default_str();
  app.add_flag("--resume", opts.resume, "Continue the run in -o exactly where it was saved");
  app.add_option("--ratios", ratios,
                 "Compress each example at one of these ratios, e.g. 4,8,16 (default: the "
                 "checkpoint's compression_ratio)")
      ->delimiter(',');
  app.add_option("--export", export_dir,
                 "Only write the --init checkpoint to this directory as --save-dtype, "
                 "without trainer state (to ship a trained model)");
  std::int64_t deepen_encoder = 0;
  app.add_option("--deepen-encoder", deepen_encoder,
                 "With --export: grow the encoder to N layers; each new layer copies an old "
                 "one with its output projections zero, so the model computes what it did "
                 "until training gives the new layers a use")
      ->check(CLI::PositiveNumber);
  std::int64_t deepen_decoder = 0;
  app.add_option("--deepen-decoder", deepen_decoder,
                 "With --export: grow the decoder to N layers the same way")
      ->check(CLI::PositiveNumber);
  std::int64_t widen_encoder = 0;
  app.add_option("--widen-encoder", widen_encoder,
                 "With --export: widen the encoder to hidden size N (a multiple of its own), "
                 "with more heads and MLP width and the adapter's input to match; the new "
                 "dimensions start with nothing written to them, so the latents stay what "
                 "they were until training gives them a use")
      ->check(CLI::PositiveNumber);
  app.add_option("--save-dtype", save_dtype,
                 "f32 | bf16 | f16: dtype of saved weights (f32 keeps --resume exact)")
      ->capture_default_str();
  app.add_option("--mix", mix,
                 "Task shares for every stage: continual,reconstruction,retrieval,"
                 "plain-retrieval,plain-reconstruction[,facts,plain-facts,agent] (default: "
                 "each stage's own; facts: needles in many wordings, agent: skim-and-expand "
                 "rounds)");
  app.add_option("--haystack-fill", fill,
                 "LO,HI: share of the sequence a retrieval haystack fills (default 0.25,0.85)")
      ->delimiter(',')
      ->expected(2);
  app.add_option("--copy-fill", copy_fill,
                 "LO,HI: share of the sequence, in tokens, a reconstruction passage fills "
                 "(default 0.2,0.6)")
      ->delimiter(',')
      ->expected(2);
  app.add_option("--scramble", opts.scramble,
                 "P: probability that a reconstruction passage becomes its distinct words, "
                 "shuffled (trains copying that cannot lean on language-model guesses)")
      ->capture_default_str();
  app.add_option("--numbers", opts.numbers,
                 "P: probability that a reconstruction passage becomes random numbers of 3-9 "
                 "digits (trains latents to keep the order of their digits, which needle "
                 "answers need)")
      ->capture_default_str();
  app.add_option("--needles", needles, "LO,HI: needles per retrieval haystack (default 1,3)")
      ->delimiter(',')
      ->expected(2);
  app.add_option("--questions", opts.questions,
                 "Ask up to this many of a haystack's needles, each in its own turn (more "
                 "retrieval answers per sequence)")
      ->capture_default_str();
  app.add_option("--latent-align", opts.latent_align,
                 "W: add W x (1 - cosine(latent, mean input embedding of its r tokens)) to "
                 "the loss, so latents start out as inputs the decoder already reads")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  std::string pack_attention = "documents";
  app.add_option("--pack-attention", pack_attention,
                 "documents: each example packed into a sequence attends only to itself, "
                 "from position 0, as at inference; all: the whole pack is one causal "
                 "sequence (runs saved before this flag trained so)")
      ->check(CLI::IsMember({"documents", "all"}))
      ->capture_default_str();
  app.add_option("-t,--threads", threads, "Threads for libtorch")->capture_default_str();
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
  app.add_option("--vocab", vocab,
                 "--init-random: keep the tokenizer's first N tokens (0: all; see "
                 "docs/training.md)")
      ->capture_default_str();
  app.add_option("--encoder-hidden", shape.encoder_hidden, "--init-random: encoder hidden size")
      ->capture_default_str();
  app.add_option("--encoder-layers", shape.encoder_layers, "--init-random: encoder layers")
      ->capture_default_str();
  app.add_option("--decoder-hidden", shape.decoder_hidden, "--init-random: decoder hidden size")
      ->capture_default_str();
  app.add_option("--decoder-layers", shape.decoder_layers, "--init-random: decoder layers")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // Read before anything else can fail, so that every error line says
  // which rank printed it.
  lclm::train::DistributedEnv env;
  std::string who;
  try {
    env = lclm::train::distributed_env(std::getenv);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  if (env.world_size > 1) {
    who = "rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
          " (local rank " + std::to_string(env.local_rank) + "): ";
  }
  try {
    if (threads < 1) throw lclm::Error("--threads must be at least 1");
    torch::set_num_threads(threads);
    opts.dtype = lclm::parse_dtype(save_dtype, "--save-dtype");
    if (!export_dir.empty()) {
      if (init.empty()) throw lclm::Error("--export needs --init CKPT");
      const auto model = lclm::train::load_lclm_checkpoint(init);
      if (deepen_encoder > 0) model->encoder->deepen(deepen_encoder);
      if (deepen_decoder > 0) model->decoder->deepen(deepen_decoder);
      if (widen_encoder > 0) model->widen_encoder(widen_encoder);
      lclm::train::save_lclm_checkpoint(*model, export_dir, opts.dtype, init);
      std::cerr << "wrote " << export_dir << " (" << save_dtype << ")\n";
      return 0;
    }
    if (deepen_encoder > 0) throw lclm::Error("--deepen-encoder goes with --export");
    if (deepen_decoder > 0) throw lclm::Error("--deepen-decoder goes with --export");
    if (widen_encoder > 0) throw lclm::Error("--widen-encoder goes with --export");
    if (out.empty()) throw lclm::Error("-o OUT is required");
    std::unique_ptr<lclm::train::DataParallel> dist;
    if (env.world_size > 1) {
      if (init_random) {
        throw lclm::Error(
            "--init-random writes -o from one process: with WORLD_SIZE > 1 make the "
            "checkpoint first (lclm-train --init-random without WORLD_SIZE, or "
            "lclm-make-model) and give every rank --init CKPT");
      }
      dist = std::make_unique<lclm::train::DataParallel>(
          env, std::chrono::milliseconds(static_cast<std::int64_t>(dist_timeout * 1000)));
      opts.dist = dist.get();
      if (env.rank == 0) {
        std::cerr << "data parallel: " << env.world_size << " ranks met at " << env.master_addr
                  << ":" << env.master_port << " (this is rank 0, local rank " << env.local_rank
                  << "); gloo, timeout " << dist_timeout << " s\n";
      }
    }
    opts.out = out;
    opts.ratios = ratios;
    opts.separate_documents = pack_attention == "documents";
    if (!mix.empty()) opts.mix = lclm::train::parse_task_mix(mix);
    if (!fill.empty()) {
      opts.haystack_fill_lo = fill[0];
      opts.haystack_fill_hi = fill[1];
    }
    if (!copy_fill.empty()) {
      opts.copy_fill_lo = copy_fill[0];
      opts.copy_fill_hi = copy_fill[1];
    }
    if (!needles.empty()) {
      opts.needles_lo = needles[0];
      opts.needles_hi = needles[1];
    }
    // Rank 0 speaks for the job; the others print only their errors.
    opts.log = env.rank == 0 ? &std::cerr : nullptr;
    // Unset, the trainer takes the saved run's cadence on --resume and its
    // defaults (those shown above) otherwise.
    if (save_every_opt->count() > 0) opts.save_every = save_every;
    if (log_every_opt->count() > 0) opts.log_every = log_every;
    // The first SIGINT/SIGTERM ends the run after its current step, saved;
    // a second one ends the process at once.
    opts.stop_requested = &g_stop;
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    if (!corpus.empty()) opts.corpus.assign(corpus.begin(), corpus.end());
    if (!opts.resume) {
      opts.stages = lclm::train::parse_stage_list(stages, steps);
      if (init_random) {
        if (std::filesystem::exists(out) && !std::filesystem::is_empty(out)) {
          throw lclm::Error("--init-random: " + out + " exists and is not empty");
        }
        // A cut vocabulary is staged beside the output, then removed.
        const std::filesystem::path cut_tokenizer = out + ".vocab";
        if (vocab > 0) lclm::write_truncated_tokenizer(tokenizer_dir, cut_tokenizer, vocab);
        lclm::RandomLclmSpec spec = lclm::small_lclm_spec(
            vocab > 0 ? cut_tokenizer : std::filesystem::path(tokenizer_dir), shape);
        spec.config.compression_ratio = random_config.compression_ratio;
        spec.config.encoder_window_size = random_config.encoder_window_size;
        spec.seed = random_seed;
        spec.dtype = lclm::DType::F32;
        lclm::write_random_lclm(out, spec);
        std::filesystem::remove_all(cut_tokenizer);
        opts.init = out;
      } else if (!init.empty()) {
        opts.init = init;
      } else {
        throw lclm::Error("give --init CKPT, --init-random or --resume");
      }
    }
    lclm::train::Trainer trainer(std::move(opts));
    trainer.run();
    // Saved: now end as the signal would have, so that a calling shell or
    // script stops too instead of taking the run for finished.
    if (const int sig = g_signal.load(); sig != 0) std::raise(sig);
  } catch (const std::exception& e) {
    std::cerr << "error: " << who << e.what() << "\n";
    return 1;
  }
  return 0;
}
