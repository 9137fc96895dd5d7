#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/commands.h"

namespace lclm {
namespace {

// llama.cpp's flags people type out of habit. Some are several letters after
// one dash, which CLI11 would read as a one-letter flag and a value (-sys as
// -s ys, a seed): each gets a one-line hint instead.
struct LlamaFlag {
  std::vector<std::string_view> names;
  std::string_view hint;
};
const std::vector<LlamaFlag>& llama_cpp_flags() {
  static const std::vector<LlamaFlag> flags = {
      {{"-sys", "--system-prompt"}, "use `--system TEXT` with `--chat`"},
      {{"-cnv", "--conversation", "-no-cnv", "--no-conversation"},
       "use `lclm chat` for a conversation, `lclm generate --chat` for one turn"},
      {{"-ngl", "--gpu-layers", "--n-gpu-layers", "-dev", "--device", "-sm", "--split-mode", "-mg",
        "--main-gpu", "-ts", "--tensor-split"},
       "lclm runs on the CPU only; leave it out"},
      {{"-fa", "--flash-attn"}, "lclm has no flash-attention switch; leave it out"},
      {{"-np"}, "use `--parallel N` (lclm serve)"},
      {{"-cb", "--cont-batching", "-nocb", "--no-cont-batching"},
       "lclm serve always batches the running requests (`--parallel N`)"},
      {{"-hf", "-hfr", "--hf-repo", "-hff", "--hf-file", "-mu", "--model-url"},
       "lclm loads a local directory (`-m DIR`) and downloads nothing"},
      {{"-tb", "--threads-batch"}, "use `-t N` (one thread count for prefill and decode)"},
      {{"-ub", "--ubatch-size"}, "use `-b N` (prompt tokens per prefill pass)"},
      {{"-co", "--color"}, "lclm prints plain text; leave it out"},
  };
  return flags;
}

// llama.cpp's several-letter short flags that lclm takes under their long
// names: rewritten before parsing (-ctk q8_0, -ctk=q8_0).
std::vector<std::string> long_names(std::vector<std::string> args) {
  static constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
      {"-ctk", "--cache-type-k"}, {"-ctv", "--cache-type-v"}};
  for (std::string& arg : args) {
    const std::string_view name = std::string_view(arg).substr(0, arg.find('='));
    for (const auto& [alias, long_name] : kAliases) {
      if (name == alias) arg = std::string(long_name) + arg.substr(name.size());
    }
  }
  return args;
}

// The hint for the first llama.cpp flag among args ("" if none).
std::string llama_cpp_hint(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    const std::string_view name = std::string_view(arg).substr(0, arg.find('='));
    for (const LlamaFlag& f : llama_cpp_flags()) {
      for (const std::string_view n : f.names) {
        if (name == n) return std::string(name) + " is llama.cpp's flag: " + std::string(f.hint);
      }
    }
  }
  return "";
}

}  // namespace

int run_cli(const std::vector<std::string>& given, std::ostream& out, std::ostream& err) {
  const std::vector<std::string> args = long_names(given);
  CLI::App app{
      "lclm: inference for Latent Context Language Models (Qwen3 encoder + decoder) on CPU.\n"
      "Run `lclm COMMAND --help` for the options of a command."};
  app.name("lclm");
  app.require_subcommand(1);
  app.set_version_flag("--version", "lclm 0.1.0");
  const std::vector<cli::Command> commands = {
      cli::add_generate_command(app), cli::add_compress_command(app),
      cli::add_info_command(app),     cli::add_tokenize_command(app),
      cli::add_agent_command(app),    cli::add_serve_command(app),
      cli::add_eval_command(app),     cli::add_bench_command(app),
      cli::add_quantize_command(app), cli::add_chat_command(app)};

  if (const std::string hint = llama_cpp_hint(args); !hint.empty()) {
    err << "error: " << hint << " (see lclm --help)\n";
    return 2;
  }
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    out << "lclm 0.1.0\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    err << "error: " << e.what() << " (see lclm --help)\n";
    return 2;
  }

  try {
    for (const cli::Command& c : commands) {
      if (c.app->parsed()) return c.run(out, err);
    }
  } catch (const std::exception& e) {
    err << "error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace lclm
