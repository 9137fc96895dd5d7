// The training loop and its data: generators are deterministic and never put
// loss on memory tokens, each stage lowers the loss and moves only the
// parameters it trains, resume is exact, and the engine loads what the
// trainer saves.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "compression/lclm_model.h"
#include "eval/ruler_tasks.h"
#include "trainer/lclm_checkpoint.h"
#include "trainer/trainer.h"
#include "trainer/trainer_test_models.h"

namespace lclm::train {
namespace {

namespace fs = std::filesystem;
using lclm::testing::error_of;
using testing::small_vocab_tokenizer_dir;
using testing::write_tiny_lclm;

fs::path tiny_checkpoint(const std::string& name) {
  return write_tiny_lclm(name, small_vocab_tokenizer_dir(), DType::F32, 11);
}

class TrainerData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    checkpoint_ = new fs::path(tiny_checkpoint("trainer-data"));
    tokens_ = new ExampleTokenizer(*checkpoint_);
  }
  static void TearDownTestSuite() {
    delete tokens_;
    delete checkpoint_;
  }
  static DataGenerator generator(std::uint64_t seed) {
    return DataGenerator(Corpus::from_paths(default_corpus_paths()), seed, 128);
  }
  static fs::path* checkpoint_;
  static ExampleTokenizer* tokens_;
};
fs::path* TrainerData::checkpoint_ = nullptr;
ExampleTokenizer* TrainerData::tokens_ = nullptr;

// Memory tokens carry no loss, and each region has ceil(T / r) placeholders,
// r its ratio.
void expect_well_formed(const Example& ex, const ExampleTokenizer& tokens) {
  ASSERT_EQ(ex.ids.size(), ex.loss.size());
  std::size_t placeholders = 0, starts = 0, want_placeholders = 0;
  for (std::size_t i = 0; i < ex.ids.size(); ++i) {
    const std::int32_t id = ex.ids[i];
    if (id == tokens.memory_start() || id == tokens.memory_end() || id == tokens.memory()) {
      EXPECT_EQ(ex.loss[i], 0) << "loss on a memory token at " << i;
    }
    placeholders += id == tokens.memory();
    starts += id == tokens.memory_start();
  }
  ASSERT_EQ(ex.region_ratios.size(), ex.regions.size());
  for (std::size_t k = 0; k < ex.regions.size(); ++k) {
    const auto r = static_cast<std::size_t>(ex.region_ratios[k]);
    want_placeholders += (ex.regions[k].size() + r - 1) / r;
  }
  EXPECT_EQ(starts, ex.regions.size());
  EXPECT_EQ(placeholders, want_placeholders);
}

TEST_F(TrainerData, GeneratorsAreDeterministicAndMaskMemoryTokens) {
  const DataGenerator a = generator(5), b = generator(5), c = generator(6);
  const TaskMix mixes[] = {{1, 0, 0, 0, 0}, {0, 1, 0, 0, 0}, {0, 0, 1, 0, 0}};
  std::size_t differing = 0;
  for (const TaskMix& mix : mixes) {
    for (std::uint64_t i = 0; i < 6; ++i) {
      const Example ea = tokens_->tokenize(a.example(i, mix));
      const Example eb = tokens_->tokenize(b.example(i, mix));
      EXPECT_EQ(ea.ids, eb.ids);
      EXPECT_EQ(ea.loss, eb.loss);
      EXPECT_EQ(ea.regions, eb.regions);
      differing += ea.ids != tokens_->tokenize(c.example(i, mix)).ids;
      expect_well_formed(ea, *tokens_);
      EXPECT_GT(std::count(ea.loss.begin(), ea.loss.end(), 1), 0);
      EXPECT_FALSE(ea.regions.empty());
    }
  }
  EXPECT_GT(differing, 12u) << "another seed should give other examples";
}

TEST_F(TrainerData, ReconstructionTargetIsThePassage) {
  const DataGenerator data = generator(3);
  for (std::uint64_t i = 0; i < 4; ++i) {
    std::mt19937_64 rng = data.example_rng(i);
    std::string passage;
    const Example ex = tokens_->tokenize(data.reconstruction(rng, &passage));
    std::vector<std::int32_t> target;
    for (std::size_t k = 0; k < ex.ids.size(); ++k) {
      if (ex.loss[k]) target.push_back(ex.ids[k]);
    }
    std::vector<std::int32_t> want = tokens_->decoder().encode(passage);
    want.push_back(*tokens_->decoder().token_id("<|im_end|>"));
    EXPECT_EQ(target, want);
    ASSERT_EQ(ex.regions.size(), 1u);
    EXPECT_EQ(ex.regions[0], tokens_->encoder().encode(passage));
  }
}

