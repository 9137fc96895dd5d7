// lclm quantize: stores a model's matrices block-quantized, so that the next
// load maps them as they are instead of converting them (--quant).
#include <chrono>
#include <iomanip>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "format/quant_blocks.h"
#include "quant/quantize_checkpoint.h"
#include "util/process_stats.h"
#include "util/threads.h"

namespace lclm::cli {
namespace {

struct QuantizeArgs {
  std::string model;
  std::string output;
  std::string type;
  int threads = 0;
};

int run(const QuantizeArgs& a, std::ostream& out) {
  set_num_threads(a.threads);
  const auto t0 = std::chrono::steady_clock::now();
  const QuantizeSummary s =
      quantize_checkpoint(a.model, a.output, parse_quant_type(a.type, "--type"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out << std::fixed << std::setprecision(1) << "wrote " << a.output << ": " << s.matrices
      << " matrices as " << a.type << ", weights " << s.bytes_in / kMiB << " MiB -> "
      << s.bytes_out / kMiB << " MiB, " << seconds << " s, peak RSS "
      << static_cast<double>(peak_resident_bytes()) / kMiB << " MiB\n";
  return 0;
}

}  // namespace

Command add_quantize_command(CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "quantize",
      "Write a copy of a Qwen3 model or LCLM checkpoint with its matrices stored quantized "
      "(see docs/quantization.md)");
  cmd->add_option("-m,--model", args->model, "Qwen3 model directory or LCLM checkpoint")
      ->required();
  cmd->add_option("-o,--output", args->output, "Directory to write")->required();
  cmd->add_option("--type", args->type, "Block type")
      ->required()
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
  cmd->add_option("-t,--threads", args->threads, "Threads (0: all cores)")->capture_default_str();
  return {cmd, [args](std::ostream& out, std::ostream&) { return run(*args, out); }};
}

}  // namespace lclm::cli
