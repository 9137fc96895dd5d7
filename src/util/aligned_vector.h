// std::vector whose storage starts on a 64-byte cache line, for rows that
// vector kernels load in whole lines: a row straddling two lines costs two
// cache accesses per load (measured: an eight-row decode step took 101 ms
// with 16-byte-aligned activations, 72 ms with these; docs/benchmarks.md).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace lclm {

inline constexpr std::size_t kCacheLineBytes = 64;

template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U>
  constexpr CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLineBytes}));
  }
  void deallocate(T* p, std::size_t) noexcept {
    ::operator delete (p, std::align_val_t{kCacheLineBytes});
  }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
};

template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace lclm
