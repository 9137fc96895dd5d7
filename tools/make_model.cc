// lclm-make-model: writes a Qwen3 model directory with seeded random weights
// (the project's test and benchmark models), optionally with tokenizer files.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "format/dtype.h"
#include "model/random_qwen3.h"
#include "util/error.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  CLI::App app{"Write a Qwen3 model directory with seeded random weights (HF layout)."};
  std::string out_dir, preset = "tiny", dtype_name = "bf16", tokenizer_dir;
  lclm::RandomQwen3Spec spec;
  int layers = 0;
  app.add_option("-o,--output", out_dir, "Output directory")->required();
  app.add_option("--preset", preset, "tiny | qwen3-0.6b")
      ->check(CLI::IsMember({"tiny", "qwen3-0.6b"}))
      ->capture_default_str();
  app.add_option("--dtype", dtype_name, "bf16 | f16 | f32")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  app.add_option("--seed", spec.seed, "Random seed")->capture_default_str();
  app.add_option("--shards", spec.shards, "Number of safetensors shards")->capture_default_str();
  app.add_option("--layers", layers, "Override the number of layers");
  app.add_option("--tokenizer-dir", tokenizer_dir,
                 "Copy tokenizer.json and tokenizer_config.json from this directory");
  bool untied = false, bare = false;
  app.add_flag("--untied", untied, "Write a separate lm_head.weight");
  app.add_flag("--no-prefix", bare, "Name tensors without \"model.\" (a bare Qwen3Model)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (preset == "tiny") {
      lclm::Qwen3Config& c = spec.config;
      c.vocab_size = 151936;
      c.hidden_size = 64;
      c.intermediate_size = 160;
      c.num_hidden_layers = 2;
      c.num_attention_heads = 4;
      c.num_key_value_heads = 2;
      c.head_dim = 32;
      c.max_position_embeddings = 4096;
      c.rms_norm_eps = 1e-6;
      c.rope_theta = 1e6;
      c.tie_word_embeddings = true;
      c.eos_token_ids = {151645};
      spec.weight_std = 0.08f;
    } else {
      spec.config = lclm::qwen3_0_6b_config();
    }
    if (layers > 0) spec.config.num_hidden_layers = layers;
    if (untied) spec.config.tie_word_embeddings = false;
    spec.tensor_prefix = !bare;
    spec.dtype = dtype_name == "bf16" ? lclm::DType::BF16
                 : dtype_name == "f16" ? lclm::DType::F16
                                       : lclm::DType::F32;
    lclm::write_random_qwen3(out_dir, spec);
    if (!tokenizer_dir.empty()) {
      for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
        const fs::path src = fs::path(tokenizer_dir) / f;
        if (!fs::exists(src)) throw lclm::Error(src.string() + " is missing");
        fs::copy_file(src, fs::path(out_dir) / f, fs::copy_options::overwrite_existing);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
