#include "tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <utility>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace lclm {

using nlohmann::json;
using tokenizer_detail::AddedTokenMatcher;
using tokenizer_detail::BytePairEncoder;
using tokenizer_detail::Normalizer;
using tokenizer_detail::RegexSplitter;

namespace {

enum class TokenKind : std::uint8_t { kUnused, kVocab, kAdded, kSpecial };

struct AddedToken {
  std::string content;
  std::int32_t id;
  bool special;
};

// Reads the parts of tokenizer.json that encoding and decoding depend on, and
// rejects with a message naming the file whatever would make them differ
// from Hugging Face tokenizers.
class TokenizerJsonReader {
 public:
  explicit TokenizerJsonReader(std::filesystem::path file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(file_.string() + ": " + what);
  }

  json parse() const {
    const MappedFile mapped(file_);
    const auto bytes = mapped.bytes();
    try {
      return json::parse(bytes.begin(), bytes.end());
    } catch (const json::parse_error& e) {
      fail(std::string("invalid JSON: ") + e.what());
    }
  }

  const json& member(const json& object, const std::string& key, const std::string& name) const {
    const auto it = object.find(key);
    if (it == object.end()) fail("missing " + name);
    return *it;
  }

  const json& member(const json& object, const std::string& key, json::value_t type,
                     const std::string& name) const {
    const json& value = member(object, key, name);
    if (value.type() != type) fail(name + " has type " + value.type_name());
    return value;
  }

