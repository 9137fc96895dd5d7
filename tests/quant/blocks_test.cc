#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/highway_targets.h"
#include "core/test_models.h"
#include "format/dtype.h"
#include "format/quant_blocks.h"
#include "ops/bf16_kernels.h"
#include "ops/matmul.h"
#include "ops/quant_kernels.h"
#include "quant/logit_error.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::for_each_target;

std::vector<float> random_vector(std::size_t n, unsigned seed, float std = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, std);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<std::uint8_t> quantized(DType type, const std::vector<float>& x) {
  std::vector<std::uint8_t> out(row_bytes(type, x.size()));
  quantize_row(type, x.data(), x.size(), out.data());
  return out;
}

float block_scale(const std::uint8_t* block) {
  std::uint16_t h;
  std::memcpy(&h, block, 2);
  return f16_to_f32(h);
}

class BlockTypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(BlockTypeTest, RowBytesFollowTheBlockLayout) {
  EXPECT_EQ(row_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(row_bytes(DType::Q4_0, 64), 36u);
  EXPECT_TRUE(is_block_quantized(GetParam()));
  EXPECT_NE(testing::error_of([] { dtype_size(DType::Q8_0); }).find("block type"),
            std::string::npos);
}

// Values d * q with integers q in the type's range and the extreme level
// present (so the quantizer picks exactly d) come back bit for bit.
TEST_P(BlockTypeTest, RepresentableValuesRoundTripExactly) {
  const DType type = GetParam();
  std::mt19937 rng(3);
  const int lo = type == DType::Q8_0 ? -127 : -8, hi = type == DType::Q8_0 ? 127 : 7;
  std::uniform_int_distribution<int> level(lo, hi);
  const std::vector<float> scales = {1.0f, 0.0078125f, 3.5f, 1.52587890625e-05f};
  std::vector<float> x;
  for (float d : scales) {
    for (std::size_t i = 0; i < kQuantBlock; ++i) x.push_back(d * static_cast<float>(level(rng)));
    x[x.size() - 1 - (x.size() / 7) % kQuantBlock] =
        d * static_cast<float>(type == DType::Q8_0 ? 127 : lo);
  }
  const auto q = quantized(type, x);
  std::vector<float> y(x.size());
  dequantize_row(type, q.data(), x.size(), y.data());
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]) << "element " << i;
}

// Arbitrary values: the error of each element stays within half a step of
// its block's scale (q8_0), or one step for q4_0's clipped top level.
TEST_P(BlockTypeTest, RoundTripErrorIsBoundedByTheBlockScale) {
  const DType type = GetParam();
  std::vector<float> x = random_vector(64 * kQuantBlock, 5);
  for (std::size_t i = 0; i < kQuantBlock; ++i) x[i] = 0.0f;  // an all-zero block
  // A block whose scale is an f16 subnormal. (Below about 4e-6 in q8_0, the
  // scale underflows to 0 and the block reads back as zeros, as in ggml.)
  for (std::size_t i = kQuantBlock; i < 2 * kQuantBlock; ++i) x[i] *= 1e-3f;
  const auto q = quantized(type, x);
  std::vector<float> y(x.size());
  dequantize_row(type, q.data(), x.size(), y.data());
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  const float steps = type == DType::Q8_0 ? 0.5f : 1.0f;
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float d = std::fabs(block_scale(q.data() + i / kQuantBlock * block_bytes));
    const float bound = steps * d * 1.0001f + 1e-12f;
    ASSERT_LE(std::fabs(y[i] - x[i]), bound) << "element " << i << ", scale " << d;
    worst = std::max(worst, static_cast<double>(std::fabs(y[i] - x[i]) / (d + 1e-30f)));
  }
  for (std::size_t i = 0; i < kQuantBlock; ++i) EXPECT_EQ(y[i], 0.0f);
  EXPECT_GT(worst, 0.25 * steps);  // the bound is not loose by orders of magnitude
}

