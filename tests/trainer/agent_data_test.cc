// The trainer's fact and agent tasks: agent rounds are the agent's own
// prompt (build_round_prompt in ChatML, chunks as memory regions) with the
// reply a good reader gives; facts are answered in the question's terms; the
// eight-share mix draws them.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "compression/memory_regions.h"
#include "core/test_models.h"
#include "runtime/chat_template.h"
#include "trainer/data.h"

namespace lclm::train {
namespace {

namespace fs = std::filesystem;
using lclm::testing::error_of;

fs::path shipped_model() {
  return fs::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
}

class AgentData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tokens_ = new ExampleTokenizer(shipped_model()); }
  static void TearDownTestSuite() { delete tokens_; }
  static DataGenerator generator(std::uint64_t seed, std::size_t seq_len,
                                 std::vector<std::int64_t> ratios) {
    DataGenerator data(Corpus::from_paths(default_corpus_paths()), seed, seq_len, 4,
                       std::move(ratios));
    data.set_token_counter([](std::string_view t) { return tokens_->decoder().encode(t).size(); });
    return data;
  }
  static ExampleTokenizer* tokens_;
};
ExampleTokenizer* AgentData::tokens_ = nullptr;

// The pieces back as one prompt, regions in their markers.
std::string joined(const std::vector<TextPiece>& pieces, std::size_t count) {
  std::string s;
  for (std::size_t i = 0; i < count; ++i) {
    const TextPiece& p = pieces[i];
    s += p.kind == TextPiece::Kind::Memory
             ? std::string(kMemoryStart) + p.text + std::string(kMemoryEnd)
             : p.text;
  }
  return s;
}

TEST_F(AgentData, RoundsAreTheAgentsPromptWithTheRepliesOfAGoodReader) {
  const DataGenerator data = generator(5, 2048, {4, 8, 16});
  std::set<std::string> kinds;
  std::size_t two_facts = 0;
  for (std::uint64_t i = 0; i < 60; ++i) {
    std::mt19937_64 rng = data.example_rng(i);
    DataGenerator::AgentRoundInfo info;
    const std::vector<TextPiece> pieces = data.agent_round(rng, data.example_ratio(i), &info);
    SCOPED_TRACE("example " + std::to_string(i) + ": " + info.reply);
    ASSERT_GE(info.chunks.size(), 2u);
    ASSERT_LE(info.chunks.size(), 18u);
    // The prompt is the one run_agent builds for this state.
    const auto rule = static_cast<RoundRule>(info.rule);
    EXPECT_EQ(joined(pieces, pieces.size() - 1),
              format_chatml({{"user", build_round_prompt(info.chunks, info.expanded, info.question,
                                                         rule, info.rounds_left)}},
                            true));
    ASSERT_EQ(pieces.back().kind, TextPiece::Kind::Target);
    EXPECT_EQ(pieces.back().text, info.reply + "<|im_end|>");
    std::size_t regions = 0;
    for (const TextPiece& p : pieces) regions += p.kind == TextPiece::Kind::Memory;
    EXPECT_EQ(regions, info.chunks.size());

    // Each asked fact's sentence is in its chunk: the answer's values are there.
    for (std::size_t c : info.answer_chunks) ASSERT_LT(c, info.chunks.size());
    two_facts += info.answer_chunks.size() == 2;
    const ParsedReply reply = parse_reply(info.reply, info.chunks.size());
    std::vector<std::size_t> missing;
    for (std::size_t c : info.answer_chunks) {
      if (!std::binary_search(info.expanded.begin(), info.expanded.end(), c)) missing.push_back(c);
    }
    if (reply.kind == ParsedReply::Kind::Answer) {
      kinds.insert("answer");
      EXPECT_TRUE(missing.empty()) << "answers only with the answer's chunks in view";
      EXPECT_EQ(reply.answer, info.answer);
      EXPECT_NE(rule, RoundRule::MustExpand);
    } else {
      ASSERT_EQ(reply.kind, ParsedReply::Kind::Expand);
      EXPECT_EQ(reply.chunks, missing) << "expands exactly the answer's chunks not yet read";
      kinds.insert(info.expanded.empty() ? "first" : "recover");
      EXPECT_EQ(rule, info.expanded.empty() ? RoundRule::MustExpand : RoundRule::ExpandOrAnswer);
    }
    // The answer's sentences "The S is V." -> each V in one of the answer's chunks.
    std::string answer = info.answer;
    for (std::size_t k = 0; k < info.answer_chunks.size(); ++k) {
      const std::size_t is = answer.find(" is ");
      const std::size_t end = answer.find('.', is);
      const std::string value = answer.substr(is + 4, end - is - 4);
      EXPECT_TRUE(std::any_of(
          info.answer_chunks.begin(), info.answer_chunks.end(),
          [&](std::size_t c) { return info.chunks[c].find(value) != std::string::npos; }))
          << value;
      answer = answer.substr(std::min(answer.size(), end + 2));
    }
    // It fits the sequence whole, loss on the reply only.
    const Example ex = tokens_->tokenize(pieces, data.example_ratio(i));
    EXPECT_LE(ex.ids.size(), 2048u);
    std::size_t loss = 0;
    for (std::uint8_t l : ex.loss) loss += l;
    EXPECT_EQ(loss, tokens_->decoder().encode(pieces.back().text).size());
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"answer", "first", "recover"}));
  EXPECT_GT(two_facts, 0u);
}

