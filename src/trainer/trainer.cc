#include "trainer/trainer.h"

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <xxhash.h>

#include <chrono>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "format/json_file.h"
#include "trainer/data_parallel.h"
#include "trainer/lclm_checkpoint.h"
#include "util/error.h"

namespace lclm::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateDir = "trainer_state";

std::vector<torch::Tensor> parameters_of(const torch::nn::Module& m) {
  return m.parameters();
}

std::string format_seconds(double s) {
  const auto total = static_cast<long long>(s);
  std::ostringstream out;
  if (total >= 3600) out << total / 3600 << "h";
  if (total >= 60) out << (total / 60) % 60 << "m";
  out << total % 60 << "s";
  return out.str();
}

}  // namespace

StageSettings stage_settings(int stage) {
  StageSettings s;
  switch (stage) {
    case 0:
      s.train_adapter = s.train_memory_rows = true;
      s.adapter_lr = 1e-3;
      break;
    case 1:
      s.train_adapter = s.train_encoder = true;
      s.adapter_lr = s.encoder_lr = 6e-5;
      break;
    case 2:
      s.train_adapter = s.train_encoder = s.train_decoder = true;
      s.adapter_lr = s.encoder_lr = 6e-5;
      s.decoder_lr = 1e-5;
      break;
    case 3:
      s.train_adapter = s.train_encoder = s.train_decoder = true;
      s.adapter_lr = s.encoder_lr = s.decoder_lr = 3e-5;
      break;
    default:
      throw Error("stage " + std::to_string(stage) + " does not exist: stages are 0, 1, 2 and 3");
  }
  return s;
}

double scheduled_lr(double base, std::int64_t step, std::int64_t warmup, std::int64_t total) {
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double floor = std::min(kMinLr, base);
  const std::int64_t decay_steps = std::max<std::int64_t>(1, total - warmup);
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  return floor + (base - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::vector<StageSteps> parse_stage_list(const std::string& list, std::int64_t steps) {
  if (steps <= 0) throw Error("--steps must be positive, not " + std::to_string(steps));
  std::vector<StageSteps> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.size() != 1 || item[0] < '0' || item[0] > '3') {
      throw Error("--stages: \"" + item + "\" is not a stage (0, 1, 2 or 3)");
    }
    out.push_back({item[0] - '0', steps});
  }
  if (out.empty()) throw Error("--stages names no stage");
  return out;
}

// AdamW over the stage's parameter groups, each with its base lr.
struct Trainer::Optim {
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::vector<double> base_lrs;              // per group
  std::vector<torch::Tensor> trainable;      // all groups' parameters, for clipping
  torch::Tensor embedding, row_mask;         // stage 0: the decoder embedding and [vocab, 1]
  std::unique_ptr<GradientBuckets> buckets;  // of `trainable`, with data parallel
};