// The distinct words of a text, sorted, to compare a shuffle with its source.
std::vector<std::string> sorted_words(const std::string& text) {
  std::vector<std::string> words = words_of(text);
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  return words;
}

TEST_F(TrainerData, CopyFillSizesPassagesAndScrambleShufflesTheirWords) {
  DataGenerator plain = generator(3), scrambled = generator(3);
  plain.set_copy_fill(0.5, 0.5);
  scrambled.set_copy_fill(0.5, 0.5);
  scrambled.set_scramble(1.0);
  std::size_t reordered = 0;
  for (std::uint64_t i = 0; i < 6; ++i) {
    std::mt19937_64 a = plain.example_rng(i), b = scrambled.example_rng(i);
    std::string original, shuffled;
    plain.reconstruction(a, &original);
    const std::vector<TextPiece> pieces = scrambled.reconstruction(b, &shuffled);
    // 0.5 x 128 tokens at 4 characters a token, cut at word ends.
    EXPECT_NEAR(static_cast<double>(original.size()), 256.0, 64.0);
    EXPECT_EQ(sorted_words(shuffled), sorted_words(original));
    EXPECT_EQ(words_of(shuffled).size(), sorted_words(shuffled).size()) << "each word once";
    reordered += shuffled != original ? 1 : 0;
    EXPECT_EQ(pieces[1].text, shuffled);
    EXPECT_EQ(pieces[3].text, shuffled);
    std::mt19937_64 again = scrambled.example_rng(i);
    std::string same;
    scrambled.reconstruction(again, &same);
    EXPECT_EQ(same, shuffled);
  }
  EXPECT_GE(reordered, 5u);
  DataGenerator bad = generator(3);
  EXPECT_NE(error_of([&] { bad.set_scramble(1.5); }).find("--scramble"), std::string::npos);
  EXPECT_NE(error_of([&] { bad.set_copy_fill(0.6, 0.2); }).find("--copy-fill"), std::string::npos);
}

TEST_F(TrainerData, NumbersReplacePassagesWithRandomDigitsOfTheSameTokenCount) {
  DataGenerator plain = generator(3), numbers = generator(3), off = generator(3);
  for (DataGenerator* g : {&plain, &numbers, &off}) g->set_copy_fill(0.5, 0.5);
  numbers.set_numbers(1.0);
  off.set_numbers(0.0);
  const std::regex number_list("[1-9][0-9]{2,8}(, [1-9][0-9]{2,8})*");
  std::set<std::string> seen;
  for (std::uint64_t i = 0; i < 6; ++i) {
    std::mt19937_64 a = numbers.example_rng(i);
    std::string passage;
    const std::vector<TextPiece> pieces = numbers.reconstruction(a, &passage);
    EXPECT_TRUE(std::regex_match(passage, number_list)) << passage;
    EXPECT_EQ(pieces[1].text, passage);
    EXPECT_EQ(pieces[3].text, passage);
    // Each digit, comma and space a token: 0.5 x 128 tokens, plus at most
    // the last number's overshoot.
    const std::size_t n_tokens = tokens_->encoder().encode(passage).size();
    EXPECT_EQ(n_tokens, passage.size()) << passage;
    EXPECT_GE(n_tokens, 64u);
    EXPECT_LE(n_tokens, 64u + 10u);
    seen.insert(passage);
    std::mt19937_64 again = numbers.example_rng(i);
    std::string same;
    numbers.reconstruction(again, &same);
    EXPECT_EQ(same, passage);
    // At 0 the data stream is the one without the option.
    std::mt19937_64 b = plain.example_rng(i), c = off.example_rng(i);
    std::string want, got;
    plain.reconstruction(b, &want);
    off.reconstruction(c, &got);
    EXPECT_EQ(got, want);
  }
  EXPECT_EQ(seen.size(), 6u);
  DataGenerator bad = generator(3);
  EXPECT_NE(error_of([&] { bad.set_numbers(-0.1); }).find("--numbers"), std::string::npos);
}