TEST_P(BlockTypeTest, SimdDequantizeEqualsTheScalarDefinition) {
  const DType type = GetParam();
  const std::size_t rows = 3, cols = 5 * kQuantBlock;
  const std::vector<float> x = random_vector(rows * cols, 9);
  const auto q = quantized(type, x);
  std::vector<float> expected(x.size());
  dequantize_row(type, q.data(), x.size(), expected.data());
  for_each_target([&] {
    std::vector<float> got(x.size());
    dequantize_rows(type, q.data(), rows, cols, got.data());
    EXPECT_EQ(got, expected);
  });
}

// The SIMD matvec against the scalar block-by-block definition, over block
// counts that are odd and even (the kernel unrolls two blocks).
TEST_P(BlockTypeTest, MatvecMatchesTheScalarReference) {
  const DType type = GetParam();
  for (std::size_t cols : {32u, 64u, 96u, 1056u}) {
    const std::size_t rows = 7;
    const std::vector<float> w = random_vector(rows * cols, 11, 0.05f);
    const auto wq = quantized(type, w);
    QuantizedActivations xq;
    const std::vector<float> x = random_vector(cols, 12);
    quantize_activations(x.data(), 1, cols, xq);
    for_each_target([&] {
      std::vector<float> y(rows);
      matvec_quantized(type, wq.data(), xq.q.data(), xq.d.data(), 1, rows, cols, y.data(), rows);
      for (std::size_t r = 0; r < rows; ++r) {
        const float ref = dot_quantized_reference(type, wq.data() + r * row_bytes(type, cols),
                                                  xq.q.data(), xq.d.data(), cols);
        EXPECT_NEAR(y[r], ref, 1e-5f * (1.0f + std::fabs(ref))) << "cols " << cols << " row " << r;
      }
    });
  }
}

// matmul on quantized weights, both paths: decode (x quantized per block)
// and prefill (rows widened for sgemm), against a double loop over the
// dequantized weights. Decode also carries the activation rounding, at most
// half a step of each block's scale per element.
TEST_P(BlockTypeTest, MatmulOnBothPathsMatchesTheDequantizedProduct) {
  const DType type = GetParam();
  const std::size_t rows = 300, cols = 96;
  const std::vector<float> w = random_vector(rows * cols, 1, 0.05f);
  auto wq = quantized(type, w);
  std::vector<float> wd(w.size());
  dequantize_row(type, wq.data(), w.size(), wd.data());
  const WeightMatrix matrix{type, wq.data(), rows, cols};
  EXPECT_EQ(matrix.bytes(), wq.size());
  // Prefill on the bf16 GEMM rounds the weights and x to bf16 (8 significant
  // bits, 2^-9 relative each); the portable prefill widens them to f32 exactly.
  // Decode runs the VNNI kernel where the CPU has it, else (and when told)
  // the Highway one.
  const bool native = native_bf16_enabled(), vnni = native_vnni_enabled();
  for (const auto& [m, native_kernel] :
       std::vector<std::pair<std::size_t, bool>>{{1, true},
                                                 {1, false},
                                                 {5, true},
                                                 {5, false},
                                                 {kMatvecMaxRows + 3, true},
                                                 {kMatvecMaxRows + 3, false}}) {
    const bool bf16_gemm = native_kernel;
    set_native_bf16(native && native_kernel);
    set_native_vnni(vnni && native_kernel);
    const std::vector<float> x = random_vector(m * cols, 2);
    std::vector<float> y(m * rows);
    matmul(x.data(), m, matrix, y.data());
    set_native_bf16(native);
    set_native_vnni(vnni);
    const double tolerance = m <= kMatvecMaxRows   ? 2e-2  // decode: x rounded to 8 bits
                             : native && bf16_gemm ? 5e-3  // W and x rounded to bf16
                                                   : 1e-4;
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t r = 0; r < rows; ++r) {
        double ref = 0, scale = 0;
        for (std::size_t c = 0; c < cols; ++c) {
          ref += static_cast<double>(x[i * cols + c]) * wd[r * cols + c];
          scale += std::fabs(static_cast<double>(x[i * cols + c]) * wd[r * cols + c]);
        }
        ASSERT_NEAR(y[i * rows + r], ref, tolerance * scale) << "m " << m << " row " << r;
      }
    }
  }
}

