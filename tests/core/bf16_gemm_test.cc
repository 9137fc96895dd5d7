#include "ops/bf16_gemm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "format/dtype.h"
#include "format/quant_blocks.h"
#include "ops/bf16_kernels.h"
#include "ops/matmul.h"
#include "ops/onednn_matmul.h"
#include "test_models.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::random_vector;

// Sets the OpenMP thread count for one test, then puts it back.
class ThreadsScope {
 public:
  explicit ThreadsScope(int threads) : before_(omp_get_max_threads()) {
    omp_set_num_threads(threads);
  }
  ~ThreadsScope() { omp_set_num_threads(before_); }

 private:
  int before_;
};

const char* precision_name(Bf16Precision p) {
  return p == Bf16Precision::kSplit ? "split" : "rounded";
}

// m x k x n: m crosses the 12-row tiles and (530) the 512-row blocks; k is
// odd or not a multiple of 32, and 601 (301 pairs) crosses the 256-pair
// blocks, whose partial sums go through y; n is below one 32-column panel
// or leaves a tail of one or four columns.
class Bf16GemmTest
    : public ::testing::TestWithParam<std::tuple<std::size_t, std::size_t, std::size_t>> {};

// Against a double-precision sum over the bf16 values the kernel should
// multiply: W as stored, and x rounded to nearest even by the reference
// f32_to_bf16 (hi; lo = bf16(x - hi) when split). Every product of two bf16
// is exact in f32, so the only error is the f32 accumulation: each output
// adds t = k terms (2k split) one at a time (the sums pass through y between
// blocks of k unchanged), each addition rounding by at most 2^-24 of the sum
// so far, which is at most sum |terms|: the error is at most
// t * 2^-24 * sum |terms| (the recursive-summation bound). Rounding x any
// other way, or a wrong index, misses it by orders of magnitude. The 64
// values past y must stay untouched (the column tails are masked).
TEST_P(Bf16GemmTest, MatchesDoubleReferenceOnBf16Inputs) {
  if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16; gemm_bf16 needs it";
  const auto [m, k, n] = GetParam();
  std::vector<std::uint16_t> w(n * k);
  const std::vector<float> w_values = random_vector(n * k, static_cast<unsigned>(100 + k));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(w_values[i]);
  const std::vector<float> x = random_vector(m * k, static_cast<unsigned>(200 + m));
  constexpr float kGuard = -12345.0f;
  for (const Bf16Precision precision : {Bf16Precision::kSplit, Bf16Precision::kRounded}) {
    const bool split = precision == Bf16Precision::kSplit;
    for (const int threads : {1, 2}) {
      const ThreadsScope scope(threads);
      Bf16Rows rows;
      to_bf16_rows(x.data(), m, k, precision, rows);
      std::vector<float> y(m * n + 64, kGuard);
      gemm_bf16(rows, w.data(), n, y.data());
      for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
          double ref = 0, magnitude = 0;
          for (std::size_t c = 0; c < k; ++c) {
            const float xv = x[i * k + c];
            const std::uint16_t hi = f32_to_bf16(xv);
            const double wv = bf16_to_f32(w[j * k + c]);
            const double p_hi = double(bf16_to_f32(hi)) * wv;
            const double p_lo =
                split ? double(bf16_to_f32(f32_to_bf16(xv - bf16_to_f32(hi)))) * wv : 0.0;
            ref += p_hi + p_lo;
            magnitude += std::abs(p_hi) + std::abs(p_lo);
          }
          const double terms = split ? 2.0 * k : double(k);
          ASSERT_LE(std::abs(y[i * n + j] - ref), terms * std::ldexp(magnitude, -24))
              << precision_name(precision) << ", " << threads << " threads, y[" << i << ", " << j
              << "] = " << y[i * n + j] << " vs " << ref;
        }
      }
      for (std::size_t i = m * n; i < y.size(); ++i) {
        ASSERT_EQ(y[i], kGuard) << precision_name(precision) << ", written past y at " << i;
      }
    }
  }
}

