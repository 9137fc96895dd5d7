#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "format/dtype.h"
#include "highway_targets.h"
#include "naive_attention.h"
#include "ops/attention.h"
#include "ops/bf16_kernels.h"
#include "ops/bf16_matvec.h"
#include "ops/matmul.h"
#include "ops/simd.h"
#include "ops/transformer_ops.h"
#include "test_models.h"

namespace lclm {
namespace {

using testing::naive_attention_weights;
using testing::random_vector;

// Stored weights in one dtype plus their exact f32 values.
struct StoredWeights {
  std::vector<std::uint8_t> bytes;
  std::vector<float> exact;
  WeightMatrix matrix;
};

StoredWeights store(const std::vector<float>& values, std::size_t rows, std::size_t cols,
                    DType dtype) {
  StoredWeights s;
  s.bytes.resize(values.size() * dtype_size(dtype));
  s.exact.resize(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(s.bytes.data() + 4 * i, &values[i], 4);
      s.exact[i] = values[i];
    } else {
      const std::uint16_t h = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      std::memcpy(s.bytes.data() + 2 * i, &h, 2);
      s.exact[i] = dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  s.matrix = WeightMatrix{dtype, s.bytes.data(), rows, cols};
  return s;
}

// Turns the native bf16 kernels on or off for one test, then back on.
class NativeBf16Scope {
 public:
  explicit NativeBf16Scope(bool on) { set_native_bf16(on); }
  ~NativeBf16Scope() { set_native_bf16(true); }
};

class MatmulTest : public ::testing::TestWithParam<std::tuple<DType, std::size_t, bool>> {};

// Both paths (fused matvec for few rows, widen + sgemm or oneDNN for many),
// with the native bf16 kernels on (where the CPU has them) and off, and x
// kept exact or rounded for bf16 weights, against a double-precision loop
// over the x the product should multiply (rounded to bf16 where the native
// kernels round it, on both paths alike); 300 output rows cross the 256-row
// widening block.
TEST_P(MatmulTest, MatchesNaiveProduct) {
  const auto [dtype, m, native] = GetParam();
  const NativeBf16Scope scope(native);
  const std::size_t rows = 300, cols = 67;
  const StoredWeights w = store(random_vector(rows * cols, 1), rows, cols, dtype);
  const std::vector<float> x = random_vector(m * cols, 2);
  for (const Bf16Precision precision : {Bf16Precision::kSplit, Bf16Precision::kRounded}) {
    const testing::Bf16ActivationsScope x_precision(precision);
    const bool rounds = dtype == DType::BF16 &&
                        std::string(bf16_prefill_kernel()).find("x rounded") != std::string::npos;
    std::vector<float> y(m * rows);
    matmul(x.data(), m, w.matrix, y.data());
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t r = 0; r < rows; ++r) {
        double ref = 0;
        for (std::size_t k = 0; k < cols; ++k) {
          const float xv = rounds ? bf16_to_f32(f32_to_bf16(x[i * cols + k])) : x[i * cols + k];
          ref += double(xv) * w.exact[r * cols + k];
        }
        ASSERT_NEAR(y[i * rows + r], ref, 1e-4 * (1 + std::abs(ref)))
            << i << "," << r << (rounds ? ", x rounded" : "");
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypesBothPaths, MatmulTest,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(1, 3, 8, 9, 33), ::testing::Bool()),
                         [](const auto& param_info) {
                           return std::string(dtype_name(std::get<0>(param_info.param))) + "_rows" +
                                  std::to_string(std::get<1>(param_info.param)) +
                                  (std::get<2>(param_info.param) ? "_native" : "_portable");
                         });

// The fused matvec over several rows of x (a decode batch): within rounding
// of a double-precision loop, and each row bit for bit what it gets alone,
// for every dtype, Highway target, batch size 1-9 (groups of four, three,
// two, one), rows of W in tiles of four (each prefetching the next) and one
// left over, and lengths that leave every tail of the unrolled loop.
TEST(Matvec, ManyRowsOfXGiveEachRowItsOwnResultExactly) {
  const std::size_t rows = 13, max_m = 9;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (std::size_t cols : {1u, 15u, 67u, 1000u, 1029u}) {
      const StoredWeights w = store(random_vector(rows * cols, 51), rows, cols, dtype);
      const std::vector<float> x = random_vector(max_m * cols, 52);
      const auto run = [&](const float* xs, std::size_t m, float* y) {
        if (dtype == DType::F32) {
          matvec_f32(reinterpret_cast<const float*>(w.bytes.data()), xs, m, rows, cols, y, rows);
        } else if (dtype == DType::BF16) {
          matvec_bf16(reinterpret_cast<const std::uint16_t*>(w.bytes.data()), xs, m, rows, cols, y,
                      rows);
        } else {
          matvec_f16(reinterpret_cast<const std::uint16_t*>(w.bytes.data()), xs, m, rows, cols, y,
                     rows);
        }
      };
      testing::for_each_target([&] {
        for (std::size_t m = 1; m <= max_m; ++m) {
          std::vector<float> batched(m * rows);
          run(x.data(), m, batched.data());
          for (std::size_t i = 0; i < m; ++i) {
            std::vector<float> alone(rows);
            run(x.data() + i * cols, 1, alone.data());
            for (std::size_t r = 0; r < rows; ++r) {
              double ref = 0;
              for (std::size_t k = 0; k < cols; ++k) {
                ref += double(x[i * cols + k]) * w.exact[r * cols + k];
              }
              const float got = batched[i * rows + r];
              ASSERT_NEAR(got, ref, 1e-4 * (1 + std::abs(ref)))
                  << dtype_name(dtype) << " cols " << cols << " m " << m << " row " << i;
              ASSERT_EQ(std::memcmp(&got, &alone[r], sizeof(float)), 0)
                  << dtype_name(dtype) << " cols " << cols << " m " << m << " row " << i << ": "
                  << got << " vs " << alone[r];
            }
          }
        }
      });
    }
  }
}

// hi = bf16(x) rounded to nearest even, lo = bf16(x - hi): the pair holds x
// to 2^-16 of its size (f32_to_bf16 is the reference rounding), across
// magnitudes and for lengths that leave every tail of the 16-wide loop.
TEST(Bf16Kernels, SplitKeepsSixteenBitsOfX) {
  for (std::size_t n : {1, 15, 16, 17, 100}) {
    std::vector<float> x = random_vector(n, 30 + n);
    for (std::size_t i = 0; i < n; ++i) x[i] *= std::ldexp(1.0f, static_cast<int>(i % 40) - 20);
    std::vector<std::uint16_t> hi(n), lo(n);
    split_bf16(x.data(), n, hi.data(), lo.data());
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ(hi[i], f32_to_bf16(x[i])) << n << "," << i;
      const double sum = double(bf16_to_f32(hi[i])) + bf16_to_f32(lo[i]);
      EXPECT_LE(std::abs(sum - x[i]), std::ldexp(std::abs(x[i]), -16)) << n << "," << i;
    }
  }
}

// The decode product with x rounded to bf16 (`vdpbf16ps`, ops/bf16_matvec.h):
// within f32 summation error of a double loop over the rounded x, and each
// row of a batch of 1-9 (tiles of four rows of x, then three, two, one; four
// rows of W and a left-over) bit for bit what it gets alone, for lengths
// below one vector, odd, and with every tail of the 32-element vectors.
TEST(Bf16Kernels, RoundedMatvecKeepsEachRowOfABatchItsOwn) {
  if (!cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  const std::size_t rows = 13, max_m = 9;
  for (std::size_t cols : {1u, 15u, 67u, 1000u, 1029u}) {
    const StoredWeights w = store(random_vector(rows * cols, 61), rows, cols, DType::BF16);
    const auto* w16 = static_cast<const std::uint16_t*>(w.matrix.data);
    const std::vector<float> x = random_vector(max_m * cols, 62);
    for (std::size_t m = 1; m <= max_m; ++m) {
      Bf16Rows xw;
      to_bf16_rows(x.data(), m, cols, Bf16Precision::kRounded, xw);
      std::vector<float> y(m * rows);
      matvec_bf16_rounded(w16, xw, rows, y.data(), rows);
      for (std::size_t i = 0; i < m; ++i) {
        Bf16Rows one;
        to_bf16_rows(x.data() + i * cols, 1, cols, Bf16Precision::kRounded, one);
        std::vector<float> alone(rows);
        matvec_bf16_rounded(w16, one, rows, alone.data(), rows);
        for (std::size_t r = 0; r < rows; ++r) {
          double ref = 0, magnitude = 0;
          for (std::size_t c = 0; c < cols; ++c) {
            const double p =
                double(bf16_to_f32(f32_to_bf16(x[i * cols + c]))) * w.exact[r * cols + c];
            ref += p;
            magnitude += std::abs(p);
          }
          ASSERT_LE(std::abs(y[i * rows + r] - ref), double(cols) * std::ldexp(magnitude, -23))
              << "cols " << cols << " m " << m << " row " << i << "," << r;
          ASSERT_EQ(std::memcmp(&y[i * rows + r], &alone[r], sizeof(float)), 0)
              << "cols " << cols << " m " << m << " row " << i << "," << r;
        }
      }
    }
  }
}

// Many rows of x with bf16 weights (oneDNN's native bf16 matmul where the
// CPU has one): within 2^-15 of sum |w x| of the exact value (the split's
// claim, ops/bf16_kernels.h) over long rows, as close as the portable path.
TEST(Bf16Kernels, ManyRowProductWithinSplitPrecision) {
  const std::size_t m = kMatvecMaxRows + 1, rows = 37, cols = 1000;
  const StoredWeights w = store(random_vector(rows * cols, 21), rows, cols, DType::BF16);
  const std::vector<float> x = random_vector(m * cols, 22);
  const testing::Bf16ActivationsScope exact_x(Bf16Precision::kSplit);
  for (bool native : {true, false}) {
    const NativeBf16Scope scope(native);
    std::vector<float> y(m * rows);
    matmul(x.data(), m, w.matrix, y.data());
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t r = 0; r < rows; ++r) {
        double ref = 0, magnitude = 0;
        for (std::size_t k = 0; k < cols; ++k) {
          const double p = double(w.exact[r * cols + k]) * x[i * cols + k];
          ref += p;
          magnitude += std::abs(p);
        }
        ASSERT_LE(std::abs(y[i * rows + r] - ref), std::ldexp(magnitude, -15))
            << native << " " << i << "," << r;
      }
    }
  }
}

