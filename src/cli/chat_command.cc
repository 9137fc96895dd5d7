// lclm chat: a conversation on standard input, one Session throughout, so a
// turn prefills only what it adds to the conversation (the last reply and
// the new message) instead of the whole of it.
#include <chrono>
#include <iostream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/memory_regions.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "util/error.h"

namespace lclm::cli {
namespace {

struct ChatArgs {
  std::string model;
  std::string compress_file;
  std::string system;
  LclmArgs lclm;
  ChatTemplateArg chat_template;
  GenerationOptions options;
  std::int64_t seed = -1;
  int threads = 0;
};

int run(const ChatArgs& a, std::istream& in, std::ostream& out, std::ostream& err) {
  const std::string document =
      a.compress_file.empty() ? "" : read_file(a.compress_file, "file to compress");
  const std::unique_ptr<Engine> engine =
      Engine::load(a.model, a.chat_template.apply(a.lclm.engine_options(a.threads)));
  const std::size_t context = a.options.context > 0 ? a.options.context : engine->max_context();
  const Tokenizer& tokenizer = engine->tokenizer();
  Session session = engine->new_session();
  GenerationOptions options = a.options;
  options.stop_ids = engine->stop_ids();
  const std::uint64_t seed = resolve_seed(a.seed);

  std::vector<ChatMessage> messages;
  const auto start_over = [&] {
    messages.clear();
    if (!a.system.empty()) messages.push_back({"system", a.system});
  };
  start_over();
  err << "lclm chat: one message per line; /reset starts over, /exit or end of input quits\n";
  std::string line;
  for (int turn = 0; std::getline(in, line);) {
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      start_over();
      session.reset();
      err << "(conversation reset)\n";
      continue;
    }
    if (line.empty()) continue;
    // The document (--compress-file) goes with the first message, as memory.
    const bool first = messages.empty() || messages.back().role == "system";
    std::string content = line;
    if (first && !document.empty()) {
      content = std::string(kMemoryStart) + document + std::string(kMemoryEnd) + "\n" + line;
    }
    messages.push_back({"user", content});
    PreparedPrompt prompt;
    try {
      prompt = engine->prepare(engine->chat_template().render(messages_json(messages), true),
                               std::nullopt, context - 1);
    } catch (const PromptTooLong& e) {
      messages.pop_back();
      err << "error: the conversation would be " << e.sizes() << ", more than the " << context
          << "-position context; /reset to start over\n";
      continue;
    }
    options.sampling.seed = seed + static_cast<std::uint64_t>(turn++);
    const GenerationStats stats = generate_to(out, session, prompt, options, tokenizer);
    messages.push_back({"assistant", valid_utf8(tokenizer.decode(stats.tokens))});
    err << "[" << stats.prompt_tokens << " positions, " << stats.reused_positions
        << " reused | TTFT "
        << static_cast<long>((stats.ttft_seconds + prompt.stats.compress_seconds) * 1e3) << " ms | "
        << stats.generated_tokens << " tokens, "
        << static_cast<long>(stats.decode_tokens_per_second()) << " tok/s | stop "
        << stop_reason_name(stats.stop) << "]\n";
  }
  return 0;
}

}  // namespace

Command add_chat_command(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  CLI::App* cmd = app.add_subcommand(
      "chat",
      "Chat on standard input, one message per line, replies on standard output: one KV cache "
      "throughout, so each turn prefills only what it adds (/reset, /exit)");
  cmd->add_option("-m,--model", args->model, "Qwen3 model directory or LCLM checkpoint")
      ->required();
  cmd->add_option("--system", args->system, "System message");
  cmd->add_option("--compress-file", args->compress_file,
                  "A document given with the first message as one memory region (LCLM "
                  "checkpoints: compressed to latents)");
  args->lclm.add_options(*cmd);
  args->chat_template.add_option(*cmd);
  add_generation_options(*cmd, args->options, args->seed, args->threads);
  return {cmd,
          [args](std::ostream& out, std::ostream& err) { return run(*args, std::cin, out, err); }};
}

}  // namespace lclm::cli
