#include "agent/agent.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <span>
#include <utility>

#include "agent/chunker.h"
#include "compression/memory_regions.h"
#include "runtime/chat_template.h"
#include "util/error.h"

namespace lclm {
namespace {

// Chunks the first round expands when its reply names none: at most this many
// of the numbers it mentions (the reference's cap), else chunk 1.
constexpr std::size_t kMaxForcedChunks = 5;

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

std::string trim(std::string_view s, std::string_view extra = "") {
  const auto strip = [&](char c) { return is_space(c) || extra.find(c) != std::string_view::npos; };
  std::size_t b = 0, e = s.size();
  while (b < e && strip(s[b])) ++b;
  while (e > b && strip(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

// Where the text after the last "KEYWORD:" starts (the keyword not preceded
// by a letter; spaces and '*' allowed before the colon), or npos. lower is the
// reply in lower case.
std::size_t after_last_directive(const std::string& lower, std::string_view keyword,
                                 std::size_t* keyword_pos) {
  std::size_t from = lower.size();
  while (from > 0) {
    const std::size_t at = lower.rfind(keyword, from - 1);
    if (at == std::string::npos) break;
    from = at;
    if (at > 0 && std::isalpha(static_cast<unsigned char>(lower[at - 1]))) continue;
    std::size_t i = at + keyword.size();
    while (i < lower.size() && (lower[i] == ' ' || lower[i] == '\t' || lower[i] == '*')) ++i;
    if (i < lower.size() && lower[i] == ':') {
      *keyword_pos = at;
      return i + 1;
    }
  }
  return std::string::npos;
}

// The 1-based numbers in text ("3", "3, 5", "chunks 2-4"), as 0-based indices
// below n, sorted and unique. Ranges only when allowed.
std::vector<std::size_t> chunk_numbers(std::string_view text, std::size_t n, bool ranges) {
  std::vector<std::size_t> out;
  std::size_t i = 0;
  const auto read_number = [&](std::size_t& value) {
    value = 0;
    std::size_t digits = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (digits++ < 9) value = value * 10 + static_cast<std::size_t>(text[i] - '0');
      ++i;
    }
    return digits > 0;
  };
  while (i < text.size()) {
    std::size_t first = 0;
    if (!read_number(first)) {
      ++i;
      continue;
    }
    std::size_t last = first;
    if (ranges) {
      std::size_t j = i;
      while (j < text.size() && text[j] == ' ') ++j;
      if (j < text.size() && text[j] == '-') {
        i = j + 1;
        while (i < text.size() && text[i] == ' ') ++i;
        if (!read_number(last) || last < first) last = first;
      }
    }
    for (std::size_t k = std::max<std::size_t>(first, 1); k <= std::min(last, n); ++k) {
      out.push_back(k - 1);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void require_no_markers(std::string_view text, const char* what) {
  for (std::string_view marker : {kMemoryStart, kMemoryEnd, kMemoryPlaceholder}) {
    if (text.find(marker) != std::string_view::npos) {
      throw Error(std::string("the ") + what + " contains the memory marker " +
                  std::string(marker) + ", which the agent's prompt reserves for its chunks");
    }
  }
}

std::string rule_text(RoundRule rule, int rounds_left) {
  const std::string left =
      "You have " + std::to_string(rounds_left) + " more round(s) after this one.";
  switch (rule) {
    case RoundRule::MustExpand:
      return "The chunks above are compressed: good for skimming, unreliable for exact names, "
             "numbers and wording. This is the first round, so you must expand before you "
             "answer: pick every chunk that may hold what the question needs. " +
             left +
             "\n\nReply with one line:\n"
             "EXPAND: <comma-separated chunk numbers>";
    case RoundRule::ExpandOrAnswer:
      return "The chunks above are compressed; the expanded chunks are shown in full. If the "
             "answer needs text you have not read in full, expand more chunks rather than guess "
             "from the compressed view. " +
             left +
             "\n\nReply with exactly one line, either\n"
             "EXPAND: <comma-separated chunk numbers>\n"
             "or\n"
             "ANSWER: <your final answer>";
    case RoundRule::MustAnswer:
      return "The chunks above are compressed; the expanded chunks are shown in full. No "
             "expansion rounds are left.\n\nReply with one line:\n"
             "ANSWER: <your final answer>";
  }
  return {};
}

nlohmann::json one_based(const std::vector<std::size_t>& indices) {
  nlohmann::json a = nlohmann::json::array();
  for (std::size_t i : indices) a.push_back(i + 1);
  return a;
}

}  // namespace

std::string_view round_rule_name(RoundRule rule) {
  switch (rule) {
    case RoundRule::MustExpand:
      return "must_expand";
    case RoundRule::ExpandOrAnswer:
      return "expand_or_answer";
    case RoundRule::MustAnswer:
      return "must_answer";
  }
  return "?";
}

LclmAgentModel::LclmAgentModel(Engine& engine, GenerationOptions options,
                               std::optional<std::int64_t> ratio)
    : engine_(engine), options_(std::move(options)), ratio_(ratio), session_(engine.new_session()) {
  if (!engine_.lclm()) {
    throw Error(engine_.dir().string() +
                " is not an LCLM checkpoint (no model_config.json): the agent compresses the "
                "document's chunks");
  }
  engine_.ratio(ratio_);
  if (options_.stop_ids.empty()) options_.stop_ids = engine_.stop_ids();
}

std::string LclmAgentModel::chat_prompt(const std::string& user) const {
  return engine_.chat_template().render(messages_json({{"user", user}}), true);
}

ModelReply LclmAgentModel::reply(const std::string& prompt) {
  ModelReply r;
  const PreparedPrompt p = engine_.prepare(prompt, ratio_);
  r.prompt = p.stats;
  std::vector<std::int32_t> ids;
  r.generation = session_.generate(p, options_, [&](std::int32_t id) {
    ids.push_back(id);
    // A line ends with a newline token: only then can the reply be complete.
    const std::string piece = engine_.tokenizer().decode(std::span(&ids.back(), 1));
    return piece.find('\n') == std::string::npos ||
           !reply_complete(engine_.tokenizer().decode(ids));
  });
  r.text = engine_.tokenizer().decode(r.generation.tokens);
  return r;
}

std::size_t LclmAgentModel::count_tokens(std::string_view text) const {
  return engine_.tokenizer().encode(text).size();
}

ParsedReply parse_reply(std::string_view reply, std::size_t n_chunks) {
  const std::string text(reply.substr(0, reply.find("<|im_end|>")));
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::size_t expand_at = 0, answer_at = 0;
  const std::size_t expand = after_last_directive(lower, "expand", &expand_at);
  const std::size_t answer = after_last_directive(lower, "answer", &answer_at);

  ParsedReply p;
  if (expand == std::string::npos && answer == std::string::npos) {
    p.answer = trim(text);
    return p;
  }
  if (expand != std::string::npos && (answer == std::string::npos || expand_at > answer_at)) {
    p.kind = ParsedReply::Kind::Expand;
    const std::size_t eol = text.find('\n', expand);
    p.chunks = chunk_numbers(std::string_view(text).substr(expand, eol - std::min(eol, expand)),
                             n_chunks, true);
    p.answer = trim(std::string_view(text).substr(0, expand_at), "*");
    return p;
  }
  // The answer is one line: the rest of the directive's line, or the next
  // non-empty line when the directive ends its own; what follows is not
  // part of it (a model may ramble on).
  p.kind = ParsedReply::Kind::Answer;
  std::string_view rest = std::string_view(text).substr(answer);
  while (!rest.empty()) {
    const std::size_t eol = rest.find('\n');
    const std::string line = trim(rest.substr(0, eol), "*");
    if (!line.empty() || eol == std::string_view::npos) {
      p.answer = line;
      break;
    }
    rest.remove_prefix(eol + 1);
  }
  return p;
}

bool reply_complete(std::string_view reply_so_far) {
  const std::size_t end = reply_so_far.find('\n', reply_so_far.find_first_not_of(" \t\r\n"));
  if (end == std::string_view::npos) return false;
  // Complete when cutting at the last newline already parses to a directive
  // with its content, the same as the whole reply does.
  const std::string_view upto = reply_so_far.substr(0, reply_so_far.rfind('\n'));
  const ParsedReply p = parse_reply(upto, std::numeric_limits<std::size_t>::max());
  if (p.kind == ParsedReply::Kind::Expand) return true;
  return p.kind == ParsedReply::Kind::Answer && !p.answer.empty();
}

std::string build_round_prompt(const std::vector<std::string>& chunks,
                               const std::vector<std::size_t>& expanded, std::string_view question,
                               RoundRule rule, int rounds_left) {
  std::string s = "[Document: indexed chunks, compressed]\n";
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    s += "Chunk " + std::to_string(i + 1) + ": " + std::string(kMemoryStart) + chunks[i] +
         std::string(kMemoryEnd) + "\n";
  }
  if (!expanded.empty()) {
    s += "\n[Expanded chunks, plain text]\n";
    for (std::size_t i : expanded)
      s += "Chunk " + std::to_string(i + 1) + ":\n" + chunks[i] + "\n\n";
  } else {
    s += "\n";
  }
  s += "Question: " + trim(question) + "\n\n" + rule_text(rule, rounds_left);
  return s;
}

AgentResult run_agent(AgentModel& model, std::string_view document, std::string_view question,
                      const AgentOptions& options) {
  if (options.max_rounds < 2) {
    throw Error("--max-rounds must be at least 2 (the first round expands, the last answers)");
  }
  if (trim(question).empty()) throw Error("the question is empty");
  require_no_markers(document, "document");
  require_no_markers(question, "question");
  AgentResult result;
  result.chunks = chunk_document(
      document, [&](std::string_view t) { return model.count_tokens(t); }, options.chunk_tokens);
  if (result.chunks.empty()) throw Error("the document is empty");
  const std::size_t n = result.chunks.size();

  bool must_answer_next = false;
  for (int r = 1; r <= options.max_rounds; ++r) {
    AgentRound round;
    round.number = r;
    round.rule = r == 1                                        ? RoundRule::MustExpand
                 : r == options.max_rounds || must_answer_next ? RoundRule::MustAnswer
                                                               : RoundRule::ExpandOrAnswer;
    const std::string user = build_round_prompt(result.chunks, result.expanded, question,
                                                round.rule, options.max_rounds - r);
    round.prompt = model.chat_prompt(user);
    round.stats = model.reply(round.prompt);
    round.reply = std::exchange(round.stats.text, std::string());
    const ParsedReply p = parse_reply(round.reply, n);

    std::vector<std::size_t> fresh;
    if (p.kind == ParsedReply::Kind::Expand) {
      std::set_difference(p.chunks.begin(), p.chunks.end(), result.expanded.begin(),
                          result.expanded.end(), std::back_inserter(fresh));
    }
    bool done = false;
    switch (round.rule) {
      case RoundRule::MustExpand:
        if (fresh.empty()) {
          fresh = chunk_numbers(round.reply, n, false);
          if (fresh.size() > kMaxForcedChunks) fresh.resize(kMaxForcedChunks);
          if (fresh.empty()) fresh = {0};
          round.action = "forced_expand";
        } else {
          round.action = "expand";
        }
        break;
      case RoundRule::ExpandOrAnswer:
        if (p.kind != ParsedReply::Kind::Expand) {
          round.action = "answer";
          result.answer = p.answer;
          done = true;
        } else if (fresh.empty()) {
          round.action = "no_new_chunks";
          must_answer_next = true;
        } else {
          round.action = "expand";
        }
        break;
      case RoundRule::MustAnswer:
        round.action = p.kind == ParsedReply::Kind::Answer ? "answer" : "forced_answer";
        result.answer = p.answer;
        fresh.clear();
        done = true;
        break;
    }
    round.newly_expanded = fresh;
    std::vector<std::size_t> merged;
    std::set_union(result.expanded.begin(), result.expanded.end(), fresh.begin(), fresh.end(),
                   std::back_inserter(merged));
    result.expanded = std::move(merged);
    if (result.expanded.size() == n) must_answer_next = true;
    result.rounds.push_back(std::move(round));
    if (done) break;
  }
  return result;
}

nlohmann::json agent_transcript_json(const AgentResult& result) {
  nlohmann::json chunks = nlohmann::json::array();
  for (std::size_t i = 0; i < result.chunks.size(); ++i) {
    chunks.push_back({{"chunk", i + 1}, {"text", result.chunks[i]}});
  }
  nlohmann::json rounds = nlohmann::json::array();
  for (const AgentRound& r : result.rounds) {
    const PromptStats& ps = r.stats.prompt;
    const GenerationStats& g = r.stats.generation;
    rounds.push_back({{"round", r.number},
                      {"rule", std::string(round_rule_name(r.rule))},
                      {"action", r.action},
                      {"expanded", one_based(r.newly_expanded)},
                      {"reply", r.reply},
                      {"prompt", r.prompt},
                      {"prompt_positions", g.prompt_tokens},
                      {"reused_positions", g.reused_positions},
                      {"computed_positions", g.prompt_tokens - g.reused_positions},
                      {"latents", ps.latents},
                      {"compressed_tokens", ps.compressed_tokens},
                      {"cache_hits", ps.cache_hits},
                      {"compress_ms", ps.compress_seconds * 1e3},
                      {"ttft_ms", (ps.compress_seconds + g.ttft_seconds) * 1e3},
                      {"generated_tokens", g.generated_tokens},
                      {"stop", std::string(stop_reason_name(g.stop))}});
  }
  return {{"answer", result.answer},
          {"expanded", one_based(result.expanded)},
          {"chunks", chunks},
          {"rounds", rounds}};
}

}  // namespace lclm
