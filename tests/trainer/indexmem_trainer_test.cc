// IndexMem in the trainer against the engine on the same weights: the
// indexer's scores, the memory's fold and readout, and the decoder's logits
// at every answer position of a run that evicted the prompt and then one entry
// per token (indexer choice, memory, every later layer) within 1e-4; gradients reach only the
// IndexMem parameters meant to learn from each loss; a short training run writes weights the engine
// loads.
#include "trainer/indexmem_trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>
#include <vector>

#include "core/test_models.h"
#include "kv/indexmem.h"
#include "kv/policy_model.h"
#include "model/qwen3_model.h"
#include "ops/attention.h"
#include "trainer/lclm_checkpoint.h"
#include "trainer/torch_indexmem.h"
#include "trainer/trainer_test_models.h"

namespace lclm::train {
namespace {

using testing::relative_error;

torch::Tensor tensor_of(const std::vector<float>& v, std::vector<std::int64_t> shape) {
  return torch::from_blob(const_cast<float*>(v.data()), shape, torch::kFloat32).clone();
}

TEST(TorchIndexMem, ScoresAndReadoutEqualTheEngines) {
  const Qwen3Config decoder = lclm::testing::tiny_config();
  const IndexMemWeights w = random_indexmem(decoder, 41, 0.7f);
  TorchIndexMem model(w.config);
  model.load(w);
  EXPECT_EQ(model.weights().layers[1].feature_w, w.layers[1].feature_w)
      << "load/weights round trip";
  const std::int64_t D = w.config.head_dim, G = w.config.num_key_value_heads,
                     H = w.config.num_attention_heads, F = w.config.memory_features;
  const torch::NoGradGuard no_grad;

  const std::vector<float> keys = lclm::testing::random_vector(std::size_t(G * 9 * D), 1);
  const std::vector<float> values = lclm::testing::random_vector(std::size_t(G * 9 * D), 2);
  const torch::Tensor k = tensor_of(keys, {G, 9, D}), v = tensor_of(values, {G, 9, D});
  const torch::Tensor scores = model.layer(1).score(k);
  std::vector<float> engine_scores;
  for (std::size_t j = 0; j < std::size_t(G * 9); ++j)
    engine_scores.push_back(w.score(1, keys.data() + j * std::size_t(D)));
  EXPECT_LT(relative_error(scores.reshape({-1}), tensor_of(engine_scores, {G * 9})), 1e-5);

  // The memory of those 9 entries per kv head, read by 3 queries per head,
  // against attention() with the engine's AttentionResidual (the readout is
  // its output minus plain attention's).
  const TorchMemoryState memory = fold_into_memory(model.layer(1), k, v);
  const std::vector<float> q = lclm::testing::random_vector(std::size_t(3 * H * D), 3);
  const torch::Tensor q_heads = tensor_of(q, {3, H, D}).transpose(0, 1);  // [H, 3, D]
  const torch::Tensor readout = memory_readout(model.layer(1), memory, q_heads, w.config.eps);
  const std::vector<float> M(memory.M.data_ptr<float>(), memory.M.data_ptr<float>() + G * F * D);
  const std::vector<float> z(memory.z.data_ptr<float>(), memory.z.data_ptr<float>() + G * F);
  const IndexMemLayer& layer = w.layers[1];
  const AttentionResidual r{
      std::size_t(F), layer.feature_w.data(), layer.feature_b.data(), layer.gate.data(), M.data(),
      z.data(),       float(w.config.eps)};
  const AttentionShape shape{std::size_t(H), std::size_t(G), std::size_t(D), 9};
  std::vector<float> plain(q.size()), with_memory(q.size());
  attention(q.data(), 3, 9, keys.data(), values.data(), 9, shape, AttentionMask::Causal,
            plain.data());
  attention(q.data(), 3, 9, keys.data(), values.data(), 9, shape, AttentionMask::Causal,
            with_memory.data(), nullptr, &r);
  const torch::Tensor engine_readout =
      (tensor_of(with_memory, {3, H, D}) - tensor_of(plain, {3, H, D})).transpose(0, 1);
  EXPECT_LT(relative_error(engine_readout, readout), 1e-4);
}

class IndexMemDecoder : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(lclm::testing::scratch_dir("indexmem_decoder"));
    RandomQwen3Spec spec;
    spec.config = lclm::testing::tiny_config();
    spec.config.vocab_size = 300;
    spec.dtype = DType::F32;
    spec.seed = 12;
    spec.weight_std = 0.08f;
    write_random_qwen3(*dir_, spec);
  }
  static void TearDownTestSuite() { delete dir_; }

  static IndexMemExample example(std::size_t prompt, std::size_t answer) {
    IndexMemExample ex;
    for (std::size_t i = 0; i < prompt + answer; ++i)
      ex.ids.push_back(std::int32_t((i * 53 + 7) % 300));
    ex.prompt_len = prompt;
    return ex;
  }