TEST_F(TrainerData, RetrievalAnswerIsANeedleInTheHaystack) {
  const DataGenerator data = generator(9);
  std::mt19937_64 rng = data.example_rng(0);
  const std::vector<TextPiece> pieces = data.retrieval(rng, 4);
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[1].kind, TextPiece::Kind::Memory);
  const std::string answer = pieces[3].text.substr(0, pieces[3].text.find("<|im_end|>"));
  EXPECT_EQ(answer.rfind("The special magic number for ", 0), 0u);
  EXPECT_NE(pieces[1].text.find(answer), std::string::npos);
  const std::string key = answer.substr(29, answer.find(" is ") - 29);
  EXPECT_NE(pieces[2].text.find(needle_question(key)), std::string::npos);
}

// set_needles / set_questions: the haystack holds LO-HI distinct needles;
// up to `questions` of them are asked, each once, the first as the single
// question is, the others each in its own user turn after the last answer;
// every answer is its needle's sentence.
TEST_F(TrainerData, MultiQuestionRetrievalAsksDistinctNeedlesInTurns) {
  DataGenerator data = generator(9);
  data.set_needles(4, 6);
  data.set_questions(3);
  std::size_t most_questions = 0;
  for (std::uint64_t i = 0; i < 12; ++i) {
    std::mt19937_64 rng = data.example_rng(i);
    const std::vector<TextPiece> pieces = data.retrieval(rng, 8);
    ASSERT_GE(pieces.size(), 4u);
    ASSERT_EQ(pieces.size() % 2, 0u);
    const std::string& haystack = pieces[1].text;
    std::size_t needles = 0;
    for (std::size_t at = haystack.find("The special magic number for "); at != std::string::npos;
         at = haystack.find("The special magic number for ", at + 1)) {
      ++needles;
    }
    EXPECT_GE(needles, 4u);
    EXPECT_LE(needles, 6u);
    const std::size_t questions = (pieces.size() - 2) / 2;
    EXPECT_LE(questions, 3u);
    most_questions = std::max(most_questions, questions);
    std::vector<std::string> asked;
    for (std::size_t q = 0; q < questions; ++q) {
      const TextPiece& question = pieces[2 + 2 * q];
      const TextPiece& answer = pieces[3 + 2 * q];
      EXPECT_EQ(question.kind, TextPiece::Kind::Context);
      EXPECT_EQ(answer.kind, TextPiece::Kind::Target);
      EXPECT_EQ(question.text.rfind(q == 0 ? "\nWhat is" : "\n<|im_start|>user\nWhat is", 0), 0u);
      const std::string sentence = answer.text.substr(0, answer.text.find("<|im_end|>"));
      EXPECT_NE(haystack.find(sentence), std::string::npos);
      const std::string key = sentence.substr(29, sentence.find(" is ") - 29);
      EXPECT_NE(question.text.find(needle_question(key)), std::string::npos);
      EXPECT_EQ(std::find(asked.begin(), asked.end(), key), asked.end()) << "asked twice";
      asked.push_back(key);
    }
  }
  EXPECT_EQ(most_questions, 3u);
  EXPECT_NE(error_of([&] { data.set_needles(3, 2); }).find("--needles"), std::string::npos);
  EXPECT_NE(error_of([&] { data.set_questions(0); }).find("--questions"), std::string::npos);
}

TEST_F(TrainerData, PlainTasksShowTheTextUncompressed) {
  const DataGenerator data = generator(9);
  std::mt19937_64 a = data.example_rng(0), b = data.example_rng(0);
  const std::vector<TextPiece> compressed = data.retrieval(a, 4, true);
  const std::vector<TextPiece> plain = data.retrieval(b, 4, false);
  ASSERT_EQ(plain.size(), compressed.size());
  EXPECT_EQ(plain[1].kind, TextPiece::Kind::Context);
  const Example ex = tokens_->tokenize(plain);
  EXPECT_TRUE(ex.regions.empty());
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), tokens_->memory()), 0);

  std::mt19937_64 c = data.example_rng(1);
  std::string passage;
  const std::vector<TextPiece> copy = data.reconstruction(c, &passage, false);
  EXPECT_EQ(copy[1].kind, TextPiece::Kind::Context);
  EXPECT_EQ(copy[1].text, passage);
  EXPECT_EQ(copy[3].text, passage);
  // The plain shares of a mix draw them.
  const TaskMix plain_only{0, 0, 0, 1, 1};
  for (std::uint64_t i = 0; i < 6; ++i) {
    EXPECT_TRUE(tokens_->tokenize(data.example(i, plain_only)).regions.empty());
  }
}

