// The LCLM commands of the CLI, driven in-process on a tiny checkpoint.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/cli_runner.h"
#include "cli/common.h"
#include "compression/latents_file.h"
#include "compression/lclm_model.h"
#include "core/redis_server.h"
#include "core/test_models.h"
#include "fixtures/random_lclm.h"
#include "format/torch_file.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::cli;
using testing::CliResult;
using testing::count_lines;

class LclmCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(testing::scratch_dir("lclm_cli"));
    RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
    spec.config.encoder_window_size = 32;
    spec.seed = 5;
    write_random_lclm(*dir_ / "ckpt", spec);
    // 13 sentences of real prose: a few hundred encoder tokens, several windows.
    std::string doc;
    for (int i = 0; i < 13; ++i) {
      doc += "Sentence " + std::to_string(i) + " of the document says that the river runs north. ";
    }
    testing::write_text(*dir_ / "doc.txt", doc);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string ckpt() { return (*dir_ / "ckpt").string(); }
  static std::string path(const char* name) { return (*dir_ / name).string(); }
  // `generate`: four greedy tokens answering a question about doc.txt,
  // compressed, and then `more` arguments.
  static std::vector<std::string> river_question(const std::vector<std::string>& more) {
    std::vector<std::string> args = {"generate",
                                     "-m",
                                     ckpt(),
                                     "--compress-file",
                                     path("doc.txt"),
                                     "-p",
                                     "Which way does the river run?",
                                     "-n",
                                     "4",
                                     "--temp",
                                     "0"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }
  static std::filesystem::path* dir_;
};
std::filesystem::path* LclmCliTest::dir_ = nullptr;

TEST_F(LclmCliTest, CompressWritesTheLatentsTheModelComputes) {
  const auto r = cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "-o", path("doc.lat")});
  ASSERT_EQ(r.code, 0) << r.err;
  const LatentsFile file = read_latents_file(path("doc.lat"));
  const auto model = LclmModel::load(ckpt());
  const std::string doc = cli::read_file(path("doc.txt"), "document");
  const Latents expected = model->compress(doc);
  EXPECT_EQ(file.latents.data, expected.data);
  EXPECT_EQ(file.latents.n_tokens, expected.n_tokens);
  EXPECT_EQ(file.latents.count(), (expected.n_tokens + 3) / 4);
  EXPECT_EQ(file.metadata.at("compression_ratio"), "4");
  EXPECT_EQ(file.metadata.at("checkpoint_fingerprint"), model->fingerprint());
  EXPECT_NE(r.err.find(std::to_string(expected.n_tokens) + " tokens -> " +
                       std::to_string(expected.count()) + " latents"),
            std::string::npos)
      << r.err;
}

TEST_F(LclmCliTest, RatioOverrideChangesTheLatentCount) {
  const auto r = cli(
      {"compress", "-m", ckpt(), "-f", path("doc.txt"), "-o", path("doc8.lat"), "--ratio", "8"});
  ASSERT_EQ(r.code, 0) << r.err;
  const LatentsFile file = read_latents_file(path("doc8.lat"));
  EXPECT_EQ(file.latents.count(), (file.latents.n_tokens + 7) / 8);
  EXPECT_EQ(file.metadata.at("compression_ratio"), "8");
}

TEST_F(LclmCliTest, GenerateWithCompressFileReportsCompressionAndUsesTheCache) {
  const std::vector<std::string> args = river_question({"--latent-cache", path("cache.sqlite")});
  const auto first = cli(args);
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_NE(first.err.find("in 1 region(s) compressed to"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("cache hits 0"), std::string::npos) << first.err;
  for (const char* field : {"TTFT", "peak RSS", "plain tokens +"}) {
    EXPECT_NE(first.err.find(field), std::string::npos) << field << " in " << first.err;
  }
  const auto second = cli(args);
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.err.find("cache hits 1"), std::string::npos) << second.err;
  EXPECT_EQ(first.out, second.out);
}

TEST_F(LclmCliTest, StatsJsonAgreesWithTheRun) {
  const auto r = cli({"generate", "-m", ckpt(), "--compress-file", path("doc.txt"), "-p", "Where?",
                      "-n", "5", "--temp", "0", "--stats-json", path("stats.json")});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(std::ifstream(path("stats.json")));
  const auto model = LclmModel::load(ckpt());
  const std::size_t tokens =
      model->encoder_tokenizer().encode(cli::read_file(path("doc.txt"), "document")).size();
  EXPECT_EQ(j["compressed_tokens"], tokens);
  EXPECT_EQ(j["latents"], (tokens + 3) / 4);
  EXPECT_EQ(j["regions"], 1);
  EXPECT_EQ(j["prompt_positions"].get<std::size_t>(),
            j["plain_tokens"].get<std::size_t>() + j["latents"].get<std::size_t>());
  EXPECT_EQ(j["generated_tokens"], 5);
  EXPECT_EQ(j["tokens"].size(), 5u);
  EXPECT_GT(j["ttft_ms"].get<double>(), j["compress_ms"].get<double>());
  EXPECT_GT(j["peak_rss_bytes"].get<std::size_t>(), 0u);
}