// Several rows of x in one call (a decode batch) give each row bit for bit
// what it gets alone: W is loaded once for up to four rows, and the groups
// of four, three, two and one row keep the one-row summation order.
TEST_P(BlockTypeTest, ManyRowsOfXGiveEachRowItsOwnResultExactly) {
  const DType type = GetParam();
  for (std::size_t cols : {32u, 96u, 1056u}) {
    const std::size_t rows = 5, max_m = 9;
    const auto wq = quantized(type, random_vector(rows * cols, 41, 0.05f));
    QuantizedActivations xq;
    quantize_activations(random_vector(max_m * cols, 42).data(), max_m, cols, xq);
    const std::size_t n_blocks = cols / kQuantBlock;
    for_each_target([&] {
      for (std::size_t m = 1; m <= max_m; ++m) {
        std::vector<float> batched(m * rows);
        matvec_quantized(type, wq.data(), xq.q.data(), xq.d.data(), m, rows, cols, batched.data(),
                         rows);
        for (std::size_t i = 0; i < m; ++i) {
          std::vector<float> alone(rows);
          matvec_quantized(type, wq.data(), xq.q.data() + i * cols, xq.d.data() + i * n_blocks, 1,
                           rows, cols, alone.data(), rows);
          for (std::size_t r = 0; r < rows; ++r) {
            ASSERT_EQ(std::memcmp(&batched[i * rows + r], &alone[r], sizeof(float)), 0)
                << "cols " << cols << " m " << m << " x row " << i << " row " << r << ": "
                << batched[i * rows + r] << " vs " << alone[r];
          }
        }
      }
    });
  }
}

// A VNNI product (the row-major kernel, or the interleaved one on W
// interleaved first) against the scalar block-by-block definition, for 1
// to 9 rows of x and each of `col_counts`, and each row of a batch bit for
// bit what it gets alone.
void expect_vnni_product_matches_reference(DType type, bool interleaved, std::size_t rows,
                                           std::initializer_list<std::size_t> col_counts,
                                           unsigned seed) {
  for (std::size_t cols : col_counts) {
    const std::size_t max_m = 9, n_blocks = cols / kQuantBlock;
    const auto wq = quantized(type, random_vector(rows * cols, seed, 0.05f));
    std::vector<std::uint8_t> il(interleaved ? wq.size() : 0);
    if (interleaved) interleave_rows(type, wq.data(), rows, cols, il.data());
    const auto product = [&](const QuantizedActivations& x, std::size_t m, float* y) {
      if (interleaved) {
        matvec_interleaved_vnni(type, il.data(), x, m, rows, cols, y, rows);
      } else {
        matvec_quantized_vnni(type, wq.data(), x, m, rows, cols, y, rows);
      }
    };
    const std::vector<float> x = random_vector(max_m * cols, seed + 1);
    QuantizedActivations xq;
    quantize_activations(x.data(), max_m, cols, xq);
    for (std::size_t m = 1; m <= max_m; ++m) {
      std::vector<float> y(m * rows);
      product(xq, m, y.data());
      for (std::size_t i = 0; i < m; ++i) {
        QuantizedActivations one;
        quantize_activations(x.data() + i * cols, 1, cols, one);
        std::vector<float> alone(rows);
        product(one, 1, alone.data());
        for (std::size_t r = 0; r < rows; ++r) {
          const float ref =
              dot_quantized_reference(type, wq.data() + r * row_bytes(type, cols),
                                      xq.q.data() + i * cols, xq.d.data() + i * n_blocks, cols);
          ASSERT_NEAR(y[i * rows + r], ref, 1e-5f * (1.0f + std::fabs(ref)))
              << "cols " << cols << " m " << m << " x row " << i << " row " << r;
          ASSERT_EQ(std::memcmp(&y[i * rows + r], &alone[r], sizeof(float)), 0)
              << "cols " << cols << " m " << m << " x row " << i << " row " << r;
        }
      }
    }
  }
}

