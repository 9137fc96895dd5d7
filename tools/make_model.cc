// lclm-make-model: writes a Qwen3 model directory, or with --lclm an LCLM
// checkpoint in the published layout, with seeded random weights (the
// project's test and benchmark models).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "fixtures/random_lclm.h"
#include "fixtures/random_qwen3.h"
#include "format/dtype.h"
#include "util/error.h"

namespace {

namespace fs = std::filesystem;

void copy_tokenizer(const fs::path& from, const fs::path& to) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    if (!fs::exists(from / f)) throw lclm::Error((from / f).string() + " is missing");
    fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a Qwen3 model directory or an LCLM checkpoint with seeded random weights."};
  std::string out_dir, preset = "tiny", dtype_name = "bf16", tokenizer_dir;
  std::uint64_t seed = 0;
  int shards = 1, layers = 0;
  bool untied = false, bare = false, lclm_checkpoint = false;
  app.add_option("-o,--output", out_dir, "Output directory")->required();
  app.add_option("--preset", preset,
                 "Qwen3 shape: tiny | qwen3-0.6b; with --lclm: tiny | published (a Qwen3-0.6B "
                 "encoder and a Qwen3-4B decoder, depth set by --encoder-layers/--decoder-layers)")
      ->check(CLI::IsMember({"tiny", "qwen3-0.6b", "published"}))
      ->capture_default_str();
  app.add_option("--dtype", dtype_name, "bf16 | f16 | f32")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  app.add_option("--seed", seed, "Random seed")->capture_default_str();
  app.add_option("--shards", shards, "Number of safetensors shards")->capture_default_str();
  app.add_option("--layers", layers, "Override the number of layers");
  app.add_option("--tokenizer-dir", tokenizer_dir,
                 "Directory with tokenizer.json and tokenizer_config.json (required for --lclm)");
  app.add_flag("--untied", untied, "Write a separate lm_head.weight");
  app.add_flag("--no-prefix", bare, "Name tensors without \"model.\" (a bare Qwen3Model)");

  lclm::LclmConfig lc;
  std::string pooling = "mean", mask = "causal", adapter = "mlp";
  app.add_flag("--lclm", lclm_checkpoint,
               "Write an LCLM checkpoint (model_config.json, "
               "decoder/, encoder/, adapter/)");
  app.add_option("--ratio", lc.compression_ratio, "LCLM compression_ratio")->capture_default_str();
  app.add_option("--window", lc.encoder_window_size, "LCLM encoder_window_size")
      ->capture_default_str();
  app.add_option("--pooling", pooling, "mean | eos | concat")
      ->check(CLI::IsMember({"mean", "eos", "concat"}))
      ->capture_default_str();
  app.add_option("--mask", mask, "causal | bidirectional")
      ->check(CLI::IsMember({"causal", "bidirectional"}))
      ->capture_default_str();
  app.add_option("--overlap", lc.boundary_overlap, "LCLM boundary_overlap")->capture_default_str();
  app.add_option("--adapter", adapter, "mlp | mlp_attn | attn_mlp")
      ->check(CLI::IsMember({"mlp", "mlp_attn", "attn_mlp"}))
      ->capture_default_str();
  app.add_option("--adapter-layers", lc.num_adapter_layers, "Attention layers of the adapter")
      ->capture_default_str();
  int decoder_layers = 0, decoder_hidden = 0, encoder_layers = 0;
  app.add_option("--decoder-layers", decoder_layers, "LCLM decoder layers (default: the preset's)");
  app.add_option("--encoder-layers", encoder_layers, "LCLM encoder layers (default: the preset's)");
  app.add_option("--decoder-hidden", decoder_hidden,
                 "LCLM decoder hidden size, a multiple of 256 (heads of 128 as in Qwen3, "
                 "intermediate 3x)");
  CLI11_PARSE(app, argc, argv);

  try {
    const lclm::DType dtype = lclm::parse_dtype(dtype_name, "--dtype");
    if (lclm_checkpoint) {
      if (tokenizer_dir.empty()) throw lclm::Error("--lclm needs --tokenizer-dir");
      if (preset != "tiny" && preset != "published") {
        throw lclm::Error("--lclm takes --preset tiny or published, not " + preset);
      }
      const bool published = preset == "published";
      lclm::RandomLclmSpec spec = published ? lclm::published_lclm_spec(tokenizer_dir)
                                            : lclm::tiny_lclm_spec(tokenizer_dir);
      lc.pooling = pooling == "mean"  ? lclm::Pooling::Mean
                   : pooling == "eos" ? lclm::Pooling::Eos
                                      : lclm::Pooling::Concat;
      lc.encoder_mask =
          mask == "causal" ? lclm::AttentionMask::Causal : lclm::AttentionMask::Bidirectional;
      lc.adapter_type = adapter == "mlp"        ? lclm::AdapterType::Mlp
                        : adapter == "mlp_attn" ? lclm::AdapterType::MlpAttn
                                                : lclm::AdapterType::AttnMlp;
      spec.config = lc;
      if (decoder_layers > 0) spec.decoder.num_hidden_layers = decoder_layers;
      if (encoder_layers > 0) spec.encoder.num_hidden_layers = encoder_layers;
      if (decoder_hidden > 0) {
        if (decoder_hidden % 256 != 0) {
          throw lclm::Error("--decoder-hidden must be a multiple of 256");
        }
        spec.decoder.hidden_size = decoder_hidden;
        spec.decoder.intermediate_size = 3 * decoder_hidden;
        spec.decoder.num_attention_heads = decoder_hidden / 128;
        spec.decoder.num_key_value_heads = decoder_hidden / 256;
        spec.decoder.head_dim = 128;
      }
      spec.dtype = dtype;
      spec.seed = seed;
      lclm::write_random_lclm(out_dir, spec);
      return 0;
    }
    lclm::RandomQwen3Spec spec;
    spec.config = preset == "tiny" ? lclm::tiny_qwen3_config() : lclm::qwen3_0_6b_config();
    spec.weight_std = preset == "tiny" ? 0.08f : 0.02f;
    if (layers > 0) spec.config.num_hidden_layers = layers;
    if (untied) spec.config.tie_word_embeddings = false;
    spec.tensor_prefix = !bare;
    spec.dtype = dtype;
    spec.seed = seed;
    spec.shards = shards;
    lclm::write_random_qwen3(out_dir, spec);
    if (!tokenizer_dir.empty()) copy_tokenizer(tokenizer_dir, out_dir);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