Trainer::Trainer(TrainOptions opts) : opts_(std::move(opts)) {
  if (opts_.out.empty()) throw Error("no output directory (-o)");
  if (opts_.resume) {
    if (!fs::exists(opts_.out / kStateDir / "state.json")) {
      throw Error("cannot resume: " + (opts_.out / kStateDir / "state.json").string() +
                  " does not exist");
    }
    model_ = load_lclm_checkpoint(opts_.out);
    side_files_ = opts_.out;
    load_state(opts_.out / kStateDir);
  } else {
    if (opts_.stages.empty()) throw Error("no stages to train");
    for (const StageSteps& s : opts_.stages) {
      stage_settings(s.stage);
      if (s.steps <= 0) throw Error("stage " + std::to_string(s.stage) + " has no steps");
    }
    if (fs::exists(opts_.out / kStateDir)) {
      throw Error(opts_.out.string() +
                  " already holds a training run: pass --resume or choose "
                  "another output directory");
    }
    const bool out_is_init =
        fs::exists(opts_.out) && fs::exists(opts_.init) && fs::equivalent(opts_.out, opts_.init);
    if (!out_is_init && fs::exists(opts_.out) && !fs::is_empty(opts_.out)) {
      throw Error("output directory " + opts_.out.string() + " exists and is not empty");
    }
    model_ = load_lclm_checkpoint(opts_.init);
    side_files_ = opts_.init;
  }
  if (opts_.seq_len < 16) throw Error("--seq-len must be at least 16");
  if (opts_.batch < 1) throw Error("--batch must be at least 1");
  if (opts_.save_every.value_or(0) < 0 || opts_.log_every.value_or(0) < 0) {
    throw Error("--save-every and --log-every take a step count >= 0");
  }
  tokens_ = std::make_unique<ExampleTokenizer>(side_files_);
  data_ = std::make_unique<DataGenerator>(Corpus::from_paths(opts_.corpus), opts_.seed,
                                          static_cast<std::size_t>(opts_.seq_len),
                                          tokens_->checkpoint_ratio(), opts_.ratios);
  // The generator has checked that each ratio is positive; each must also be
  // one the checkpoint can run at (concat pooling fixes it).
  for (const std::int64_t r : opts_.ratios) model_->config().at_ratio(r);
  data_->set_haystack_fill(opts_.haystack_fill_lo, opts_.haystack_fill_hi);
  data_->set_copy_fill(opts_.copy_fill_lo, opts_.copy_fill_hi);
  data_->set_scramble(opts_.scramble);
  data_->set_numbers(opts_.numbers);
  if (opts_.needles_lo < 1 || opts_.questions < 1) {
    throw Error("--needles and --questions take positive counts");
  }
  data_->set_needles(static_cast<std::size_t>(opts_.needles_lo),
                     static_cast<std::size_t>(opts_.needles_hi));
  data_->set_questions(static_cast<std::size_t>(opts_.questions));
  data_->set_token_counter([tokens = tokens_.get()](std::string_view text) {
    return tokens->decoder().encode(text).size();
  });
  if (opts_.resume && step_in_stage_ > 0) {
    begin_stage();
    torch::load(*optim_->adamw, (opts_.out / kStateDir / "optimizer.pt").string());
  }
  if (opts_.dist) check_ranks_agree();
}

std::uint64_t Trainer::fingerprint() const {
  XXH3_state_t* hash = XXH3_createState();
  XXH3_64bits_reset(hash);
  const auto add = [&](const void* data, std::size_t bytes) {
    XXH3_64bits_update(hash, data, bytes);
  };
  nlohmann::json state = state_json();
  // Only rank 0 logs and saves, so the cadence may differ between ranks.
  state.erase("save_every");
  state.erase("log_every");
  const std::string settings = state.dump();
  add(settings.data(), settings.size());
  const auto add_tensor = [&](const torch::Tensor& t) {
    if (!t.defined()) return;
    const torch::Tensor c = t.detach().contiguous();
    add(c.data_ptr(), static_cast<std::size_t>(c.numel() * c.element_size()));
  };
  for (const torch::Tensor& p : model_->parameters()) add_tensor(p);
  // The optimizer's state by parameter, in group order: torch::save's bytes
  // would not do, they name each parameter by its address in this process.
  if (optim_) {
    const auto& by_address = optim_->adamw->state();
    for (const auto& group : optim_->adamw->param_groups()) {
      for (const torch::Tensor& p : group.params()) {
        const auto it = by_address.find(c10::guts::to_string(p.unsafeGetTensorImpl()));
        if (it == by_address.end()) continue;
        const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        const std::int64_t step = s.step();
        add(&step, sizeof step);
        add_tensor(s.exp_avg());
        add_tensor(s.exp_avg_sq());
        add_tensor(s.max_exp_avg_sq());
      }
    }
  }
  const Example next = peek_batch();
  add(next.ids.data(), next.ids.size() * sizeof(next.ids[0]));
  const std::uint64_t digest = XXH3_64bits_digest(hash);
  XXH3_freeState(hash);
  return digest;
}

