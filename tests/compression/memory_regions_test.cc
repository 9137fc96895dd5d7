#include "compression/memory_regions.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace lclm {
namespace {

std::string error_of(std::string_view prompt) {
  try {
    split_memory_regions(prompt);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted: " << prompt;
  return "";
}

TEST(MemoryRegions, SplitsPlainAndCompressedTextInOrder) {
  const auto s = split_memory_regions(
      "Read <|memory_start|>doc one<|memory_end|> and<|memory_start|><|memory_end|>"
      "<|memory_start|>doc two<|memory_end|>?");
  ASSERT_EQ(s.size(), 6u);
  EXPECT_FALSE(s[0].compressed);
  EXPECT_EQ(s[0].text, "Read ");
  EXPECT_TRUE(s[1].compressed);
  EXPECT_EQ(s[1].text, "doc one");
  EXPECT_EQ(s[2].text, " and");
  EXPECT_TRUE(s[3].compressed);
  EXPECT_EQ(s[3].text, "");
  EXPECT_TRUE(s[4].compressed);
  EXPECT_EQ(s[4].text, "doc two");
  EXPECT_EQ(s[5].text, "?");
}

TEST(MemoryRegions, PlainPromptIsOneSegmentAndEmptyPromptNone) {
  const auto s = split_memory_regions("just text");
  ASSERT_EQ(s.size(), 1u);
  EXPECT_FALSE(s[0].compressed);
  EXPECT_TRUE(split_memory_regions("").empty());
}

TEST(MemoryRegions, UnbalancedOrNestedMarkersAreErrorsWithOffsets) {
  EXPECT_NE(error_of("a<|memory_start|>b").find("at byte 1 has no <|memory_end|>"),
            std::string::npos);
  EXPECT_NE(error_of("a<|memory_end|>").find("at byte 1 has no <|memory_start|>"),
            std::string::npos);
  EXPECT_NE(error_of("<|memory_start|>x<|memory_start|>y<|memory_end|>").find("cannot nest"),
            std::string::npos);
  EXPECT_NE(error_of("x<|memory|>").find("<|memory|> at byte 1"), std::string::npos);
}

TEST(MemoryRegions, ALatentSlotIsASegmentOnlyWhenSlotsAreAllowed) {
  const std::string prompt =
      "Q<|memory_start|><|memory|><|memory_end|>A<|memory_start|>x<|memory_end|>";
  EXPECT_NE(error_of(prompt).find("<|memory|> at byte 17"), std::string::npos);
  const auto s = split_memory_regions(prompt, true);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_TRUE(s[1].compressed);
  EXPECT_TRUE(s[1].slot);
  EXPECT_EQ(s[1].text, "");
  EXPECT_FALSE(s[3].slot);
  EXPECT_EQ(s[3].text, "x");
  // Only a region that is exactly the slot: <|memory|> anywhere else is still refused.
  for (const char* bad : {"<|memory_start|> <|memory|><|memory_end|>",
                          "<|memory_start|><|memory|>x<|memory_end|>", "a<|memory|>"}) {
    EXPECT_THROW(split_memory_regions(bad, true), Error) << bad;
  }
}

TEST(MemoryRegions, PlaceholderPromptRepeatsTheSlotPerLatent) {
  const auto s =
      split_memory_regions("A<|memory_start|>long<|memory_end|>B<|memory_start|>e<|memory_end|>");
  EXPECT_EQ(placeholder_prompt(s, {3, 0}),
            "A<|memory_start|><|memory|><|memory|><|memory|><|memory_end|>B"
            "<|memory_start|><|memory_end|>");
  EXPECT_THROW(placeholder_prompt(s, {3}), Error);
}

}  // namespace
}  // namespace lclm
