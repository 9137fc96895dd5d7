// The evaluation harness: scoring with known answers, the generated tasks
// (length in the model's tokens, answers present in the text, determinism,
// the trainer's needle wording), the evaluator on a tiny random LCLM (every
// method, KV bytes per policy, scores of known answers through the whole
// pipeline), the frontier, and `lclm eval` / `lclm bench` end to end.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "cli/cli_runner.h"
#include "cli/common.h"
#include "core/test_models.h"
#include "eval/eval_report.h"
#include "eval/evaluator.h"
#include "eval/facts.h"
#include "eval/haystack.h"
#include "eval/ruler_tasks.h"
#include "fixtures/random_lclm.h"
#include "format/json_file.h"
#include "kv/policy_model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;
using testing::cli;
using testing::scratch_dir;

TEST(EvalScoring, CountsTheShareOfAnswersFoundIgnoringCase) {
  EXPECT_EQ(score_answers("The special magic number for calm-ember is 4417235.", {"4417235"}), 1.0);
  EXPECT_EQ(score_answers("The special magic number is 4417236.", {"4417235"}), 0.0);
  EXPECT_EQ(score_answers("VAR qwert and ASDFG", {"QWERT", "ASDFG", "ZXCVB", "POIUY"}), 0.5);
  EXPECT_EQ(score_answers("", {"x"}), 0.0);
  EXPECT_EQ(score_answers("anything", {}), 0.0);
}

const char* kPrefix = "The special magic number for misty-harbor is";

TEST(DigitAgreement, CountsDigitsInPlaceAfterThePrefix) {
  EXPECT_DOUBLE_EQ(
      digit_agreement("The special magic number for misty-harbor is 4821937.", "4821937", kPrefix),
      1.0);
  // Three of seven in place; the key's digits before the prefix end are ignored.
  EXPECT_DOUBLE_EQ(
      digit_agreement("The special magic number for misty-harbor is 4820000.", "4821937", kPrefix),
      3.0 / 7.0);
  // A shorter number counts only the digits given; a missing one scores 0.
  EXPECT_DOUBLE_EQ(digit_agreement("... is 48.", "4821937", "is"), 2.0 / 7.0);
  EXPECT_DOUBLE_EQ(digit_agreement("no number here", "4821937", kPrefix), 0.0);
  // Without the prefix the first digits of the answer count.
  EXPECT_DOUBLE_EQ(digit_agreement("4821930 and 4821937", "4821937"), 6.0 / 7.0);
  EXPECT_DOUBLE_EQ(digit_agreement("4821937", ""), 0.0);
}

TEST(WordAgreement, CountsWordsAtTheSameIndex) {
  EXPECT_DOUBLE_EQ(word_agreement("the quick brown fox", "the quick brown fox"), 1.0);
  EXPECT_DOUBLE_EQ(word_agreement("the slow brown fox", "the quick brown fox"), 0.75);
  // A dropped word shifts the rest out of place.
  EXPECT_DOUBLE_EQ(word_agreement("the brown fox", "the quick brown fox"), 0.25);
  EXPECT_DOUBLE_EQ(word_agreement("the quick brown fox jumps", "the quick"), 1.0);
  EXPECT_DOUBLE_EQ(word_agreement(" the\n quick\t", "the quick"), 1.0);
  EXPECT_DOUBLE_EQ(word_agreement("", "the quick"), 0.0);
  EXPECT_DOUBLE_EQ(word_agreement("anything", ""), 0.0);
}

TEST(CharAgreement, CountsCharactersAtTheSameIndex) {
  EXPECT_DOUBLE_EQ(char_agreement("4821937, 20315", "4821937, 20315"), 1.0);
  // Two digits swapped: 12 of 14 in place.
  EXPECT_DOUBLE_EQ(char_agreement("4281937, 20315", "4821937, 20315"), 12.0 / 14.0);
  // A dropped digit shifts the rest out of place; a short answer counts what it has.
  EXPECT_DOUBLE_EQ(char_agreement("482937", "4821937"), 3.0 / 7.0);
  EXPECT_DOUBLE_EQ(char_agreement("4821937, 20315, 7", "4821937"), 1.0);
  EXPECT_DOUBLE_EQ(char_agreement("", "48"), 0.0);
  EXPECT_DOUBLE_EQ(char_agreement("48", ""), 0.0);
}

// Each task's score, graded agreement and prefix on known outputs.
TEST(GradeAnswer, ScoresEachTaskItsOwnWay) {
  EvalSample needle;
  needle.task = RulerTask::SingleNeedle;
  needle.answers = {"4821937"};
  needle.prefix = std::string(kPrefix) + " ";
  Grade g = grade_answer(needle, "The special magic number for misty-harbor is 4821900.");
  EXPECT_EQ(g.score, 0.0);
  EXPECT_DOUBLE_EQ(g.agreement, 5.0 / 7.0);
  EXPECT_EQ(g.prefix_correct, std::optional<bool>(true));
  g = grade_answer(needle, "It is 4821937, the special magic number for calm-ember.");
  EXPECT_EQ(g.score, 1.0);
  EXPECT_DOUBLE_EQ(g.agreement, 1.0);
  EXPECT_EQ(g.prefix_correct, std::optional<bool>(false));

  EvalSample copy;
  copy.task = RulerTask::Reconstruction;
  copy.answers = {"the quick brown fox"};
  copy.prefix = "the quick brown fox";
  g = grade_answer(copy, "the quick brown fox");
  EXPECT_EQ(g.score, 1.0);
  EXPECT_DOUBLE_EQ(g.agreement, 1.0);
  g = grade_answer(copy, "the quick brown fox jumps");  // more than the passage is not exact
  EXPECT_EQ(g.score, 0.0);
  EXPECT_DOUBLE_EQ(g.agreement, 1.0);
  EXPECT_EQ(g.prefix_correct, std::optional<bool>(true));

  copy.task = RulerTask::Numbers;
  copy.answers = {"4821937, 20315"};
  copy.prefix = "4821937";
  g = grade_answer(copy, "4281937, 20315");
  EXPECT_EQ(g.score, 0.0);
  EXPECT_DOUBLE_EQ(g.agreement, 12.0 / 14.0);
  EXPECT_EQ(g.prefix_correct, std::optional<bool>(false));

  EvalSample vt;
  vt.task = RulerTask::VariableTracking;
  vt.answers = {"QWERT", "ASDFG"};
  g = grade_answer(vt, "qwert");
  EXPECT_EQ(g.score, 0.5);
  EXPECT_EQ(g.agreement, 0.5);
  EXPECT_FALSE(g.prefix_correct.has_value());
}