TEST_F(LclmCliTest, InlineRegionsMixWithPlainText) {
  const auto r = cli({"generate", "-m", ckpt(), "-n", "2", "--temp", "0", "-p",
                      "A: <|memory_start|>first document text<|memory_end|> B: "
                      "<|memory_start|><|memory_end|> C: <|memory_start|>second<|memory_end|>?"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("in 3 region(s)"), std::string::npos) << r.err;
}

TEST_F(LclmCliTest, InfoDescribesBothModelsAndTheMemoryTokens) {
  const auto r = cli({"info", "-m", ckpt()});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"compression_ratio 4", "encoder_window_size 32", "pooling mean",
                        "adapter: 64 -> 96", "<|memory|>=151671", "encoder: ", "hidden 64",
                        "decoder: ", "hidden 96, intermediate 192", "vocab 151672"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in\n" << r.out;
  }
}

// The export vLLM's prompt_embeds takes: the decoder's input for the whole
// prompt. Decoded by lclm's own decoder it must give what the normal path
// gives (exactly in f32; bf16 rounds the latents as a bf16 decoder would).
TEST_F(LclmCliTest, PromptEmbedsDecodeToTheTokensOfTheNormalPath) {
  const auto model = LclmModel::load(ckpt());
  const std::string question = "Which way does the river run?";
  const std::string doc = cli::read_file(path("doc.txt"), "document");
  const auto engine = Engine::load(ckpt());
  const PreparedPrompt want =
      model->prepare(cli::chat_turn(*engine, "Be brief.", cli::compose_prompt(question, doc)));
  const auto r = cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "--format", "prompt-embeds",
                      "--prompt", question, "--chat", "--system", "Be brief.", "--embeds-dtype",
                      "f32", "-o", path("embeds.pt")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find(std::to_string(want.ids.size()) + " positions x 96 F32"), std::string::npos)
      << r.err;
  const TorchTensor t = read_torch_tensor(path("embeds.pt"));
  EXPECT_EQ(t.shape, (std::vector<std::int64_t>{static_cast<std::int64_t>(want.ids.size()), 96}));
  EXPECT_EQ(t.data, want.embeddings);

  const std::vector<std::string> sampling = {"-n", "12", "--temp", "0"};
  std::vector<std::string> normal = {"generate",      "-m",       ckpt(),   "--compress-file",
                                     path("doc.txt"), "-p",       question, "--chat",
                                     "--system",      "Be brief."};
  std::vector<std::string> from_embeds = {"generate", "-m", ckpt(), "--prompt-embeds",
                                          path("embeds.pt")};
  normal.insert(normal.end(), sampling.begin(), sampling.end());
  from_embeds.insert(from_embeds.end(), sampling.begin(), sampling.end());
  const auto a = cli(normal);
  const auto b = cli(from_embeds);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_FALSE(a.out.empty());

  // The default dtype is the decoder's (bf16 here): each value rounded.
  const auto bf16 = cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "--format",
                         "prompt-embeds", "--prompt", question, "-o", path("embeds16.pt")});
  ASSERT_EQ(bf16.code, 0) << bf16.err;
  const TorchTensor h = read_torch_tensor(path("embeds16.pt"));
  EXPECT_EQ(h.dtype, DType::BF16);
  const PreparedPrompt plain = model->prepare(cli::compose_prompt(question, doc));
  ASSERT_EQ(h.data.size(), plain.embeddings.size());
  for (std::size_t i = 0; i < h.data.size(); ++i) {
    ASSERT_EQ(h.data[i], bf16_to_f32(f32_to_bf16(plain.embeddings[i]))) << i;
  }
  const auto run16 = cli(
      {"generate", "-m", ckpt(), "--prompt-embeds", path("embeds16.pt"), "-n", "3", "--temp", "0"});
  EXPECT_EQ(run16.code, 0) << run16.err;
}

