#include "trainer/indexmem_trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <iomanip>
#include <ostream>
#include <random>

#include "kv/kv_policy.h"
#include "trainer/lclm_checkpoint.h"
#include "util/error.h"

namespace lclm::train {
namespace {

// Held-out examples come from indices the training stream never reaches.
constexpr std::uint64_t kHeldOutBase = std::uint64_t{1} << 40;

std::size_t budget_for(const IndexMemTrainOptions& o, std::size_t prompt_len) {
  KVPolicyConfig c;
  c.ratio = o.ratio;
  return kv_budget(c, prompt_len);
}

// Starting weights: small random indexer and feature map, gates at zero so
// the run starts from eviction alone.
void initialize(TorchIndexMem& model, std::uint64_t seed) {
  torch::manual_seed(seed);
  const torch::NoGradGuard no_grad;
  const IndexMemConfig& c = model.config();
  for (std::size_t l = 0; l < static_cast<std::size_t>(c.num_layers); ++l) {
    TorchIndexMemLayer& layer = model.layer(l);
    layer.fc1->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    layer.fc1->bias.zero_();
    layer.fc2->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(c.indexer_hidden)));
    layer.feature_map->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(c.head_dim)));
    layer.feature_map->bias.zero_();
    layer.gate.zero_();
  }
}

struct Losses {
  double indexer = 0, answer = 0, kept_mass = 0, streaming_kept_mass = 0;
};

Losses held_out_losses(TorchQwen3& decoder, const TorchIndexMem& model, const DataGenerator& data,
                       const Tokenizer& tokenizer, const IndexMemTrainOptions& o) {
  const torch::NoGradGuard no_grad;
  Losses sum;
  std::int64_t targets = 0;
  for (std::size_t i = 0; i < o.held_out; ++i) {
    const IndexMemExample ex = indexmem_example(data, tokenizer, o, kHeldOutBase + i);
    const IndexMemForward f = indexmem_forward(decoder, model, ex, budget_for(o, ex.prompt_len));
    const auto n = static_cast<double>(o.held_out);
    sum.indexer += f.indexer_loss.item<double>() / n;
    sum.kept_mass += f.kept_mass / n;
    sum.streaming_kept_mass += f.streaming_kept_mass / n;
    sum.answer += f.answer_loss.item<double>() * static_cast<double>(f.answer_targets);
    targets += f.answer_targets;
  }
  sum.answer /= static_cast<double>(std::max<std::int64_t>(targets, 1));
  return sum;
}

}  // namespace

std::filesystem::path decoder_dir_of(const std::filesystem::path& model) {
  return std::filesystem::exists(model / "model_config.json") ? model / "decoder" : model;
}

IndexMemExample indexmem_example(const DataGenerator& data, const Tokenizer& tokenizer,
                                 const IndexMemTrainOptions& o, std::uint64_t index) {
  std::mt19937_64 rng = data.example_rng(index);
  const bool retrieval = std::uniform_real_distribution<double>(0, 1)(rng) < o.retrieval_share;
  const std::vector<TextPiece> pieces =
      retrieval ? data.retrieval(rng, 1, false) : data.reconstruction(rng, nullptr, false);
  IndexMemExample ex;
  bool answer_started = false;
  for (const TextPiece& piece : pieces) {
    if (piece.kind == TextPiece::Kind::Target && !answer_started) {
      ex.prompt_len = ex.ids.size();
      answer_started = true;
    }
    const std::vector<std::int32_t> ids = tokenizer.encode(piece.text);
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
  }
  if (!answer_started) throw Error("an IndexMem training example has no answer");
  ex.ids.resize(std::min(ex.ids.size(), ex.prompt_len + o.max_answer));
  return ex;
}

IndexMemReport train_indexmem(const IndexMemTrainOptions& o) {
  if (o.out.empty()) throw Error("-o: the IndexMem weights need an output directory");
  if (o.steps < 0 || o.batch == 0) throw Error("--steps must be >= 0 and --batch > 0");
  const std::filesystem::path decoder_dir = decoder_dir_of(o.init);
  const std::shared_ptr<TorchQwen3> decoder = load_qwen3_decoder(decoder_dir);
  for (auto& p : decoder->parameters()) p.set_requires_grad(false);
  const Tokenizer tokenizer = Tokenizer::from_dir(decoder_dir);
  const DataGenerator data(Corpus::from_paths(o.text), o.seed, o.seq_len);

  IndexMemConfig config =
      IndexMemWeights::zeros(decoder->config(), o.indexer_hidden, o.memory_features).config;
  config.sinks = o.sinks;
  config.recent = o.recent;
  TorchIndexMem model(config);
  initialize(model, o.seed);
  torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(o.lr));

  const auto t0 = std::chrono::steady_clock::now();
  double indexer_avg = 0, answer_avg = 0;
  for (std::int64_t step = 0; step < o.steps; ++step) {
    optimizer.zero_grad();
    for (std::size_t b = 0; b < o.batch; ++b) {
      const IndexMemExample ex =
          indexmem_example(data, tokenizer, o, static_cast<std::uint64_t>(step) * o.batch + b);
      const IndexMemForward f = indexmem_forward(*decoder, model, ex, budget_for(o, ex.prompt_len));
      ((f.indexer_loss + f.answer_loss) / static_cast<double>(o.batch)).backward();
      indexer_avg += f.indexer_loss.item<double>();
      answer_avg += f.answer_loss.item<double>();
    }
    torch::nn::utils::clip_grad_norm_(model.parameters(), 1.0);
    optimizer.step();
    if (o.log && o.log_every > 0 && ((step + 1) % o.log_every == 0 || step + 1 == o.steps)) {
      // Examples since the last line.
      const auto n =
          static_cast<double>(o.batch * static_cast<std::size_t>(step % o.log_every + 1));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      *o.log << "step " << step + 1 << "/" << o.steps << std::fixed << std::setprecision(4)
             << " indexer loss " << indexer_avg / n << " answer loss " << answer_avg / n
             << std::setprecision(1) << " (" << seconds << " s)" << std::endl;
      indexer_avg = answer_avg = 0;
    }
  }
  const IndexMemWeights weights = model.weights();
  weights.save(o.out);

  IndexMemReport report;
  const Losses with_memory = held_out_losses(*decoder, model, data, tokenizer, o);
  IndexMemWeights gateless = weights;
  for (IndexMemLayer& layer : gateless.layers)
    std::fill(layer.gate.begin(), layer.gate.end(), 0.0f);
  TorchIndexMem without(config);
  without.load(gateless);
  report.answer_loss = with_memory.answer;
  report.indexer_loss = with_memory.indexer;
  report.kept_mass = with_memory.kept_mass;
  report.streaming_kept_mass = with_memory.streaming_kept_mass;
  report.answer_loss_without_memory = held_out_losses(*decoder, without, data, tokenizer, o).answer;
  if (o.log) {
    *o.log << "held out (" << o.held_out << " examples, ratio " << o.ratio << "):" << std::fixed
           << std::setprecision(4) << " answer loss " << report.answer_loss << " with the memory, "
           << report.answer_loss_without_memory << " with eviction alone; indexer loss "
           << report.indexer_loss << "; answer attention mass kept " << report.kept_mass
           << " (StreamingLLM " << report.streaming_kept_mass << ")\nwrote " << o.out.string()
           << std::endl;
  }
  return report;
}

}  // namespace lclm::train
