// Splits the m rows of x a fused matvec multiplies into groups its kernels
// take at once: as many groups of kMax rows as fit, then one group of the
// rest. The group size is a compile-time constant, so a kernel keeps one
// set of accumulators per row in registers.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace lclm {

// Calls f(std::integral_constant<std::size_t, R>{}, i) for each group of R
// rows starting at row i. With kMax = 1 (Highway's scalable targets, whose
// vectors cannot form arrays) only groups of one are instantiated.
template <std::size_t kMax, typename F>
void for_row_groups(std::size_t m, F&& f) {
  std::size_t i = 0;
  for (; i + kMax <= m; i += kMax) f(std::integral_constant<std::size_t, kMax>{}, i);
  if constexpr (kMax > 1) {
    [&]<std::size_t... R>(std::index_sequence<R...>) {
      ((m - i == R + 1 ? f(std::integral_constant<std::size_t, R + 1>{}, i) : void()), ...);
    }
    (std::make_index_sequence<kMax - 1>{});
  }
}

}  // namespace lclm