// The default haystack is a fixed list of files, not whatever the machine
// has installed (a glob over /usr/share/doc took in every package installed
// later): the copyright files of the packages docs/evaluation.md names, all
// present on a machine set up by scripts/install_deps.sh.
TEST(DefaultHaystack, IsTheCopyrightFilesOfAFixedListOfPackages) {
  const std::vector<std::filesystem::path> paths = default_haystack_paths();
  const std::vector<std::string> packages = {
      "manpages-zh",
      "mawk",
      "ncurses-base",
      "ncurses-bin",
      "ninja-build",
      "nlohmann-json3-dev",
      "passwd",
      "perl-base",
      "pkg-config",
      "pybind11-dev",
      "python3",
      "python3-jinja2",
      "python3-numpy",
      "python3-pybind11",
      "python3-torch",
      "redis-server",
      "sed",
      "sensible-utils",
      "sysvinit-utils",
      "tar",
      "tzdata",
      "unicode-data",
      "util-linux",
  };
  ASSERT_EQ(paths.size(), packages.size());
  for (std::size_t i = 0; i < paths.size(); ++i) {
    EXPECT_EQ(paths[i], std::filesystem::path("/usr/share/doc") / packages[i] / "copyright");
    EXPECT_TRUE(std::filesystem::is_regular_file(paths[i])) << paths[i];
    // Held out: the trainer reads packages a-l.
    EXPECT_GE(packages[i][0], 'm') << packages[i];
    // A missing file of the list names its package.
    EXPECT_NE(default_haystack_hint(paths[i]).find("install " + packages[i] + ","),
              std::string::npos)
        << default_haystack_hint(paths[i]);
  }
  EXPECT_EQ(default_haystack_hint("/usr/share/doc/sed/changelog.gz"), "");
  try {
    Haystack::from_paths({"/usr/share/doc/no-such-package/copyright"});
    FAIL() << "a missing file was read";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "haystack text /usr/share/doc/no-such-package/copyright does not exist");
  }
  // 335 KB on Debian 12: enough for the 32K-token haystacks of `lclm bench`.
  EXPECT_GT(Haystack::from_paths(paths).size(), 40000u);
}

class RulerTasks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = new Tokenizer(Tokenizer::from_dir(testing::qwen3_tokenizer_dir()));
    haystack_ = new Haystack(Haystack::from_paths(default_haystack_paths()));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete haystack_;
  }
  static Tokenizer* tokenizer_;
  static Haystack* haystack_;
};
Tokenizer* RulerTasks::tokenizer_ = nullptr;
Haystack* RulerTasks::haystack_ = nullptr;

TEST_F(RulerTasks, FitTheLengthAndHideTheirAnswers) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 7);
  for (RulerTask task : all_ruler_tasks()) {
    if (is_copy_task(task)) continue;  // their length is the passage's: CopyTasks below
    for (std::size_t length : {512, 2048}) {
      const EvalSample s = gen.make(task, length, 0);
      const std::size_t tokens = tokenizer_->encode(eval_prompt(s, false)).size();
      EXPECT_LE(tokens, length) << ruler_task_name(task);
      // The fit is the largest size in haystack words, and one word (a URL or
      // a checksum in a copyright file) can be 20-30 tokens: short by 3%, or
      // by 32 tokens at small lengths (with Debian's doc files of 2026-12-05,
      // niah_multivalue at 512 stopped at 493 tokens, the next word past 512).
      EXPECT_GE(tokens, std::min(length * 97 / 100, length - 32)) << ruler_task_name(task);
      ASSERT_FALSE(s.answers.empty());
      for (const std::string& a : s.answers) {
        EXPECT_NE(s.context.find(a), std::string::npos) << ruler_task_name(task) << " " << a;
      }
      EXPECT_EQ(gen.make(task, length, 0).context, s.context) << "not deterministic";
      EXPECT_NE(gen.make(task, length, 1).context, s.context);
    }
  }
}

TEST_F(RulerTasks, SingleNeedleUsesTheTrainersWording) {
  const EvalSample s =
      RulerTaskGenerator(*haystack_, *tokenizer_, 1).make(RulerTask::SingleNeedle, 700, 3);
  const std::regex needle("The special magic number for ([a-z]+-[a-z]+) is ([0-9]{7})\\.");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(s.context, m, needle)) << s.context;
  EXPECT_EQ(m[2].str(), s.answers.at(0));
  EXPECT_EQ(s.question,
            "What is the special magic number for " + m[1].str() + " mentioned in the text above?");
  EXPECT_EQ(eval_prompt(s, true), "<|im_start|>user\n<|memory_start|>" + s.context +
                                      "<|memory_end|>\n" + s.question +
                                      "<|im_end|>\n<|im_start|>assistant\n");
}