TEST_F(TrainerData, MixedRatiosAreDrawnPerExampleAndDeterministic) {
  const DataGenerator data(Corpus::from_paths(default_corpus_paths()), 4, 128, 4, {4, 8, 16});
  const DataGenerator same(Corpus::from_paths(default_corpus_paths()), 4, 128, 4, {4, 8, 16});
  std::set<std::int64_t> seen;
  for (std::uint64_t i = 0; i < 40; ++i) {
    const std::int64_t r = data.example_ratio(i);
    EXPECT_TRUE(r == 4 || r == 8 || r == 16) << r;
    EXPECT_EQ(r, same.example_ratio(i));
    seen.insert(r);
  }
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(generator(4).example_ratio(7), 4) << "no list: the checkpoint's ratio";

  std::uint64_t next = 0;
  std::set<std::int64_t> packed;
  for (int k = 0; k < 12; ++k) {
    const Example ex = pack_examples(data, *tokens_, TaskMix{}, next, 128);
    expect_well_formed(ex, *tokens_);
    packed.insert(ex.region_ratios.begin(), ex.region_ratios.end());
  }
  EXPECT_GT(packed.size(), 1u);
  EXPECT_NE(error_of([] {
              DataGenerator(Corpus::from_paths(default_corpus_paths()), 1, 128, 4, {4, 0});
            }).find("--ratios: 0"),
            std::string::npos);
}

TEST_F(TrainerData, PackingFillsOneSequenceWithoutSplittingRegions) {
  const DataGenerator data = generator(1);
  std::uint64_t next = 0;
  for (int k = 0; k < 4; ++k) {
    const std::uint64_t before = next;
    const Example ex = pack_examples(data, *tokens_, TaskMix{}, next, 96);
    EXPECT_GT(next, before);
    EXPECT_LE(ex.ids.size(), 96u);
    expect_well_formed(ex, *tokens_);
  }
}

// A run of `stages` on sequences of seq_len from a fresh tiny checkpoint
// (NAME-init), written to NAME-out.
TrainOptions tiny_run_options(const std::string& name, std::vector<StageSteps> stages,
                              std::int64_t seq_len, std::uint64_t seed) {
  TrainOptions opts;
  opts.init = tiny_checkpoint(name + "-init");
  opts.out = lclm::testing::scratch_dir(name + "-out");
  opts.stages = std::move(stages);
  opts.seq_len = seq_len;
  opts.seed = seed;
  return opts;
}

// Trains `steps` steps of one stage from a fresh tiny checkpoint.
struct StageRun {
  double loss_before = 0, loss_after = 0;
  fs::path init;
  std::shared_ptr<TorchLclm> initial;
  std::unique_ptr<Trainer> trainer;
};

StageRun run_stage(int stage, double lr_scale, int steps) {
  TrainOptions opts = tiny_run_options("stage-" + std::to_string(stage), {{stage, steps}}, 96, 2);
  opts.lr_scale = lr_scale;
  opts.warmup = 0;
  StageRun run;
  run.init = opts.init;
  run.initial = load_lclm_checkpoint(opts.init);
  run.trainer = std::make_unique<Trainer>(opts);
  const Example first = run.trainer->peek_batch();
  run.loss_before = run.trainer->loss_of(first);
  for (int i = 0; i < steps; ++i) run.trainer->step();
  run.loss_after = run.trainer->loss_of(first);
  return run;
}

// Names of parameters that differ from the initial model.
std::vector<std::string> changed(const TorchLclm& initial, TorchLclm& trained) {
  std::vector<std::string> names;
  const auto before = initial.named_parameters();
  for (const auto& item : trained.named_parameters()) {
    if (!torch::equal(item.value(), before[item.key()])) names.push_back(item.key());
  }
  return names;
}

bool any_under(const std::vector<std::string>& names, const std::string& prefix) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return n.rfind(prefix, 0) == 0; });
}

class TrainerStages : public ::testing::Test {
 protected:
  void SetUp() override { testing::use_all_cores(); }
};

TEST_F(TrainerStages, AdapterWarmUpTrainsTheAdapterAndMemoryRowsOnly) {
  StageRun run = run_stage(0, 1.0, 6);
  EXPECT_LT(run.loss_after, run.loss_before);
  const std::vector<std::string> names = changed(*run.initial, run.trainer->model());
  EXPECT_TRUE(any_under(names, "adapter."));
  EXPECT_FALSE(any_under(names, "encoder."));
  for (const std::string& n : names) {
    EXPECT_TRUE(n.rfind("adapter.", 0) == 0 || n == "decoder.embed_tokens.weight") << n;
  }
  // Of the embedding, only the three memory rows moved.
  const torch::Tensor before = run.initial->decoder->embed_tokens->weight;
  const torch::Tensor after = run.trainer->model().decoder->embed_tokens->weight;
  const torch::Tensor row_changed = (before != after).any(1);
  EXPECT_LE(row_changed.sum().item<std::int64_t>(), 3);
  const ExampleTokenizer tokens(run.init);
  for (std::int64_t row = 0; row < row_changed.size(0); ++row) {
    if (!row_changed[row].item<bool>()) continue;
    EXPECT_TRUE(row == tokens.memory_start() || row == tokens.memory_end() ||
                row == tokens.memory())
        << "embedding row " << row;
  }
}

