// The graded scores of lclm-evaluate on known answers.
#include "trainer/evaluate.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace lclm::train {
namespace {

const char* kPrefix = "The special magic number for misty-harbor is";

TEST(KeepTasks, ClearsTheLengthsOfTheTasksNotListed) {
  RecallEvalOptions options;
  options.number_tokens = {32};
  keep_tasks(options, {"numbers"});
  EXPECT_TRUE(options.haystack_tokens.empty());
  EXPECT_TRUE(options.passage_tokens.empty());
  EXPECT_EQ(options.number_tokens, std::vector<std::size_t>{32});

  RecallEvalOptions both;
  const std::vector<std::size_t> haystacks = both.haystack_tokens, passages = both.passage_tokens;
  keep_tasks(both, {"reconstruction", "needle"});
  EXPECT_EQ(both.haystack_tokens, haystacks);
  EXPECT_EQ(both.passage_tokens, passages);
}

TEST(KeepTasks, RejectsUnknownTasksAndTasksWithoutLengths) {
  RecallEvalOptions options;
  EXPECT_THROW(keep_tasks(options, {"needles"}), Error);
  // numbers has no lengths unless asked for.
  EXPECT_THROW(keep_tasks(options, {"needle", "numbers"}), Error);
  EXPECT_FALSE(options.haystack_tokens.empty()) << "nothing is cleared when the list is wrong";
}

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

}  // namespace
}  // namespace lclm::train