// Every sample comes within 3% of its length, including ones whose text
// changes density as it grows (sample 13 of this seed at 4,096 came out at
// 3,702 tokens when three proportional resizes were all the fit had).
TEST_F(RulerTasks, EverySampleFitsItsLengthClosely) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 20261123);
  for (std::size_t i = 0; i < 20; ++i) {
    const std::size_t tokens = gen.prompt_tokens(gen.make(RulerTask::SingleNeedle, 4096, i));
    EXPECT_LE(tokens, 4096u) << "sample " << i;
    EXPECT_GE(tokens, 4096u * 97 / 100) << "sample " << i;
  }
}

// The needle sample knows where its number sits and what a right answer
// starts with; "needle" names the same task.
// facts: a held-out fact (with two distractors of its kind); the question
// is a held-out phrasing naming the subject and no word of the trainer's
// lists, the answer is its value, and a right answer opens "The SUBJECT is ".
TEST_F(RulerTasks, FactsAskAHeldOutFactAmongDistractors) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 3);
  const std::vector<std::string> train = fact_vocabulary(FactSplit::Train);
  std::set<std::string> questions;
  for (std::size_t i = 0; i < 12; ++i) {
    const EvalSample s = gen.make(RulerTask::Facts, 600, i);
    ASSERT_EQ(s.answers.size(), 1u);
    ASSERT_EQ(s.prefix.rfind("The ", 0), 0u) << s.prefix;
    const std::string subject = s.prefix.substr(4, s.prefix.size() - 8);
    EXPECT_NE(s.question.find(subject), std::string::npos) << s.question;
    // A sentence may open with a word value, capitalized.
    EXPECT_GT(score_answers(s.context, s.answers), 0.0) << s.answers[0];
    // No trained attribute, name or phrasing (single generic words such as
    // "code" aside: made-up train subjects end in kinds like that).
    for (const std::string& t : train) {
      if (t.find(' ') == std::string::npos && !std::isupper(static_cast<unsigned char>(t[0])))
        continue;
      const std::string fixed = t.substr(0, t.find('{'));
      EXPECT_EQ(s.question.find(fixed.empty() ? t : fixed), std::string::npos)
          << "a held-out question uses the trainer's \"" << t << "\": " << s.question;
    }
    questions.insert(s.question.substr(0, 10));
    const Grade right = grade_answer(s, s.prefix + s.answers[0] + ".");
    EXPECT_EQ(right.score, 1.0);
    EXPECT_EQ(right.agreement, 1.0);
    EXPECT_EQ(right.prefix_correct, true);
    const Grade other_terms = grade_answer(s, "The special magic number is " + s.answers[0]);
    EXPECT_EQ(other_terms.score, 1.0);
    EXPECT_EQ(other_terms.prefix_correct, false);
  }
  EXPECT_GE(questions.size(), 2u) << "several phrasings";
}

TEST(Facts, TheSplitsShareNoWordingKeyNameOrValueWord) {
  const std::vector<std::string> train = fact_vocabulary(FactSplit::Train);
  const std::vector<std::string> heldout = fact_vocabulary(FactSplit::Heldout);
  EXPECT_GT(train.size(), 50u);
  EXPECT_GT(heldout.size(), 30u);
  for (const std::string& h : heldout) {
    EXPECT_EQ(std::count(train.begin(), train.end(), h), 0) << h;
  }
}

// Made-up train subjects (a pool word, a kind, a made-up name) never use a
// word of the held-out split's subjects, names or values.
TEST(Facts, MadeUpTrainSubjectsStayClearOfTheHeldOutWords) {
  const std::vector<std::string> pool =
      fact_word_pool({"the badge and the ticket of quentin, apricot walnut copper meadow sun "
                      "Lighthouse keeper counted ships"},
                     100);
  EXPECT_EQ(pool,
            (std::vector<std::string>{"copper", "counted", "keeper", "meadow", "ships", "walnut"}));
  std::mt19937_64 rng(2);
  std::set<std::string> subjects;
  for (int i = 0; i < 400; ++i) {
    const Fact f = make_fact(rng, FactSplit::Train, -1, {}, &pool);
    subjects.insert(f.subject);
    EXPECT_EQ(f.answer, "The " + f.subject + " is " + f.value + ".");
  }
  EXPECT_GT(subjects.size(), 150u) << "made-up subjects are many";
  const std::vector<std::string> heldout = fact_vocabulary(FactSplit::Heldout);
  for (const std::string& subject : subjects) {
    for (const std::string& h : heldout) {
      if (h.find('{') != std::string::npos) continue;
      EXPECT_EQ((" " + subject + " ").find(" " + h + " "), std::string::npos)
          << subject << " / " << h;
    }
  }
}

