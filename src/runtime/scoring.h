// How likely the decoder finds a given text: the log-probability of each of
// its tokens after everything before it, for perplexity and for scoring
// answers (the Python module's Model.logprobs, lclm's evaluation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "model/qwen3_model.h"

namespace lclm {

// inputs [ids.size(), hidden]: a sequence's input embeddings (latents where
// they sit). Returns, for i in [first, ids.size()), log p(ids[i] | positions
// < i) under the model's raw logits (temperature 1, no penalties): the
// log-softmax of position i-1's logits at ids[i]. first >= 1 (nothing
// predicts position 0). The sequence is read in chunks of `chunk`
// positions in one fresh KV cache, and logits are formed a few rows at a
// time, so memory stays at the cache plus [chunk, hidden] + [8, vocab].
std::vector<float> score_tokens(const Qwen3Model& model, std::span<const std::int32_t> ids,
                                const float* inputs, std::size_t first, std::size_t chunk = 512);

}  // namespace lclm