std::string shape_name(const std::tuple<std::size_t, std::size_t, std::size_t>& shape) {
  return std::string("m") + std::to_string(std::get<0>(shape)) + "_k" +
         std::to_string(std::get<1>(shape)) + "_n" + std::to_string(std::get<2>(shape));
}

INSTANTIATE_TEST_SUITE_P(OddShapes, Bf16GemmTest,
                         ::testing::Combine(::testing::Values(1, 3, 17, 64, 130, 530),
                                            ::testing::Values(1, 30, 67, 601),
                                            ::testing::Values(5, 33, 100)),
                         [](const auto& param_info) { return shape_name(param_info.param); });

// q8_0 / q4_0 weights are widened and rounded to bf16 as their panels are
// packed: the product is bit for bit gemm_bf16's on those rounded weights
// (which the test above checks against a double reference), for k within
// one 256-pair block and across it (1056), tails of rows and columns, both
// precisions and 1 and 2 threads. k not whole blocks is refused.
TEST(Bf16Gemm, QuantizedWeightsGiveTheProductOfTheirBf16Rounding) {
  if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16; gemm_bf16 needs it";
  for (const DType type : {DType::Q8_0, DType::Q4_0}) {
    for (const std::size_t k : {32u, 96u, 1056u}) {
      for (const std::size_t n : {5u, 33u, 100u}) {
        const std::vector<float> w_values = random_vector(n * k, static_cast<unsigned>(7 + k + n));
        std::vector<std::uint8_t> wq(n * row_bytes(type, k));
        std::vector<std::uint16_t> w_rounded(n * k);
        std::vector<float> widened(k);
        for (std::size_t j = 0; j < n; ++j) {
          std::uint8_t* row = wq.data() + j * row_bytes(type, k);
          quantize_row(type, w_values.data() + j * k, k, row);
          dequantize_row(type, row, k, widened.data());
          for (std::size_t c = 0; c < k; ++c) w_rounded[j * k + c] = f32_to_bf16(widened[c]);
        }
        for (const std::size_t m : {1u, 17u, 130u, 530u}) {
          const std::vector<float> x = random_vector(m * k, static_cast<unsigned>(300 + m));
          for (const Bf16Precision precision : {Bf16Precision::kSplit, Bf16Precision::kRounded}) {
            for (const int threads : {1, 2}) {
              const ThreadsScope scope(threads);
              Bf16Rows rows;
              to_bf16_rows(x.data(), m, k, precision, rows);
              std::vector<float> want(m * n), got(m * n);
              gemm_bf16(rows, w_rounded.data(), n, want.data());
              gemm_bf16_quantized(rows, type, wq.data(), n, got.data());
              ASSERT_EQ(got, want)
                  << dtype_name(type) << " m " << m << " k " << k << " n " << n << " "
                  << precision_name(precision) << ", " << threads << " threads";
            }
          }
        }
      }
    }
  }
  Bf16Rows odd;
  to_bf16_rows(random_vector(3 * 40, 1).data(), 3, 40, Bf16Precision::kSplit, odd);
  std::vector<std::uint8_t> wq(2 * row_bytes(DType::Q8_0, 64));
  std::vector<float> y(6);
  EXPECT_THROW(gemm_bf16_quantized(odd, DType::Q8_0, wq.data(), 2, y.data()), Error);
}

// The conversion itself: hi (and lo) match the reference rounding, two to a
// word with the lower index in the low half, and an odd k ends in a zero.
TEST(Bf16Gemm, RowsHoldRoundedPairsPaddedWithZero) {
  if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16; gemm_bf16 needs it";
  const std::size_t m = 3, k = 37;
  const std::vector<float> x = random_vector(m * k, 5);
  Bf16Rows rows;
  to_bf16_rows(x.data(), m, k, Bf16Precision::kSplit, rows);
  ASSERT_EQ(rows.k_pairs, 19u);
  ASSERT_EQ(rows.row_words, 48u);  // 19 words take 2 lines of 16; an odd count of lines is 3
  ASSERT_EQ(rows.hi.size(), m * 48);
  ASSERT_EQ(rows.lo.size(), m * 48);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t c = 0; c < 2 * rows.k_pairs; ++c) {
      const std::uint32_t word = rows.hi[i * rows.row_words + c / 2];
      const auto hi = static_cast<std::uint16_t>(c % 2 == 0 ? word & 0xffff : word >> 16);
      const std::uint32_t lo_word = rows.lo[i * rows.row_words + c / 2];
      const auto lo = static_cast<std::uint16_t>(c % 2 == 0 ? lo_word & 0xffff : lo_word >> 16);
      const float v = c < k ? x[i * k + c] : 0.0f;
      EXPECT_EQ(hi, f32_to_bf16(v)) << i << "," << c;
      EXPECT_EQ(lo, f32_to_bf16(v - bf16_to_f32(hi))) << i << "," << c;
    }
  }
  to_bf16_rows(x.data(), m, k, Bf16Precision::kRounded, rows);
  EXPECT_EQ(rows.hi.size(), m * 48);
  EXPECT_TRUE(rows.lo.empty());
}