TEST(Facts, AnswersAreInTheQuestionsTermsAndDistractorsDiffer) {
  const std::vector<std::string> pool = {"harbour", "lantern", "meadow", "window"};
  for (FactSplit split : {FactSplit::Train, FactSplit::Heldout}) {
    std::mt19937_64 rng(5);
    std::set<std::size_t> digits;
    std::set<int> families;
    for (int i = 0; i < 300; ++i) {
      const Fact f = make_fact(rng, split, -1, {}, &pool);
      families.insert(f.family);
      EXPECT_EQ(f.answer, "The " + f.subject + " is " + f.value + ".");
      EXPECT_EQ(f.answer.rfind(f.prefix, 0), 0u);
      EXPECT_EQ(score_answers(f.sentence, {f.value}), 1.0) << f.sentence;
      EXPECT_NE(f.sentence.find(f.subject), std::string::npos);
      EXPECT_NE(f.question.find(f.subject), std::string::npos);
      if (f.numeric) {
        EXPECT_NE(f.value[0], '0');
        digits.insert(f.value.size());
      }
      const Fact other = make_fact(rng, split, f.family, {f.subject}, &pool);
      EXPECT_NE(other.subject, f.subject);
    }
    EXPECT_EQ(static_cast<int>(families.size()), fact_families(split));
    EXPECT_EQ(*digits.begin(), 3u);
    EXPECT_EQ(*digits.rbegin(), 10u);
  }
}

TEST_F(RulerTasks, SingleNeedleKnowsItsPrefixAndTheNumbersToken) {
  EXPECT_EQ(parse_ruler_task("needle"), RulerTask::SingleNeedle);
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 5);
  for (std::size_t i = 0; i < 3; ++i) {
    const EvalSample s = gen.make(RulerTask::SingleNeedle, 1024, i);
    const std::string number = s.answers.at(0);
    ASSERT_EQ(s.prefix.rfind("The special magic number for ", 0), 0u) << s.prefix;
    const std::size_t at = s.context.find(s.prefix + number);
    ASSERT_NE(at, std::string::npos);
    EXPECT_NE(s.question.find(s.prefix.substr(29, s.prefix.size() - 33)), std::string::npos)
        << "the key asked is the prefix's: " << s.question;
    ASSERT_TRUE(s.needle_token.has_value());
    EXPECT_EQ(*s.needle_token,
              tokenizer_->encode(s.context.substr(0, at + s.prefix.size())).size());
    EXPECT_LT(*s.needle_token, 1024u);
  }
  EXPECT_FALSE(gen.make(RulerTask::MultiNeedle, 512, 0).needle_token.has_value());
  EXPECT_TRUE(gen.make(RulerTask::MultiNeedle, 512, 0).prefix.empty());
}

// reconstruction: haystack text of exactly the passage's tokens; numbers:
// random numbers one token a character; both asked with the trainer's
// reconstruction instruction and answered by the passage itself.
TEST_F(RulerTasks, CopyTasksArePassagesOfTheirLength) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 3);
  const std::regex numbers("[1-9][0-9]{2,8}(, [1-9][0-9]{2,8})*(, [1-9][0-9]{0,8})?");
  for (std::size_t tokens : {16, 32, 128}) {
    for (std::size_t i = 0; i < 4; ++i) {
      const EvalSample text = gen.make(RulerTask::Reconstruction, tokens, i);
      EXPECT_EQ(text.answers, std::vector<std::string>{text.context});
      EXPECT_EQ(text.n_predict, static_cast<int>(tokens) + 16);
      EXPECT_EQ(tokenizer_->encode(text.context).size(), tokens) << text.context;
      EXPECT_EQ(text.context.find("<|"), std::string::npos);
      const std::vector<std::string> words = [&] {
        std::vector<std::string> w;
        std::istringstream in(text.context);
        for (std::string x; in >> x;) w.push_back(x);
        return w;
      }();
      std::string first8;
      for (std::size_t k = 0; k < std::min<std::size_t>(8, words.size()); ++k)
        first8 += (k ? " " : "") + words[k];
      EXPECT_EQ(text.prefix, first8);
      EXPECT_EQ(eval_prompt(text, true),
                "<|im_start|>user\n<|memory_start|>" + text.context +
                    "<|memory_end|>\nRepeat the compressed text above word for "
                    "word.<|im_end|>\n<|im_start|>assistant\n");

      const EvalSample digits = gen.make(RulerTask::Numbers, tokens, i);
      EXPECT_TRUE(std::regex_match(digits.context, numbers)) << digits.context;
      EXPECT_EQ(tokenizer_->encode(digits.context).size(), digits.context.size());
      EXPECT_LE(digits.context.size(), tokens);
      EXPECT_GE(digits.context.size() + 2, tokens);  // short only by a trailing ", "
      EXPECT_EQ(digits.prefix, digits.context.substr(0, digits.context.find(',')));
      EXPECT_EQ(digits.question, text.question);
      EXPECT_EQ(gen.make(RulerTask::Numbers, tokens, i).context, digits.context);
      EXPECT_NE(gen.make(RulerTask::Numbers, tokens, i + 1).context, digits.context);
      EXPECT_NE(gen.make(RulerTask::Reconstruction, tokens, i + 1).context, text.context);
    }
  }
  EXPECT_THROW(gen.make(RulerTask::Numbers, 0, 0), Error);
}

