#include "yardsticks.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

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

}  // namespace lclm
#endif  // HWY_ONCE