  // The engine's logits at every answer position [A, vocab] with the
  // indexmem policy at `budget`, the answer fed token by token.
  static torch::Tensor engine_answer_logits(const IndexMemWeights& w, const IndexMemExample& ex,
                                            std::size_t budget) {
    const Qwen3Model model = Qwen3Model::load(*dir_);
    const auto hidden = std::size_t(model.config().hidden_size);
    KVPolicyConfig config;
    config.kind = KVPolicyKind::IndexMem;
    config.budget = budget;
    config.indexmem = std::make_shared<IndexMemWeights>(w);
    const auto policy = make_kv_policy(config);
    KVCache cache = model.make_cache(256, ex.ids.size());
    std::vector<float> x(ex.ids.size() * hidden);
    model.embed(ex.ids, x.data());
    policy->begin_prompt(cache, ex.prompt_len);
    model.forward(x.data(), ex.prompt_len, cache, AttentionMask::Causal);
    policy->end_prompt(cache);
    const auto V = std::size_t(model.config().vocab_size);
    std::vector<float> logits((ex.ids.size() - ex.prompt_len) * V);
    for (std::size_t t = ex.prompt_len; t < ex.ids.size(); ++t) {
      float* answer = x.data() + t * hidden;
      model.forward(answer, 1, cache, AttentionMask::Causal);
      policy->after_token(cache);
      model.logits(answer, 1, logits.data() + (t - ex.prompt_len) * V);
    }
    return tensor_of(logits, {std::int64_t(ex.ids.size() - ex.prompt_len), std::int64_t(V)});
  }

  inline static std::filesystem::path* dir_ = nullptr;
};

TEST_F(IndexMemDecoder, EvictedForwardMatchesTheEnginesPolicyAtEveryAnswerPosition) {
  const auto decoder = load_qwen3_decoder(*dir_);
  IndexMemWeights w = random_indexmem(decoder->config(), 43, 1.0f);
  w.config.recent = 5;
  TorchIndexMem model(w.config);
  model.load(w);
  const IndexMemExample ex = example(60, 8);
  const torch::NoGradGuard no_grad;
  const torch::Tensor trainer = indexmem_forward(*decoder, model, ex, 14).answer_logits;
  const torch::Tensor engine = engine_answer_logits(w, ex, 14);
  EXPECT_LT(relative_error(trainer, engine), 1e-4);

  // The memory matters here: without the gates both sides move together.
  IndexMemWeights gateless = w;
  for (IndexMemLayer& layer : gateless.layers)
    std::fill(layer.gate.begin(), layer.gate.end(), 0.0f);
  const torch::Tensor engine_gateless = engine_answer_logits(gateless, ex, 14);
  EXPECT_GT(relative_error(engine_gateless, engine), 1e-3);
  model.load(gateless);
  EXPECT_LT(
      relative_error(indexmem_forward(*decoder, model, ex, 14).answer_logits, engine_gateless),
      1e-4);
  // A budget covering the prompt and two answer tokens: nothing is evicted
  // until the answer's third token, then one entry per token.
  model.load(w);
  EXPECT_LT(relative_error(indexmem_forward(*decoder, model, ex, 62).answer_logits,
                           engine_answer_logits(w, ex, 62)),
            1e-4);
}

TEST_F(IndexMemDecoder, EachLossTrainsItsOwnParameters) {
  const auto decoder = load_qwen3_decoder(*dir_);
  for (auto& p : decoder->parameters()) p.set_requires_grad(false);
  const IndexMemWeights w = random_indexmem(decoder->config(), 44, 0.5f);
  TorchIndexMem model(w.config);
  model.load(w);
  const IndexMemForward f = indexmem_forward(*decoder, model, example(50, 6), 12);
  f.answer_loss.backward();
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    EXPECT_GT(model.layer(l).gate.grad().abs().sum().item<double>(), 0.0) << l;
    EXPECT_GT(model.layer(l).feature_map->weight.grad().abs().sum().item<double>(), 0.0) << l;
    EXPECT_FALSE(model.layer(l).fc1->weight.grad().defined()) << "selection is discrete";
  }
  f.indexer_loss.backward();
  for (std::size_t l = 0; l < w.layers.size(); ++l)
    EXPECT_GT(model.layer(l).fc1->weight.grad().abs().sum().item<double>(), 0.0) << l;
}

TEST(IndexMemTraining, ShortRunWritesWeightsTheEngineLoads) {
  const auto dir = lclm::testing::tiny_model_with_tokenizer("indexmem_train_model");
  IndexMemTrainOptions o;
  o.init = dir;
  o.out = lclm::testing::scratch_dir("indexmem_train_out") / "indexmem";
  o.steps = 3;
  o.batch = 1;
  o.seq_len = 160;
  o.max_answer = 8;
  o.held_out = 2;
  o.indexer_hidden = 8;
  o.memory_features = 8;
  std::ostringstream log;
  o.log = &log;
  const IndexMemReport report = train_indexmem(o);
  EXPECT_NE(log.str().find("step 3/3"), std::string::npos) << log.str();
  EXPECT_TRUE(std::isfinite(report.answer_loss));
  EXPECT_TRUE(std::isfinite(report.answer_loss_without_memory));
  const IndexMemWeights w = IndexMemWeights::load(o.out, Qwen3Config::from_dir(dir));
  EXPECT_EQ(w.config.memory_features, 8);
  bool gate_moved = false;
  for (const IndexMemLayer& layer : w.layers)
    for (float g : layer.gate) gate_moved = gate_moved || g != 0.0f;
  EXPECT_TRUE(gate_moved) << "training never updated the memory's gates";
}

}  // namespace
}  // namespace lclm::train