// Matrices of different heights and dtypes sharing one input: the joint row
// split must give exactly what separate calls give, on both paths.
TEST(Kernels, SharedInputMatmulEqualsSeparateCalls) {
  const std::size_t cols = 67;
  const StoredWeights a = store(random_vector(300 * cols, 11), 300, cols, DType::BF16);
  const StoredWeights b = store(random_vector(5 * cols, 12), 5, cols, DType::F32);
  const StoredWeights c = store(random_vector(131 * cols, 13), 131, cols, DType::F16);
  for (std::size_t m : {1, 3, 6}) {
    const auto x = random_vector(m * cols, 14);
    std::vector<float> ya(m * 300), yb(m * 5), yc(m * 131);
    matmul_shared_input(x.data(), m,
                        {{&a.matrix, ya.data()}, {&b.matrix, yb.data()}, {&c.matrix, yc.data()}});
    std::vector<float> ea(ya.size()), eb(yb.size()), ec(yc.size());
    matmul(x.data(), m, a.matrix, ea.data());
    matmul(x.data(), m, b.matrix, eb.data());
    matmul(x.data(), m, c.matrix, ec.data());
    EXPECT_EQ(ya, ea) << m;
    EXPECT_EQ(yb, eb) << m;
    EXPECT_EQ(yc, ec) << m;
  }
}