// Ranks that start apart would each apply the same summed gradient to
// different weights and drift silently; refuse to start instead.
void Trainer::check_ranks_agree() {
  const std::vector<std::int64_t> prints = opts_.dist->all_gather(
      static_cast<std::int64_t>(fingerprint()), "comparing the ranks' start");
  std::string apart;
  for (std::size_t r = 1; r < prints.size(); ++r) {
    if (prints[r] != prints[0]) apart += (apart.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!apart.empty()) {
    throw Error("rank(s) " + apart +
                " start from other weights, optimizer state, settings or data than rank 0: "
                "every rank must --init the same checkpoint (or --resume the same saved run) "
                "with the same flags and --text");
  }
}

Trainer::~Trainer() = default;

int Trainer::stage() const {
  return opts_.stages[stage_index_].stage;
}

bool Trainer::done() const {
  return stage_index_ + 1 >= opts_.stages.size() &&
         step_in_stage_ >= opts_.stages[stage_index_].steps;
}

void Trainer::begin_stage() {
  const StageSettings s = stage_settings(stage());
  for (torch::Tensor& p : model_->parameters()) {
    p.set_requires_grad(false);
    p.mutable_grad().reset();
  }
  optim_ = std::make_unique<Optim>();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  const auto add_group = [&](std::vector<torch::Tensor> params, double lr, double weight_decay) {
    for (torch::Tensor& p : params) {
      p.set_requires_grad(true);
      optim_->trainable.push_back(p);
    }
    auto options = std::make_unique<torch::optim::AdamWOptions>(lr * opts_.lr_scale);
    options->betas({0.9, 0.95}).eps(1e-8).weight_decay(weight_decay);
    groups.emplace_back(std::move(params), std::move(options));
    optim_->base_lrs.push_back(lr * opts_.lr_scale);
  };
  if (s.train_adapter) {
    add_group(parameters_of(*model_->adapter), s.adapter_lr, s.encoder_adapter_weight_decay);
  }
  if (s.train_encoder) {
    add_group(parameters_of(*model_->encoder), s.encoder_lr, s.encoder_adapter_weight_decay);
  }
  if (s.train_decoder) {
    add_group(parameters_of(*model_->decoder), s.decoder_lr, s.decoder_weight_decay);
  } else if (s.train_memory_rows) {
    // The whole embedding is the parameter, its gradient is masked to the
    // three rows; without weight decay AdamW leaves rows with zero gradient
    // bit-identical.
    optim_->embedding = model_->decoder->embed_tokens->weight;
    optim_->row_mask = torch::zeros({optim_->embedding.size(0), 1});
    for (std::int32_t id : {tokens_->memory_start(), tokens_->memory_end(), tokens_->memory()}) {
      optim_->row_mask[id] = 1.0f;
    }
    add_group({optim_->embedding}, s.adapter_lr, 0.0);
  }
  optim_->adamw = std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(1e-3));
  if (opts_.dist) optim_->buckets = std::make_unique<GradientBuckets>(optim_->trainable);
}

TaskMix Trainer::stage_mix() const {
  return opts_.mix ? *opts_.mix : stage_task_mix(stage());
}

Example Trainer::peek_batch() const {
  std::uint64_t index = next_example_;
  return pack_examples(*data_, *tokens_, stage_mix(), index,
                       static_cast<std::size_t>(opts_.seq_len));
}

namespace {

// The decoder's final hidden states [L, D] from its inputs [L, D] (latents
// spliced in), ex's packed examples kept apart when `separate` (each from
// position 0, reading only itself).
torch::Tensor decoder_hidden(TorchLclm& model, const torch::Tensor& inputs, const Example& ex,
                             bool separate) {
  if (!separate || ex.starts.size() < 2) {
    return model.decoder->forward(inputs, AttentionMask::Causal);
  }
  const PackedDocuments docs =
      packed_documents(ex.starts, static_cast<std::int64_t>(ex.ids.size()));
  return model.decoder->forward(inputs, AttentionMask::Causal, &docs);
}

torch::Tensor decoder_inputs(TorchLclm& model, const Example& ex) {
  return model.decoder_inputs(ex.ids, ex.regions, ex.region_ratios);
}

// Mean cross entropy over the positions with loss (0 when there are none).
// Logits are computed only at the positions that predict a target: with a
// 151k vocabulary the full [L, vocab] logits would cost most of the step.
// With separate documents a document's first token has no prediction (the
// token before it belongs to another document).
torch::Tensor target_loss(TorchLclm& model, const torch::Tensor& inputs, const Example& ex,
                          bool separate) {
  const torch::Tensor hidden = decoder_hidden(model, inputs, ex, separate);  // [L, D]
  std::vector<std::int64_t> rows, targets;
  std::size_t next_start = 1;
  for (std::size_t i = 1; i < ex.ids.size(); ++i) {
    const bool starts_document =
        separate && next_start < ex.starts.size() && ex.starts[next_start] == i;
    if (starts_document) ++next_start;
    if (!ex.loss[i] || starts_document) continue;
    rows.push_back(static_cast<std::int64_t>(i) - 1);
    targets.push_back(ex.ids[i]);
  }
  if (rows.empty()) return hidden.sum() * 0.0;
  const torch::Tensor logits = model.decoder->logits(hidden.index_select(0, torch::tensor(rows)));
  return -logits.log_softmax(-1).gather(1, torch::tensor(targets).unsqueeze(1)).mean();
}

}  // namespace

