// Byte-pair encoding of one pre-tokenized word: start from one symbol per
// byte and repeatedly apply the merge of lowest rank, leftmost first, as the
// Hugging Face tokenizers BPE model does.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lclm::tokenizer_detail {

class BytePairEncoder {
 public:
  struct Merge {
    std::int32_t rank;
    std::int32_t merged_id;
  };
  // Keyed by pair_key(left id, right id).
  using MergeTable = std::unordered_map<std::uint64_t, Merge>;

  static std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
           static_cast<std::uint32_t>(right);
  }

  // Buffers reused across the words of one encode() call, so that encoding a
  // word does not allocate.
  class Workspace {
   private:
    friend class BytePairEncoder;
    struct Symbol {
      std::int32_t id;  // -1 once merged into its left neighbour
      std::int32_t prev;
      std::int32_t next;
    };
    struct Candidate {
      std::int32_t rank;
      std::int32_t pos;  // index of the left symbol
      std::int32_t left_id;
      std::int32_t right_id;
      std::int32_t merged_id;
    };
    std::vector<Symbol> symbols_;
    std::vector<Candidate> queue_;
  };

  // byte_ids[b] is the id of the single-byte token for byte b.
  BytePairEncoder(const std::array<std::int32_t, 256>& byte_ids, MergeTable merges);

  // Appends the ids of `word` (raw bytes, non-empty) to `ids`.
  void encode_word(std::string_view word, Workspace& workspace,
                   std::vector<std::int32_t>& ids) const;

 private:
  void push_candidate(Workspace& workspace, std::int32_t pos, std::int32_t left_id,
                      std::int32_t right_id) const;

  std::array<std::int32_t, 256> byte_ids_;
  MergeTable merges_;
};

}  // namespace lclm::tokenizer_detail
