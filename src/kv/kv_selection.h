// Which cache entries each KV-cache policy keeps, as pure functions of the
// entries' scores: the policies in kv_policy.h apply them per layer and kv
// head, and tests check them against brute-force references.
//
// Every function returns ascending indices into the entries 0 .. n-1, exactly
// min(budget, n) of them. Ties in a ranking go to the earlier entry.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace lclm {

// StreamingLLM: the first `sinks` entries (attention sinks) and the most
// recent budget - sinks.
std::vector<std::size_t> streaming_keep(std::size_t n, std::size_t sinks, std::size_t budget);

// H2O: the most recent budget / 2 entries and the budget - budget / 2 others
// with the largest accumulated attention (`scores`, one per entry).
std::vector<std::size_t> h2o_keep(std::span<const float> scores, std::size_t budget);

// SnapKV: the last `window` entries (the observation window, whose queries
// produced `scores`) and the budget - window earlier entries whose scores,
// average-pooled over `kernel` neighbours (zero padding, divided by kernel),
// are the largest.
std::vector<std::size_t> snapkv_keep(std::span<const float> scores, std::size_t window,
                                     std::size_t kernel, std::size_t budget);

// The `k` largest values' indices, ascending (ties: the earlier index).
std::vector<std::size_t> top_k_indices(std::span<const float> values, std::size_t k);

// PyramidKV's budgets for n_layers layers averaging `budget` entries: each
// layer keeps the window plus a share of n_layers * (budget - window) that
// falls linearly from the first layer to the last, the last getting
// (budget - window) / beta. The shares sum exactly to the total.
std::vector<std::size_t> pyramid_budgets(std::size_t n_layers, std::size_t budget,
                                         std::size_t window, double beta);

}  // namespace lclm