  // object[key] as a string, or `fallback` when absent or null.
  std::string string_or(const json& object, const std::string& key, const std::string& fallback,
                        const std::string& name) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_string()) fail(name + " has type " + it->type_name());
    return it->get<std::string>();
  }

  bool bool_or(const json& object, const std::string& key, bool fallback,
               const std::string& name) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(name + " has type " + it->type_name());
    return it->get<bool>();
  }

  static bool is_token_id(const json& value) {
    return value.is_number_integer() && value.get<std::int64_t>() >= 0 &&
           value.get<std::int64_t>() < std::numeric_limits<std::int32_t>::max();
  }

  std::int32_t token_id(const json& value, const std::string& name) const {
    if (!is_token_id(value)) fail(name + " is not a valid token id: " + value.dump());
    return value.get<std::int32_t>();
  }

  Normalizer::Form normalizer(const json& root) const {
    const auto it = root.find("normalizer");
    if (it == root.end() || it->is_null()) return Normalizer::Form::kNone;
    const std::string type = string_or(*it, "type", "", "normalizer.type");
    if (type == "NFC") return Normalizer::Form::kNfc;
    if (type == "NFD") return Normalizer::Form::kNfd;
    if (type == "NFKC") return Normalizer::Form::kNfkc;
    if (type == "NFKD") return Normalizer::Form::kNfkd;
    fail("unsupported normalizer \"" + type + "\" (supported: null, NFC, NFD, NFKC, NFKD)");
  }

  // The Split regex of the pre_tokenizer, or none when the text is not split.
  // Byte-level BPE needs a ByteLevel step that does no splitting of its own.
  std::optional<RegexSplitter> pre_tokenizer(const json& root) const {
    const json& pre_tokenizer =
        member(root, "pre_tokenizer", json::value_t::object, "pre_tokenizer");
    std::vector<const json*> steps;
    if (string_or(pre_tokenizer, "type", "", "pre_tokenizer.type") == "Sequence") {
      for (const json& step : member(pre_tokenizer, "pretokenizers", json::value_t::array,
                                     "pre_tokenizer.pretokenizers")) {
        steps.push_back(&step);
      }
    } else {
      steps.push_back(&pre_tokenizer);
    }

    std::optional<RegexSplitter> splitter;
    bool byte_level = false;
    for (const json* step : steps) {
      const std::string type = string_or(*step, "type", "", "pre_tokenizer type");
      if (type == "Split") {
        if (splitter) fail("more than one Split pre_tokenizer is not supported");
        const std::string behavior = string_or(*step, "behavior", "", "Split behavior");
        if (behavior != "Isolated") fail("unsupported Split behavior \"" + behavior + "\"");
        if (bool_or(*step, "invert", false, "Split invert")) {
          fail("inverted Split is not supported");
        }
        const json& pattern = member(*step, "pattern", json::value_t::object, "Split pattern");
        if (pattern.contains("Regex")) {
          splitter.emplace(string_or(pattern, "Regex", "", "Split pattern.Regex"), false,
                           file_.string());
        } else if (pattern.contains("String")) {
          splitter.emplace(string_or(pattern, "String", "", "Split pattern.String"), true,
                           file_.string());
        } else {
          fail("Split pattern has neither Regex nor String");
        }
      } else if (type == "ByteLevel") {
        // Hugging Face's defaults when the keys are absent.
        if (bool_or(*step, "add_prefix_space", true, "ByteLevel add_prefix_space")) {
          fail("ByteLevel add_prefix_space=true is not supported");
        }
        if (bool_or(*step, "use_regex", true, "ByteLevel use_regex")) {
          fail("ByteLevel use_regex=true is not supported; give the regex as a Split");
        }
        byte_level = true;
      } else {
        fail("unsupported pre_tokenizer \"" + type + "\" (supported: Split, ByteLevel)");
      }
    }
    if (!byte_level) fail("pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
    return splitter;
  }

  std::unordered_map<std::string, std::int32_t> vocab(const json& model) const {
    const json& vocab = member(model, "vocab", json::value_t::object, "model.vocab");
    std::unordered_map<std::string, std::int32_t> ids;
    ids.reserve(vocab.size());
    for (const auto& [token, id] : vocab.items()) {
      if (!is_token_id(id)) {
        fail("model.vocab[\"" + token + "\"] is not a valid token id: " + id.dump());
      }
      ids.emplace(token, id.get<std::int32_t>());
    }
    return ids;
  }

  std::array<std::int32_t, 256> byte_ids(
      const std::unordered_map<std::string, std::int32_t>& vocab) const {
    std::array<std::int32_t, 256> ids{};
    for (int byte = 0; byte < 256; ++byte) {
      const std::string token = tokenizer_detail::byte_level_char(static_cast<std::uint8_t>(byte));
      const auto it = vocab.find(token);
      if (it == vocab.end()) {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02X", byte);
        fail("model.vocab has no token \"" + token + "\" for byte " + hex +
             "; byte-level BPE needs all 256");
      }
      ids[byte] = it->second;
    }
    return ids;
  }

  BytePairEncoder::MergeTable merges(
      const json& model, const std::unordered_map<std::string, std::int32_t>& vocab) const {
    const json& merges = member(model, "merges", json::value_t::array, "model.merges");
    BytePairEncoder::MergeTable table;
    table.reserve(merges.size());
    auto id_of = [&](const std::string& token, std::size_t rank) {
      const auto it = vocab.find(token);
      if (it == vocab.end()) {
        fail("model.merges[" + std::to_string(rank) + "] uses \"" + token +
             "\", which is not in model.vocab");
      }
      return it->second;
    };
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const json& merge = merges[rank];
      std::string left;
      std::string right;
      if (merge.is_string()) {
        // Tokens never contain a space (byte-level spells it 'Ġ').
        const auto& text = merge.get_ref<const std::string&>();
        const auto space = text.find(' ');
        if (space == std::string::npos) {
          fail("model.merges[" + std::to_string(rank) + "] is not \"left right\": " + text);
        }
        left = text.substr(0, space);
        right = text.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        fail("model.merges[" + std::to_string(rank) +
             "] is neither \"left right\" nor [left, right]");
      }
      // A repeated pair takes its last rank, as in Hugging Face tokenizers.
      const std::int32_t left_id = id_of(left, rank);
      const std::int32_t right_id = id_of(right, rank);
      const std::int32_t merged_id = id_of(left + right, rank);
      table.insert_or_assign(BytePairEncoder::pair_key(left_id, right_id),
                             BytePairEncoder::Merge{static_cast<std::int32_t>(rank), merged_id});
    }
    return table;
  }

  // Added tokens are matched literally in the raw text whatever their
  // normalized/lstrip/rstrip/single_word flags say; Qwen sets all of them false.
  std::vector<AddedToken> added_tokens(const json& root) const {
    std::vector<AddedToken> tokens;
    const auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return tokens;
    if (!it->is_array()) fail("added_tokens has type " + std::string(it->type_name()));
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& token = (*it)[i];
      const std::string name = "added_tokens[" + std::to_string(i) + "]";
      if (!token.is_object()) fail(name + " is not an object");
      AddedToken added{string_or(token, "content", "", name + ".content"),
                       token_id(member(token, "id", name + ".id"), name + ".id"),
                       bool_or(token, "special", false, name + ".special")};
      if (added.content.empty()) fail(name + " has no content");
      tokens.push_back(std::move(added));
    }
    return tokens;
  }

  // Settings of the BPE model that would change its output and that a
  // byte-level Qwen/GPT-2 style tokenizer never uses.
  void check_model_options(const json& model) const {
    const std::string type = string_or(model, "type", "BPE", "model.type");
    if (type != "BPE") fail("unsupported model type \"" + type + "\" (only BPE)");
    const auto dropout = model.find("dropout");
    if (dropout != model.end() && !dropout->is_null() &&
        !(dropout->is_number() && dropout->get<double>() == 0.0)) {
      fail("BPE dropout is not supported");
    }
    if (!string_or(model, "continuing_subword_prefix", "", "model.continuing_subword_prefix")
             .empty() ||
        !string_or(model, "end_of_word_suffix", "", "model.end_of_word_suffix").empty()) {
      fail("BPE continuing_subword_prefix / end_of_word_suffix are not supported");
    }
  }

 private:
  std::filesystem::path file_;
};

}  // namespace

