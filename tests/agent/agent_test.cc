// The skim-and-expand agent: chunking, reply parsing, and the round logic
// with scripted model replies; then a real tiny LCLM behind it.
#include "agent/agent.h"

#include <gtest/gtest.h>

#include <deque>
#include <fstream>
#include <numeric>

#include "agent/chunker.h"
#include "core/test_models.h"
#include "fixtures/random_lclm.h"

namespace lclm {
namespace {

using Kind = ParsedReply::Kind;

std::size_t count_words(std::string_view text) {
  std::size_t n = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = c == ' ' || c == '\n' || c == '\t';
    n += !space && !in_word;
    in_word = !space;
  }
  return n;
}

// Replies from a script, one per round; records the prompts it saw.
class ScriptedModel : public AgentModel {
 public:
  explicit ScriptedModel(std::deque<std::string> replies) : replies_(std::move(replies)) {}
  ModelReply reply(const std::string& prompt) override {
    prompts.push_back(prompt);
    EXPECT_FALSE(replies_.empty()) << "the agent asked for more rounds than scripted";
    ModelReply r;
    if (!replies_.empty()) {
      r.text = replies_.front();
      replies_.pop_front();
    }
    return r;
  }
  std::size_t count_tokens(std::string_view text) const override { return count_words(text); }
  std::vector<std::string> prompts;

