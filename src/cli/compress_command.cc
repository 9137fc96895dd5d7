// lclm compress: one file -> the latents an LCLM decoder reads in its place.
#include <chrono>
#include <iomanip>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/latents_file.h"
#include "util/error.h"
#include "util/process_stats.h"

namespace lclm::cli {
namespace {

struct CompressArgs {
  std::string model, input, output;
  LclmArgs lclm;
  int threads = 0;
};

int run(const CompressArgs& a, std::ostream& err) {
  const std::unique_ptr<Engine> engine = Engine::load(a.model, a.lclm.engine_options(a.threads));
  LclmModel* model = engine->lclm();
  if (!model) {
    throw Error(a.model + " is not an LCLM checkpoint (no model_config.json): compress needs one");
  }
  const std::string text = read_file(a.input, "input file");
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
  cmd->add_option("-o,--output", args->output, "Latents file to write")->required();
  args->lclm.add_options(*cmd);
  cmd->add_option("-t,--threads", args->threads, "Threads (0: all cores)")->capture_default_str();
  return {cmd, [args](std::ostream&, std::ostream& err) { return run(*args, err); }};
}

}  // namespace lclm::cli