struct Tokenizer::Impl {
  std::filesystem::path file;
  Normalizer normalizer;
  std::optional<RegexSplitter> splitter;
  BytePairEncoder bpe;
  AddedTokenMatcher added_token_matcher;
  // When set, a word that is itself in the vocabulary maps to that token
  // without merging.
  bool ignore_merges;
  std::unordered_map<std::string, std::int32_t> vocab;
  std::unordered_map<std::string, std::int32_t> added_token_ids;
  std::vector<std::string> token_bytes;  // by id
  std::vector<TokenKind> token_kinds;    // by id

  // Buffers reused across the segments and words of one encode() call.
  struct Workspace {
    std::string normalized;
    std::vector<std::string_view> pieces;
    BytePairEncoder::Workspace bpe;
  };

  void encode_word(std::string_view word, Workspace& workspace,
                   std::vector<std::int32_t>& ids) const {
    if (ignore_merges) {
      const auto it = vocab.find(tokenizer_detail::to_byte_level(word));
      if (it != vocab.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    bpe.encode_word(word, workspace.bpe, ids);
  }

  // Encodes text that holds no added token.
  void encode_segment(std::string_view segment, Workspace& workspace,
                      std::vector<std::int32_t>& ids) const {
    const std::string_view normalized = normalizer.apply(segment, workspace.normalized);
    if (!splitter) {
      if (!normalized.empty()) encode_word(normalized, workspace, ids);
      return;
    }
    splitter->split(normalized, workspace.pieces);
    for (const std::string_view piece : workspace.pieces) encode_word(piece, workspace, ids);
  }

  void check_id(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= token_kinds.size() ||
        token_kinds[id] == TokenKind::kUnused) {
      throw Error(file.string() + ": token id " + std::to_string(id) +
                  " is not in the vocabulary (size " + std::to_string(token_kinds.size()) + ")");
    }
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_dir(const std::filesystem::path& model_dir) {
  return from_file(model_dir / "tokenizer.json");
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  const TokenizerJsonReader reader(tokenizer_json);
  const json root = reader.parse();
  if (!root.is_object()) reader.fail("top level is not a JSON object");

  const json& model = reader.member(root, "model", json::value_t::object, "model");
  reader.check_model_options(model);
  auto vocab = reader.vocab(model);
  BytePairEncoder bpe(reader.byte_ids(vocab), reader.merges(model, vocab));

  const std::vector<AddedToken> added_tokens = reader.added_tokens(root);

  std::size_t size = 0;
  for (const auto& [token, id] : vocab) size = std::max<std::size_t>(size, id + 1);
  for (const auto& token : added_tokens) size = std::max<std::size_t>(size, token.id + 1);
  // The tables are indexed by id, so a stray huge id would allocate gigabytes
  // (one of 2e9 asked 64 GB); real vocabularies number their tokens densely.
  const std::size_t entries = vocab.size() + added_tokens.size();
  if (size > 2 * entries + 1024) {
    reader.fail("token id " + std::to_string(size - 1) + " is far past the " +
                std::to_string(entries) +
                " tokens the file defines (ids may leave gaps, but the largest must be below "
                "2 x tokens + 1024)");
  }
  std::vector<std::string> token_bytes(size);
  std::vector<TokenKind> token_kinds(size, TokenKind::kUnused);
  for (const auto& [token, id] : vocab) {
    // A token outside the byte-level alphabet stands for its own UTF-8, as in
    // Hugging Face's ByteLevel decoder.
    token_bytes[id] = tokenizer_detail::from_byte_level(token).value_or(token);
    token_kinds[id] = TokenKind::kVocab;
  }
  std::vector<AddedTokenMatcher::Token> matcher_tokens;
  std::unordered_map<std::string, std::int32_t> added_token_ids;
  for (const auto& token : added_tokens) {
    token_bytes[token.id] = token.content;
    token_kinds[token.id] = token.special ? TokenKind::kSpecial : TokenKind::kAdded;
    matcher_tokens.push_back({token.content, token.id});
    added_token_ids.insert_or_assign(token.content, token.id);
  }

  const bool ignore_merges = reader.bool_or(model, "ignore_merges", false, "model.ignore_merges");
  return Tokenizer(std::make_unique<Impl>(Impl{
      .file = tokenizer_json,
      .normalizer = Normalizer(reader.normalizer(root)),
      .splitter = reader.pre_tokenizer(root),
      .bpe = std::move(bpe),
      .added_token_matcher = AddedTokenMatcher(std::move(matcher_tokens)),
      .ignore_merges = ignore_merges,
      .vocab = std::move(vocab),
      .added_token_ids = std::move(added_token_ids),
      .token_bytes = std::move(token_bytes),
      .token_kinds = std::move(token_kinds),
  }));
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3);
  Impl::Workspace workspace;
  std::size_t segment_begin = 0;
  while (segment_begin < text.size()) {
    const auto added = impl_->added_token_matcher.find(text, segment_begin);
    const std::size_t segment_end = added ? added->begin : text.size();
    impl_->encode_segment(text.substr(segment_begin, segment_end - segment_begin), workspace, ids);
    if (!added) break;
    ids.push_back(added->id);
    segment_begin = added->begin + added->length;
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids) const {
  std::string bytes;
  for (const std::int32_t id : ids) {
    impl_->check_id(id);
    bytes += impl_->token_bytes[id];
  }
  return bytes;
}

std::string Tokenizer::token_bytes(std::int32_t id) const {
  impl_->check_id(id);
  return impl_->token_bytes[id];
}

std::optional<std::int32_t> Tokenizer::token_id(std::string_view token) const {
  const std::string key(token);
  if (const auto it = impl_->added_token_ids.find(key); it != impl_->added_token_ids.end()) {
    return it->second;
  }
  if (const auto it = impl_->vocab.find(key); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_special(std::int32_t id) const {
  return id >= 0 && static_cast<std::size_t>(id) < impl_->token_kinds.size() &&
         impl_->token_kinds[id] == TokenKind::kSpecial;
}

std::size_t Tokenizer::size() const {
  return impl_->token_kinds.size();
}

namespace {

// Bytes of the ill-formed sequence at p (n > 0 bytes left) that one U+FFFD
// replaces: its maximal subpart, the longest start of a well-formed
// sequence (Unicode's practice, chapter 3, "U+FFFD Substitution of Maximal
// Subparts", as Python's errors="replace", browsers and the server's JSON
// do), or the one byte that starts none.
std::size_t maximal_subpart(const unsigned char* p, std::size_t n) {
  const unsigned char lead = p[0];
  std::size_t need = 0;                   // continuation bytes the lead calls for
  unsigned char low = 0x80, high = 0xBF;  // the range of the first of them
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;  // nothing past U+10FFFF
  }
  std::size_t length = 1;
  while (length <= need && length < n) {
    const unsigned char c = p[length];
    const bool fits = length == 1 ? c >= low && c <= high : c >= 0x80 && c <= 0xBF;
    if (!fits) break;
    ++length;
  }
  return length;
}

}  // namespace

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* cursor = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  auto remaining = static_cast<utf8proc_ssize_t>(text.size());
  while (remaining > 0) {
    utf8proc_int32_t code_point = 0;
    const utf8proc_ssize_t length = utf8proc_iterate(cursor, remaining, &code_point);
    if (length <= 0) {
      const std::size_t skip = maximal_subpart(cursor, static_cast<std::size_t>(remaining));
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal subpart
      cursor += skip;
      remaining -= static_cast<utf8proc_ssize_t>(skip);
      continue;
    }
    out.append(reinterpret_cast<const char*>(cursor), static_cast<std::size_t>(length));
    cursor += length;
    remaining -= length;
  }
  return out;
}

}  // namespace lclm
