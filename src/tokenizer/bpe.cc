#include "tokenizer/bpe.h"

#include <algorithm>
#include <utility>

namespace lclm::tokenizer_detail {
namespace {

// Orders the merge queue as a min-heap on (rank, position): among equal ranks
// the leftmost pair merges first, so "aaa" becomes "aa a".
template <typename Candidate>
bool merges_later(const Candidate& a, const Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

}  // namespace

BytePairEncoder::BytePairEncoder(const std::array<std::int32_t, 256>& byte_ids, MergeTable merges)
    : byte_ids_(byte_ids), merges_(std::move(merges)) {}

void BytePairEncoder::push_candidate(Workspace& workspace, std::int32_t pos, std::int32_t left_id,
                                     std::int32_t right_id) const {
  const auto merge = merges_.find(pair_key(left_id, right_id));
  if (merge == merges_.end()) return;
  workspace.queue_.push_back({merge->second.rank, pos, left_id, right_id, merge->second.merged_id});
  std::push_heap(workspace.queue_.begin(), workspace.queue_.end(),
                 merges_later<Workspace::Candidate>);
}

void BytePairEncoder::encode_word(std::string_view word, Workspace& workspace,
                                  std::vector<std::int32_t>& ids) const {
  const auto length = static_cast<std::int32_t>(word.size());
  auto& symbols = workspace.symbols_;
  auto& queue = workspace.queue_;
  symbols.resize(word.size());
  for (std::int32_t i = 0; i < length; ++i) {
    symbols[i] = {byte_ids_[static_cast<std::uint8_t>(word[i])], i - 1,
                  i + 1 < length ? i + 1 : -1};
  }
  queue.clear();
  for (std::int32_t i = 0; i + 1 < length; ++i) {
    push_candidate(workspace, i, symbols[i].id, symbols[i + 1].id);
  }

  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), merges_later<Workspace::Candidate>);
    const Workspace::Candidate candidate = queue.back();
    queue.pop_back();
    auto& left = symbols[candidate.pos];
    // A queued pair is stale once either side has merged with something else.
    if (left.id != candidate.left_id || left.next < 0 ||
        symbols[left.next].id != candidate.right_id) {
      continue;
    }
    auto& right = symbols[left.next];
    left.id = candidate.merged_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = candidate.pos;
    if (left.prev >= 0) push_candidate(workspace, left.prev, symbols[left.prev].id, left.id);
    if (left.next >= 0) push_candidate(workspace, candidate.pos, left.id, symbols[left.next].id);
  }

  for (std::int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace lclm::tokenizer_detail