 private:
  std::deque<std::string> replies_;
};

// Six sentences of 5 words each; with 10-word chunks, three chunks of two.
const std::string kDoc =
    "Alpha one two three four. Beta one two three four. Gamma one two three four. "
    "Delta one two three four. Epsilon one two three four. Zeta one two three four.";
AgentOptions ten_word_chunks() {
  AgentOptions o;
  o.chunk_tokens = 10;
  return o;
}

TEST(Chunker, SentencesConcatenateBackToTheText) {
  const std::string text = "One. Two!  Three?\"  Four (ends.) Five\n\nSix\nstill six. v1.2 stays";
  const auto pieces = split_sentences(text);
  std::string joined;
  for (auto p : pieces) joined += p;
  EXPECT_EQ(joined, text);
  const std::vector<std::string_view> expected = {"One. ",         "Two!  ",   "Three?\"  ",
                                                  "Four (ends.) ", "Five\n\n", "Six\nstill six. ",
                                                  "v1.2 stays"};
  EXPECT_EQ(pieces, expected);
}

TEST(Chunker, PacksWholeSentencesUpToTheBudget) {
  const auto chunks = chunk_document(kDoc, count_words, 10);
  const std::vector<std::string> expected = {
      "Alpha one two three four. Beta one two three four.",
      "Gamma one two three four. Delta one two three four.",
      "Epsilon one two three four. Zeta one two three four."};
  EXPECT_EQ(chunks, expected);
  // 11 words: two sentences no longer fit, so every sentence is its own chunk... of 5.
  EXPECT_EQ(chunk_document(kDoc, count_words, 9).size(), 6u);
  EXPECT_EQ(chunk_document(kDoc, count_words, 1000), std::vector<std::string>{kDoc});
  EXPECT_TRUE(chunk_document(" \n\n ", count_words, 10).empty());
  EXPECT_EQ(testing::error_of([] { chunk_document(kDoc, count_words, 0); }),
            "the chunk size must be at least one token");
}

TEST(Chunker, CutsAnOverlongSentenceBetweenWords) {
  const std::string text = "a b c d e f g h. Short one.";
  const auto chunks = chunk_document(text, count_words, 3);
  const std::vector<std::string> expected = {"a b c", "d e f", "g h.", "Short one."};
  EXPECT_EQ(chunks, expected);
}

TEST(ParseReply, FindsTheLastDirective) {
  auto p = parse_reply("EXPAND: 2, 3", 5);
  EXPECT_EQ(p.kind, Kind::Expand);
  EXPECT_EQ(p.chunks, (std::vector<std::size_t>{1, 2}));

  p = parse_reply("ANSWER: Paris<|im_end|>junk", 5);
  EXPECT_EQ(p.kind, Kind::Answer);
  EXPECT_EQ(p.answer, "Paris");

  p = parse_reply("Chunk 4 looks relevant.\nexpand :4, 4 ,9, 1\nthen more text 5", 5);
  EXPECT_EQ(p.kind, Kind::Expand);
  EXPECT_EQ(p.chunks, (std::vector<std::size_t>{0, 3}));  // 9 out of range; the next line ignored
  EXPECT_EQ(p.answer, "Chunk 4 looks relevant.");

  p = parse_reply("EXPAND: 1\nANSWER: it is 42 (chunks 1-2)", 5);
  EXPECT_EQ(p.kind, Kind::Answer);
  EXPECT_EQ(p.answer, "it is 42 (chunks 1-2)");

  p = parse_reply("ANSWER: maybe\nEXPAND: chunks 2-4 and 1", 5);
  EXPECT_EQ(p.kind, Kind::Expand);
  EXPECT_EQ(p.chunks, (std::vector<std::size_t>{0, 1, 2, 3}));

  p = parse_reply("**ANSWER:** the river **", 5);
  EXPECT_EQ(p.kind, Kind::Answer);
  EXPECT_EQ(p.answer, "the river");

  // The answer ends with its line; a model rambling on after it is cut.
  p = parse_reply("ANSWER: 4821937\nThe complete text of the licence follows", 5);
  EXPECT_EQ(p.kind, Kind::Answer);
  EXPECT_EQ(p.answer, "4821937");
  p = parse_reply("ANSWER:\n\n  Paris \nand more", 5);
  EXPECT_EQ(p.answer, "Paris");
  p = parse_reply("ANSWER:   \n", 5);
  EXPECT_EQ(p.kind, Kind::Answer);
  EXPECT_EQ(p.answer, "");
}

TEST(ParseReply, MalformedRepliesDoNotCrashOrInventChunks) {
  auto p = parse_reply("  I do not know.  ", 5);
  EXPECT_EQ(p.kind, Kind::None);
  EXPECT_EQ(p.answer, "I do not know.");
  p = parse_reply("EXPANDED: 3, REANSWER: 2", 5);  // no keyword at a word start
  EXPECT_EQ(p.kind, Kind::None);
  p = parse_reply("EXPAND: <comma-separated chunk numbers>", 5);
  EXPECT_EQ(p.kind, Kind::Expand);
  EXPECT_TRUE(p.chunks.empty());
  p = parse_reply("EXPAND: 99999999999999999999, 0, 3-1", 5);
  EXPECT_EQ(p.chunks, (std::vector<std::size_t>{2}));
  p = parse_reply("", 5);
  EXPECT_EQ(p.kind, Kind::None);
  EXPECT_EQ(p.answer, "");
}

// The agent stops generating once the directive's line has ended.
TEST(ReplyComplete, AtTheEndOfTheDirectivesLine) {
  EXPECT_FALSE(reply_complete(""));
  EXPECT_FALSE(reply_complete("EXPAND: 3"));  // more numbers may follow
  EXPECT_TRUE(reply_complete("EXPAND: 3, 4\n"));
  EXPECT_TRUE(reply_complete("EXPAND: 3\nand then some"));
  EXPECT_FALSE(reply_complete("ANSWER: The pass key is 12"));
  EXPECT_TRUE(reply_complete("ANSWER: The pass key is 1234.\n"));
  // The answer on the next line: complete once that line ends.
  EXPECT_FALSE(reply_complete("ANSWER:\n"));
  EXPECT_FALSE(reply_complete("ANSWER:\n\nThe pass key"));
  EXPECT_TRUE(reply_complete("ANSWER:\n\nThe pass key is 1234.\n"));
  // Thinking out loud first: not complete until a directive's line ends.
  EXPECT_FALSE(reply_complete("Let me look at chunk 2.\n"));
  EXPECT_TRUE(reply_complete("Let me look at chunk 2.\nEXPAND: 2\n"));
  EXPECT_FALSE(reply_complete("\n\n"));
}

TEST(AgentRounds, ExpandThenAnswer) {
  ScriptedModel model({"EXPAND: 2", "ANSWER: Gamma"});
  const AgentResult r = run_agent(model, kDoc, "Which letter comes third?", ten_word_chunks());
  ASSERT_EQ(r.chunks.size(), 3u);
  EXPECT_EQ(r.answer, "Gamma");
  EXPECT_EQ(r.expanded, (std::vector<std::size_t>{1}));
  ASSERT_EQ(r.rounds.size(), 2u);
  EXPECT_EQ(r.rounds[0].rule, RoundRule::MustExpand);
  EXPECT_EQ(r.rounds[0].action, "expand");
  EXPECT_EQ(r.rounds[1].rule, RoundRule::ExpandOrAnswer);
  EXPECT_EQ(r.rounds[1].action, "answer");
  EXPECT_EQ(r.rounds[1].reply, "ANSWER: Gamma");

  // Every round shows every chunk compressed, in a ChatML user turn.
  for (const std::string& prompt : model.prompts) {
    EXPECT_EQ(prompt.rfind("<|im_start|>user\n", 0), 0u);
    EXPECT_TRUE(prompt.ends_with("<|im_end|>\n<|im_start|>assistant\n"));
    for (std::size_t i = 0; i < 3; ++i) {
      EXPECT_NE(prompt.find("Chunk " + std::to_string(i + 1) + ": <|memory_start|>" + r.chunks[i] +
                            "<|memory_end|>"),
                std::string::npos);
    }
    EXPECT_NE(prompt.find("Question: Which letter comes third?"), std::string::npos);
  }
  // Round 1 offers only EXPAND; round 2 shows chunk 2 in plain text and offers both.
  EXPECT_NE(model.prompts[0].find("EXPAND: <comma-separated chunk numbers><|im_end|>"),
            std::string::npos);
  EXPECT_EQ(model.prompts[0].find("ANSWER: <"), std::string::npos);
  EXPECT_EQ(model.prompts[0].find("[Expanded chunks"), std::string::npos);
  EXPECT_NE(model.prompts[1].find("[Expanded chunks, plain text]\nChunk 2:\n" + r.chunks[1] + "\n"),
            std::string::npos);
  EXPECT_NE(model.prompts[1].find("ANSWER: <your final answer>"), std::string::npos);
  EXPECT_NE(model.prompts[1].find("You have 3 more round(s)"), std::string::npos);
}

TEST(AgentRounds, AnAnswerInTheFirstRoundBecomesAnExpansion) {
  ScriptedModel mentions({"ANSWER: chunk 3 has it, not 7", "ANSWER: Epsilon"});
  AgentResult r = run_agent(mentions, kDoc, "q?", ten_word_chunks());
  EXPECT_EQ(r.rounds[0].action, "forced_expand");
  EXPECT_EQ(r.rounds[0].newly_expanded, (std::vector<std::size_t>{2}));
  EXPECT_EQ(r.answer, "Epsilon");

  ScriptedModel silent({"The answer is Alpha.", "ANSWER: Alpha"});
  r = run_agent(silent, kDoc, "q?", ten_word_chunks());
  EXPECT_EQ(r.rounds[0].action, "forced_expand");
  EXPECT_EQ(r.rounds[0].newly_expanded, (std::vector<std::size_t>{0}));
  EXPECT_EQ(r.rounds.size(), 2u);
}

TEST(AgentRounds, TheLastRoundMustAnswer) {
  AgentOptions o = ten_word_chunks();
  o.chunk_tokens = 5;  // six chunks, one sentence each
  ScriptedModel model({"EXPAND: 1", "EXPAND: 2", "EXPAND: 3", "EXPAND: 4", "EXPAND: 5"});
  const AgentResult r = run_agent(model, kDoc, "q?", o);
  ASSERT_EQ(r.chunks.size(), 6u);
  ASSERT_EQ(r.rounds.size(), 5u);
  EXPECT_EQ(r.rounds[4].rule, RoundRule::MustAnswer);
  EXPECT_EQ(r.rounds[4].action, "forced_answer");
  EXPECT_EQ(r.answer, "");  // nothing but a directive: no answer text
  EXPECT_EQ(r.expanded, (std::vector<std::size_t>{0, 1, 2, 3}));
  EXPECT_NE(model.prompts[4].find("No expansion rounds are left"), std::string::npos);
  EXPECT_EQ(model.prompts[4].find("EXPAND: <"), std::string::npos);
}

TEST(AgentRounds, NothingNewToExpandOrEverythingExpandedMeansAnswerNext) {
  ScriptedModel repeat({"EXPAND: 1", "EXPAND: 1", "so it is Beta"});
  AgentResult r = run_agent(repeat, kDoc, "q?", ten_word_chunks());
  ASSERT_EQ(r.rounds.size(), 3u);
  EXPECT_EQ(r.rounds[1].action, "no_new_chunks");
  EXPECT_EQ(r.rounds[2].rule, RoundRule::MustAnswer);
  EXPECT_EQ(r.rounds[2].action, "forced_answer");
  EXPECT_EQ(r.answer, "so it is Beta");

  ScriptedModel all({"EXPAND: 1-3", "ANSWER: Zeta"});
  r = run_agent(all, kDoc, "q?", ten_word_chunks());
  EXPECT_EQ(r.rounds[1].rule, RoundRule::MustAnswer);
  EXPECT_EQ(r.rounds[1].action, "answer");
  EXPECT_EQ(r.answer, "Zeta");
}

TEST(AgentRounds, TranscriptRecordsEveryRound) {
  ScriptedModel model({"EXPAND: 2,3", "ANSWER: Delta"});
  const AgentResult r = run_agent(model, kDoc, "q?", ten_word_chunks());
  const nlohmann::json t = agent_transcript_json(r);
  EXPECT_EQ(t["answer"], "Delta");
  EXPECT_EQ(t["expanded"], nlohmann::json::array({2, 3}));
  ASSERT_EQ(t["chunks"].size(), 3u);
  EXPECT_EQ(t["chunks"][1]["text"], r.chunks[1]);
  ASSERT_EQ(t["rounds"].size(), 2u);
  EXPECT_EQ(t["rounds"][0]["rule"], "must_expand");
  EXPECT_EQ(t["rounds"][0]["expanded"], nlohmann::json::array({2, 3}));
  EXPECT_EQ(t["rounds"][0]["reply"], "EXPAND: 2,3");
  EXPECT_EQ(t["rounds"][1]["prompt"], model.prompts[1]);
}

TEST(AgentRounds, RejectsBadInput) {
  ScriptedModel model({});
  AgentOptions one = ten_word_chunks();
  one.max_rounds = 1;
  EXPECT_NE(testing::error_of([&] { run_agent(model, kDoc, "q?", one); }).find("--max-rounds"),
            std::string::npos);
  EXPECT_EQ(testing::error_of([&] { run_agent(model, kDoc, "  ", ten_word_chunks()); }),
            "the question is empty");
  EXPECT_EQ(testing::error_of([&] { run_agent(model, "\n\n", "q?", ten_word_chunks()); }),
            "the document is empty");
  EXPECT_NE(testing::error_of([&] {
              run_agent(model, "a <|memory_end|> b", "q?", ten_word_chunks());
            }).find("the document contains the memory marker <|memory_end|>"),
            std::string::npos);
  EXPECT_TRUE(model.prompts.empty());
}

// A real (random) LCLM behind the agent: every chunk is compressed once and
// found in the latent cache in every later round, and a later round prefills
// only what follows the compressed chunks it shares with the round before.
TEST(AgentLclm, ChunksAreCompressedOnceAndTheirPositionsReusedAcrossRounds) {
  const auto dir = testing::scratch_dir("agent_lclm");
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 3;
  write_random_lclm(dir, spec);
  auto engine = Engine::load(dir);
  const LclmModel* lclm = engine->lclm();
  GenerationOptions g;
  g.n_predict = 8;
  g.sampling.temperature = 0;
  LclmAgentModel model(*engine, g);
  std::string doc;
  for (int i = 0; i < 12; ++i) {
    doc += "Fact " + std::to_string(i) + ": the lighthouse keeper counted " +
           std::to_string(i * 7) + " ships that night. ";
  }
  AgentOptions o;
  o.chunk_tokens = 40;
  o.max_rounds = 3;
  const AgentResult r = run_agent(model, doc, "How many ships on night 5?", o);
  ASSERT_GT(r.chunks.size(), 2u);
  ASSERT_GE(r.rounds.size(), 2u);
  ASSERT_LE(r.rounds.size(), 3u);
  for (const std::string& c : r.chunks) EXPECT_LE(model.count_tokens(c), 40u + 2);
  const std::size_t n = r.chunks.size();
  EXPECT_EQ(r.rounds[0].stats.prompt.regions, n);
  EXPECT_EQ(r.rounds[0].stats.prompt.cache_hits, 0u);
  EXPECT_EQ(r.rounds[0].stats.generation.reused_positions, 0u);
  for (std::size_t k = 1; k < r.rounds.size(); ++k) {
    EXPECT_EQ(r.rounds[k].stats.prompt.cache_hits, n);
    // The chat header and every compressed chunk come before the first
    // difference: at least one position per latent is kept.
    const GenerationStats& gen = r.rounds[k].stats.generation;
    EXPECT_GT(gen.reused_positions, r.rounds[k].stats.prompt.latents);
    EXPECT_LT(gen.reused_positions, gen.prompt_tokens);
    // Expanded chunks add plain tokens: the prompt grows.
    EXPECT_GT(r.rounds[k].stats.prompt.plain_tokens, r.rounds[0].stats.prompt.plain_tokens);
  }
  EXPECT_LE(r.rounds[0].stats.generation.generated_tokens, 8u);
  EXPECT_EQ(r.rounds[0].reply,
            lclm->decoder_tokenizer().decode(r.rounds[0].stats.generation.tokens));
}

// Each round's prompt is the model's own chat template applied to the round's
// user turn: Qwen3's template gives the ChatML the agent was trained on, and
// a --chat-template file is what the rounds get.
TEST(AgentLclm, RoundsUseTheModelsChatTemplate) {
  const auto dir = testing::scratch_dir("agent_template");
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 4;
  write_random_lclm(dir, spec);
  GenerationOptions g;
  g.n_predict = 4;
  g.sampling.temperature = 0;
  auto qwen = Engine::load(dir);
  ASSERT_FALSE(qwen->chat_template().is_chatml()) << "the tokenizer's own template is expected";
  const std::string user = "Chunk 1: <|memory_start|>text<|memory_end|>\nQuestion: what?";
  EXPECT_EQ(LclmAgentModel(*qwen, g).chat_prompt(user), format_chatml({{"user", user}}, true));

  std::ofstream(dir / "round.jinja")
      << "{% for m in messages %}<<{{ m.role }}: {{ m.content }}>>{% endfor %}"
         "{% if add_generation_prompt %}A:{% endif %}";
  EngineOptions o;
  o.chat_template = dir / "round.jinja";
  auto custom = Engine::load(dir, o);
  LclmAgentModel model(*custom, g);
  EXPECT_EQ(model.chat_prompt("q"), "<<user: q>>A:");
  AgentOptions a;
  a.chunk_tokens = 40;
  a.max_rounds = 2;
  const AgentResult r =
      run_agent(model, "The keeper counted seven ships. The sea was calm.", "How many ships?", a);
  ASSERT_FALSE(r.rounds.empty());
  EXPECT_EQ(r.rounds[0].prompt.rfind("<<user: ", 0), 0u) << r.rounds[0].prompt;
  EXPECT_TRUE(r.rounds[0].prompt.ends_with(">>A:")) << r.rounds[0].prompt;
}

}  // namespace
}  // namespace lclm