TEST_F(TrainerStages, EncoderCptTrainsEncoderAndAdapterOnly) {
  StageRun run = run_stage(1, 20.0, 6);
  EXPECT_LT(run.loss_after, run.loss_before);
  const std::vector<std::string> names = changed(*run.initial, run.trainer->model());
  EXPECT_TRUE(any_under(names, "encoder."));
  EXPECT_TRUE(any_under(names, "adapter."));
  EXPECT_FALSE(any_under(names, "decoder."));
}

// In stage 1 a pack whose regions were all cut off gives a loss that reaches
// no trained parameter: the step is skipped, not an error.
TEST_F(TrainerStages, EncoderCptSkipsPacksWithoutRegions) {
  Trainer trainer(tiny_run_options("stage-short", {{1, 12}}, 16, 5));
  int without_regions = 0;
  while (!trainer.done()) {
    without_regions += trainer.peek_batch().regions.empty() ? 1 : 0;
    EXPECT_NO_THROW(trainer.step());
  }
  EXPECT_GT(without_regions, 0) << "no pack without regions: the case is not exercised";
}

TEST_F(TrainerStages, DecoderCptAndSftTrainEverything) {
  for (int stage : {2, 3}) {
    StageRun run = run_stage(stage, 30.0, 6);
    EXPECT_LT(run.loss_after, run.loss_before) << "stage " << stage;
    const std::vector<std::string> names = changed(*run.initial, run.trainer->model());
    EXPECT_TRUE(any_under(names, "decoder.")) << "stage " << stage;
    EXPECT_TRUE(any_under(names, "encoder.")) << "stage " << stage;
    EXPECT_TRUE(any_under(names, "adapter.")) << "stage " << stage;
  }
}

// One SFT step on packs of short examples (several to a sequence of 160).
TrainOptions short_example_options(const std::string& name, std::uint64_t seed) {
  TrainOptions opts = tiny_run_options(name, {{3, 1}}, 160, seed);
  opts.haystack_fill_lo = 0.1;
  opts.haystack_fill_hi = 0.2;
  opts.copy_fill_lo = 0.05;
  opts.copy_fill_hi = 0.1;
  return opts;
}

// With separate documents (the default) each example of a pack computes the
// logits it computes alone: it reads only itself, from position 0.
TEST_F(TrainerStages, PackedExamplesComputeWhatTheyComputeAlone) {
  const TrainOptions opts = short_example_options("pack", 3);
  Trainer trainer(opts);
  const Example pack = trainer.peek_batch();
  ASSERT_GE(pack.starts.size(), 3u) << "too few examples in the pack to test";
  ASSERT_FALSE(pack.regions.empty());
  const ExampleTokenizer tokens(opts.init);
  const torch::Tensor packed = trainer.logits_of(pack);  // [L, vocab]
  const torch::Tensor whole = trainer.model().decoder->logits(trainer.model().decoder->forward(
      trainer.model().decoder_inputs(pack.ids, pack.regions, pack.region_ratios),
      AttentionMask::Causal));
  std::size_t region = 0;
  for (std::size_t k = 0; k < pack.starts.size(); ++k) {
    const std::size_t begin = pack.starts[k];
    const std::size_t end = k + 1 < pack.starts.size() ? pack.starts[k + 1] : pack.ids.size();
    Example alone;
    alone.ids.assign(pack.ids.begin() + begin, pack.ids.begin() + end);
    alone.loss.assign(pack.loss.begin() + begin, pack.loss.begin() + end);
    for (std::int32_t id : alone.ids) {
      if (id != tokens.memory_start()) continue;
      alone.regions.push_back(pack.regions[region]);
      alone.region_ratios.push_back(pack.region_ratios[region]);
      ++region;
    }
    const torch::Tensor want = trainer.logits_of(alone);
    const auto rows = static_cast<std::int64_t>(end - begin);
    const torch::Tensor got = packed.narrow(0, static_cast<std::int64_t>(begin), rows);
    const double scale = want.abs().max().item<double>();
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << "example " << k;
    if (k > 0) {
      // The whole-pack causal forward reads earlier examples: not the same.
      const torch::Tensor mixed = whole.narrow(0, static_cast<std::int64_t>(begin), rows);
      EXPECT_GT((mixed - want).abs().max().item<double>(), 1e-3 * scale) << "example " << k;
    }
  }
  EXPECT_EQ(region, pack.regions.size());
}

