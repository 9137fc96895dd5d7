// Draws that depend only on a generator's raw output, so that seeded data
// (training examples, evaluation samples) is the same on every platform and
// standard library.
#pragma once

#include <cstddef>
#include <random>

namespace lclm {

// Uniform (up to the modulo's bias) in [0, n); 0 when n is 0.
inline std::size_t below(std::mt19937_64& rng, std::size_t n) {
  return n == 0 ? 0 : rng() % n;
}

}  // namespace lclm
