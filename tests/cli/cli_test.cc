#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/cli_runner.h"
#include "core/test_models.h"
#include "runtime/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace lclm {
namespace {

using testing::cli;
using testing::CliResult;
using testing::count_lines;

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::tiny_model_with_tokenizer("cli").string());
  }
  static void TearDownTestSuite() { delete model_; }
  static std::string* model_;
};
std::string* CliTest::model_ = nullptr;

TEST_F(CliTest, HelpListsCommandsAndFlags) {
  const auto top = cli({"--help"});
  EXPECT_EQ(top.code, 0);
  EXPECT_NE(top.out.find("generate"), std::string::npos);
  EXPECT_NE(top.out.find("tokenize"), std::string::npos);
  const auto gen = cli({"generate", "--help"});
  EXPECT_EQ(gen.code, 0);
  for (const char* flag : {"--temp", "--top-k", "--top-p", "--min-p", "--seed", "--threads",
                           "--n-predict", "--ctx-size", "--repeat-penalty", "--file"}) {
    EXPECT_NE(gen.out.find(flag), std::string::npos) << flag;
  }
}

// -j (llama.cpp's flag): the answer is JSON of the schema, or an error names
// what the schema asks that lclm cannot do.
TEST_F(CliTest, JsonSchemaConstrainsTheAnswer) {
  const std::string schema =
      R"({"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],)"
      R"("additionalProperties":false})";
  int parsed = 0;
  for (const char* seed : {"1", "2", "3", "4"}) {
    const auto r =
        cli({"generate", "-m", *model_, "-p", "JSON:", "-n", "24", "-s", seed, "-j", schema});
    ASSERT_EQ(r.code, 0) << r.err;
    if (r.err.find("| stop stop |") == std::string::npos) continue;  // cut off by -n
    const auto doc = nlohmann::json::parse(r.out);
    EXPECT_TRUE(doc.is_object() && doc.size() == 1 && doc["ok"].is_boolean()) << r.out;
    ++parsed;
  }
  EXPECT_GT(parsed, 0);
  const auto bad =
      cli({"generate", "-m", *model_, "-p", "x", "-j", R"({"type":"string","pattern":"a"})"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("#/pattern: the keyword 'pattern' is not supported"), std::string::npos)
      << bad.err;
  const auto not_json = cli({"generate", "-m", *model_, "-p", "x", "-j", "{oops"});
  EXPECT_NE(not_json.err.find("--json-schema: not JSON"), std::string::npos) << not_json.err;
}

TEST_F(CliTest, BadUsageExitsTwoWithOneLine) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {},
           {"generate", "-m", *model_, "-p", "x", "--no-such-flag"},
           {"frobnicate"},
           {"generate", "-p", "hi"},
           {"generate", "-m", *model_, "-p", "x", "-f", "y"},
           {"generate", "-m", *model_, "-p", "x", "-n", "many"},
           // Out of range: -n below -1, a negative context, a thread count no
           // machine has (-t 100000 once started 100000 threads and hung).
           {"generate", "-m", *model_, "-p", "x", "-n", "-2"},
           {"generate", "-m", *model_, "-p", "x", "-c", "-1"},
           {"generate", "-m", *model_, "-p", "x", "-t", "100000"},
           {"serve", "-m", *model_, "-t", "100000"}}) {
    const auto r = cli(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  }
}

