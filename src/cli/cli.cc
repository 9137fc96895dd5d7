#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <sstream>

#include "model/qwen3_model.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/process_stats.h"
#include "util/threads.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

constexpr double kMiB = 1024.0 * 1024.0;

// Where the prompt text comes from: -p TEXT or -f FILE, exactly one.
struct PromptSource {
  std::string text;
  std::string file;

  void add_options(CLI::App& app) {
    auto* p = app.add_option("-p,--prompt", text, "Prompt text");
    auto* f = app.add_option("-f,--file", file, "Read the prompt from this file");
    p->excludes(f);
  }
  std::string read() const {
    if (!file.empty()) {
      std::ifstream in(file, std::ios::binary);
      if (!in) throw Error("cannot open prompt file " + file);
      std::ostringstream ss;
      ss << in.rdbuf();
      return ss.str();
    }
    return text;
  }
  bool given() const { return !text.empty() || !file.empty(); }
};

// A tokenizer from a model directory, or from a tokenizer.json given directly.
Tokenizer load_tokenizer(const fs::path& path) {
  if (fs::is_directory(path)) return Tokenizer::from_dir(path);
  if (fs::exists(path)) return Tokenizer::from_file(path);
  throw Error("model directory not found: " + path.string());
}

struct GenerateArgs {
  std::string model;
  PromptSource prompt;
  GenerationOptions options;
  std::int64_t seed = -1;
  int threads = 0;
  bool chat = false;
  std::string system;
};

int run_generate(const GenerateArgs& a, std::ostream& out, std::ostream& err) {
  set_num_threads(a.threads);
  if (!a.prompt.given()) throw Error("generate needs a prompt: -p TEXT or -f FILE");
  std::string text = a.prompt.read();
  if (a.chat) {
    std::vector<ChatMessage> messages;
    if (!a.system.empty()) messages.push_back({"system", a.system});
    messages.push_back({"user", text});
    text = format_chatml(messages, true);
  }
  const auto load_start = std::chrono::steady_clock::now();
  const Qwen3Model model = Qwen3Model::load(a.model);
  const Tokenizer tokenizer = Tokenizer::from_dir(a.model);
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  GenerationOptions options = a.options;
  options.sampling.seed = a.seed >= 0 ? static_cast<std::uint64_t>(a.seed) : std::random_device{}();
  options.stop_ids = Generator::default_stop_ids(model, tokenizer);
  const std::vector<std::int32_t> ids = tokenizer.encode(text);

  Utf8Stream stream;
  const Generator generator(model);
  const GenerationStats stats = generator.generate(ids, options, [&](std::int32_t id) {
    out << stream.push(tokenizer.token_bytes(id)) << std::flush;
    return true;
  });
  out << stream.flush() << "\n";

  const double decode_tps =
      stats.generated_tokens > 1 ? (stats.generated_tokens - 1) / stats.decode_seconds : 0.0;
  err << std::fixed << std::setprecision(1) << "load " << load_seconds * 1e3 << " ms | prompt "
      << stats.prompt_tokens << " tokens | TTFT " << stats.ttft_seconds * 1e3 << " ms ("
      << stats.prompt_tokens / std::max(stats.ttft_seconds, 1e-9) << " tok/s) | generated "
      << stats.generated_tokens << " tokens, " << decode_tps << " tok/s | stop "
      << stop_reason_name(stats.stop) << " | seed " << options.sampling.seed << " | KV cache "
      << stats.kv_cache_bytes / kMiB << " MiB | peak RSS " << peak_resident_bytes() / kMiB
      << " MiB\n";
  return 0;
}

struct TokenizeArgs {
  std::string model;
  PromptSource prompt;
  bool ids_only = false;
  bool json = false;
};

int run_tokenize(const TokenizeArgs& a, std::ostream& out) {
  if (!a.prompt.given()) throw Error("tokenize needs text: -p TEXT or -f FILE");
  const Tokenizer tokenizer = load_tokenizer(a.model);
  const std::vector<std::int32_t> ids = tokenizer.encode(a.prompt.read());
  if (a.json) {
    out << nlohmann::json(ids).dump() << "\n";
  } else if (a.ids_only) {
    for (std::size_t i = 0; i < ids.size(); ++i) out << (i ? " " : "") << ids[i];
    out << "\n";
  } else {
    for (std::int32_t id : ids) {
      out << std::setw(7) << id << " " << nlohmann::json(tokenizer.token_bytes(id)).dump(
                                              -1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    }
    out << ids.size() << " tokens\n";
  }
  return 0;
}

void add_sampling_options(CLI::App& app, GenerateArgs& a) {
  SamplingParams& s = a.options.sampling;
  app.add_option("-n,--n-predict", a.options.n_predict, "Tokens to generate (-1: until a stop token)")
      ->capture_default_str();
  app.add_option("-c,--ctx-size", a.options.context, "Context size in tokens (0: the model's maximum)")
      ->capture_default_str();
  app.add_option("-b,--batch-size", a.options.prefill_chunk, "Prompt tokens per prefill pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--temp", s.temperature, "Temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k", s.top_k, "Keep the k most likely tokens (0: all)")->capture_default_str();
  app.add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  app.add_option("--min-p", s.min_p, "Drop tokens below min-p x the top probability (0: off)")
      ->capture_default_str();
  app.add_option("--repeat-penalty", s.repeat_penalty, "Penalty on recent tokens (1: off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", s.repeat_last_n, "How many recent tokens the penalty covers")
      ->capture_default_str();
  app.add_option("-s,--seed", a.seed, "Random seed (-1: random, printed at the end)")
      ->capture_default_str();
  app.add_option("-t,--threads", a.threads, "Threads (0: all cores)")->capture_default_str();
}

}  // namespace

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app{
      "lclm: inference for Latent Context Language Models (Qwen3 encoder + decoder) on CPU.\n"
      "Run `lclm COMMAND --help` for the options of a command."};
  app.name("lclm");
  app.require_subcommand(1);
  app.set_version_flag("--version", "lclm 0.1.0");

  GenerateArgs gen;
  auto* generate = app.add_subcommand("generate", "Generate text from a prompt");
  generate->add_option("-m,--model", gen.model, "Model directory (HF Qwen3 layout)")->required();
  gen.prompt.add_options(*generate);
  generate->add_flag("--chat", gen.chat, "Wrap the prompt in the ChatML template as a user turn");
  generate->add_option("--system", gen.system, "System message for --chat");
  add_sampling_options(*generate, gen);

  TokenizeArgs tok;
  auto* tokenize = app.add_subcommand("tokenize", "Print the token ids of a text");
  tokenize->add_option("-m,--model", tok.model, "Model directory or tokenizer.json")->required();
  tok.prompt.add_options(*tokenize);
  tokenize->add_flag("--ids", tok.ids_only, "Print only the ids, space-separated");
  tokenize->add_flag("--json", tok.json, "Print the ids as a JSON array");

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
    if (generate->parsed()) return run_generate(gen, out, err);
    if (tokenize->parsed()) return run_tokenize(tok, out);
  } catch (const std::exception& e) {
    err << "error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace lclm