// The row-major VNNI kernel (ops/quant_vnni.cc): groups of four rows of x,
// then three, two, one; odd and even block counts (a row's odd last block
// pairs with zeros).
TEST_P(BlockTypeTest, VnniMatvecMatchesTheScalarReferenceAndKeepsRowsApart) {
  if (!cpu_has_avx512_vnni()) GTEST_SKIP() << "this CPU has no AVX512-VNNI";
  expect_vnni_product_matches_reference(GetParam(), false, 7, {32, 64, 96, 1056}, 51);
}

// The interleaved order (format/quant_blocks.h): every row's block at the
// place the layout names (q8_0 bytes as w + 128), back again whole or in
// part, and a row count that is no multiple of 16 refused by name.
TEST_P(BlockTypeTest, InterleavedRowsPlaceEachBlockAndRoundTrip) {
  const DType type = GetParam();
  const std::size_t rows = 48, cols = 96, n_blocks = cols / kQuantBlock;
  const std::size_t stride = row_bytes(type, cols), block_bytes = row_bytes(type, kQuantBlock);
  const auto wq = quantized(type, random_vector(rows * cols, 61, 0.05f));
  std::vector<std::uint8_t> il(wq.size());
  interleave_rows(type, wq.data(), rows, cols, il.data());
  // Row 22 is row 6 of group 1, in quarter 2 at lane 1 (q8_0: and quarter
  // 6 for its elements 16-31); its block 2 sits in the group's third block.
  const std::uint8_t* block = wq.data() + 22 * stride + 2 * block_bytes;
  const std::uint8_t* at = il.data() + (1 * n_blocks + 2) * kGroupRows * block_bytes;
  EXPECT_EQ(std::memcmp(at + 2 * 6, block, 2), 0);
  for (std::size_t k = 0; k < 16; ++k) {
    if (type == DType::Q4_0) {
      ASSERT_EQ(at[32 + 64 * 2 + 16 * 1 + k], block[2 + k]) << "byte " << k;
    } else {
      ASSERT_EQ(at[32 + 64 * 2 + 16 * 1 + k], block[2 + k] ^ 0x80) << "byte " << k;
      ASSERT_EQ(at[32 + 64 * 6 + 16 * 1 + k], block[2 + 16 + k] ^ 0x80) << "byte " << 16 + k;
    }
  }

  std::vector<std::uint8_t> back(wq.size());
  deinterleave_rows(type, il.data(), cols, 0, rows, 0, n_blocks, back.data());
  EXPECT_EQ(back, wq);
  // Rows 5-27, blocks 1-2: rows of two blocks.
  std::vector<std::uint8_t> part(23 * 2 * block_bytes);
  deinterleave_rows(type, il.data(), cols, 5, 23, 1, 2, part.data());
  for (std::size_t r = 0; r < 23; ++r) {
    ASSERT_EQ(std::memcmp(part.data() + r * 2 * block_bytes,
                          wq.data() + (5 + r) * stride + block_bytes, 2 * block_bytes),
              0)
        << "row " << 5 + r;
  }
  try {
    interleave_rows(type, wq.data(), 40, cols, il.data());
    FAIL() << "40 rows were interleaved";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("40 rows are not a multiple of 16"), std::string::npos)
        << e.what();
  }
}

// The interleaved VNNI kernel: one pass of up to eight rows of x, then one;
// one block, odd and even block counts; two groups of rows.
TEST_P(BlockTypeTest, InterleavedVnniMatvecMatchesTheScalarReferenceAndKeepsRowsApart) {
  if (!cpu_has_avx512_vnni()) GTEST_SKIP() << "this CPU has no AVX512-VNNI";
  expect_vnni_product_matches_reference(GetParam(), true, 32, {32, 96, 1056}, 71);
}