TEST_F(RulerTasks, VariableChainAndCommonWordsAreWellFormed) {
  const RulerTaskGenerator gen(*haystack_, *tokenizer_, 2);
  const EvalSample vt = gen.make(RulerTask::VariableTracking, 1024, 0);
  ASSERT_EQ(vt.answers.size(), 5u);
  const std::string value = vt.question.substr(vt.question.find("value ") + 6, 5);
  std::size_t at = vt.context.find("VAR " + vt.answers[0] + " = " + value + ".");
  ASSERT_NE(at, std::string::npos);
  for (std::size_t i = 1; i < 5; ++i) {  // each link after the previous one
    const std::size_t next =
        vt.context.find("VAR " + vt.answers[i] + " = " + vt.answers[i - 1] + ".");
    ASSERT_NE(next, std::string::npos);
    EXPECT_GT(next, at);
    at = next;
  }
  const EvalSample cwe = gen.make(RulerTask::CommonWords, 1024, 0);
  std::map<std::string, int> counts;
  const std::regex entry("\n[0-9]+\\. ([a-z]+)");
  for (std::sregex_iterator it(cwe.context.begin(), cwe.context.end(), entry), end; it != end;
       ++it) {
    ++counts[(*it)[1].str()];
  }
  int least_common = 1 << 30, most_rare = 0;
  for (const auto& [word, n] : counts) {
    const bool common =
        std::find(cwe.answers.begin(), cwe.answers.end(), word) != cwe.answers.end();
    if (common)
      least_common = std::min(least_common, n);
    else
      most_rare = std::max(most_rare, n);
  }
  EXPECT_EQ(cwe.answers.size(), 10u);
  EXPECT_GT(least_common, most_rare);
}

FrontierPoint point(const char* method, std::int64_t ratio, std::size_t length, double ttft,
                    double accuracy, std::size_t runs = 20) {
  FrontierPoint p;
  p.label = method;
  p.method = method;
  p.ratio = ratio;
  p.length = length;
  p.ttft_ms = ttft;
  p.accuracy = accuracy;
  p.runs = runs;
  std::tie(p.ci_low, p.ci_high) = wilson_interval(accuracy, runs);
  return p;
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) ++n;
  return n;
}

TEST(EvalFrontier, KeepsOnlyPointsNoOtherBeats) {
  std::vector<FrontierPoint> points = {
      point("full", 1, 1024, 100, 0.9), point("latent", 8, 1024, 10, 0.8),
      point("h2o", 8, 1024, 50, 0.5), point("snapkv", 8, 1024, 20, 0.85),
      point("streaming", 8, 1024, 5, 0.1)};
  std::vector<std::string> methods;
  for (const FrontierPoint& p : pareto_frontier(points)) methods.push_back(p.method);
  EXPECT_EQ(methods, (std::vector<std::string>{"streaming", "latent", "snapkv", "full"}));
}

// Wilson's interval, against values computed by hand from its formula (and
// statsmodels' proportion_confint(method="wilson")).
TEST(EvalFrontier, WilsonIntervals) {
  const auto [lo, hi] = wilson_interval(0.5, 20);
  EXPECT_NEAR(lo, 0.2993, 1e-4);
  EXPECT_NEAR(hi, 0.7007, 1e-4);
  const auto [lo0, hi0] = wilson_interval(0.0, 20);
  EXPECT_EQ(lo0, 0.0);
  EXPECT_NEAR(hi0, 0.1611, 1e-4);
  const auto [lo1, hi1] = wilson_interval(1.0, 3);
  EXPECT_NEAR(lo1, 0.4385, 1e-4);
  EXPECT_DOUBLE_EQ(hi1, 1.0);
  EXPECT_EQ(wilson_interval(0.3, 0), (std::pair<double, double>{0.0, 1.0}));
}

// One point per method x ratio x length, a panel per length with its own
// frontier, markers by ratio, error bars, a legend that names the frontier,
// the caption, and the same data as CSV.
TEST(EvalFrontier, PlotsEveryCellWithItsIntervalAndWritesTheData) {
  std::vector<EvalCell> cells;
  const auto cell = [&](const char* method, std::int64_t ratio, std::size_t length, double ttft,
                        double acc, std::size_t runs) {
    EvalCell c;
    c.method = method;
    c.ratio = ratio;
    c.length = length;
    c.ttft_ms = ttft;
    c.accuracy = acc;
    c.runs = runs;
    cells.push_back(c);
  };
  cell("full", 1, 1024, 900, 0.95, 20);
  cell("latent", 4, 1024, 150, 0.8, 20);
  cell("latent", 8, 1024, 90, 0.3, 20);
  cell("full", 1, 4096, 5200, 0.1, 20);
  cell("latent", 4, 4096, 700, 0.55, 20);
  cell("latent", 8, 4096, 400, 0.3, 20);
  cell("snapkv", 8, 4096, 5100, 0.05, 20);
  const std::vector<FrontierPoint> points = frontier_points(cells);
  ASSERT_EQ(points.size(), cells.size());
  const std::string svg = frontier_svg(points, "t <1>", "Model m; machine x & y");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("t &lt;1&gt;"), std::string::npos);
  EXPECT_EQ(count_of(svg, "class=\"point\""), cells.size());
  EXPECT_EQ(count_of(svg, "class=\"error-bar\""), cells.size());
  EXPECT_NE(svg.find(">1024 tokens<"), std::string::npos);
  EXPECT_NE(svg.find(">4096 tokens<"), std::string::npos);
  EXPECT_NE(svg.find("Pareto frontier"), std::string::npos);
  EXPECT_NE(svg.find("95% Wilson interval"), std::string::npos);
  EXPECT_NE(svg.find("Model m; machine x &amp; y"), std::string::npos);
  EXPECT_NE(svg.find("latent 8x at 4096 tokens: 30.0 % (95% CI 14.5-51.9, n = 20)"),
            std::string::npos);
  // Markers by ratio: a circle for 4x, triangles for 8x, squares for full
  // (legend entries included).
  EXPECT_EQ(count_of(svg, "<circle"), 2u + 1u);
  // 1-2-5 ticks between 50 ms and 10 s, not decades only.
  for (const char* tick : {">100<", ">200<", ">500<", ">1k<", ">2k<", ">5k<"}) {
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  }
  const std::string csv = frontier_csv(points);
  EXPECT_EQ(csv,
            "method,ratio,length,runs,accuracy,ci_low,ci_high,ttft_ms,on_frontier\n"
            "full,1,1024,20,0.9500,0.7639,0.9911,900.00,1\n"
            "latent,4,1024,20,0.8000,0.5840,0.9193,150.00,1\n"
            "latent,8,1024,20,0.3000,0.1455,0.5190,90.00,1\n"
            "full,1,4096,20,0.1000,0.0279,0.3010,5200.00,0\n"
            "latent,4,4096,20,0.5500,0.3421,0.7418,700.00,1\n"
            "latent,8,4096,20,0.3000,0.1455,0.5190,400.00,1\n"
            "snapkv,8,4096,20,0.0500,0.0089,0.2361,5100.00,0\n");
}

