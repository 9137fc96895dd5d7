// lclm generate: a Qwen3 model directory, or an LCLM checkpoint whose prompt
// may hold <|memory_start|>...<|memory_end|> regions.
#include <chrono>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/latents_file.h"
#include "compression/memory_regions.h"
#include "format/torch_file.h"
#include "kv/indexmem.h"
#include "kv/kv_policy.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/json_schema.h"
#include "util/error.h"

namespace lclm::cli {
namespace {

struct GenerateArgs {
  std::string model;
  PromptSource prompt;
  std::string compress_file;
  std::string prompt_embeds;
  std::string latents;
  std::string json_schema, json_schema_file;
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

// The prompt text: --compress-file becomes one memory region before the
// -p/-f text, and --latents a slot region there for the file's latents.
std::string build_prompt(const GenerateArgs& a) {
  std::optional<std::string> document;
  if (!a.compress_file.empty()) document = read_file(a.compress_file, "file to compress");
  // compose_prompt wraps a document in the region markers: for --latents
  // the slot's inside.
  if (!a.latents.empty()) document = std::string(kMemoryPlaceholder);
  return compose_prompt(a.prompt.read(), document);
}

// --latents: a file `lclm compress` wrote, checked against this checkpoint
// at the ratio it was made at.
Latents read_checked_latents(const std::string& path, Engine& engine) {
  LclmModel* model = engine.lclm();
  if (!model)
    throw Error("--latents needs an LCLM checkpoint; " + engine.dir().string() +
                " is a plain model");
  return lclm::read_checked_latents(path, *model, "--latents");
}

// --prompt-embeds: the decoder's input as `lclm compress --format
// prompt-embeds` (or torch.save) wrote it. Its positions carry a placeholder
// id (the memory token, else <|endoftext|>), which only the repetition
// penalties read.
PreparedPrompt read_prompt_embeds(const std::string& path, const Engine& engine,
                                  std::size_t max_positions) {
  const auto hidden = static_cast<std::int64_t>(engine.decoder().config().hidden_size);
  TorchTensor t = read_torch_tensor(path);
  if (t.shape.size() != 2 || t.shape[1] != hidden || t.shape[0] == 0) {
    std::string shape;
    for (const auto d : t.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    throw Error("--prompt-embeds " + path + ": a tensor [" + shape + "], not [positions, " +
                std::to_string(hidden) + "] for this decoder");
  }
  const auto n = static_cast<std::size_t>(t.shape[0]);
  if (n > max_positions) throw PromptTooLong(n, max_positions, false, 0, n);
  const auto endoftext = engine.tokenizer().token_id("<|endoftext|>");
  const std::int32_t placeholder =
      engine.lclm() ? engine.lclm()->memory_token_id() : endoftext.value_or(0);
  PreparedPrompt p;
  p.ids.assign(n, placeholder);
  p.embeddings = std::move(t.data);
  p.stats.plain_tokens = n;
  return p;
}

int run(const GenerateArgs& a, std::ostream& out, std::ostream& err) {
  if (!a.latents.empty() && !a.prompt.given()) throw Error("--latents needs a question: -p or -f");
  if (!a.prompt.given() && a.compress_file.empty() && a.prompt_embeds.empty()) {
    throw Error(
        "generate needs a prompt: -p TEXT, -f FILE, --compress-file FILE or --prompt-embeds FILE");
  }
  std::string text = a.prompt_embeds.empty() ? build_prompt(a) : std::string();

  const auto t0 = std::chrono::steady_clock::now();
  const std::unique_ptr<Engine> engine =
      Engine::load(a.model, a.chat_template.apply(a.lclm.engine_options(a.threads)));
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.chat) text = chat_turn(*engine, a.system, text);
  // Too long for the context: refused before anything is compressed.
  const std::size_t context = a.options.context > 0 ? a.options.context : engine->max_context();
  std::vector<Latents> supplied;
  if (!a.latents.empty()) supplied.push_back(read_checked_latents(a.latents, *engine));
  const PreparedPrompt prompt = a.prompt_embeds.empty()
                                    ? engine->prepare(text, std::nullopt, context - 1, supplied)
                                    : read_prompt_embeds(a.prompt_embeds, *engine, context - 1);
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
  if (!a.json_schema.empty() || !a.json_schema_file.empty()) {
    const std::string schema_text =
        a.json_schema_file.empty() ? a.json_schema : read_file(a.json_schema_file, "JSON schema");
    const std::string flag = a.json_schema_file.empty() ? "--json-schema" : "--json-schema-file";
    nlohmann::json schema;
    try {
      schema = nlohmann::json::parse(schema_text);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(flag + ": not JSON (" + e.what() + ")");
    }
    options.constraint = std::make_shared<JsonConstraint>(JsonGrammar::from_user_schema(schema),
                                                          engine->tokenizer(), options.stop_ids);
  }
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
  CLI::Option* compress_file =
      cmd->add_option("--compress-file", args->compress_file,
                      "Wrap this file in one memory region placed before the prompt");
  cmd->add_option("--latents", args->latents,
                  "Read these latents (written by lclm compress -o) as one memory region before "
                  "the prompt, instead of compressing a file")
      ->excludes(compress_file);
  args->lclm.add_options(*cmd);
  args->chat_template.add_option(*cmd);
  CLI::Option* chat = cmd->add_flag(
      "--chat", args->chat,
      "Wrap the prompt as a user turn in the model's chat template (see --chat-template)");
  CLI::Option* system = cmd->add_option("--system", args->system, "System message for --chat");
  cmd->add_option("--prompt-embeds", args->prompt_embeds,
                  "Read the decoder's input embeddings [positions, hidden] from this torch.save'd "
                  "tensor (lclm compress --format prompt-embeds) instead of a prompt")
      ->excludes(chat)
      ->excludes(system)
      ->excludes("--compress-file")
      ->excludes("--prompt")
      ->excludes("--file");
  cmd->add_option("--stats-json", args->stats_json,
                  "Also write the run's statistics to this JSON file");
  CLI::Option* schema =
      cmd->add_option("-j,--json-schema", args->json_schema,
                      "Constrain the answer to JSON matching this JSON Schema ('{}': any object; "
                      "the subset in docs/server.md)");
  cmd->add_option("--json-schema-file", args->json_schema_file,
                  "Read the JSON Schema for --json-schema from this file")
      ->excludes(schema);
  add_generation_options(*cmd, args->options, args->seed, args->threads);
  add_kv_policy_options(*cmd, *args);
  return {cmd, [args](std::ostream& out, std::ostream& err) { return run(*args, out, err); }};
}

}  // namespace lclm::cli