TEST(Kernels, GatherRowsWidensTheRequestedRows) {
  const StoredWeights w = store(random_vector(5 * 9, 3), 5, 9, DType::BF16);
  const std::int32_t ids[] = {4, 0, 4};
  std::vector<float> out(3 * 9);
  gather_rows(w.matrix, ids, 3, out.data());
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t k = 0; k < 9; ++k) EXPECT_EQ(out[i * 9 + k], w.exact[ids[i] * 9 + k]);
  }
  const std::int32_t bad = 5;
  EXPECT_THROW(gather_rows(w.matrix, &bad, 1, out.data()), std::runtime_error);
}

TEST(Kernels, DotHandlesEveryTailLength) {
  for (std::size_t n = 0; n < 70; ++n) {
    const auto a = random_vector(n, 10 + n), b = random_vector(n, 20 + n);
    double ref = 0;
    for (std::size_t i = 0; i < n; ++i) ref += double(a[i]) * b[i];
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), ref, 1e-4 * (1 + std::abs(ref))) << n;
  }
}

TEST(Kernels, RmsNormMatchesDefinition) {
  const std::size_t dim = 37;
  const auto x = random_vector(2 * dim, 4), w = random_vector(dim, 5);
  std::vector<float> out(2 * dim);
  rms_norm(x.data(), w.data(), out.data(), 2, dim, 1e-6f);
  for (std::size_t r = 0; r < 2; ++r) {
    double ms = 0;
    for (std::size_t i = 0; i < dim; ++i) ms += double(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ms / dim + 1e-6);
    for (std::size_t i = 0; i < dim; ++i) {
      EXPECT_NEAR(out[r * dim + i], x[r * dim + i] * inv * w[i], 1e-5);
    }
  }
}