// A tiny random LCLM with the real Qwen3 tokenizer, window 64, ratio 4.
fs::path tiny_checkpoint(const std::string& name) {
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 9;
  spec.config.encoder_window_size = 64;
  const fs::path dir = scratch_dir(name);
  write_random_lclm(dir, spec);
  return dir;
}

TEST(Evaluator, RunsEveryMethodAndReportsTheCacheEachKeeps) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_methods");
  config.methods = {"full", "latent", "streaming", "h2o", "snapkv", "pyramidkv", "indexmem"};
  config.ratios = {4, 16};
  config.lengths = {300};
  const IndexMemWeights indexmem =
      random_indexmem(Qwen3Config::from_dir(config.checkpoint / "decoder"), 3, 0.5f);
  indexmem.save(config.checkpoint / "indexmem");
  Evaluator evaluator(config);
  const std::vector<EvalRecord> records = evaluator.run();
  ASSERT_EQ(records.size(), 1u + 6 * 2);
  const RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  // The engine's KV cache stores bf16 keys and values (kDefaultKVCacheTypes).
  const auto per_entry =
      std::size_t(2 * spec.decoder.num_key_value_heads * spec.decoder.head_dim * 2);
  const auto layers = std::size_t(spec.decoder.num_hidden_layers);
  const std::size_t L = records.front().positions;
  EXPECT_EQ(records.front().method, "full");
  EXPECT_EQ(records.front().kv_bytes, layers * L * per_entry);
  for (const EvalRecord& r : records) {
    EXPECT_EQ(r.prompt_tokens, L);
    EXPECT_GT(r.ttft_ms, 0.0);
    // The cache is sized for the prompt and the answer before any eviction.
    EXPECT_EQ(r.kv_peak_bytes, layers * (r.positions + 32) * per_entry) << r.method;
    EXPECT_EQ(r.score, score_answers(r.output, evaluator.tasks().make(r.task, 300, 0).answers));
    if (r.method == "latent") {
      EXPECT_LT(r.positions, L / std::size_t(r.ratio) + 40) << "x" << r.ratio;
      EXPECT_EQ(r.kv_bytes, layers * r.positions * per_entry);
    } else if (r.method != "full") {
      const auto budget = std::size_t(std::ceil(double(L) / double(r.ratio)));
      // IndexMem also holds its memory: M [F, D] and z [F] per layer and kv head.
      const std::size_t memory = r.method == "indexmem"
                                     ? layers * std::size_t(spec.decoder.num_key_value_heads) *
                                           std::size_t(indexmem.config.memory_features) *
                                           (std::size_t(spec.decoder.head_dim) + 1) * sizeof(float)
                                     : 0;
      EXPECT_EQ(r.kv_bytes, layers * budget * per_entry + memory) << r.method << " x" << r.ratio;
    }
  }
}

// The agent as a method: every ratio, its rounds, chunks and expanded
// chunks recorded, positions counted over rounds without the reused prefix,
// its answer (the ANSWER line, or the last reply) graded; records with the
// agent's fields survive the JSON round trip.
TEST(Evaluator, TheAgentIsAMethodWithItsRoundsRecorded) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_agent");
  config.methods = {"full", "agent"};
  config.ratios = {4, 8};
  config.lengths = {1100};
  config.tasks = {RulerTask::Facts};
  Evaluator evaluator(config);
  const std::vector<EvalRecord> records = evaluator.run();
  ASSERT_EQ(records.size(), 3u);
  EXPECT_FALSE(records[0].rounds.has_value());
  for (std::size_t i = 1; i < 3; ++i) {
    const EvalRecord& r = records[i];
    EXPECT_EQ(r.method, "agent");
    EXPECT_EQ(r.ratio, i == 1 ? 4 : 8);
    ASSERT_TRUE(r.rounds && r.chunks && r.expanded);
    EXPECT_GE(*r.rounds, 2u) << "the first round must expand";
    EXPECT_LE(*r.rounds, 5u);
    EXPECT_GE(*r.chunks, 2u) << "1,100 tokens in chunks of 450";
    EXPECT_GE(*r.expanded, 1u);
    EXPECT_GT(r.ttft_ms, 0.0);
    EXPECT_GT(r.positions, 0u);
    const Grade g = grade_answer(evaluator.tasks().make(RulerTask::Facts, 1100, 0), r.output);
    EXPECT_EQ(r.score, g.score);
    EXPECT_EQ(r.prefix_correct, g.prefix_correct);
    const EvalRecord back = eval_record_from_json(eval_record_json(r));
    EXPECT_EQ(back.rounds, r.rounds);
    EXPECT_EQ(back.chunks, r.chunks);
    EXPECT_EQ(back.expanded, r.expanded);
  }
  const std::vector<EvalCell> cells = summarize_records(records);
  ASSERT_EQ(cells.size(), 3u);
  EXPECT_EQ(cells[1].rounds, static_cast<double>(*records[1].rounds));
  EXPECT_EQ(cells[0].prefix_runs, 1u);
  const std::string md = eval_results_markdown(cells);
  EXPECT_NE(md.find("| agent | 8x | 1100 |"), std::string::npos) << md;
  EXPECT_NE(md.find("own terms"), std::string::npos);
}