torch::Tensor latent_alignment_loss(TorchLclm& model, const torch::Tensor& inputs,
                                    const Example& ex) {
  if (ex.regions.empty()) return {};
  const std::int32_t placeholder = model.token_ids().memory;
  // Each latent's slot in the sequence.
  std::vector<std::int64_t> slots;
  for (std::size_t i = 0; i < ex.ids.size(); ++i) {
    if (ex.ids[i] == placeholder) slots.push_back(static_cast<std::int64_t>(i));
  }
  // Every region token and the latent (group) it belongs to, in order.
  std::vector<std::int64_t> tokens, group_of;
  std::int64_t groups = 0;
  for (std::size_t r = 0; r < ex.regions.size(); ++r) {
    const auto ratio = static_cast<std::size_t>(
        ex.region_ratios.empty() ? model.config().compression_ratio : ex.region_ratios[r]);
    for (std::size_t i = 0; i < ex.regions[r].size(); ++i) {
      tokens.push_back(ex.regions[r][i]);
      group_of.push_back(groups + static_cast<std::int64_t>(i / ratio));
    }
    groups += static_cast<std::int64_t>((ex.regions[r].size() + ratio - 1) / ratio);
  }
  if (groups != static_cast<std::int64_t>(slots.size())) {
    throw Error("latent_alignment_loss: " + std::to_string(slots.size()) +
                " <|memory|> positions for " + std::to_string(groups) + " groups of r tokens");
  }
  const torch::Tensor table = model.decoder->embed_tokens->weight.detach();  // [V, D]
  const torch::Tensor index = torch::tensor(group_of);
  // The mean over each group's rows; the cosine needs only the direction, so
  // the sum serves.
  const torch::Tensor want =
      torch::zeros({groups, table.size(1)})
          .index_add_(0, index, table.index_select(0, torch::tensor(tokens)));
  const torch::Tensor latents = inputs.index_select(0, torch::tensor(slots));  // [M, D]
  return (1.0 - torch::cosine_similarity(latents, want, 1)).mean();
}

double Trainer::loss_of(const Example& ex) {
  const torch::NoGradGuard no_grad;
  return target_loss(*model_, decoder_inputs(*model_, ex), ex, opts_.separate_documents)
      .item<double>();
}

torch::Tensor Trainer::logits_of(const Example& ex) {
  const torch::NoGradGuard no_grad;
  return model_->decoder->logits(
      decoder_hidden(*model_, decoder_inputs(*model_, ex), ex, opts_.separate_documents));
}