// The alignment term, computed again the plain way: each region's latents
// from the encoder and adapter, each against the mean embedding of its
// group of r tokens.
TEST_F(TrainerStages, LatentAlignmentIsOneMinusCosineToTheGroupsMeanEmbedding) {
  TrainOptions opts = short_example_options("align", 4);
  opts.ratios = {1, 2, 4};
  opts.mix = TaskMix{0, 0.5, 0.5, 0, 0};
  Trainer trainer(opts);
  const Example pack = trainer.peek_batch();
  ASSERT_GE(pack.regions.size(), 2u) << "too few regions in the pack to test";
  ASSERT_NE(std::set<std::int64_t>(pack.region_ratios.begin(), pack.region_ratios.end()).size(), 1u)
      << "every region at one ratio: the grouping is not exercised";
  TorchLclm& model = trainer.model();
  const torch::Tensor inputs = model.decoder_inputs(pack.ids, pack.regions, pack.region_ratios);
  const torch::Tensor got = latent_alignment_loss(model, inputs, pack);
  ASSERT_TRUE(got.defined());
  // The embeddings are the target: the gradient reaches the encoder and
  // adapter, not the table.
  got.backward();
  const torch::Tensor table_grad = model.decoder->embed_tokens->weight.grad();
  EXPECT_TRUE(!table_grad.defined() || table_grad.abs().max().item<double>() == 0.0);
  EXPECT_TRUE(model.adapter->fc1->weight.grad().defined());

  const torch::NoGradGuard no_grad;
  const torch::Tensor table = model.decoder->embed_tokens->weight;
  double sum = 0;
  std::int64_t count = 0;
  for (std::size_t k = 0; k < pack.regions.size(); ++k) {
    const auto r = static_cast<std::size_t>(pack.region_ratios[k]);
    const torch::Tensor latents = model.encode_region(pack.regions[k], pack.region_ratios[k]);
    for (std::int64_t g = 0; g < latents.size(0); ++g) {
      torch::Tensor mean = torch::zeros({table.size(1)});
      std::size_t n = 0;
      for (std::size_t i = g * r; i < std::min(pack.regions[k].size(), (g + 1) * r); ++i, ++n) {
        mean += table[pack.regions[k][i]];
      }
      mean /= static_cast<double>(n);
      const torch::Tensor v = latents[g];
      sum += 1.0 - (v.dot(mean) / (v.norm() * mean.norm())).item<double>();
      ++count;
    }
  }
  EXPECT_NEAR(got.item<double>(), sum / static_cast<double>(count), 1e-5);

  Example plain = pack;
  plain.regions.clear();
  plain.region_ratios.clear();
  EXPECT_FALSE(latent_alignment_loss(model, inputs, plain).defined());
}

// --batch 2: a step trains on the next two packs of the stream and reports
// the mean of their losses (data_parallel_test checks that two processes of
// --batch 1 train exactly what this does).
TEST_F(TrainerStages, BatchOfTwoStepsOnTheNextTwoPacks) {
  TrainOptions opts = short_example_options("batch-one", 5);
  Trainer one(opts);
  const ExampleTokenizer tokens(opts.init);
  DataGenerator data(Corpus::from_paths(opts.corpus), opts.seed,
                     static_cast<std::size_t>(opts.seq_len), tokens.checkpoint_ratio());
  data.set_haystack_fill(opts.haystack_fill_lo, opts.haystack_fill_hi);
  data.set_copy_fill(opts.copy_fill_lo, opts.copy_fill_hi);
  std::uint64_t next = 0;
  const Example first = pack_examples(data, tokens, stage_task_mix(3), next, 160);
  const Example second = pack_examples(data, tokens, stage_task_mix(3), next, 160);
  EXPECT_EQ(first.ids, one.peek_batch().ids);
  const double want = (one.loss_of(first) + one.loss_of(second)) / 2;

  opts.out = lclm::testing::scratch_dir("batch-two-out");
  opts.batch = 2;
  Trainer two(opts);
  EXPECT_NEAR(two.step(), want, 1e-6 * want);
  EXPECT_EQ(two.next_example(), next);
}