// llama.cpp's flags get a one-line hint naming the flag; -sys once parsed
// as -s ys (a seed) and failed with a confusing error.
TEST_F(CliTest, LlamaCppFlagsGetAHint) {
  for (const auto& [flag, words] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"-sys", "Be brief."}, "--system TEXT"},
           {{"-cnv"}, "lclm chat"},
           {{"-ngl", "99"}, "CPU only"},
           {{"--n-gpu-layers=99"}, "CPU only"},
           {{"-fa"}, "flash-attention"},
           {{"-np", "4"}, "--parallel"},
           {{"-hf", "Qwen/Qwen3-0.6B"}, "downloads nothing"},
           {{"-ub", "512"}, "-b N"}}) {
    std::vector<std::string> args = {"generate", "-m", *model_, "-p", "x"};
    args.insert(args.end(), flag.begin(), flag.end());
    const auto r = cli(args);
    EXPECT_EQ(r.code, 2) << flag[0] << ": " << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    const std::string name = flag[0].substr(0, flag[0].find('='));
    EXPECT_NE(r.err.find(name + " is llama.cpp's flag"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
  }
}

TEST_F(CliTest, FailuresExitOneWithOneLineNamingTheCause) {
  const auto missing = cli({"generate", "-m", "/nonexistent/model", "-p", "hi"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_EQ(count_lines(missing.err), 1) << missing.err;
  EXPECT_NE(missing.err.find("/nonexistent/model"), std::string::npos) << missing.err;

  const auto no_file = cli({"generate", "-m", *model_, "-f", "/nonexistent/prompt.txt"});
  EXPECT_EQ(no_file.code, 1);
  EXPECT_NE(no_file.err.find("/nonexistent/prompt.txt"), std::string::npos) << no_file.err;

  const auto too_long =
      cli({"generate", "-m", *model_, "-p", "one two three four five", "-c", "3"});
  EXPECT_EQ(too_long.code, 1);
  EXPECT_NE(too_long.err.find("context of 3 tokens"), std::string::npos) << too_long.err;

  const auto bad_top_p = cli({"generate", "-m", *model_, "-p", "x", "--top-p", "0"});
  EXPECT_EQ(bad_top_p.code, 1);
  EXPECT_NE(bad_top_p.err.find("--top-p"), std::string::npos) << bad_top_p.err;

  // Inputs that are not text files: a directory once ran as an empty prompt,
  // /dev/zero read until memory ran out, a FIFO as the weights hung forever.
  const std::string dir = testing::scratch_dir("cli_inputs").string();
  const auto directory = cli({"generate", "-m", *model_, "-f", dir});
  EXPECT_EQ(directory.code, 1);
  EXPECT_NE(directory.err.find("is a directory"), std::string::npos) << directory.err;
  const auto zeros = cli({"generate", "-m", *model_, "-f", "/dev/zero"});
  EXPECT_EQ(zeros.code, 1);
  EXPECT_NE(zeros.err.find("larger than 256 MiB"), std::string::npos) << zeros.err;
  const std::string fifo_model = testing::scratch_dir("cli_fifo_model").string();
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(std::filesystem::path(*model_) / f,
                               std::filesystem::path(fifo_model) / f);
  }
  ASSERT_EQ(::mkfifo((fifo_model + "/model.safetensors").c_str(), 0600), 0);
  const auto fifo = cli({"generate", "-m", fifo_model, "-p", "x"});
  EXPECT_EQ(fifo.code, 1);
  EXPECT_NE(fifo.err.find("not a regular file"), std::string::npos) << fifo.err;

  const auto inf_temp = cli({"generate", "-m", *model_, "-p", "x", "--temp", "inf"});
  EXPECT_EQ(inf_temp.code, 1);
  EXPECT_NE(inf_temp.err.find("--temp"), std::string::npos) << inf_temp.err;
}

// -f - reads the prompt from standard input, as llama.cpp's users expect.
// A model whose weights hold NaN once ran to exit 0, printing token 0.
TEST(CliBrokenWeights, NaNWeightsAreAnErrorNotAnAnswer) {
  const auto dir = testing::scratch_dir("cli_nan");
  RandomQwen3Spec spec;
  spec.config = testing::tiny_config();
  spec.weight_std = std::numeric_limits<float>::quiet_NaN();
  write_random_qwen3(dir, spec);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(testing::qwen3_tokenizer_dir() / f, dir / f);
  }
  const auto r = cli({"generate", "-m", dir.string(), "-p", "Hello", "-n", "3"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("NaN"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST_F(CliTest, APromptFromStandardInput) {
  const auto from_text =
      cli({"generate", "-m", *model_, "-p", "Hello there", "-n", "4", "--temp", "0"});
  std::istringstream in("Hello there");
  std::streambuf* saved = std::cin.rdbuf(in.rdbuf());
  const auto from_stdin = cli({"generate", "-m", *model_, "-f", "-", "-n", "4", "--temp", "0"});
  std::cin.rdbuf(saved);
  ASSERT_EQ(from_stdin.code, 0) << from_stdin.err;
  EXPECT_EQ(from_stdin.out, from_text.out);
}

// llama.cpp's -l/--logit-bias form: +100 on "H" (39) makes greedy decoding
// print it every time; malformed values and out-of-range biases are usage
// errors naming the flag.
TEST_F(CliTest, LogitBiasAndPenaltyFlags) {
  const auto biased = cli(
      {"generate", "-m", *model_, "-p", "Hello there", "-n", "3", "--temp", "0", "-l", "39+100"});
  ASSERT_EQ(biased.code, 0) << biased.err;
  EXPECT_EQ(biased.out, "HHH\n");
  const auto banned = cli({"generate", "-m", *model_, "-p", "Hello there", "-n", "3", "--temp", "0",
                           "-l", "39+100", "--logit-bias", "39-100"});
  ASSERT_EQ(banned.code, 0) << banned.err;
  EXPECT_EQ(banned.out.find('H'), std::string::npos) << banned.out;
  for (const char* bad : {"39", "x+1", "39+", "39+1x", "-5+1", "39+101"}) {
    const auto r = cli({"generate", "-m", *model_, "-p", "x", "-l", bad});
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--logit-bias"), std::string::npos) << r.err;
  }
  const auto penalty = cli({"generate", "-m", *model_, "-p", "x", "--presence-penalty", "3"});
  EXPECT_NE(penalty.code, 0);
  EXPECT_NE(penalty.err.find("--presence-penalty must be in [-2, 2]"), std::string::npos)
      << penalty.err;
}

// lclm chat: each reply is what generate gives for the whole conversation
// so far in ChatML, the second turn reuses the first's positions, /reset
// starts over (the same first reply again, nothing reused).
TEST_F(CliTest, ChatKeepsTheConversationAndReusesItsCache) {
  const auto chat = [&](const std::string& input) {
    std::istringstream in(input);
    std::streambuf* saved = std::cin.rdbuf(in.rdbuf());
    const auto r = cli({"chat", "-m", *model_, "--system", "Be brief.", "-n", "5", "--temp", "0"});
    std::cin.rdbuf(saved);
    return r;
  };
  const auto r = chat("Hello there\n\nWhat next?\n/reset\nHello there\n/exit\nignored\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto generate = [&](const std::vector<ChatMessage>& messages) {
    const auto g = cli(
        {"generate", "-m", *model_, "-p", format_chatml(messages, true), "-n", "5", "--temp", "0"});
    EXPECT_EQ(g.code, 0) << g.err;
    return g.out;  // the reply and a newline, as chat prints it
  };
  const std::string first = generate({{"system", "Be brief."}, {"user", "Hello there"}});
  const std::string second = generate({{"system", "Be brief."},
                                       {"user", "Hello there"},
                                       {"assistant", valid_utf8(first.substr(0, first.size() - 1))},
                                       {"user", "What next?"}});
  EXPECT_EQ(r.out, first + second + first);
  // One stats line per turn: nothing reused, then the first turn's positions, then (after
  // /reset) nothing again.
  std::vector<std::string> stats;
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("[", 0) == 0) stats.push_back(line);
  }
  ASSERT_EQ(stats.size(), 3u) << r.err;
  EXPECT_NE(stats[0].find(" 0 reused"), std::string::npos) << stats[0];
  EXPECT_EQ(stats[1].find(" 0 reused"), std::string::npos) << stats[1];
  EXPECT_NE(stats[2].find(" 0 reused"), std::string::npos) << stats[2];
  EXPECT_NE(r.err.find("(conversation reset)"), std::string::npos);
}

TEST_F(CliTest, TokenizePrintsIdsOfTheRealTokenizer) {
  const auto r = cli({"tokenize", "-m", *model_, "-p", "Hello world<|im_end|>", "--ids"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "9707 1879 151645\n");
  const auto json = cli({"tokenize", "-m", *model_, "-p", "Hello", "--json"});
  EXPECT_EQ(json.out, "[9707]\n");
}

TEST_F(CliTest, GreedyGenerationIsDeterministicAndReportsStats) {
  const std::vector<std::string> args = {
      "generate", "-m", *model_, "-p", "The capital of France is", "-n", "8",
      "--temp",   "0",  "-t",    "2"};
  const auto a = cli(args), b = cli(args);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_FALSE(a.out.empty());
  for (const char* field : {"TTFT", "tok/s", "peak RSS", "KV cache", "prompt 5 tokens"}) {
    EXPECT_NE(a.err.find(field), std::string::npos) << field << " in " << a.err;
  }
}

TEST_F(CliTest, SeededSamplingIsReproducibleAndChatTemplateApplies) {
  const std::vector<std::string> args = {"generate", "-m", *model_,  "-p",  "Hi",     "--chat",
                                         "-n",       "6",  "--temp", "1.2", "--seed", "5"};
  const auto a = cli(args), b = cli(args);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  // "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" is 9 tokens.
  EXPECT_NE(a.err.find("prompt 9 tokens"), std::string::npos) << a.err;
}

}  // namespace
}  // namespace lclm
