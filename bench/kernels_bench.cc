// Kernel micro-benchmarks (Google Benchmark): the products decode and
// batched decode run, on Qwen3-0.6B's matrix shapes, one thread or the
// OpenMP team, so kernel figures in docs/benchmarks.md can be reproduced:
//
//   build/bin/lclm-bench-kernels --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one line)
//
// BM_Attention times attention's two paths at long context, a prefill chunk
// and a decoded token (--benchmark_filter=BM_Attention).
//
// Counters: MAC/s (multiply-adds of the product per second) and weight
// bytes/s (the stream the product reads; decode is bound by it at one row).
// Each iteration reads the next of several copies of W, 256 MiB in all, so
// the weights come from memory as they do in a model's forward pass.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "format/dtype.h"
#include "format/quant_blocks.h"
#include "ops/attention.h"
#include "ops/bf16_gemm.h"
#include "ops/matmul.h"
#include "ops/simd.h"
#include "util/aligned_vector.h"
#include "yardsticks.h"

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

// The bf16 dot-product peak at `threads`, measured once per run.
double bf16_peak_gflops(int threads) {
  static std::map<int, double> peaks;
  auto it = peaks.find(threads);
  if (it == peaks.end()) it = peaks.emplace(threads, measure_bf16_dot_gflops(threads)).first;
  return it->second;
}

// Attention on the Qwen3-4B decoder's heads (32 query heads, 8 kv heads of
// 128) over a bf16 KV cache: the last m queries of a causal prompt of n keys
// (m = 512: a prefill chunk; m = 1: a decoded token). Args: n, path (0:
// f32, as LCLM_BF16_ACTIVATIONS=split runs it; 1: the bf16 kernels, the
// default), threads (0 = all), m. Counters:
// FLOP/s of the two products (4 * head_dim per query head and visible key)
// and that as a fraction of the bf16 dot-product peak measured in this run.
void BM_Attention(benchmark::State& state) {
  const auto n_keys = static_cast<std::size_t>(state.range(0));
  const bool bf16 = state.range(1) == 1;
  const int threads = state.range(2) > 0 ? static_cast<int>(state.range(2)) : omp_get_num_procs();
  omp_set_num_threads(threads);
  const AttentionShape shape{32, 8, 128, n_keys};
  const auto n_q = static_cast<std::size_t>(state.range(3));
  const std::size_t pos0 = n_keys - n_q, hd = shape.head_dim;
  std::mt19937 rng(13);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> k(shape.n_kv_heads * n_keys * hd), v(k.size());
  for (auto& x : k) x = f32_to_bf16(normal(rng));
  for (auto& x : v) x = f32_to_bf16(normal(rng));
  AlignedVector<float> q(n_q * shape.n_heads * hd), out(q.size());
  for (float& x : q) x = normal(rng);
  set_bf16_activation_precision(bf16 ? Bf16Precision::kRounded : Bf16Precision::kSplit);
  const KVRows k_rows{reinterpret_cast<const std::uint8_t*>(k.data()), DType::BF16};
  const KVRows v_rows{reinterpret_cast<const std::uint8_t*>(v.data()), DType::BF16};
  for (auto _ : state) {
    attention(q.data(), n_q, pos0, k_rows, v_rows, n_keys, shape, AttentionMask::Causal,
              out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_bf16_activation_precision(Bf16Precision::kRounded);
  // Query i sees pos0 + i + 1 keys.
  const double pairs = static_cast<double>(n_q) * static_cast<double>(pos0) +
                       static_cast<double>(n_q * (n_q + 1) / 2);
  const double flops = 4.0 * static_cast<double>(hd * shape.n_heads) * pairs;
  const double rate = flops * static_cast<double>(state.iterations());
  state.counters["FLOP/s"] = benchmark::Counter(rate, benchmark::Counter::kIsRate);
  const double peak = bf16_peak_gflops(threads) * 1e9;
  if (peak > 0) {
    state.counters["of bf16 peak"] = benchmark::Counter(rate / peak, benchmark::Counter::kIsRate);
  }
  if (n_q == 1) {  // decode reads the cache: its bytes per second
    state.counters["KV bytes/s"] = benchmark::Counter(
        static_cast<double>(k.size() * 2 * 2) * static_cast<double>(state.iterations()),
        benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
  }
  state.SetLabel(std::string(bf16 ? "bf16 kernels" : "f32") + " n=" + std::to_string(n_keys) +
                 " m=" + std::to_string(n_q) + " t=" + std::to_string(threads));
}

void AttentionArgs(benchmark::internal::Benchmark* b) {
  for (const std::int64_t m : {512, 1}) {
    for (const std::int64_t n : {4096, 16384}) {
      for (const std::int64_t threads : {1, 0}) {
        for (const std::int64_t path : {0, 1}) b->Args({n, path, threads, m});
      }
    }
  }
}

BENCHMARK(BM_Attention)->Apply(AttentionArgs)->UseRealTime()->MinTime(1.0);

}  // namespace
}  // namespace lclm

BENCHMARK_MAIN();
