// Kernel micro-benchmarks (Google Benchmark): the products decode and
// batched decode run, on Qwen3-0.6B's matrix shapes, one thread or the
// OpenMP team, so kernel figures in docs/benchmarks.md can be reproduced:
//
//   build/bin/lclm-bench-kernels --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one line)
//
// Counters: MAC/s (multiply-adds of the product per second) and weight
// bytes/s (the stream the product reads; decode is bound by it at one row).
// Each iteration reads the next of several copies of W, 256 MiB in all, so
// the weights come from memory as they do in a model's forward pass.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#include <algorithm>

#include "format/quant_blocks.h"
#include "ops/matmul.h"
#include "ops/simd.h"
#include "util/aligned_vector.h"

namespace lclm {
namespace {

constexpr std::size_t kPoolBytes = std::size_t{256} << 20;

// Qwen3-0.6B's decode products: [rows, cols] of W.
struct Shape {
  std::size_t rows, cols;
};
constexpr Shape kShapes[] = {{1024, 1024}, {3072, 1024}, {1024, 3072}};

// Copies of one weight matrix of `dtype` filling kPoolBytes, cycled through.
class WeightPool {
 public:
  WeightPool(DType dtype, Shape shape, RowOrder order = RowOrder::kRowMajor)
      : dtype_(dtype), shape_(shape), order_(order) {
    const std::size_t bytes = shape.rows * row_bytes(dtype, shape.cols);
    copies_ = std::max<std::size_t>(2, kPoolBytes / bytes);
    data_.resize(copies_ * bytes);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> row(shape.cols);
    for (std::size_t r = 0; r < shape.rows; ++r) {
      for (float& v : row) v = normal(rng);
      auto* out = data_.data() + r * row_bytes(dtype, shape.cols);
      if (dtype == DType::BF16) {
        for (std::size_t c = 0; c < shape.cols; ++c) {
          std::uint32_t bits;
          std::memcpy(&bits, &row[c], 4);
          const std::uint16_t half = static_cast<std::uint16_t>(bits >> 16);
          std::memcpy(out + 2 * c, &half, 2);
        }
      } else {
        quantize_row(dtype, row.data(), shape.cols, out);
      }
    }
    if (order == RowOrder::kInterleaved16) {
      const std::vector<std::uint8_t> rows(data_.begin(), data_.begin() + bytes);
      interleave_rows(dtype, rows.data(), shape.rows, shape.cols, data_.data());
    }
    for (std::size_t c = 1; c < copies_; ++c) {
      std::memcpy(data_.data() + c * bytes, data_.data(), bytes);
    }
  }

  WeightMatrix next() {
    const std::size_t bytes = shape_.rows * row_bytes(dtype_, shape_.cols);
    WeightMatrix w{dtype_, data_.data() + (turn_++ % copies_) * bytes, shape_.rows, shape_.cols,
                   order_};
    return w;
  }

 private:
  DType dtype_;
  Shape shape_;
  RowOrder order_;
  std::size_t copies_ = 0, turn_ = 0;
  AlignedVector<std::uint8_t> data_;
};

// Args: dtype (as int), shape index, rows of x, threads (0 = OpenMP's
// default), and for q8_0 / q4_0 the row order (1: kInterleaved16).
void BM_Matmul(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const Shape shape = kShapes[state.range(1)];
  const auto m = static_cast<std::size_t>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const RowOrder order = state.range(4) == 1 ? RowOrder::kInterleaved16 : RowOrder::kRowMajor;
  omp_set_num_threads(threads > 0 ? threads : omp_get_num_procs());
  WeightPool pool(dtype, shape, order);
  AlignedVector<float> x(m * shape.cols), y(m * shape.rows);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : x) v = normal(rng);
  for (auto _ : state) {
    matmul(x.data(), m, pool.next(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double iterations = static_cast<double>(state.iterations());
  state.counters["MAC/s"] = benchmark::Counter(
      iterations * static_cast<double>(m * shape.rows * shape.cols), benchmark::Counter::kIsRate);
  state.counters["W bytes/s"] = benchmark::Counter(
      iterations * static_cast<double>(shape.rows * row_bytes(dtype, shape.cols)),
      benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  state.SetLabel(std::string(dtype_name(dtype)) + " " + std::to_string(shape.rows) + "x" +
                 std::to_string(shape.cols) + " m=" + std::to_string(m) +
                 " t=" + std::to_string(omp_get_max_threads()) +
                 (order == RowOrder::kInterleaved16 ? " interleaved" : ""));
}

void MatmulArgs(benchmark::internal::Benchmark* b) {
  for (const DType dtype : {DType::BF16, DType::Q8_0, DType::Q4_0}) {
    for (std::int64_t shape = 0; shape < 3; ++shape) {
      for (const std::int64_t m : {1, 2, 4, 8}) {
        for (const std::int64_t threads : {1, 0}) {
          b->Args({static_cast<std::int64_t>(dtype), shape, m, threads, 0});
          if (dtype != DType::BF16) {
            b->Args({static_cast<std::int64_t>(dtype), shape, m, threads, 1});
          }
        }
      }
    }
  }
}

BENCHMARK(BM_Matmul)->Apply(MatmulArgs)->UseRealTime()->MinTime(0.2);

}  // namespace
}  // namespace lclm

BENCHMARK_MAIN();
