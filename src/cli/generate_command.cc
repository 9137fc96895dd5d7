// lclm generate: a Qwen3 model directory, or an LCLM checkpoint whose prompt
// may hold <|memory_start|>...<|memory_end|> regions.
#include <chrono>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/memory_regions.h"
#include "kv/indexmem.h"
#include "kv/kv_policy.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "util/error.h"

namespace lclm::cli {
namespace {

struct GenerateArgs {
  std::string model;
  PromptSource prompt;
  std::string compress_file;
  LclmArgs lclm;
  ChatTemplateArg chat_template;
  GenerationOptions options;
  std::int64_t seed = -1;
  int threads = 0;
  bool chat = false;
  std::string system;
  std::string stats_json;
  std::string kv_policy = "full";
  std::string indexmem;
};

void add_kv_policy_options(CLI::App& app, GenerateArgs& a) {
  std::vector<std::string> policies;
  for (KVPolicyKind k : all_kv_policies()) policies.emplace_back(kv_policy_name(k));
  app.add_option("--kv-policy", a.kv_policy, "KV-cache policy (docs/evaluation.md)")
      ->check(CLI::IsMember(policies))
      ->capture_default_str();
  app.add_option("--kv-ratio", a.options.kv_policy.ratio,
                 "The KV policy keeps ceil(prompt tokens / ratio) entries per layer and kv head")
      ->check(CLI::Range(1.0, 1e6))
      ->capture_default_str();
  app.add_option("--indexmem", a.indexmem,
                 "IndexMem weights for --kv-policy indexmem (default: the indexmem/ directory "
                 "beside the decoder)");
}

// The prompt text: --compress-file becomes one memory region before the -p/-f text.
std::string build_prompt(const GenerateArgs& a) {
  std::string text = a.prompt.read();
  if (!a.compress_file.empty()) {
    const std::string document = read_file(a.compress_file, "file to compress");
    text = std::string(kMemoryStart) + document + std::string(kMemoryEnd) +
           (text.empty() ? "" : "\n" + text);
  }
  return text;
}

// --chat: the text as the user's message (after --system's), through the
// model's chat template.
std::string chat_prompt(const GenerateArgs& a, const Engine& engine, const std::string& text) {
  std::vector<ChatMessage> messages;
  if (!a.system.empty()) messages.push_back({"system", a.system});
  messages.push_back({"user", text});
  return engine.chat_template().render(messages_json(messages), true);
}

int run(const GenerateArgs& a, std::ostream& out, std::ostream& err) {
  if (!a.prompt.given() && a.compress_file.empty()) {
    throw Error("generate needs a prompt: -p TEXT, -f FILE or --compress-file FILE");
  }
  std::string text = build_prompt(a);

  const auto t0 = std::chrono::steady_clock::now();
  const std::unique_ptr<Engine> engine =
      Engine::load(a.model, a.chat_template.apply(a.lclm.engine_options(a.threads)));
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.chat) text = chat_prompt(a, *engine, text);
  // Too long for the context: refused before anything is compressed.
  const std::size_t context = a.options.context > 0 ? a.options.context : engine->max_context();
  const PreparedPrompt prompt = engine->prepare(text, std::nullopt, context - 1);
  const Tokenizer& tokenizer = engine->tokenizer();

  GenerationOptions options = a.options;
  options.kv_policy.kind = parse_kv_policy(a.kv_policy);
  if (options.kv_policy.kind == KVPolicyKind::IndexMem) {
    const std::filesystem::path dir =
        a.indexmem.empty() ? default_indexmem_dir(a.model) : std::filesystem::path(a.indexmem);
    options.kv_policy.indexmem = std::make_shared<const IndexMemWeights>(
        IndexMemWeights::load(dir, engine->decoder().config()));
  }
  options.sampling.seed = resolve_seed(a.seed);
  options.stop_ids = engine->stop_ids();
  Session session = engine->new_session();
  const GenerationStats stats = generate_to(out, session, prompt, options, tokenizer);

  print_load_time(err, load_seconds);
  print_prompt_stats(err, prompt.stats);
  print_generation_stats(err, stats, prompt.stats.compress_seconds, options.sampling.seed);
  if (!a.stats_json.empty()) {
    write_stats_json(a.stats_json, load_seconds, prompt.stats, stats, options.sampling.seed);
  }
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "Generate text. With an LCLM checkpoint, <|memory_start|>TEXT<|memory_end|> regions of "
      "the prompt are compressed to latents");
  cmd->add_option("-m,--model", args->model, "Qwen3 model directory or LCLM checkpoint")
      ->required();
  args->prompt.add_options(*cmd);
  cmd->add_option("--compress-file", args->compress_file,
                  "Wrap this file in one memory region placed before the prompt");
  args->lclm.add_options(*cmd);
  args->chat_template.add_option(*cmd);
  cmd->add_flag(
      "--chat", args->chat,
      "Wrap the prompt as a user turn in the model's chat template (see --chat-template)");
  cmd->add_option("--system", args->system, "System message for --chat");
  cmd->add_option("--stats-json", args->stats_json,
                  "Also write the run's statistics to this JSON file");
  add_generation_options(*cmd, args->options, args->seed, args->threads);
  add_kv_policy_options(*cmd, *args);
  return {cmd, [args](std::ostream& out, std::ostream& err) { return run(*args, out, err); }};
}

}  // namespace lclm::cli
