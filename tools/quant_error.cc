// lclm-quant-error: how far a model's logits move when its matrices are
// block-quantized: relative RMS and max error of the logits, top-1
// agreement, KL divergence and perplexity against the model as stored (see
// docs/quantization.md). Takes any Qwen3 model directory or LCLM checkpoint
// (its decoder).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "compression/lclm_model.h"
#include "format/quant_blocks.h"
#include "model/qwen3_model.h"
#include "quant/logit_error.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/process_stats.h"
#include "util/threads.h"

namespace {

namespace fs = std::filesystem;
using lclm::DType;

struct Args {
  std::string model;
  std::vector<std::string> types = {"q8_0", "q4_0"};
  std::string text_file;
  int tokens = 128;
  int chunk = 1;
  int threads = 2;
};

// The positions to score: the text file's tokens, or seeded random ids below
// Qwen3's special tokens.
std::vector<std::int32_t> input_ids(const fs::path& dir, const Args& a, std::int64_t vocab) {
  if (!a.text_file.empty()) {
    std::ifstream in(a.text_file, std::ios::binary);
    if (!in) throw lclm::Error("cannot open text file " + a.text_file);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::int32_t> ids = lclm::Tokenizer::from_dir(dir).encode(text);
    if (ids.size() > static_cast<std::size_t>(a.tokens))
      ids.resize(static_cast<std::size_t>(a.tokens));
    return ids;
  }
  std::mt19937_64 rng(0);
  const auto range = static_cast<std::uint64_t>(std::min<std::int64_t>(vocab, 151643));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(a.tokens));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % range);
  return ids;
}

// Runs both models over the ids in chunks of `chunk` positions (1: the
// decode path) and compares the logits of every position.
lclm::LogitError compare(const lclm::Qwen3Model& ref, const lclm::Qwen3Model& got,
                         const std::vector<std::int32_t>& ids, std::size_t chunk) {
  const auto H = static_cast<std::size_t>(ref.config().hidden_size);
  const auto V = static_cast<std::size_t>(ref.config().vocab_size);
  lclm::KVCache cache_ref = ref.make_cache(ids.size()), cache_got = got.make_cache(ids.size());
  std::vector<float> x_ref(chunk * H), x_got(chunk * H), l_ref(chunk * V), l_got(chunk * V);
  std::vector<std::int32_t> next(ids.size(), -1);
  std::copy(ids.begin() + 1, ids.end(), next.begin());
  lclm::LogitError e;
  for (std::size_t i = 0; i < ids.size(); i += chunk) {
    const std::size_t n = std::min(chunk, ids.size() - i);
    const std::span<const std::int32_t> part(ids.data() + i, n);
    ref.embed(part, x_ref.data());
    got.embed(part, x_got.data());
    ref.forward(x_ref.data(), n, cache_ref, lclm::AttentionMask::Causal);
    got.forward(x_got.data(), n, cache_got, lclm::AttentionMask::Causal);
    ref.logits(x_ref.data(), n, l_ref.data());
    got.logits(x_got.data(), n, l_got.data());
    e.add(l_ref.data(), l_got.data(), n, V, next.data() + i);
  }
  return e;
}

int run(const Args& a) {
  lclm::set_num_threads(a.threads);
  const fs::path dir =
      lclm::LclmModel::is_checkpoint(a.model) ? fs::path(a.model) / "decoder" : fs::path(a.model);
  const lclm::Qwen3Model ref = lclm::Qwen3Model::load(dir);
  const std::vector<std::int32_t> ids = input_ids(dir, a, ref.config().vocab_size);
  std::cout << "model: " << dir.string() << " (matrices " << lclm::dtype_name(ref.matrix_dtype())
            << "), " << ids.size() << (a.text_file.empty() ? " random" : " text")
            << " tokens, chunks of " << a.chunk
            << (a.chunk < 4 ? " (the decode path)" : " (the prefill path)") << "\n\n"
            << "| type | rel. RMS error | max abs error | top-1 agree | mean KL (nats) | ppl ref | "
               "ppl quant |\n|---|---|---|---|---|---|---|\n";
  for (const std::string& type : a.types) {
    const lclm::Qwen3Model got =
        lclm::Qwen3Model::load(dir, {.quant = lclm::parse_quant_type(type, "--type")});
    const lclm::LogitError e = compare(ref, got, ids, static_cast<std::size_t>(a.chunk));
    std::cout << std::setprecision(4) << "| " << type << " | " << e.relative_rms() << " | "
              << e.max_abs() << " | " << e.top1_agreement() << " | " << e.mean_kl() << " | "
              << e.perplexity_ref() << " | " << e.perplexity_got() << " |\n";
  }
  std::cout << "\npeak RSS (VmHWM): "
            << static_cast<double>(lclm::peak_resident_bytes()) / (1 << 20) << " MiB\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Logit error, top-1 agreement, KL and perplexity of quantized matrices against "
      "the model as stored."};
  Args a;
  app.add_option("-m,--model", a.model, "Qwen3 model directory or LCLM checkpoint")->required();
  app.add_option("--type", a.types, "Block types to compare")
      ->check(CLI::IsMember({"q8_0", "q4_0"}))
      ->capture_default_str();
  app.add_option("-f,--file", a.text_file,
                 "Score this text (tokenized by the model's tokenizer) instead of random ids");
  app.add_option("-n,--tokens", a.tokens, "Positions to score (the text is cut there)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--chunk", a.chunk, "Positions per forward pass (1: decode path, >= 4: prefill)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("-t,--threads", a.threads, "Threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