// Where the CPU has AVX512_BF16 and no AMX, prefill products with bf16
// weights (alone or sharing x) take gemm_bf16 at the precision chosen, and
// with the native kernels off they do not.
TEST(Bf16Gemm, MatmulTakesItWithoutAmx) {
  if (!cpu_has_avx512_bf16() || onednn_uses_amx()) {
    GTEST_SKIP() << "gemm_bf16 serves CPUs with AVX512_BF16 and without AMX";
  }
  const std::size_t m = 17, k = 67, n = 40;
  std::vector<std::uint16_t> w(n * k);
  const std::vector<float> w_values = random_vector(n * k, 7);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(w_values[i]);
  const WeightMatrix matrix{DType::BF16, w.data(), n, k};
  const std::vector<float> x = random_vector(m * k, 8);
  const Bf16Precision before = bf16_activation_precision();
  for (const Bf16Precision precision : {Bf16Precision::kSplit, Bf16Precision::kRounded}) {
    set_bf16_activation_precision(precision);
    Bf16Rows rows;
    to_bf16_rows(x.data(), m, k, precision, rows);
    std::vector<float> expected(m * n), alone(m * n), shared(m * n);
    gemm_bf16(rows, w.data(), n, expected.data());
    matmul(x.data(), m, matrix, alone.data());
    matmul_shared_input(x.data(), m, {{&matrix, shared.data()}});
    EXPECT_EQ(alone, expected) << precision_name(precision);
    EXPECT_EQ(shared, expected) << precision_name(precision);
    set_native_bf16(false);
    matmul(x.data(), m, matrix, alone.data());
    set_native_bf16(true);
    EXPECT_NE(alone, expected) << precision_name(precision);
  }
  set_bf16_activation_precision(before);
}

// The oneDNN path (AMX CPUs; here wherever oneDNN multiplies bf16 natively)
// splits x's rows on every thread into the calling thread's buffer: within
// 2^-15 of sum |w x| (ops/bf16_kernels.h) at 1 and 2 threads.
TEST(Bf16Gemm, OneDnnPathSplitsRowsOnAllThreads) {
  if (!onednn_native_bf16()) GTEST_SKIP() << "oneDNN has no native bf16 matmul on this CPU";
  const std::size_t m = 33, k = 300, n = 50;
  std::vector<std::uint16_t> w(n * k);
  const std::vector<float> w_values = random_vector(n * k, 9);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(w_values[i]);
  const WeightMatrix matrix{DType::BF16, w.data(), n, k};
  const std::vector<float> x = random_vector(m * k, 10);
  for (const int threads : {1, 2}) {
    const ThreadsScope scope(threads);
    std::vector<float> y(m * n);
    ASSERT_TRUE(matmul_bf16_onednn(x.data(), m, matrix, y.data()));
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        double ref = 0, magnitude = 0;
        for (std::size_t c = 0; c < k; ++c) {
          const double p = double(bf16_to_f32(w[j * k + c])) * x[i * k + c];
          ref += p;
          magnitude += std::abs(p);
        }
        ASSERT_LE(std::abs(y[i * n + j] - ref), std::ldexp(magnitude, -15))
            << threads << " threads, " << i << "," << j;
      }
    }
  }
}

}  // namespace
}  // namespace lclm
