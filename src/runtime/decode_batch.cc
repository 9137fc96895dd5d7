#include "runtime/decode_batch.h"

#include <algorithm>
#include <exception>

namespace lclm {

void DecodeBatch::step(std::span<Generation* const> generations) {
  const auto H = static_cast<std::size_t>(model_.config().hidden_size);
  const auto V = static_cast<std::size_t>(model_.config().vocab_size);
  for (Generation* g : generations) {
    if (!g->prefilling()) continue;
    try {
      g->prefill_step();
    } catch (...) {
      g->fail(std::current_exception());
    }
    break;
  }

  // Fails every generation of a pass that threw: their caches are out of step.
  const auto fail_all = [&](std::exception_ptr e) {
    for (Generation* g : decoding_) g->fail(e);
    decoding_.clear();
  };
  decoding_.clear();
  for (Generation* g : generations) {
    if (!g->done() && !g->prefilling()) decoding_.push_back(g);
  }
  if (decoding_.empty()) return;
  std::size_t n = decoding_.size();
  x_.resize(n * H);
  logits_.resize(n * V);
  for (std::size_t i = 0; i < n; ++i) std::copy_n(decoding_[i]->row(), H, x_.data() + i * H);
  try {
    model_.logits(x_.data(), n, logits_.data());
  } catch (...) {
    return fail_all(std::current_exception());
  }

  // Those that go on embed their token into row(); one pass turns all of
  // them into the next hidden states.
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    Generation* g = decoding_[i];
    try {
      if (g->accept(logits_.data() + i * V)) decoding_[kept++] = g;
    } catch (...) {
      g->fail(std::current_exception());
    }
  }
  decoding_.resize(kept);
  n = kept;
  if (n == 0) return;
  sequences_.clear();
  for (std::size_t i = 0; i < n; ++i) {
    std::copy_n(decoding_[i]->row(), H, x_.data() + i * H);
    sequences_.push_back({&decoding_[i]->cache(), 1});
  }
  try {
    model_.forward(x_.data(), sequences_, AttentionMask::Causal);
  } catch (...) {
    return fail_all(std::current_exception());
  }
  for (std::size_t i = 0; i < n; ++i) {
    Generation* g = decoding_[i];
    std::copy_n(x_.data() + i * H, H, g->row());
    try {
      g->forwarded();
    } catch (...) {
      g->fail(std::current_exception());
    }
  }
}

}  // namespace lclm
