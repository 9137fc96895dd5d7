// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Qwen2/Qwen3).
//
// encode(): NFC normalisation, added/special tokens matched literally first
// (longest match), then the Qwen2 pre-tokenizer regex on the text between
// them, byte-to-unicode mapping, and BPE merges by rank.
// decode(): exact inverse on bytes: decode(encode(s)) == s for NFC input.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lclm {

class Tokenizer {
 public:
  // Throws lclm::Error naming the file when it is missing or malformed.
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  // Reads <dir>/tokenizer.json.
  static Tokenizer from_dir(const std::filesystem::path& model_dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<std::int32_t> encode(std::string_view text) const;
  // Concatenated bytes of the tokens; ids out of range throw lclm::Error.
  std::string decode(std::span<const std::int32_t> ids) const;
  // Raw bytes of one token (added tokens give their literal content).
  std::string token_bytes(std::int32_t id) const;
  // Id of a token given as it appears in the vocab or as an added token's content.
  std::optional<std::int32_t> token_id(std::string_view token) const;
  bool is_special(std::int32_t id) const;
  // One past the largest id (vocab + added tokens).
  std::size_t size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lclm