double Trainer::step() {
  if (done()) throw Error("training is already complete");
  if (step_in_stage_ >= opts_.stages[stage_index_].steps) {
    ++stage_index_;
    step_in_stage_ = 0;
    optim_.reset();
  }
  if (!optim_) begin_stage();
  const std::int64_t total = opts_.stages[stage_index_].steps;
  const std::int64_t warmup =
      opts_.warmup >= 0 ? opts_.warmup : std::min<std::int64_t>(250, total / 10);
  auto& groups = optim_->adamw->param_groups();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const double lr = scheduled_lr(optim_->base_lrs[g], step_in_stage_, warmup, total);
    static_cast<torch::optim::AdamWOptions&>(groups[g].options()).lr(lr);
    if (g == 0) last_lr_ = lr;
  }

  // Gradients are reset to undefined, not zeroed: a parameter no sequence of
  // the step reaches (the encoder, on packs without regions) then skips the
  // update, as after a resume, so resumed runs match straight ones exactly.
  for (torch::Tensor& p : optim_->trainable) p.mutable_grad().reset();
  // Every rank draws all world x batch sequences of the step, in stream
  // order, and trains its own: how many examples a pack holds is known only
  // once it is drawn, so this keeps the stream (and next_example) the same
  // whatever the world size, and drawing is cheap next to a training step.
  const int rank = opts_.dist ? opts_.dist->rank() : 0;
  const std::int64_t world = opts_.dist ? opts_.dist->world_size() : 1;
  const std::int64_t sequences = world * opts_.batch;
  double loss_sum = 0, align_sum = 0, align_count = 0, tokens = 0;
  for (std::int64_t s = 0; s < sequences; ++s) {
    const Example batch = pack_examples(*data_, *tokens_, stage_mix(), next_example_,
                                        static_cast<std::size_t>(opts_.seq_len));
    if (s / opts_.batch != rank) continue;
    tokens += static_cast<double>(batch.ids.size());
    const torch::Tensor inputs = decoder_inputs(*model_, batch);
    const torch::Tensor loss = target_loss(*model_, inputs, batch, opts_.separate_documents);
    torch::Tensor objective = loss;
    if (opts_.latent_align > 0) {
      const torch::Tensor align = latent_alignment_loss(*model_, inputs, batch);
      if (align.defined()) {
        objective = loss + opts_.latent_align * align;
        align_sum += align.item<double>();
        ++align_count;
      }
    }
    loss_sum += loss.item<double>();
    // A sequence whose loss does not reach the stage's parameters (stage 1
    // on a pack without memory regions) adds no gradient.
    if (objective.requires_grad()) objective.backward();
  }
  if (opts_.dist) {
    using Clock = std::chrono::steady_clock;
    const std::string what = "summing the gradients of step " + std::to_string(global_step_ + 1);
    // Waiting for the slowest rank is timed apart from the sum itself, so
    // the progress line tells load imbalance from communication.
    const auto start = Clock::now();
    opts_.dist->barrier(what);
    const auto synced = Clock::now();
    const bool stop_here = opts_.stop_requested && opts_.stop_requested->load();
    torch::Tensor totals = torch::tensor(
        {loss_sum, align_sum, align_count, tokens, stop_here ? 1.0 : 0.0}, torch::kFloat64);
    opts_.dist->sum_gradients(*optim_->buckets, totals, what);
    last_wait_s_ = std::chrono::duration<double>(synced - start).count();
    last_sum_s_ = std::chrono::duration<double>(Clock::now() - synced).count();
    const auto sums = totals.accessor<double, 1>();
    loss_sum = sums[0];
    align_sum = sums[1];
    align_count = sums[2];
    tokens = sums[3];
    stop_agreed_ = sums[4] > 0;
  }
  last_tokens_ = static_cast<std::int64_t>(tokens);
  last_align_ = align_count > 0 ? align_sum / align_count : std::nan("");
  bool reached = false;
  for (torch::Tensor& p : optim_->trainable) {
    if (!p.grad().defined()) continue;
    reached = true;
    // The mean over the step's sequences; a factor of 1 (one sequence, one
    // process) leaves every bit as it was.
    p.mutable_grad().mul_(1.0 / static_cast<double>(sequences));
  }
  if (reached) {
    if (optim_->row_mask.defined() && optim_->embedding.grad().defined()) {
      optim_->embedding.mutable_grad().mul_(optim_->row_mask);
    }
    torch::nn::utils::clip_grad_norm_(optim_->trainable, 1.0);
    optim_->adamw->step();
  }
  ++step_in_stage_;
  ++global_step_;
  return loss_sum / static_cast<double>(sequences);
}

