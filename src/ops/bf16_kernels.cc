#include "ops/bf16_kernels.h"

// GCC 12's AVX-512 headers fill unused lanes from _mm512_undefined_*(),
// which its own -Wuninitialized then reports inside the intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <atomic>
#include <bit>
#include <cstdlib>
#include <string_view>

#include "format/dtype.h"

namespace lclm {
namespace {

#define LCLM_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// How far ahead of the current load the weight stream is prefetched: 4 KiB
// measured best on a 2-core Xeon VM streaming a 311 MB matrix (plain loads
// 16.5 GB/s, 1 KiB ahead 19.8, 4 KiB 24-27, 8 KiB 23-27; 2 or 4 rows per
// pass sharing the loads of x were slower).
constexpr std::size_t kPrefetchBytes = 4096;

// dot(row, hi + lo) over cols bf16 values: two accumulators, one per part.
LCLM_AVX512_BF16 float dot_row(const std::uint16_t* w, std::size_t cols, const std::uint16_t* hi,
                               const std::uint16_t* lo) {
  __m512 acc_hi = _mm512_setzero_ps(), acc_lo = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(w + i) + kPrefetchBytes, _MM_HINT_T0);
    const __m512bh wv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + i));
    acc_hi = _mm512_dpbf16_ps(acc_hi, wv, reinterpret_cast<__m512bh>(_mm512_loadu_si512(hi + i)));
    acc_lo = _mm512_dpbf16_ps(acc_lo, wv, reinterpret_cast<__m512bh>(_mm512_loadu_si512(lo + i)));
  }
  if (i < cols) {
    const __mmask32 mask = static_cast<__mmask32>((1ull << (cols - i)) - 1);
    const __m512bh wv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, w + i));
    acc_hi = _mm512_dpbf16_ps(acc_hi, wv,
                              reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, hi + i)));
    acc_lo = _mm512_dpbf16_ps(acc_lo, wv,
                              reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, lo + i)));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc_hi, acc_lo));
}

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

void matvec_bf16_split(const std::uint16_t* w, const std::uint16_t* x_hi, const std::uint16_t* x_lo,
                       std::size_t rows, std::size_t cols, float* y) {
  for (std::size_t r = 0; r < rows; ++r) y[r] = dot_row(w + r * cols, cols, x_hi, x_lo);
}

}  // namespace lclm

#pragma GCC diagnostic pop