TEST(Evaluator, IndexMemNeedsItsWeights) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_no_indexmem");
  config.methods = {"full", "indexmem"};
  const std::string message = testing::error_of([&] { Evaluator evaluator(config); });
  EXPECT_NE(message.find((config.checkpoint / "indexmem").string()), std::string::npos) << message;
}

// Answers known to be in (or not in) what the model says score 1 (or 0)
// through the whole run: generation, detokenizing, scoring.
TEST(Evaluator, ScoresKnownAnswersThroughTheWholeRun) {
  EvalConfig config;
  config.checkpoint = tiny_checkpoint("eval_known");
  Evaluator evaluator(config);
  EvalSample sample = evaluator.tasks().make(RulerTask::SingleNeedle, 256, 0);
  sample.n_predict = 12;
  const std::string said = evaluator.run_one(sample, "full", 1).output;
  ASSERT_GE(said.size(), 4u);
  sample.answers = {said.substr(said.size() / 2, 3)};
  EXPECT_EQ(evaluator.run_one(sample, "full", 1).score, 1.0);
  sample.answers = {said.substr(0, 3), said + "#never said#"};
  EXPECT_EQ(evaluator.run_one(sample, "full", 1).score, 0.5);
  sample.answers = {"#never said#"};
  EXPECT_EQ(evaluator.run_one(sample, "snapkv", 4).score, 0.0);
}

