// Continuous batching: several generations, each on its own session, move
// forward together. A step reads the next prefill chunk of one generation
// still reading its prompt, then decodes one token for every generation past
// its prefill in one forward pass, which reads each weight once for all of
// them (decode is bound by the bytes of weights read, so N sequences cost
// little more than one). Generations join and leave between steps.
//
// A step reads one prefill_chunk (GenerationOptions) of a prompt: that is
// how long a new prompt holds up the others' next token. Up to
// kMatvecMaxRows generations decode together on the fused matvec, and each
// then gets bit for bit the tokens it would alone (the same chunks, the same
// logits, the same sampler seed); a larger batch runs the prefill kernels,
// which round differently.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "model/qwen3_model.h"
#include "runtime/session.h"
#include "util/aligned_vector.h"

namespace lclm {

class DecodeBatch {
 public:
  explicit DecodeBatch(const Qwen3Model& model) : model_(model) {}

  // One step over `generations` (none done; each on its own session of this
  // model; the first one still prefilling gets the step's chunk). A
  // generation whose step fails (its sampler, its callback, or the forward
  // pass it took part in) is done, and its finish() throws the error.
  void step(std::span<Generation* const> generations);

 private:
  const Qwen3Model& model_;
  AlignedVector<float> x_;  // the rows of one pass [n, hidden]
  std::vector<float> logits_;
  std::vector<Generation*> decoding_;
  std::vector<SequenceRows> sequences_;
};

}  // namespace lclm