nlohmann::json Trainer::state_json() const {
  nlohmann::json stages = nlohmann::json::array();
  for (const StageSteps& s : opts_.stages) stages.push_back({s.stage, s.steps});
  const std::int64_t world = opts_.dist ? opts_.dist->world_size() : 1;
  return {
      {"format", 1},
      {"stages", stages},
      {"stage_index", stage_index_},
      {"step_in_stage", step_in_stage_},
      {"global_step", global_step_},
      {"next_example", next_example_},
      {"global_batch", world * opts_.batch},
      {"seed", opts_.seed},
      {"seq_len", opts_.seq_len},
      {"lr_scale", opts_.lr_scale},
      {"warmup", opts_.warmup},
      {"ratios", opts_.ratios},
      {"haystack_fill", {opts_.haystack_fill_lo, opts_.haystack_fill_hi}},
      {"copy_fill", {opts_.copy_fill_lo, opts_.copy_fill_hi}},
      {"scramble", opts_.scramble},
      {"numbers", opts_.numbers},
      {"needles", {opts_.needles_lo, opts_.needles_hi}},
      {"questions", opts_.questions},
      {"separate_documents", opts_.separate_documents},
      {"latent_align", opts_.latent_align},
      {"save_every", opts_.save_every.value_or(0)},
      {"log_every", opts_.log_every.value_or(kDefaultLogEvery)},
      {"mix", opts_.mix ? nlohmann::json::array({opts_.mix->continual, opts_.mix->reconstruction,
                                                 opts_.mix->retrieval, opts_.mix->plain_retrieval,
                                                 opts_.mix->plain_reconstruction, opts_.mix->facts,
                                                 opts_.mix->plain_facts, opts_.mix->agent})
                        : nlohmann::json()},
      {"corpus", [&] {
         std::vector<std::string> paths;
         for (const fs::path& p : opts_.corpus) paths.push_back(p.string());
         return paths;
       }()}};
}

void Trainer::save() {
  if (opts_.dist && opts_.dist->rank() != 0) return;
  const auto write_state = [&](const fs::path& staged) {
    const fs::path dir = staged / kStateDir;
    fs::create_directories(dir);
    write_text_file(dir / "state.json", state_json().dump(2) + "\n");
    if (optim_ && step_in_stage_ > 0) torch::save(*optim_->adamw, (dir / "optimizer.pt").string());
  };
  save_lclm_checkpoint(*model_, opts_.out, opts_.dtype, side_files_, write_state);
  side_files_ = opts_.out;
}