TEST(EvalCli, EvalAndBenchWriteTheirFiles) {
  const fs::path ckpt = tiny_checkpoint("eval_cli");
  const fs::path out = scratch_dir("eval_cli_out");
  const auto eval =
      cli({"eval", "-m", ckpt.string(), "--methods", "full,latent,snapkv", "--ratios", "4",
           "--lengths", "256", "--tasks", "niah_single,vt", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(eval.code, 0) << eval.err;
  const nlohmann::json j = read_json_file(out / "results.json");
  EXPECT_EQ(j["records"].size(), 2u * 3);
  EXPECT_EQ(j["cells"].size(), 3u);
  const std::string md = cli::read_file((out / "results.md").string(), "results");
  EXPECT_NE(md.find("| snapkv | 4x | 256 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| full | - | 256 |"), std::string::npos) << md;

  const auto bench =
      cli({"bench", "-m", ckpt.string(), "--methods", "full,latent,h2o", "--ratios", "4",
           "--lengths", "256", "--samples", "1", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(bench.code, 0) << bench.err;
  EXPECT_NE(bench.out.find("| 256 | full | - |"), std::string::npos) << bench.out;
  EXPECT_NE(bench.out.find("| 1.00x |"), std::string::npos) << bench.out;  // full against itself
  const std::string svg = cli::read_file((out / "frontier.svg").string(), "plot");
  EXPECT_NE(svg.find("h2o 4x"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);

  const auto bad =
      cli({"eval", "-m", ckpt.string(), "--methods", "full,lru", "--out", out.string()});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("lru"), std::string::npos) << bad.err;
  EXPECT_EQ(testing::count_lines(bad.err), 1);
  const auto no_full =
      cli({"bench", "-m", ckpt.string(), "--methods", "latent", "--out", out.string()});
  EXPECT_EQ(no_full.code, 1);
  EXPECT_NE(no_full.err.find("full"), std::string::npos) << no_full.err;
}

// Every record names its prompt and carries the expected answers and the
// output; records are written as they come, and --resume runs only what an
// interrupted run had not done.
TEST(EvalCli, RecordsComeAsTheyAreMadeAndAnInterruptedRunResumes) {
  const fs::path ckpt = tiny_checkpoint("eval_resume");
  const fs::path out = scratch_dir("eval_resume_out");
  const std::vector<std::string> args = {
      "eval",        "-m",        ckpt.string(), "--methods", "full,latent",
      "--ratios",    "4,8",       "--lengths",   "256",       "--tasks",
      "niah_single", "--samples", "2",           "--out",     out.string(),
      "-t",          "1"};
  const auto first = cli(args);
  ASSERT_EQ(first.code, 0) << first.err;
  // Progress: one line a run, counted, with an ETA.
  EXPECT_NE(first.err.find("[1/6] niah_single-256-0 full"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("[6/6] niah_single-256-1 latent x8"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("ETA"), std::string::npos);
  const nlohmann::json all = read_json_file(out / "results.json");
  ASSERT_EQ(all["records"].size(), 6u);
  const nlohmann::json& r0 = all["records"][0];
  EXPECT_EQ(r0["prompt_id"], "niah_single-256-0");
  ASSERT_EQ(r0["expected"].size(), 1u);
  EXPECT_EQ(r0["expected"][0].get<std::string>().size(), 7u);  // the needle's number
  EXPECT_TRUE(r0["output"].is_string());
  const std::string jsonl = cli::read_file((out / "records.jsonl").string(), "records");
  ASSERT_EQ(testing::count_lines(jsonl), 6);

  // The same --out again without --resume: refused, nothing overwritten.
  const auto again = cli(args);
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;

  // Interrupted after two runs, in the middle of writing the third.
  std::size_t cut = 0;
  for (int i = 0; i < 2; ++i) cut = jsonl.find('\n', cut) + 1;
  testing::write_text(out / "records.jsonl", jsonl.substr(0, cut) + "{\"prompt_id\": \"nia");
  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  const auto resumed = cli(resume);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming: 2 of 6 runs already done"), std::string::npos)
      << resumed.err;
  EXPECT_EQ(resumed.err.find("[2/6]"), std::string::npos) << resumed.err;  // not run again
  EXPECT_NE(resumed.err.find("[6/6]"), std::string::npos) << resumed.err;
  const nlohmann::json after = read_json_file(out / "results.json");
  ASSERT_EQ(after["records"].size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(after["records"][i]["prompt_id"], all["records"][i]["prompt_id"]);
    EXPECT_EQ(after["records"][i]["method"], all["records"][i]["method"]);
    EXPECT_EQ(after["records"][i]["output"], all["records"][i]["output"]);
  }
  EXPECT_EQ(after["records"][0]["ttft_ms"], all["records"][0]["ttft_ms"]);  // kept, not re-run
  EXPECT_EQ(testing::count_lines(cli::read_file((out / "records.jsonl").string(), "records")), 6);

  // --resume with other options names the one that differs.
  std::vector<std::string> other = resume;
  other[6] = "4,16";
  const auto mismatch = cli(other);
  EXPECT_EQ(mismatch.code, 1);
  EXPECT_NE(mismatch.err.find("ratios"), std::string::npos) << mismatch.err;
  const auto nothing = cli({"eval", "-m", ckpt.string(), "--out",
                            scratch_dir("eval_resume_empty").string(), "--resume"});
  EXPECT_EQ(nothing.code, 1);
  EXPECT_NE(nothing.err.find("no interrupted run"), std::string::npos) << nothing.err;
}

// What lclm-evaluate measured, in lclm eval: needles at --lengths, copy
// tasks at --passages, each record graded and with its expected answer, and
// a recall table per task in results.md.
TEST(EvalCli, CopyTasksRunAtTheirPassageLengthsWithGradedRecords) {
  const fs::path ckpt = tiny_checkpoint("eval_copy");
  const fs::path out = scratch_dir("eval_copy_out");
  const auto run =
      cli({"eval", "-m", ckpt.string(), "--methods", "full,latent", "--ratios", "4", "--lengths",
           "256", "--passages", "16,24", "--tasks", "needle,reconstruction,numbers", "--samples",
           "2", "--out", out.string(), "-t", "1"});
  ASSERT_EQ(run.code, 0) << run.err;
  // (1 length x needle + 2 passages x 2 copy tasks) x 2 samples x 2 runs.
  EXPECT_NE(run.err.find("[20/20] numbers-24-1 latent x4"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("[5/20] reconstruction-16-0 full"), std::string::npos) << run.err;
  const nlohmann::json j = read_json_file(out / "results.json");
  ASSERT_EQ(j["records"].size(), 20u);
  EXPECT_EQ(j["config"]["passages"], nlohmann::json({16, 24}));
  std::map<std::string, std::string> passages;
  for (const nlohmann::json& r : j["records"]) {
    const EvalRecord rec = eval_record_from_json(r);
    EXPECT_EQ(eval_record_json(rec), r) << "a record's JSON round-trips";
    EXPECT_GE(rec.agreement, 0.0);
    EXPECT_LE(rec.agreement, 1.0);
    if (rec.task == RulerTask::SingleNeedle) {
      EXPECT_EQ(rec.length, 256u);
      EXPECT_TRUE(rec.needle_token.has_value());
      EXPECT_TRUE(rec.prefix_correct.has_value());
      continue;
    }
    ASSERT_EQ(rec.expected.size(), 1u);
    EXPECT_TRUE(rec.length == 16 || rec.length == 24) << rec.length;
    EXPECT_EQ(rec.score, rec.output == rec.expected[0] ? 1.0 : 0.0);
    EXPECT_DOUBLE_EQ(rec.agreement, rec.task == RulerTask::Numbers
                                        ? char_agreement(rec.output, rec.expected[0])
                                        : word_agreement(rec.output, rec.expected[0]));
    EXPECT_FALSE(rec.needle_token.has_value());
    // The same passage for full and latent.
    const auto [it, first] = passages.emplace(rec.prompt_id, rec.expected[0]);
    if (!first) {
      EXPECT_EQ(it->second, rec.expected[0]) << rec.prompt_id;
    }
  }
  EXPECT_EQ(passages.size(), 8u);
  const std::string md = cli::read_file((out / "results.md").string(), "results");
  for (const char* want : {"niah_single: runs answered in full / runs, digits of the number",
                           "reconstruction: runs answered in full / runs, words in place",
                           "numbers: runs answered in full / runs, characters in place",
                           "| passage tokens | full | latent 4x |", "| 24 |"}) {
    EXPECT_NE(md.find(want), std::string::npos) << want << "\n" << md;
  }
  // A copy task without a passage length is refused before any work.
  const auto none = cli({"eval", "-m", ckpt.string(), "--tasks", "numbers", "--passages", "0",
                         "--out", scratch_dir("eval_copy_none").string()});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("--passages"), std::string::npos) << none.err;
  EvalConfig config;
  config.checkpoint = ckpt;
  config.tasks = {RulerTask::Numbers};
  config.passages = {};
  EXPECT_NE(testing::error_of([&] { Evaluator evaluator(config); }).find("--passages"),
            std::string::npos);
}

}  // namespace
}  // namespace lclm