TEST(Kernels, RopeRotatesHalvesByPositionTimesInverseFrequency) {
  const std::size_t head_dim = 8, heads = 2, position = 5;
  const double theta = 10000.0;
  const RopeTable rope(head_dim, theta);
  auto x = random_vector(heads * head_dim, 6);
  const auto before = x;
  rope.apply(x.data(), heads, position);
  for (std::size_t h = 0; h < heads; ++h) {
    for (std::size_t i = 0; i < head_dim / 2; ++i) {
      const double angle = position * std::pow(theta, -2.0 * i / head_dim);
      const double a = before[h * head_dim + i], b = before[h * head_dim + i + head_dim / 2];
      EXPECT_NEAR(x[h * head_dim + i], a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(x[h * head_dim + i + head_dim / 2], b * std::cos(angle) + a * std::sin(angle),
                  1e-5);
    }
  }
  rope.apply(x.data(), heads, 0);  // position 0 is the identity
  EXPECT_THROW(RopeTable(7, theta), std::runtime_error);
}

TEST(Kernels, SiluMulAndSoftmax) {
  std::vector<float> gate = {-2.0f, 0.0f, 3.0f}, up = {1.0f, 5.0f, -2.0f};
  silu_mul(gate.data(), up.data(), 3);
  EXPECT_NEAR(gate[0], -2.0 / (1 + std::exp(2.0)), 1e-6);
  EXPECT_EQ(gate[1], 0.0f);
  EXPECT_NEAR(gate[2], 3.0 / (1 + std::exp(-3.0)) * -2.0, 1e-5);
  std::vector<float> s = {1000.0f, 1000.0f, 999.0f};
  softmax(s.data(), 3);
  const double e = std::exp(-1.0);
  EXPECT_NEAR(s[0], 1 / (2 + e), 1e-6);
  EXPECT_NEAR(s[2], e / (2 + e), 1e-6);
}

// Reference attention: full score matrix in double.
std::vector<double> naive_attention(const std::vector<float>& q, std::size_t n_q, std::size_t pos0,
                                    const std::vector<float>& k, const std::vector<float>& v,
                                    std::size_t n_keys, const AttentionShape& s, bool causal) {
  std::vector<double> out(n_q * s.n_heads * s.head_dim, 0.0);
  const std::size_t group = s.n_heads / s.n_kv_heads;
  for (std::size_t i = 0; i < n_q; ++i) {
    for (std::size_t h = 0; h < s.n_heads; ++h) {
      const std::size_t g = h / group;
      const std::vector<double> p = naive_attention_weights(q, i, h, pos0, k, n_keys, s, causal);
      for (std::size_t j = 0; j < p.size(); ++j) {
        for (std::size_t d = 0; d < s.head_dim; ++d) {
          out[(i * s.n_heads + h) * s.head_dim + d] +=
              p[j] * v[(g * s.kv_stride + j) * s.head_dim + d];
        }
      }
    }
  }
  return out;
}

// 150 keys span three 64-key blocks; 70 queries span three 32-query blocks;
// one query is the decode case. The cache stride exceeds the key count.
TEST(Attention, BlockwiseOnlineSoftmaxMatchesFullScores) {
  const AttentionShape shape{6, 2, 16, 160};
  const std::size_t n_keys = 150;
  const auto k = random_vector(shape.n_kv_heads * shape.kv_stride * shape.head_dim, 7);
  const auto v = random_vector(shape.n_kv_heads * shape.kv_stride * shape.head_dim, 8);
  for (std::size_t n_q : {1, 20, 70}) {
    for (bool causal : {true, false}) {
      const std::size_t pos0 = n_keys - n_q;
      auto q = random_vector(n_q * shape.n_heads * shape.head_dim, 9 + n_q);
      for (float& x : q) x *= 3.0f;  // sharper distributions stress the rescaling
      std::vector<float> out(q.size());
      attention(q.data(), n_q, pos0, k.data(), v.data(), n_keys, shape,
                causal ? AttentionMask::Causal : AttentionMask::Bidirectional, out.data());
      const auto ref = naive_attention(q, n_q, pos0, k, v, n_keys, shape, causal);
      for (std::size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], ref[i], 1e-4) << "n_q " << n_q << " causal " << causal << " at " << i;
      }
    }
  }
}