void Trainer::load_state(const fs::path& dir) {
  const nlohmann::json state = read_json_file(dir / "state.json");
  try {
    opts_.stages.clear();
    for (const auto& s : state.at("stages")) {
      opts_.stages.push_back({s.at(0).get<int>(), s.at(1).get<std::int64_t>()});
    }
    stage_index_ = state.at("stage_index").get<std::size_t>();
    step_in_stage_ = state.at("step_in_stage").get<std::int64_t>();
    global_step_ = state.at("global_step").get<std::int64_t>();
    next_example_ = state.at("next_example").get<std::uint64_t>();
    // Runs saved before the setting existed trained on one sequence a step.
    const auto global_batch = state.value("global_batch", std::int64_t{1});
    const std::int64_t world = opts_.dist ? opts_.dist->world_size() : 1;
    if (global_batch % world != 0) {
      throw Error((dir / "state.json").string() + ": the run's global batch of " +
                  std::to_string(global_batch) + " sequences does not divide among WORLD_SIZE=" +
                  std::to_string(world) + " ranks");
    }
    opts_.batch = global_batch / world;
    opts_.seed = state.at("seed").get<std::uint64_t>();
    opts_.seq_len = state.at("seq_len").get<std::int64_t>();
    opts_.lr_scale = state.at("lr_scale").get<double>();
    opts_.warmup = state.at("warmup").get<std::int64_t>();
    opts_.ratios = state.value("ratios", std::vector<std::int64_t>{});
    if (state.contains("haystack_fill")) {
      opts_.haystack_fill_lo = state["haystack_fill"].at(0).get<double>();
      opts_.haystack_fill_hi = state["haystack_fill"].at(1).get<double>();
    }
    if (state.contains("copy_fill")) {
      opts_.copy_fill_lo = state["copy_fill"].at(0).get<double>();
      opts_.copy_fill_hi = state["copy_fill"].at(1).get<double>();
    }
    opts_.scramble = state.value("scramble", 0.0);
    opts_.numbers = state.value("numbers", 0.0);
    if (state.contains("needles")) {
      opts_.needles_lo = state["needles"].at(0).get<std::int64_t>();
      opts_.needles_hi = state["needles"].at(1).get<std::int64_t>();
    }
    opts_.questions = state.value("questions", std::int64_t{1});
    // Runs saved before the setting existed trained on whole packs.
    opts_.separate_documents = state.value("separate_documents", false);
    opts_.latent_align = state.value("latent_align", 0.0);
    // The command line's cadence wins; runs saved before it was kept get the defaults.
    if (!opts_.save_every) opts_.save_every = state.value("save_every", std::int64_t{0});
    if (!opts_.log_every) opts_.log_every = state.value("log_every", kDefaultLogEvery);
    if (state.contains("mix") && state["mix"].is_array()) {
      const auto& m = state["mix"];
      // Runs saved before the facts and agent tasks have five shares.
      const auto share = [&](std::size_t i) { return i < m.size() ? m.at(i).get<double>() : 0.0; };
      opts_.mix =
          TaskMix{share(0), share(1), share(2), share(3), share(4), share(5), share(6), share(7)};
    }
    opts_.corpus.clear();
    for (const auto& p : state.at("corpus")) opts_.corpus.emplace_back(p.get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw Error((dir / "state.json").string() + ": " + e.what());
  }
  if (stage_index_ >= opts_.stages.size()) {
    throw Error((dir / "state.json").string() + ": stage_index is past the plan");
  }
  if (step_in_stage_ > 0 && !fs::exists(dir / "optimizer.pt")) {
    throw Error((dir / "optimizer.pt").string() + " is missing");
  }
}

void Trainer::run() {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  std::int64_t total_steps = 0;
  for (const StageSteps& s : opts_.stages) total_steps += s.steps;
  const std::int64_t first_step = global_step_;
  double loss_sum = 0, align_sum = 0;
  std::int64_t loss_count = 0, align_count = 0, tokens = 0;
  const std::int64_t save_every = opts_.save_every.value_or(0);
  const std::int64_t log_every = opts_.log_every.value_or(kDefaultLogEvery);
  // One process reads its own flag; ranks go by the flag they agreed on in
  // the last step, so that all stop after the same one.
  const auto interrupted = [&] {
    if (opts_.dist) return stop_agreed_;
    return opts_.stop_requested && opts_.stop_requested->load();
  };
  double wait_sum = 0, sum_sum = 0;
  const auto stopped = [&] {
    return done() || (opts_.until > 0 && global_step_ >= opts_.until) || interrupted();
  };
  while (!stopped()) {
    loss_sum += step();
    ++loss_count;
    if (!std::isnan(last_align_)) {
      align_sum += last_align_;
      ++align_count;
    }
    tokens += last_tokens_;
    wait_sum += last_wait_s_;
    sum_sum += last_sum_s_;
    const bool last = stopped();
    if (opts_.log && ((log_every > 0 && global_step_ % log_every == 0) || last)) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const auto done_here = static_cast<double>(global_step_ - first_step);
      const double eta = elapsed / done_here * static_cast<double>(total_steps - global_step_);
      *opts_.log << "step " << global_step_ << "/" << total_steps << " stage " << stage()
                 << " loss " << std::fixed << std::setprecision(4)
                 << loss_sum / static_cast<double>(loss_count);
      if (align_count > 0) *opts_.log << " align " << align_sum / static_cast<double>(align_count);
      *opts_.log << " lr " << std::scientific << std::setprecision(2) << last_lr_ << std::fixed
                 << std::setprecision(0) << " tok/s " << static_cast<double>(tokens) / elapsed;
      if (opts_.dist) {
        // Per step, in ms: waiting for the slowest rank, then the gradient sum.
        const auto per_step = 1000.0 / static_cast<double>(loss_count);
        *opts_.log << " world " << opts_.dist->world_size() << " x batch " << opts_.batch
                   << " wait " << std::setprecision(1) << wait_sum * per_step << "ms allreduce "
                   << sum_sum * per_step << "ms";
      } else if (opts_.batch > 1) {
        *opts_.log << " batch " << opts_.batch;
      }
      *opts_.log << " elapsed " << format_seconds(elapsed) << " eta " << format_seconds(eta)
                 << std::endl;
      loss_sum = align_sum = wait_sum = sum_sum = 0;
      loss_count = align_count = 0;
    }
    if (!last && save_every > 0 && global_step_ % save_every == 0) save();
  }
  save();
  if (opts_.log && interrupted() && !done()) {
    *opts_.log << "interrupted: saved step " << global_step_ << " to " << opts_.out.string()
               << "; continue with --resume" << std::endl;
  }
}

}  // namespace lclm::train
