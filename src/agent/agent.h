// The skim-and-expand agent: the document is cut into chunks, every round the
// model sees all of them compressed plus the plain text of the chunks it has
// expanded so far, and replies with one line, `EXPAND: i,j` or `ANSWER: ...`.
// The first round must expand; the last round (max_rounds) must answer.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "compression/lclm_model.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/generator.h"

namespace lclm {

// What one model call returned and took.
struct ModelReply {
  std::string text;
  PromptStats prompt;
  GenerationStats generation;
};

// The model behind the agent: a full prompt (a chat turn, with memory
// regions) in, a reply out. Tests script it; LclmAgentModel runs an LCLM
// checkpoint.
class AgentModel {
 public:
  virtual ~AgentModel() = default;
  virtual ModelReply reply(const std::string& prompt) = 0;
  virtual std::size_t count_tokens(std::string_view text) const = 0;
  // The prompt of one user turn and the assistant's opening: ChatML here,
  // the model's own chat template in LclmAgentModel.
  virtual std::string chat_prompt(const std::string& user) const {
    return format_chatml({{"user", user}}, true);
  }
};

// An LCLM checkpoint behind the agent. Its rounds run in one Session: every
// round's prompt starts with the same compressed chunks, so a round after the
// first prefills only what changed (the expanded chunks and the rule).
class LclmAgentModel : public AgentModel {
 public:
  // options.stop_ids are filled in from the engine when empty; ratio: the
  // chunks' compression (none: the engine's default).
  LclmAgentModel(Engine& engine, GenerationOptions options,
                 std::optional<std::int64_t> ratio = std::nullopt);
  ModelReply reply(const std::string& prompt) override;
  std::size_t count_tokens(std::string_view text) const override;
  // Through the engine's chat template (the checkpoint's, --chat-template,
  // or ChatML).
  std::string chat_prompt(const std::string& user) const override;

 private:
  Engine& engine_;
  GenerationOptions options_;
  std::optional<std::int64_t> ratio_;
  Session session_;
};

struct AgentOptions {
  std::size_t chunk_tokens = 450;
  int max_rounds = 5;  // model calls in all, at least 2
};

// The directive of one reply. Chunk numbers are shown 1-based and returned
// 0-based, in range, sorted and unique.
struct ParsedReply {
  enum class Kind { Expand, Answer, None };
  Kind kind = Kind::None;
  std::vector<std::size_t> chunks;
  // ANSWER: the answer. EXPAND: the text before the directive. None: the
  // whole reply, trimmed.
  std::string answer;
};

// Finds the last `EXPAND:` or `ANSWER:` directive (case-insensitive, anywhere
// in the reply: models often explain first). EXPAND takes the numbers on the
// rest of its line; ANSWER takes the rest of its line (or the next non-empty
// line), trimmed. Chat artifacts (<|im_end|> and what follows) are dropped
// first.
ParsedReply parse_reply(std::string_view reply, std::size_t n_chunks);

// Whether a reply so far is complete: it holds an `EXPAND:` or `ANSWER:`
// directive (as parse_reply finds them) and the line that carries it, or
// the answer's next non-empty line, has ended. The agent stops generating
// there, so a model rambling on after its directive costs nothing.
bool reply_complete(std::string_view reply_so_far);

// What the round asked of the model.
enum class RoundRule { MustExpand, ExpandOrAnswer, MustAnswer };

// The user turn of one round (before the chat template): every chunk
// compressed as "Chunk i: <|memory_start|>...<|memory_end|>" (1-based), the
// expanded chunks in plain text, the question, and the rule of the round.
std::string build_round_prompt(const std::vector<std::string>& chunks,
                               const std::vector<std::size_t>& expanded, std::string_view question,
                               RoundRule rule, int rounds_left);

struct AgentRound {
  int number = 0;  // 1-based
  RoundRule rule = RoundRule::MustExpand;
  std::string prompt;  // what the model saw, chat template included
  std::string reply;   // what it wrote
  // "expand", "answer", "forced_expand" (round 1 did not name a new chunk:
  // the numbers it mentioned, else chunk 1, are expanded), "no_new_chunks"
  // (the next round must answer), "forced_answer" (the last round's reply
  // without a directive, taken as the answer).
  std::string action;
  std::vector<std::size_t> newly_expanded;  // 0-based
  ModelReply stats;                         // text empty; the reply is above
};

struct AgentResult {
  std::string answer;
  std::vector<std::string> chunks;
  std::vector<std::size_t> expanded;  // 0-based, sorted
  std::vector<AgentRound> rounds;
};

// Throws lclm::Error for an empty document or question, a document or
// question holding a memory marker, or max_rounds < 2.
AgentResult run_agent(AgentModel& model, std::string_view document, std::string_view question,
                      const AgentOptions& options);

// The transcript: chunks, then per round the rule, prompt, reply, action,
// expanded chunks (1-based, as the model saw them) and stats.
nlohmann::json agent_transcript_json(const AgentResult& result);

std::string_view round_rule_name(RoundRule rule);

}  // namespace lclm