// The register-blocked score and value kernels over every shape they split
// into: head dims of one vector, of vectors plus a scalar tail (40, 72) and
// of 8 whole AVX-512 vectors (128); groups of 1, 2, 3 and 4 query heads per
// kv head (decode's heads share the keys, prefill's transpose once); query
// counts that leave an odd query of a pair (3, 33), a causal edge inside a
// key block, and 1 and 2 threads.
TEST(Attention, EveryHeadDimGroupAndQueryCountMatchesFullScores) {
  const int threads_before = omp_get_max_threads();
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (std::size_t hd : {16, 40, 72, 128}) {
      for (std::size_t group : {1, 2, 3, 4}) {
        const AttentionShape shape{2 * group, 2, hd, 140};
        const std::size_t n_keys = 132;
        const auto k = random_vector(shape.n_kv_heads * shape.kv_stride * hd, 17 + hd);
        const auto v = random_vector(shape.n_kv_heads * shape.kv_stride * hd, 18 + hd);
        for (std::size_t n_q : {1, 3, 33, 34}) {
          for (bool causal : {true, false}) {
            const std::size_t pos0 = n_keys - n_q;
            auto q = random_vector(n_q * shape.n_heads * hd, 19 + n_q + group);
            for (float& x : q) x *= 3.0f;
            std::vector<float> out(q.size());
            attention(q.data(), n_q, pos0, k.data(), v.data(), n_keys, shape,
                      causal ? AttentionMask::Causal : AttentionMask::Bidirectional, out.data());
            const auto ref = naive_attention(q, n_q, pos0, k, v, n_keys, shape, causal);
            for (std::size_t i = 0; i < out.size(); ++i) {
              ASSERT_NEAR(out[i], ref[i], 1e-4)
                  << "threads " << threads << " head_dim " << hd << " group " << group << " n_q "
                  << n_q << " causal " << causal << " at " << i;
            }
          }
        }
      }
    }
  }
  omp_set_num_threads(threads_before);
}

}  // namespace
}  // namespace lclm
