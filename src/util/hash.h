// Small non-cryptographic hashing shared by the seeded generators.
#pragma once

#include <cstdint>

namespace lclm {

// The splitmix64 finaliser: spreads every input bit over the output, so
// neighbouring seeds give unrelated values.
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace lclm
