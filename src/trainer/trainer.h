// The LCLM training loop: four stages of next-token prediction on packed
// sequences (see docs/training.md), AdamW with per-stage parameter groups,
// linear warm-up then cosine decay, gradient clipping, checkpoints in the
// published layout with the trainer's state beside the weights, and exact
// resume.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <limits>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "trainer/data.h"
#include "trainer/torch_lclm.h"

namespace lclm::train {

class DataParallel;

struct StageSteps {
  int stage = 0;  // 0 adapter warm-up, 1 encoder CPT, 2 decoder CPT, 3 SFT
  std::int64_t steps = 0;
  bool operator==(const StageSteps&) const = default;
};

// Published learning rates (before --lr-scale) and weight decays of a stage.
struct StageSettings {
  bool train_adapter = false, train_encoder = false, train_decoder = false;
  bool train_memory_rows = false;  // only the memory tokens' decoder embedding rows
  double adapter_lr = 0, encoder_lr = 0, decoder_lr = 0;
  double encoder_adapter_weight_decay = 0.01, decoder_weight_decay = 0.0;
};
StageSettings stage_settings(int stage);  // throws lclm::Error outside 0..3

inline constexpr double kMinLr = 1e-6;
inline constexpr std::int64_t kDefaultLogEvery = 10;  // steps between progress lines

// Linear warm-up over `warmup` steps to base, then cosine decay to
// min(kMinLr, base) at step `total`; step counts from 0.
double scheduled_lr(double base, std::int64_t step, std::int64_t warmup, std::int64_t total);

struct TrainOptions {
  std::filesystem::path init;  // the checkpoint to start from (ignored on resume)
  std::filesystem::path out;   // checkpoints and trainer_state/
  std::vector<StageSteps> stages;
  std::int64_t seq_len = 512;
  // Packed sequences each process trains on per optimizer step (gradient
  // accumulation): the step's loss and gradient are the means over the
  // world x batch sequences of all ranks. A resumed run keeps its global
  // batch and divides it by the world size.
  std::int64_t batch = 1;
  double lr_scale = 1.0;
  std::int64_t warmup = -1;  // steps per stage; -1: min(250, steps / 10)
  std::uint64_t seed = 0;
  std::vector<std::int64_t> ratios;  // each example compressed at one; empty: the checkpoint's
  std::optional<TaskMix> mix;        // every stage's task mix; none: stage_task_mix
  double haystack_fill_lo = 0.25, haystack_fill_hi = 0.85;  // DataGenerator::set_haystack_fill
  double copy_fill_lo = 0.2, copy_fill_hi = 0.6;            // DataGenerator::set_copy_fill
  double scramble = 0.0;                                    // DataGenerator::set_scramble
  double numbers = 0.0;                                     // DataGenerator::set_numbers
  std::int64_t needles_lo = 1, needles_hi = 3;              // DataGenerator::set_needles
  std::int64_t questions = 1;                               // DataGenerator::set_questions
  // Each packed example attends only to itself, from position 0 (as it runs
  // at inference); false: the whole pack is one causal sequence.
  bool separate_documents = true;
  // Weight of latent_alignment_loss in each step's loss (0: next-token
  // prediction alone, as published).
  double latent_align = 0.0;
  // Save every N steps (0: only at the end) and print a progress line every
  // N steps (0: none). Unset: 0 and kDefaultLogEvery on a new run; a resumed
  // run keeps the cadence it was saved with.
  std::optional<std::int64_t> save_every, log_every;
  // Stop (and save) once the plan's global step reaches this, as an
  // interruption would; a later --resume goes on. 0: run the whole plan.
  std::int64_t until = 0;
  bool resume = false;
  // run() saves and returns after the step during which this turns true
  // (lclm-train sets it on SIGINT/SIGTERM); a later resume goes on.
  const std::atomic<bool>* stop_requested = nullptr;
  // The data-parallel group this process is a rank of (not owned); null: one
  // process. Rank r trains sequences r x batch .. r x batch + batch - 1 of
  // each step's world x batch, gradients are summed over the ranks, and only
  // rank 0 saves (every rank may log; lclm-train gives rank 0 alone a log).
  DataParallel* dist = nullptr;
  std::vector<std::filesystem::path> corpus = default_corpus_paths();
  DType dtype = DType::F32;     // of saved weights; F32 keeps resume exact
  std::ostream* log = nullptr;  // progress lines; none when null
};

// The latent alignment loss of a packed sequence: for every latent,
// 1 - cosine(latent, mean of the decoder's input embeddings of the r tokens
// it stands for), averaged over the latents. inputs [L, D] are the decoder
// inputs of ex with the latents spliced in (TorchLclm::decoder_inputs); the
// embeddings are a fixed target (no gradient reaches them). It pulls each
// latent towards the input the decoder already reads for those tokens, so
// that reading latents can start from reading tokens (docs/training.md).
// An undefined tensor when ex has no regions.
torch::Tensor latent_alignment_loss(TorchLclm& model, const torch::Tensor& inputs,
                                    const Example& ex);

class Trainer {
 public:
  // Loads opts.init (or opts.out's checkpoint and state with opts.resume).
  // Throws lclm::Error for a bad plan, a missing checkpoint, an OUT that
  // already holds a run (without resume), or a state that does not match the
  // plan; with opts.dist, also when the ranks do not start from the same
  // weights, optimizer state, position and data.
  explicit Trainer(TrainOptions opts);
  ~Trainer();