// lclm compress -o's file read back: the same answer as compressing the file
// in the run, for any ratio it was made at; another checkpoint's is refused.
TEST_F(LclmCliTest, GenerateReadsLatentsFilesBack) {
  for (const char* ratio : {"4", "8"}) {
    SCOPED_TRACE(ratio);
    const std::string file = path("back.lat");
    ASSERT_EQ(
        cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "-o", file, "--ratio", ratio}).code,
        0);
    const std::vector<std::string> common = {"-p",     "Which way?", "--chat",  "-n", "8",
                                             "--temp", "0",          "--ratio", ratio};
    std::vector<std::string> normal = {"generate", "-m", ckpt(), "--compress-file",
                                       path("doc.txt")};
    std::vector<std::string> back = {"generate", "-m", ckpt(), "--latents", file};
    normal.insert(normal.end(), common.begin(), common.end());
    back.insert(back.end(), common.begin(), common.end());
    const auto a = cli(normal);
    const auto b = cli(back);
    ASSERT_EQ(a.code, 0) << a.err;
    ASSERT_EQ(b.code, 0) << b.err;
    EXPECT_EQ(a.out, b.out);
    EXPECT_NE(b.err.find("in 1 region(s) compressed to"), std::string::npos) << b.err;
  }
  RandomLclmSpec other = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  other.config.encoder_window_size = 32;
  other.seed = 6;
  write_random_lclm(*dir_ / "other", other);
  const auto foreign =
      cli({"generate", "-m", path("other"), "--latents", path("back.lat"), "-p", "x"});
  EXPECT_EQ(foreign.code, 1);
  EXPECT_NE(foreign.err.find("made by another checkpoint"), std::string::npos) << foreign.err;
  const auto no_question = cli({"generate", "-m", ckpt(), "--latents", path("back.lat")});
  EXPECT_NE(no_question.err.find("needs a question"), std::string::npos) << no_question.err;
  const auto both = cli({"generate", "-m", ckpt(), "--latents", path("back.lat"), "--compress-file",
                         path("doc.txt"), "-p", "x"});
  EXPECT_EQ(both.code, 2);
}

// serve --latents: every file is read and checked before the server binds,
// and a bad one stops it with the flag, the file and what is wrong.
TEST_F(LclmCliTest, ServeRefusesBadLatentsFilesBeforeItStarts) {
  ASSERT_EQ(cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "-o", path("s.lat")}).code, 0);
  RandomLclmSpec other = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  other.config.encoder_window_size = 32;
  other.seed = 7;
  write_random_lclm(*dir_ / "other_serve", other);
  const auto expect_refused = [&](const std::vector<std::string>& flags, const std::string& what) {
    std::vector<std::string> args = {"serve", "-m", ckpt(), "--port", "0"};
    args.insert(args.end(), flags.begin(), flags.end());
    const auto r = cli(args);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find(" on http://"), std::string::npos) << "it served: " << r.err;
  };
  expect_refused({"--latents", path("missing.lat")}, "missing.lat");
  expect_refused({"--latents", "bad id=" + path("s.lat")}, "the id 'bad id'");
  expect_refused({"--latents", path("s.lat"), "--latents", "s=" + path("s.lat")},
                 "the id 's' is taken");
  expect_refused({"--latents", path("doc.txt")}, "doc.txt");
  const auto foreign =
      cli({"serve", "-m", path("other_serve"), "--port", "0", "--latents", path("s.lat")});
  EXPECT_EQ(foreign.code, 1);
  EXPECT_NE(foreign.err.find("--latents " + path("s.lat") + " was made by another checkpoint"),
            std::string::npos)
      << foreign.err;
}

TEST_F(LclmCliTest, PromptEmbedsErrorsNameTheFileAndTheShape) {
  const auto missing = cli({"generate", "-m", ckpt(), "--prompt-embeds", path("nope.pt")});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("nope.pt"), std::string::npos) << missing.err;
  const std::vector<float> x(3 * 64, 0.5f);
  write_torch_tensor(path("narrow.pt"), x.data(), 3, 64, DType::F32);
  const auto narrow = cli({"generate", "-m", ckpt(), "--prompt-embeds", path("narrow.pt")});
  EXPECT_EQ(narrow.code, 1);
  EXPECT_NE(narrow.err.find("a tensor [3, 64], not [positions, 96]"), std::string::npos)
      << narrow.err;
  testing::write_text(*dir_ / "text.pt", "not a zip");
  const auto text = cli({"generate", "-m", ckpt(), "--prompt-embeds", path("text.pt")});
  EXPECT_NE(text.err.find("text.pt: not a torch.save file"), std::string::npos) << text.err;
  const auto both =
      cli({"generate", "-m", ckpt(), "--prompt-embeds", path("narrow.pt"), "-p", "x"});
  EXPECT_EQ(both.code, 2);
  const auto stray =
      cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "-o", path("x.lat"), "--chat"});
  EXPECT_EQ(stray.code, 1);
  EXPECT_NE(stray.err.find("--format prompt-embeds"), std::string::npos) << stray.err;
  const auto bad_out = cli({"compress", "-m", ckpt(), "-f", path("doc.txt"), "--format",
                            "prompt-embeds", "-o", path("no/such/dir/x.pt")});
  EXPECT_EQ(bad_out.code, 1);
  EXPECT_NE(bad_out.err.find("no/such/dir"), std::string::npos) << bad_out.err;
}