TEST_F(AgentData, FactsAreAnsweredInTheQuestionsTerms) {
  DataGenerator data = generator(3, 512, {4});
  data.set_needles(2, 4);
  data.set_questions(2);
  std::set<std::string> openings;
  for (std::uint64_t i = 0; i < 40; ++i) {
    std::mt19937_64 rng = data.example_rng(i);
    const std::vector<TextPiece> pieces = data.facts(rng, 4, i % 2 == 0);
    ASSERT_GE(pieces.size(), 4u);
    EXPECT_EQ(pieces[1].kind, i % 2 == 0 ? TextPiece::Kind::Memory : TextPiece::Kind::Context);
    for (std::size_t q = 2; q + 1 < pieces.size(); q += 2) {
      const std::string answer =
          pieces[q + 1].text.substr(0, pieces[q + 1].text.find("<|im_end|>"));
      ASSERT_EQ(answer.rfind("The ", 0), 0u) << answer;
      const std::size_t is = answer.rfind(" is ");
      const std::string subject = answer.substr(4, is - 4);
      const std::string value = answer.substr(is + 4, answer.size() - is - 5);
      EXPECT_NE(pieces[q].text.find(subject), std::string::npos)
          << "the question names " << subject;
      EXPECT_NE(pieces[1].text.find(value), std::string::npos) << "the text holds " << value;
      openings.insert(pieces[q].text.substr(0, 12));
    }
  }
  EXPECT_GT(openings.size(), 3u) << "several question phrasings";
}

TEST(TaskMixes, EightSharesAddFactsAndAgentFiveStayAsTheyWere) {
  const TaskMix five = parse_task_mix("0.1,0.2,0.3,0.4,0.5");
  EXPECT_EQ(five.plain_reconstruction, 0.5);
  EXPECT_EQ(five.agent, 0.0);
  const TaskMix eight = parse_task_mix("0,0,0,0,0,0.2,0.3,0.5");
  EXPECT_EQ(eight.facts, 0.2);
  EXPECT_EQ(eight.plain_facts, 0.3);
  EXPECT_EQ(eight.agent, 0.5);
  EXPECT_NE(error_of([] { parse_task_mix("1,1,1,1,1,1"); }).find("eight"), std::string::npos);
}

TEST_F(AgentData, TheMixDrawsAgentRoundsAndFacts) {
  const DataGenerator data = generator(8, 2048, {8, 16});
  const TaskMix agent_only = parse_task_mix("0,0,0,0,0,0,0,1");
  const std::vector<TextPiece> a = data.example(0, agent_only);
  EXPECT_NE(joined(a, a.size()).find("[Document: indexed chunks, compressed]"), std::string::npos);
  const TaskMix facts_only = parse_task_mix("0,0,0,0,0,0,1,0");
  const std::vector<TextPiece> f = data.example(0, facts_only);
  EXPECT_EQ(f[1].kind, TextPiece::Kind::Context);
  DataGenerator no_counter(Corpus::from_paths(default_corpus_paths()), 1, 2048);
  EXPECT_NE(error_of([&] { no_counter.example(0, agent_only); }).find("token count"),
            std::string::npos);
}

}  // namespace
}  // namespace lclm::train