  bool done() const;
  // One optimizer step on the next world x batch packed sequences; returns
  // their mean target loss (next-token cross entropy; the alignment term is
  // last_alignment_loss()).
  double step();
  // Writes the checkpoint with trainer_state/ to opts.out, atomically; on
  // ranks other than 0 does nothing (rank 0 writes the run).
  void save();
  // Runs every remaining step, logging and saving as configured, and saves at the end.
  void run();

  // Mean loss over the target tokens of ex, without gradients.
  double loss_of(const Example& ex);
  // The decoder's logits [L, vocab] of ex, as training computes them
  // (documents kept apart per separate_documents), without gradients.
  torch::Tensor logits_of(const Example& ex);
  // The first sequence the next step() trains on.
  Example peek_batch() const;

  TorchLclm& model() { return *model_; }
  int stage() const;
  std::int64_t global_step() const { return global_step_; }
  std::int64_t step_in_stage() const { return step_in_stage_; }
  double current_lr() const { return last_lr_; }  // the base group's lr of the last step
  // The mean latent_alignment_loss of the last step's sequences that had
  // latents; NaN when none had or latent_align is 0.
  double last_alignment_loss() const { return last_align_; }
  std::uint64_t next_example() const { return next_example_; }
  // A hash of what every rank must agree on before a step: the weights, the
  // optimizer's state, the plan and its position, and the next sequence.
  std::uint64_t fingerprint() const;

 private:
  void begin_stage();
  TaskMix stage_mix() const;
  void load_state(const std::filesystem::path& dir);
  nlohmann::json state_json() const;
  void check_ranks_agree();

  struct Optim;
  TrainOptions opts_;
  std::shared_ptr<TorchLclm> model_;
  std::filesystem::path side_files_;  // where tokenizer files come from when saving
  std::unique_ptr<ExampleTokenizer> tokens_;
  std::unique_ptr<DataGenerator> data_;
  std::unique_ptr<Optim> optim_;
  std::size_t stage_index_ = 0;
  std::int64_t step_in_stage_ = 0, global_step_ = 0;
  std::uint64_t next_example_ = 0;
  double last_lr_ = 0;
  double last_align_ = std::numeric_limits<double>::quiet_NaN();
  std::int64_t last_tokens_ = 0;  // of the last step's sequences, on every rank
  // Seconds the last step spent waiting for the slowest rank, then summing
  // gradients (data parallel only).
  double last_wait_s_ = 0, last_sum_s_ = 0;
  // Whether some rank was asked to stop by the end of the last step: ranks
  // agree on it, so they stop after the same step.
  bool stop_agreed_ = false;
};

// Parses "0,1,2,3" with steps each: throws lclm::Error naming the bad item.
std::vector<StageSteps> parse_stage_list(const std::string& list, std::int64_t steps);

}  // namespace lclm::train
