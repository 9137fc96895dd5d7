#include "yardsticks.h"

// GCC 12's AVX-512 headers fill unused lanes from _mm512_undefined_*(),
// which its own -Wuninitialized then reports inside the intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ops/bf16_kernels.h"
#include "ops/quant_kernels.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "yardsticks.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace lclm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sum of p[0..n): four accumulators, one prefetch 4 KiB ahead per pass of
// four vectors, so every page is requested before the loads reach it (the
// engine's decode kernel prefetches each line 4 KiB ahead).
float SumFloats(const float* p, std::size_t n) {
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  std::size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    hwy::Prefetch(p + i + 1024);
    s0 = hn::Add(s0, hn::LoadU(d, p + i));
    s1 = hn::Add(s1, hn::LoadU(d, p + i + N));
    s2 = hn::Add(s2, hn::LoadU(d, p + i + 2 * N));
    s3 = hn::Add(s3, hn::LoadU(d, p + i + 3 * N));
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace HWY_NAMESPACE
}  // namespace lclm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lclm {
namespace {

// 24 independent sums, at least the instruction's latency times its
// throughput on the cores we know, so the loop runs at the throughput (12
// sums ran at half of it on Zen 5, which issues two a cycle); a and b come
// from the caller so the compiler cannot fold them.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) float spin_bf16_dots(
    std::size_t iterations, std::uint32_t a_pair, std::uint32_t b_pair) {
  constexpr int kSums = 24;
  const auto a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a_pair)));
  const auto b = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(b_pair)));
  __m512 sums[kSums];
  for (auto& s : sums) s = _mm512_setzero_ps();
  for (std::size_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 24
    for (auto& s : sums) s = _mm512_dpbf16_ps(s, a, b);
  }
  __m512 total = _mm512_setzero_ps();
  for (const auto& s : sums) total = _mm512_add_ps(total, s);
  return _mm512_reduce_add_ps(total);
}

// The same with `vpdpbusd`: 64 products of unsigned and signed bytes into
// 16 int32 lanes per instruction.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) int spin_int8_dots(
    std::size_t iterations, std::uint32_t a_quad, std::uint32_t b_quad) {
  constexpr int kSums = 24;
  const __m512i a = _mm512_set1_epi32(static_cast<int>(a_quad));
  const __m512i b = _mm512_set1_epi32(static_cast<int>(b_quad));
  __m512i sums[kSums];
  for (auto& s : sums) s = _mm512_setzero_si512();
  for (std::size_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 24
    for (auto& s : sums) s = _mm512_dpbusd_epi32(s, a, b);
  }
  __m512i total = _mm512_setzero_si512();
  for (const auto& s : sums) total = _mm512_add_epi32(total, s);
  return _mm512_reduce_add_epi32(total);
}

// Best of `repeats` timed passes (after one that starts the threads) of
// `spin` on `threads` threads; `spin` returns a value the sink keeps.
template <typename Spin>
double best_pass_seconds(int threads, int repeats, Spin spin) {
  double best = 1e30;
  long long sink = 0;
  for (int r = 0; r < repeats + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += static_cast<long long>(spin());
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, dt);
  }
  return sink == -1 ? 1e30 : best;  // the sums are used, so the loops stay
}

}  // namespace

HWY_EXPORT(SumFloats);

double measure_read_bandwidth(int threads, int repeats, std::size_t bytes) {
  const std::size_t n = bytes / sizeof(float);
  std::vector<float> buffer(n);
  // Each thread first touches the part it reads.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::size_t i = 0; i < n; ++i) buffer[i] = 1.0f;
  double best = 1e30;
  float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      const auto t = static_cast<std::size_t>(omp_get_thread_num());
      const auto nt = static_cast<std::size_t>(omp_get_num_threads());
      const std::size_t begin = n * t / nt, end = n * (t + 1) / nt;
      sink += HWY_DYNAMIC_DISPATCH(SumFloats)(buffer.data() + begin, end - begin);
    }
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // The sum is used, so the reads cannot be optimised away.
  return sink < 0 ? 0.0 : static_cast<double>(n * sizeof(float)) / best / 1e9;
}

double measure_sgemm_gflops(int repeats) {
  const int n = 2048;
  const std::vector<float> a(static_cast<std::size_t>(n) * n, 1.0f), b(a);
  std::vector<float> c(a.size());
  double best = 1e30;
  for (int r = 0; r < repeats + 1; ++r) {  // the first call starts OpenBLAS's threads
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, dt);
  }
  return 2.0 * n * n * n / best / 1e9;
}

double measure_bf16_dot_gflops(int threads, int repeats) {
  if (!cpu_has_avx512_bf16()) return 0;
  // 24 * 2^20 instructions a thread, about 3.5 ms on Zen 5 (two a cycle):
  // short passes, many of them, so that the best one ran while no other
  // process held the cores.
  constexpr std::size_t kIterations = std::size_t{1} << 20;
  constexpr std::uint32_t kOnes = 0x3f803f80;  // the bf16 pair (1, 1)
  const double best =
      best_pass_seconds(threads, repeats, [] { return spin_bf16_dots(kIterations, kOnes, kOnes); });
  const double flops = 64.0 * 24.0 * static_cast<double>(kIterations) * threads;
  return flops / best / 1e9;
}

double measure_int8_dot_gops(int threads, int repeats) {
  if (!cpu_has_avx512_vnni()) return 0;
  constexpr std::size_t kIterations = std::size_t{1} << 20;
  constexpr std::uint32_t kOnes = 0x01010101;  // four bytes of 1
  const double best =
      best_pass_seconds(threads, repeats, [] { return spin_int8_dots(kIterations, kOnes, kOnes); });
  const double ops = 128.0 * 24.0 * static_cast<double>(kIterations) * threads;
  return ops / best / 1e9;
}

}  // namespace lclm
#endif  // HWY_ONCE

#pragma GCC diagnostic pop
