// lclm compress: one file -> the latents an LCLM decoder reads in its place.
#include <chrono>
#include <iomanip>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/latents_file.h"
#include "format/torch_file.h"
#include "util/error.h"
#include "util/process_stats.h"

namespace lclm::cli {
namespace {

struct CompressArgs {
  std::string model, input, output;
  LclmArgs lclm;
  int threads = 0;
  std::string format = "latents";
  std::string prompt, system, embeds_dtype;
  bool chat = false;
};

// The dtype prompt embeddings are written in: --embeds-dtype, else the
// decoder's own (its embedding matrix's; f32 for a quantized one).
DType embeds_dtype(const CompressArgs& a, const Engine& engine) {
  if (a.embeds_dtype == "f32") return DType::F32;
  if (a.embeds_dtype == "bf16") return DType::BF16;
  if (a.embeds_dtype == "f16") return DType::F16;
  const DType t = engine.decoder().weight_dtype();
  return t == DType::BF16 || t == DType::F16 ? t : DType::F32;
}

// --format prompt-embeds: the decoder's input for the whole prompt (the
// document compressed, the rest embedded), as torch.save writes a tensor
// [positions, hidden]: what vLLM's prompt_embeds takes.
int write_prompt_embeds(const CompressArgs& a, Engine& engine, const std::string& document,
                        std::ostream& err) {
  std::string text = compose_prompt(a.prompt, document);
  if (a.chat) text = chat_turn(engine, a.system, text);
  const auto t0 = std::chrono::steady_clock::now();
  const PreparedPrompt p = engine.prepare(text, std::nullopt, engine.max_context() - 1);
  const std::size_t hidden = static_cast<std::size_t>(engine.decoder().config().hidden_size);
  const DType dtype = embeds_dtype(a, engine);
  write_torch_tensor(a.output, p.embeddings.data(), p.ids.size(), hidden, dtype);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  err << std::fixed << std::setprecision(1) << p.ids.size() << " positions x " << hidden << " "
      << dtype_name(dtype) << " (" << p.stats.plain_tokens << " tokens + " << p.stats.latents
      << " latents of " << p.stats.compressed_tokens << " document tokens) in " << seconds * 1e3
      << " ms | wrote " << a.output << " | peak RSS " << peak_resident_bytes() / kMiB << " MiB\n";
  return 0;
}

int run(const CompressArgs& a, std::ostream& err) {
  if (a.format == "latents" &&
      (!a.prompt.empty() || a.chat || !a.system.empty() || !a.embeds_dtype.empty())) {
    throw Error("--prompt, --chat, --system and --embeds-dtype go with --format prompt-embeds");
  }
  const std::unique_ptr<Engine> engine = Engine::load(a.model, a.lclm.engine_options(a.threads));
  LclmModel* model = engine->lclm();
  if (!model) {
    throw Error(a.model + " is not an LCLM checkpoint (no model_config.json): compress needs one");
  }
  const std::string text = read_file(a.input, "input file");
  if (a.format == "prompt-embeds") return write_prompt_embeds(a, *engine, text, err);
  const auto t0 = std::chrono::steady_clock::now();
  bool cache_hit = false;
  LatentsFile file;
  file.latents = model->compress(text, std::nullopt, &cache_hit);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const LclmConfig& c = model->config();
  file.metadata = {{"compression_ratio", std::to_string(c.compression_ratio)},
                   {"encoder_window_size", std::to_string(c.encoder_window_size)},
                   {"pooling", pooling_name(c.pooling)},
                   {"adapter_type", adapter_type_name(c.adapter_type)},
                   {"checkpoint_fingerprint", model->fingerprint()},
                   {"source", a.input}};
  write_latents_file(a.output, file);

  const Latents& l = file.latents;
  err << std::fixed << std::setprecision(1) << l.n_tokens << " tokens -> " << l.count()
      << " latents x " << l.dim << " (" << (l.count() ? double(l.n_tokens) / l.count() : 0.0)
      << "x, ratio " << c.compression_ratio << ") in " << seconds * 1e3 << " ms"
      << (cache_hit ? " (from the latent cache)" : "") << " | "
      << l.n_tokens / std::max(seconds, 1e-9) << " tokens/s | wrote " << a.output << " | peak RSS "
      << peak_resident_bytes() / kMiB << " MiB\n";
  return 0;
}

}  // namespace

Command add_compress_command(CLI::App& app) {
  auto args = std::make_shared<CompressArgs>();
  CLI::App* cmd = app.add_subcommand(
      "compress", "Compress a file to latents (a safetensors file; see docs/compression.md)");
  cmd->add_option("-m,--model", args->model, "LCLM checkpoint directory")->required();
  cmd->add_option("-f,--file", args->input, "File to compress")->required();
  cmd->add_option("-o,--output", args->output,
                  "File to write: latents (safetensors), or with --format prompt-embeds a "
                  "torch.save'd tensor (.pt)")
      ->required();
  cmd->add_option("--format", args->format,
                  "latents: the document's latents; prompt-embeds: the decoder's input "
                  "embeddings for the whole prompt, for vLLM's prompt_embeds (docs/scaling.md)")
      ->check(CLI::IsMember({"latents", "prompt-embeds"}))
      ->capture_default_str();
  cmd->add_option("--prompt", args->prompt,
                  "prompt-embeds: text after the document (the question)");
  cmd->add_flag("--chat", args->chat,
                "prompt-embeds: wrap document and prompt in a ChatML user "
                "turn and open the assistant's");
  cmd->add_option("--system", args->system, "prompt-embeds: system message for --chat");
  cmd->add_option("--embeds-dtype", args->embeds_dtype,
                  "prompt-embeds: bf16, f16 or f32 (default: the decoder's dtype)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  args->lclm.add_options(*cmd);
  cmd->add_option("-t,--threads", args->threads, "Threads (0: all cores)")->capture_default_str();
  return {cmd, [args](std::ostream&, std::ostream& err) { return run(*args, err); }};
}

}  // namespace lclm::cli