// matmul and gather_rows read an interleaved W as they read the row-major
// one: the same bits on every path that puts rows back in order (prefill on
// the bf16 GEMM or widened for sgemm, decode on the Highway kernel, the
// embedding lookup), and within the VNNI kernels' own rounding where decode
// multiplies the interleaved blocks directly; at one and two threads.
TEST_P(BlockTypeTest, MatmulAndGatherReadInterleavedRowsOnEveryPath) {
  const DType type = GetParam();
  const std::size_t rows = 208, cols = 1056;  // rows: 3 items of 64 and a group over
  const auto wq = quantized(type, random_vector(rows * cols, 81, 0.05f));
  std::vector<std::uint8_t> il(wq.size());
  interleave_rows(type, wq.data(), rows, cols, il.data());
  const WeightMatrix row_major{type, wq.data(), rows, cols};
  const WeightMatrix interleaved{type, il.data(), rows, cols, RowOrder::kInterleaved16};
  const bool native = native_bf16_enabled(), vnni = native_vnni_enabled();
  const int threads_before = omp_get_max_threads();
  const std::vector<float> x = random_vector(11 * cols, 82);
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    for (const std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{11}}) {
      for (const bool native_kernel : {true, false}) {
        set_native_bf16(native && native_kernel);
        set_native_vnni(vnni && native_kernel);
        std::vector<float> want(m * rows), got(m * rows);
        matmul(x.data(), m, row_major, want.data());
        matmul(x.data(), m, interleaved, got.data());
        set_native_bf16(native);
        set_native_vnni(vnni);
        const bool direct = m <= kMatvecMaxRows && vnni && native_kernel;
        for (std::size_t i = 0; i < m * rows; ++i) {
          if (direct) {
            ASSERT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::fabs(want[i])))
                << "threads " << threads << " m " << m << " element " << i;
          } else {
            ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
                << "threads " << threads << " m " << m << " native " << native_kernel << " element "
                << i << ": " << got[i] << " vs " << want[i];
          }
        }
      }
    }
  }
  omp_set_num_threads(threads_before);
  const std::vector<std::int32_t> ids = {0, 17, 207, 100};
  std::vector<float> want(ids.size() * cols), got(ids.size() * cols);
  gather_rows(row_major, ids.data(), ids.size(), want.data());
  gather_rows(interleaved, ids.data(), ids.size(), got.data());
  EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(Q8_0AndQ4_0, BlockTypeTest, ::testing::Values(DType::Q8_0, DType::Q4_0),
                         [](const auto& p) { return std::string(dtype_name(p.param)); });

// The VNNI kernel's form of x: the same q as int8, and per pair of blocks
// the blocks' sums of q (lanes 0 and 8) and scales (lanes 0-7, 8-15), an
// odd last block paired with zeros.
TEST(QuantizedActivations, PairsHoldTheBlocksSumsAndScalesForVnni) {
  const std::size_t rows = 2, cols = 3 * kQuantBlock;
  const std::vector<float> x = random_vector(rows * cols, 23);
  QuantizedActivations a;
  quantize_activations(x.data(), rows, cols, a);
  ASSERT_EQ(a.pairs_per_row, 2u);
  for (std::size_t i = 0; i < rows * cols; ++i) ASSERT_EQ(a.q8[i], a.q[i]) << i;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t b = 0; b < 4; ++b) {  // block 3 is the pair's missing one
      std::int32_t sum = 0;
      const float d = b < 3 ? a.d[r * 3 + b] : 0.0f;
      for (std::size_t i = 0; b < 3 && i < kQuantBlock; ++i) sum += a.q[r * cols + b * 32 + i];
      const std::size_t lane0 = (r * 2 + b / 2) * 16 + (b % 2) * 8;
      EXPECT_EQ(a.pair_sum[lane0], sum) << "row " << r << " block " << b;
      for (std::size_t l = 1; l < 8; ++l) EXPECT_EQ(a.pair_sum[lane0 + l], 0);
      for (std::size_t l = 0; l < 8; ++l) EXPECT_EQ(a.pair_d[lane0 + l], d);
    }
  }
}

TEST(QuantizedActivations, ErrorIsHalfAStepOfTheBlockScale) {
  const std::vector<float> x = random_vector(4 * kQuantBlock, 21);
  QuantizedActivations a;
  quantize_activations(x.data(), 2, 2 * kQuantBlock, a);
  ASSERT_EQ(a.q.size(), x.size());
  ASSERT_EQ(a.d.size(), 4u);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float d = a.d[i / kQuantBlock];
    EXPECT_LE(std::fabs(d * a.q[i] - x[i]), 0.5f * d * 1.0001f);
    EXPECT_LE(std::abs(a.q[i]), 127);
  }
}