TEST_F(LclmCliTest, BadInputGivesOneLineErrors) {
  const auto unterminated = cli({"generate", "-m", ckpt(), "-p", "x <|memory_start|> y"});
  EXPECT_EQ(unterminated.code, 1);
  EXPECT_NE(unterminated.err.find("has no <|memory_end|>"), std::string::npos);

  const auto plain = testing::tiny_model_with_tokenizer("lclm_cli_plain");
  const auto regions_on_plain =
      cli({"generate", "-m", plain.string(), "-p", "<|memory_start|>x<|memory_end|>"});
  EXPECT_EQ(regions_on_plain.code, 1);
  EXPECT_NE(regions_on_plain.err.find("not an LCLM checkpoint"), std::string::npos);

  const auto no_file = cli({"compress", "-m", ckpt(), "-f", path("missing.txt"), "-o", "x"});
  EXPECT_EQ(no_file.code, 1);
  EXPECT_NE(no_file.err.find("missing.txt"), std::string::npos);

  std::filesystem::copy(ckpt(), path("broken"), std::filesystem::copy_options::recursive);
  std::filesystem::remove(*dir_ / "broken" / "adapter" / "adapter.safetensors");
  const auto broken = cli({"info", "-m", path("broken")});
  EXPECT_EQ(broken.code, 1);
  EXPECT_NE(broken.err.find("adapter.safetensors is missing"), std::string::npos) << broken.err;
  for (const auto& r : {unterminated, regions_on_plain, no_file, broken}) {
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST_F(LclmCliTest, LatentsFileRejectsOtherSafetensors) {
  const auto plain = testing::tiny_model_with_tokenizer("lclm_cli_other");
  EXPECT_THROW(read_latents_file(plain / "model.safetensors"), Error);
}

// Runs build/bin/lclm in a process of its own (stdout and stderr through
// files in `dir`): what a second process sharing a store sees.
CliResult run_lclm(const std::filesystem::path& dir, const std::vector<std::string>& args) {
  const std::string lclm = std::string(LCLM_BINARY_DIR) + "/bin/lclm";
  const std::string out = (dir / "process.out").string(), err = (dir / "process.err").string();
  std::vector<char*> argv = {const_cast<char*>(lclm.c_str())};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 1);
    ::dup2(::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
    ::execv(lclm.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(out), slurp(err)};
}

// Two processes on one Redis store: the second finds the first's latents
// (and says they came from Redis); with the server gone a run warns once and
// goes on without the store, with the same answer.
TEST_F(LclmCliTest, TwoProcessesShareLatentsThroughRedis) {
  LCLM_SKIP_WITHOUT_REDIS();
  testing::RedisServer redis("lclm_cli_redis");
  const std::vector<std::string> args =
      river_question({"--latent-cache", redis.url(), "-t", "1", "--latent-cache-ttl", "600"});
  const auto first = run_lclm(*dir_, args);
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_NE(first.err.find("cache hits 0,"), std::string::npos) << first.err;
  const auto second = run_lclm(*dir_, args);
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.err.find("cache hits 1 (1 from Redis)"), std::string::npos) << second.err;
  EXPECT_EQ(second.out, first.out);

  redis.kill();
  const auto without = run_lclm(*dir_, args);
  ASSERT_EQ(without.code, 0) << without.err;
  EXPECT_EQ(without.out, first.out);
  EXPECT_NE(without.err.find("warning: latent cache " + redis.url() + ": cannot connect"),
            std::string::npos)
      << without.err;
  EXPECT_EQ(std::count(without.err.begin(), without.err.end(), '\n'), 2) << without.err;
  EXPECT_NE(without.err.find("cache hits 0,"), std::string::npos) << without.err;
}

TEST_F(LclmCliTest, ABadLatentCacheOptionNamesTheFlag) {
  const auto url =
      cli({"generate", "-m", ckpt(), "-p", "x", "--latent-cache", "redis://host:port"});
  EXPECT_EQ(url.code, 2);
  EXPECT_NE(url.err.find("--latent-cache: 'redis://host:port': the port must be a number"),
            std::string::npos)
      << url.err;
  const auto ttl = cli({"generate", "-m", ckpt(), "-p", "x", "--latent-cache", path("c.sqlite"),
                        "--latent-cache-ttl", "60"});
  EXPECT_EQ(ttl.code, 1);
  EXPECT_NE(ttl.err.find("--latent-cache-ttl needs a Redis store"), std::string::npos) << ttl.err;
  for (const auto& r : {url, ttl}) {
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

}  // namespace
}  // namespace lclm