// With --latent-align, steps pull the latents towards their tokens'
// embeddings; the step still reports the next-token loss.
TEST_F(TrainerStages, LatentAlignmentStepsPullLatentsTowardsTheirTokens) {
  TrainOptions opts = tiny_run_options("align-train", {{1, 8}}, 128, 6);
  opts.lr_scale = 30;
  opts.latent_align = 5;
  Trainer trainer(opts);
  const Example pack = trainer.peek_batch();
  ASSERT_FALSE(pack.regions.empty());
  const auto alignment = [&] {
    const torch::NoGradGuard no_grad;
    TorchLclm& model = trainer.model();
    return latent_alignment_loss(
               model, model.decoder_inputs(pack.ids, pack.regions, pack.region_ratios), pack)
        .item<double>();
  };
  const double before = alignment();
  // The first step trains on `pack` with the weights it has now.
  const double next_token_loss = trainer.loss_of(pack);
  EXPECT_NEAR(trainer.step(), next_token_loss, 1e-5)
      << "step() returns the next-token loss, not the objective";
  EXPECT_FALSE(std::isnan(trainer.last_alignment_loss()));
  while (!trainer.done()) trainer.step();
  EXPECT_LT(alignment(), before - 0.05);
}

TEST(TrainerSchedule, WarmsUpThenDecaysToTheFloor) {
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 0, 10, 100), 1e-4);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 9, 10, 100), 1e-3);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 10, 10, 100), 1e-3);
  EXPECT_NEAR(scheduled_lr(1e-3, 55, 10, 100), (1e-3 + 1e-6) / 2, 1e-12);
  EXPECT_DOUBLE_EQ(scheduled_lr(1e-3, 100, 10, 100), 1e-6);
  EXPECT_THROW(stage_settings(4), Error);
  EXPECT_THROW(parse_stage_list("0,5", 10), Error);
  EXPECT_EQ(parse_stage_list("0,2", 7), (std::vector<StageSteps>{{0, 7}, {2, 7}}));
}

TEST_F(TrainerStages, ResumeContinuesExactlyAndTheEngineLoadsTheCheckpoint) {
  const fs::path init = tiny_checkpoint("resume-init");
  TrainOptions opts;
  opts.init = init;
  // Six steps of stage 2, four after the stop: enough examples that
  // reconstruction passages, which --scramble and --numbers change, come
  // after the resume.
  opts.stages = {{0, 3}, {2, 6}};
  opts.seq_len = 64;
  opts.lr_scale = 10.0;
  opts.warmup = 1;
  opts.seed = 4;
  // Data settings a resume must restore from state.json to stay exact.
  opts.copy_fill_lo = 0.1;
  opts.copy_fill_hi = 0.3;
  opts.scramble = 0.5;
  opts.numbers = 0.25;
  opts.haystack_fill_lo = 0.1;
  opts.needles_lo = 2;
  opts.needles_hi = 5;
  opts.questions = 3;
  // separate_documents keeps its default (true), which a state without it
  // would not restore.

  opts.out = lclm::testing::scratch_dir("resume-straight");
  Trainer straight(opts);
  while (!straight.done()) straight.step();

  opts.out = lclm::testing::scratch_dir("resume-split");
  {
    // --until: stop and save at global step 4, as an interruption would.
    TrainOptions stop = opts;
    stop.until = 4;
    Trainer first(stop);
    first.run();
    EXPECT_EQ(first.global_step(), 4);
  }
  TrainOptions again;
  again.out = opts.out;
  again.resume = true;
  Trainer resumed(again);
  EXPECT_EQ(resumed.global_step(), 4);
  EXPECT_EQ(resumed.stage(), 2);
  while (!resumed.done()) resumed.step();

  EXPECT_EQ(resumed.global_step(), straight.global_step());
  EXPECT_EQ(resumed.next_example(), straight.next_example());
  EXPECT_EQ(resumed.current_lr(), straight.current_lr());
  const auto want = straight.model().named_parameters();
  for (const auto& item : resumed.model().named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), want[item.key()])) << item.key();
  }

  resumed.save();
  const auto engine = LclmModel::load(opts.out);
  EXPECT_EQ(engine->config().compression_ratio, 4);
  EXPECT_THROW(Trainer{opts}, Error) << "a second fresh run into the same directory";
}

// A short plan on a tiny checkpoint for the run() tests.
TrainOptions short_run_options(const std::string& name) {
  TrainOptions opts = tiny_run_options(name, {{2, 4}}, 64, 6);
  opts.warmup = 0;
  return opts;
}