TEST(QuantizedActivations, MixedTypesShareOneInput) {
  const std::size_t cols = 64;
  const std::vector<float> w = random_vector(40 * cols, 31, 0.05f);
  auto q8 = quantized(DType::Q8_0, w);
  std::vector<float> y_bf16(40), y_q8(40), y_shared_bf16(40), y_shared_q8(40);
  std::vector<std::uint16_t> bf(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) bf[i] = f32_to_bf16(w[i]);
  const WeightMatrix a{DType::BF16, bf.data(), 40, cols}, b{DType::Q8_0, q8.data(), 40, cols};
  const std::vector<float> x = random_vector(cols, 32);
  matmul(x.data(), 1, a, y_bf16.data());
  matmul(x.data(), 1, b, y_q8.data());
  matmul_shared_input(x.data(), 1, {{&a, y_shared_bf16.data()}, {&b, y_shared_q8.data()}});
  EXPECT_EQ(y_shared_bf16, y_bf16);
  EXPECT_EQ(y_shared_q8, y_q8);
}

TEST(QuantTypes, UnknownNameIsAnErrorNamingTheFlag) {
  EXPECT_EQ(parse_quant_type("q8_0", "--quant"), DType::Q8_0);
  EXPECT_EQ(parse_quant_type("q4_0", "--quant"), DType::Q4_0);
  const std::string msg = testing::error_of([] { parse_quant_type("q3_k", "--quant"); });
  EXPECT_NE(msg.find("--quant"), std::string::npos) << msg;
  EXPECT_NE(msg.find("q3_k"), std::string::npos) << msg;
  EXPECT_NE(testing::error_of([] {
              std::vector<float> x(33);
              std::vector<std::uint8_t> out(64);
              quantize_row(DType::Q8_0, x.data(), 33, out.data());
            }).find("multiple of the block length"),
            std::string::npos);
}

}  // namespace
}  // namespace lclm

namespace lclm {
namespace {

// Two positions over a vocabulary of 3, every figure from its definition.
TEST(LogitError, FiguresFollowTheirDefinitions) {
  const std::vector<float> ref = {1.0f, 0.0f, -1.0f, 0.5f, 0.5f, 0.0f};
  const std::vector<float> got = {1.0f, 0.5f, -1.0f, 0.5f, 0.25f, 0.0f};
  const std::vector<std::int32_t> next = {1, 0};
  LogitError e;
  e.add(ref.data(), got.data(), 2, 3, next.data());
  EXPECT_EQ(e.positions(), 2u);
  EXPECT_NEAR(e.relative_rms(), std::sqrt((0.25 + 0.0625) / (1 + 1 + 0.25 + 0.25)), 1e-12);
  EXPECT_DOUBLE_EQ(e.max_abs(), 0.5);
  EXPECT_DOUBLE_EQ(e.top1_agreement(), 1.0);  // argmax 0 and 0 (ties go to the first)
  const auto probs = [](std::vector<double> x) {
    double z = 0;
    for (double v : x) z += std::exp(v);
    for (double& v : x) v = std::exp(v) / z;
    return x;
  };
  const auto p0 = probs({1, 0, -1}), q0 = probs({1, 0.5, -1});
  const auto p1 = probs({0.5, 0.5, 0}), q1 = probs({0.5, 0.25, 0});
  double kl = 0;
  for (int i = 0; i < 3; ++i)
    kl += p0[i] * std::log(p0[i] / q0[i]) + p1[i] * std::log(p1[i] / q1[i]);
  EXPECT_NEAR(e.mean_kl(), kl / 2, 1e-12);
  EXPECT_NEAR(e.perplexity_ref(), std::exp(-(std::log(p0[1]) + std::log(p1[0])) / 2), 1e-12);
  EXPECT_NEAR(e.perplexity_got(), std::exp(-(std::log(q0[1]) + std::log(q1[0])) / 2), 1e-12);
}

}  // namespace
}  // namespace lclm
