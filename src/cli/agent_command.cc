// lclm agent: answer a question about a document by skimming its chunks
// compressed and expanding the ones the model asks for.
#include <fstream>
#include <memory>
#include <ostream>

#include "agent/agent.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "util/error.h"

namespace lclm::cli {
namespace {

struct AgentArgs {
  std::string model, document, question, transcript;
  LclmArgs lclm;
  ChatTemplateArg chat_template;
  AgentOptions agent;
  GenerationOptions options;
  std::int64_t seed = -1;
  int threads = 0;
};

std::string join_one_based(const std::vector<std::size_t>& indices) {
  std::string s;
  for (std::size_t i : indices) s += (s.empty() ? "" : ",") + std::to_string(i + 1);
  return s.empty() ? "-" : s;
}

int run(const AgentArgs& a, std::ostream& out, std::ostream& err) {
  const std::unique_ptr<Engine> engine = Engine::load(a.model, a.chat_template.apply(a.lclm.engine_options(a.threads)));
  const std::string document = read_file(a.document, "document");
  GenerationOptions options = a.options;
  options.sampling.seed = resolve_seed(a.seed);
  LclmAgentModel agent_model(*engine, options);
  const AgentResult result = run_agent(agent_model, document, a.question, a.agent);

  err << result.chunks.size() << " chunks of up to " << a.agent.chunk_tokens << " tokens\n";
  for (const AgentRound& r : result.rounds) {
    const PromptStats& p = r.stats.prompt;
    err << "round " << r.number << " (" << round_rule_name(r.rule) << "): " << r.action;
    if (!r.newly_expanded.empty()) err << " " << join_one_based(r.newly_expanded);
    const GenerationStats& g = r.stats.generation;
    err << " | " << g.prompt_tokens << " positions (" << g.prompt_tokens - g.reused_positions
        << " computed, " << g.reused_positions << " reused), " << p.latents
        << " latents, cache hits " << p.cache_hits << "/" << p.regions << " | TTFT "
        << static_cast<long>((p.compress_seconds + g.ttft_seconds) * 1e3) << " ms\n";
  }
  err << "expanded " << join_one_based(result.expanded) << " | seed " << options.sampling.seed
      << "\n";
  out << result.answer << "\n";
  if (!a.transcript.empty()) {
    std::ofstream f(a.transcript);
    // A model may write any bytes: invalid UTF-8 becomes U+FFFD.
    f << agent_transcript_json(result).dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
      << "\n";
    if (!f) throw Error("cannot write --transcript " + a.transcript);
  }
  return 0;
}

}  // namespace

Command add_agent_command(CLI::App& app) {
  auto args = std::make_shared<AgentArgs>();
  // The reference agent decodes greedily with up to 256 tokens a round.
  args->options.sampling.temperature = 0;
  args->options.n_predict = 256;
  CLI::App* cmd = app.add_subcommand(
      "agent",
      "Answer a question about a document: the model skims every chunk compressed and expands "
      "the chunks it asks for (EXPAND: i,j), round by round, until it answers (ANSWER: ...)");
  cmd->add_option("-m,--model", args->model, "LCLM checkpoint directory")->required();
  cmd->add_option("-f,--file", args->document, "The document")->required();
  cmd->add_option("-q,--question", args->question, "The question")->required();
  cmd->add_option("--max-rounds", args->agent.max_rounds,
                  "Model calls at most; the first must expand, the last must answer")
      ->capture_default_str()
      ->check(CLI::Range(2, 100));
  cmd->add_option("--chunk-tokens", args->agent.chunk_tokens,
                  "Chunk size in tokens (cut at sentence ends)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--transcript", args->transcript,
                  "Write every round (prompt, reply, action, stats) to this JSON file");
  args->lclm.add_options(*cmd);
  args->chat_template.add_option(*cmd);
  add_generation_options(*cmd, args->options, args->seed, args->threads);
  return {cmd, [args](std::ostream& out, std::ostream& err) { return run(*args, out, err); }};
}

}  // namespace lclm::cli
