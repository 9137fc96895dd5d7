#include "ops/bf16_kernels.h"

#include <atomic>
#include <bit>
#include <cstdlib>
#include <string_view>

#include "format/dtype.h"
#include "ops/avx512_intrinsics.h"

namespace lclm {
namespace {

std::atomic<bool> native_wanted{[] {
  const char* env = std::getenv("LCLM_NATIVE_BF16");
  return !(env && std::string_view(env) == "0");
}()};

// split_bf16 of x[0..n) 16 values at a time; returns how many it split.
LCLM_AVX512_BF16 std::size_t split_avx512(const float* x, std::size_t n, std::uint16_t* hi,
                                          std::uint16_t* lo) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m256bh h = _mm512_cvtneps_pbh(v);
    const __m512 hv = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(h)), 16));
    const __m256bh l = _mm512_cvtneps_pbh(_mm512_sub_ps(v, hv));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + i), reinterpret_cast<__m256i>(h));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + i), reinterpret_cast<__m256i>(l));
  }
  return i;
}

}  // namespace

bool cpu_has_avx512_bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return has;
}

bool native_bf16_enabled() {
  return native_wanted.load(std::memory_order_relaxed) && cpu_has_avx512_bf16();
}

void set_native_bf16(bool on) {
  native_wanted.store(on, std::memory_order_relaxed);
}

void split_bf16(const float* x, std::size_t n, std::uint16_t* hi, std::uint16_t* lo) {
  for (std::size_t i = cpu_has_avx512_bf16() ? split_avx512(x, n, hi, lo) : 0; i < n; ++i) {
    hi[i] = f32_to_bf16(x[i]);
    lo[i] = f32_to_bf16(x[i] - bf16_to_f32(hi[i]));
  }
}

}  // namespace lclm