std::int64_t lines_of(const std::string& s) {
  return std::count(s.begin(), s.end(), '\n');
}

std::int64_t saved_global_step(const fs::path& out) {
  return read_json_file(out / "trainer_state" / "state.json").at("global_step").get<std::int64_t>();
}

TEST_F(TrainerStages, ResumeKeepsTheSavedCadenceUnlessGivenAnother) {
  TrainOptions opts = short_run_options("cadence");
  opts.save_every = 3;
  opts.log_every = 1;
  opts.until = 1;
  Trainer(opts).run();

  // Resumed without a cadence: a progress line every step, as saved.
  TrainOptions again;
  again.out = opts.out;
  again.resume = true;
  again.until = 2;
  std::ostringstream log;
  again.log = &log;
  Trainer(again).run();
  EXPECT_EQ(lines_of(log.str()), 1) << log.str();
  EXPECT_NE(log.str().find("step 2/4"), std::string::npos) << log.str();
  const auto state = read_json_file(opts.out / "trainer_state" / "state.json");
  EXPECT_EQ(state.at("save_every").get<std::int64_t>(), 3);
  EXPECT_EQ(state.at("log_every").get<std::int64_t>(), 1);

  // Given one, the resumed run takes it (and saves it for the next).
  again.until = 0;
  again.log_every = 0;
  log.str("");
  Trainer(again).run();
  EXPECT_EQ(lines_of(log.str()), 1) << "only the last step's line:\n" << log.str();
  EXPECT_NE(log.str().find("step 4/4"), std::string::npos) << log.str();
  EXPECT_EQ(read_json_file(opts.out / "trainer_state" / "state.json").at("log_every"), 0);

  again.save_every = -1;
  EXPECT_EQ(error_of([&] { Trainer{again}; }),
            "--save-every and --log-every take a step count >= 0");
}

// A log that requests a stop when a progress line is flushed, as a SIGINT
// arriving during the next step would.
class StopOnFlush : public std::stringbuf {
 public:
  explicit StopOnFlush(std::atomic<bool>& stop) : stop_(stop) {}

 protected:
  int sync() override {
    stop_.store(true);
    return std::stringbuf::sync();
  }

 private:
  std::atomic<bool>& stop_;
};

TEST_F(TrainerStages, AStopRequestSavesAfterTheCurrentStepAndResumeGoesOn) {
  TrainOptions opts = short_run_options("stop-request");
  opts.log_every = 2;
  std::atomic<bool> stop{false};
  opts.stop_requested = &stop;
  StopOnFlush buffer(stop);
  std::ostream log(&buffer);
  opts.log = &log;
  {
    Trainer first(opts);
    first.run();
    EXPECT_EQ(first.global_step(), 2) << "the step after the request is not taken";
    EXPECT_FALSE(first.done());
  }
  EXPECT_EQ(saved_global_step(opts.out), 2);
  EXPECT_NE(buffer.str().find("interrupted: saved step 2 to " + opts.out.string() +
                              "; continue with --resume"),
            std::string::npos)
      << buffer.str();

  TrainOptions again;
  again.out = opts.out;
  again.resume = true;
  Trainer resumed(again);
  resumed.run();
  EXPECT_TRUE(resumed.done());
  EXPECT_EQ(saved_global_step(opts.out), 4);
}

TEST_F(TrainerStages, ConcatPoolingTakesOnlyItsOwnRatio) {
  TrainOptions opts;
  opts.init = write_tiny_lclm("concat-init", small_vocab_tokenizer_dir(), DType::F32, 11,
                              [](RandomLclmSpec& s) { s.config.pooling = Pooling::Concat; });
  opts.stages = {{3, 1}};
  opts.seq_len = 64;
  opts.ratios = {4};
  opts.out = lclm::testing::scratch_dir("concat-own-ratio");
  EXPECT_NO_THROW(Trainer{opts});
  opts.ratios = {4, 8};
  opts.out = lclm::testing::scratch_dir("concat-other-ratio");
  EXPECT_EQ(error_of([&] { Trainer{opts}; }),
            "--ratio 8: this checkpoint pools by concat, which fixes its ratio at 4 (its adapter "
            "reads r x E values per latent)");
  opts.ratios = {0};
  opts.out = lclm::testing::scratch_dir("concat-zero-ratio");
  EXPECT_EQ(error_of([&] { Trainer{opts}; }), "--ratios: 0 is not a positive ratio");
}

}  // namespace
}  // namespace lclm::train
