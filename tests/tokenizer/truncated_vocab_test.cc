// The cut-down Qwen3 vocabulary that small models use: kept ids unchanged,
// any text still tokenized and decoded back exactly, added tokens renumbered
// after the kept ones, and clear errors.
#include "tokenizer/truncated_vocab.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "core/test_models.h"
#include "format/json_file.h"
#include "tokenizer/tokenizer.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

constexpr std::int64_t kVocab = 1024;

class TruncatedVocabTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(testing::scratch_dir("truncated_vocab"));
    full_ = new Tokenizer(Tokenizer::from_dir(testing::qwen3_tokenizer_dir()));
    size_ = write_truncated_tokenizer(testing::qwen3_tokenizer_dir(), *dir_, kVocab);
    cut_ = new Tokenizer(Tokenizer::from_dir(*dir_));
  }
  static void TearDownTestSuite() {
    delete cut_;
    delete full_;
    delete dir_;
  }
  static fs::path* dir_;
  static Tokenizer* full_;
  static Tokenizer* cut_;
  static std::int64_t size_;
};
fs::path* TruncatedVocabTest::dir_ = nullptr;
Tokenizer* TruncatedVocabTest::full_ = nullptr;
Tokenizer* TruncatedVocabTest::cut_ = nullptr;
std::int64_t TruncatedVocabTest::size_ = 0;

TEST_F(TruncatedVocabTest, AddedTokensFollowTheKeptOnesInTheirOrder) {
  // Qwen3 has 26 added tokens, <|endoftext|> first and <|im_end|> third.
  EXPECT_EQ(size_, kVocab + 26);
  EXPECT_EQ(cut_->size(), static_cast<std::size_t>(size_));
  EXPECT_EQ(cut_->token_id("<|endoftext|>"), kVocab);
  EXPECT_EQ(cut_->token_id("<|im_end|>"), kVocab + 2);
  EXPECT_EQ(full_->token_id("<|im_end|>"), 151645);
}

TEST_F(TruncatedVocabTest, EveryTextRoundTripsWithKeptIdsOnly) {
  const std::string texts[] = {
      "The special magic number for misty-harbor is 4821937.",
      "  GNU GENERAL PUBLIC LICENSE\n\tVersion 3, 29 June 2007 — naïve café 東京 🙂",
      "<|im_start|>user\nRepeat it.<|im_end|>\n",
  };
  for (const std::string& text : texts) {
    const std::vector<std::int32_t> ids = cut_->encode(text);
    for (std::int32_t id : ids) {
      const bool special = id >= kVocab;
      EXPECT_TRUE(id < kVocab || (special && id < size_)) << id;
    }
    EXPECT_EQ(cut_->decode(ids), text);
    EXPECT_GE(ids.size(), full_->encode(text).size());
  }
}

TEST_F(TruncatedVocabTest, TextTheFullTokenizerCoversWithKeptIdsIsTokenizedIdentically) {
  // A full-vocabulary tokenization that uses only ids below the cut applied
  // merges of rank below the cut only, so the cut tokenizer repeats it.
  const auto kept_only = [](const std::vector<std::int32_t>& ids) {
    return std::all_of(ids.begin(), ids.end(), [](std::int32_t id) { return id < kVocab; });
  };
  // The words of a sentence (each with its leading space) that the full
  // tokenizer writes with kept ids only.
  std::string text;
  int words = 0;
  for (const char* word :
       {" the",     " license",    " and",          " software", " copyright", " any", " later",
        " version", " permission", " distribution", " of",       " in",        " to",  " is",
        " for",     " on",         " with",         " that",     " it",        " or"}) {
    if (kept_only(full_->encode(word))) {
      text += word;
      ++words;
    }
  }
  ASSERT_GE(words, 8) << text;
  const std::vector<std::int32_t> full = full_->encode(text);
  ASSERT_TRUE(kept_only(full));
  EXPECT_EQ(cut_->encode(text), full);
}

TEST_F(TruncatedVocabTest, RejectsSizesOutsideTheVocabulary) {
  const fs::path out = testing::scratch_dir("truncated_vocab_bad");
  EXPECT_NE(error_of([&] {
              write_truncated_tokenizer(testing::qwen3_tokenizer_dir(), out, 256);
            }).find("give 257..151643"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_truncated_tokenizer(testing::qwen3_tokenizer_dir(), out, 200000);
            }).find("has 151643"),
            std::string::npos);
}

TEST_F(TruncatedVocabTest, RejectsMergesOutOfIdOrder) {
  // Swap two merges: merge 0 no longer makes token 256.
  nlohmann::json j = read_json_file(testing::qwen3_tokenizer_dir() / "tokenizer.json");
  std::swap(j["model"]["merges"][0], j["model"]["merges"][1]);
  const fs::path in = testing::scratch_dir("truncated_vocab_swapped");
  write_text_file(in / "tokenizer.json", j.dump());
  EXPECT_NE(error_of([&] {
              write_truncated_tokenizer(in, testing::scratch_dir("truncated_vocab_out"), 1024);
            }).find("merge 0 does not make token 256"),
            std::string::npos);
}

}  // namespace
}  // namespace lclm
