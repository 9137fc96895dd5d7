#include "ops/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "format/quant_blocks.h"
#include "ops/bf16_gemm.h"
#include "ops/bf16_kernels.h"
#include "ops/bf16_matvec.h"
#include "ops/onednn_matmul.h"
#include "ops/quant_kernels.h"
#include "ops/simd.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace lclm {
namespace {

// Rows of W widened to f32 per sgemm call: 256 rows of a 4096-wide matrix is
// 4 MiB, which stays in cache while OpenBLAS reuses it across all m rows of x.
constexpr std::size_t kWidenBlockRows = 256;

// Rows row0 .. row0 + n_rows of W (any dtype) in the row-major order: where
// they are, or put back into that order in `scratch` for an interleaved W
// (whole rows, so one row after another either way).
const std::uint8_t* row_major_rows(const WeightMatrix& w, std::size_t row0, std::size_t n_rows,
                                   std::vector<std::uint8_t>& scratch) {
  return row_major_blocks(w.dtype, w.order, static_cast<const std::uint8_t*>(w.data), w.cols, row0,
                          n_rows, 0, w.cols / kQuantBlock, scratch)
      .data;
}

void widen_rows(const WeightMatrix& w, std::size_t row0, std::size_t n_rows, float* out) {
  thread_local std::vector<std::uint8_t> scratch;
  widen_rows(w.dtype, row_major_rows(w, row0, n_rows, scratch), n_rows, w.cols, out);
}

// Whether many-row products with bf16 weights run on gemm_bf16: native bf16
// kernels on, AVX512_BF16, and no AMX, where oneDNN's tiles beat
// `vdpbf16ps` (on a Zen 5 without AMX, gemm_bf16 ran at 1.0-1.1x oneDNN's
// speed at the same precision; docs/benchmarks.md).
// Block-quantized weights take it too, widened to bf16 as they are packed
// (gemm_bf16_quantized), with x rounded to bf16 (see matmul_bf16_gemm).
bool use_bf16_gemm(const WeightMatrix& w) {
  return (w.dtype == DType::BF16 || is_block_quantized(w.dtype)) && native_bf16_enabled() &&
         !onednn_uses_amx();
}

// Whether products with W take x rounded to bf16 (Bf16Precision::kRounded,
// ops/bf16_gemm.h): bf16 weights on gemm_bf16 at that precision. The
// matrix-vector path (decode, chunks of up to kMatvecMaxRows rows) rounds x
// too, so a position's numbers do not depend on the path or the chunk that
// computed it: only the order of the sums differs, as between the f32 paths.
bool rounds_x(const WeightMatrix& w) {
  return w.dtype == DType::BF16 && use_bf16_gemm(w) &&
         bf16_activation_precision() == Bf16Precision::kRounded;
}

// y[i, r0..r1) = rows r0..r1 of W times x_i for the m rows of x (y rows
// w.rows apart); xq is x quantized per block, which block-quantized weights
// multiply instead, and xw x rounded to bf16, which bf16 weights multiply
// where rounds_x(w).
void matvec_range(const WeightMatrix& w, const float* x, const QuantizedActivations* xq,
                  const Bf16Rows* xw, std::size_t m, std::size_t r0, std::size_t r1, float* y) {
  const std::size_t k = w.cols, n = r1 - r0;
  if (rounds_x(w)) {
    matvec_bf16_rounded(static_cast<const std::uint16_t*>(w.data) + r0 * k, *xw, n, y, w.rows);
  } else if (w.order == RowOrder::kInterleaved16 && native_vnni_enabled()) {
    // r0 is a multiple of kMatvecItemRows, so of the 16 rows of a group.
    matvec_interleaved_vnni(w.dtype,
                            static_cast<const std::uint8_t*>(w.data) + r0 * row_bytes(w.dtype, k),
                            *xq, m, n, k, y, w.rows);
  } else if (is_block_quantized(w.dtype)) {
    thread_local std::vector<std::uint8_t> scratch;
    const std::uint8_t* rows = row_major_rows(w, r0, n, scratch);
    if (native_vnni_enabled()) {
      matvec_quantized_vnni(w.dtype, rows, *xq, m, n, k, y, w.rows);
    } else {
      matvec_quantized(w.dtype, rows, xq->q.data(), xq->d.data(), m, n, k, y, w.rows);
    }
  } else if (w.dtype == DType::F32) {
    matvec_f32(static_cast<const float*>(w.data) + r0 * k, x, m, n, k, y, w.rows);
  } else if (w.dtype == DType::BF16) {
    matvec_bf16(static_cast<const std::uint16_t*>(w.data) + r0 * k, x, m, n, k, y, w.rows);
  } else {
    matvec_f16(static_cast<const std::uint16_t*>(w.data) + r0 * k, x, m, n, k, y, w.rows);
  }
}

// Rows of W per item of the decode products' parallel loop: 64 rows of a
// 1024-wide bf16 matrix stream 128 KiB, long enough for the prefetchers and
// short enough that a thread that loses its core holds up little (a
// multiple of the kernels' tile of four rows).
constexpr std::size_t kMatvecItemRows = 64;

// The rows of all matrices taken together, in items of kMatvecItemRows
// rows of one matrix, claimed one at a time by the threads of the pool
// (util/thread_pool.h): the weights are streamed once per call, every item
// multiplies its rows with every row of x, and one parallel loop serves all
// the matrices.
void matvec_rows(const float* x, std::size_t m,
                 std::initializer_list<std::pair<const WeightMatrix*, float*>> outputs) {
  std::size_t items = 0;
  bool any_quantized = false, any_rounded = false;
  for (const auto& [w, y] : outputs) {
    items += (w->rows + kMatvecItemRows - 1) / kMatvecItemRows;
    any_quantized = any_quantized || is_block_quantized(w->dtype);
    any_rounded = any_rounded || rounds_x(*w);
  }
  // Quantized (or rounded) once by the calling thread, read by all.
  thread_local QuantizedActivations xq_storage;
  QuantizedActivations& xq = xq_storage;
  const std::size_t k = outputs.begin()->first->cols;
  if (any_quantized) quantize_activations(x, m, k, xq);
  thread_local Bf16Rows xw_storage;
  Bf16Rows& xw = xw_storage;
  if (any_rounded) to_bf16_rows(x, m, k, Bf16Precision::kRounded, xw);
  parallel_for(items, [&](std::size_t item) {
    for (const auto& [w, y] : outputs) {
      const std::size_t w_items = (w->rows + kMatvecItemRows - 1) / kMatvecItemRows;
      if (item < w_items) {
        const std::size_t r0 = item * kMatvecItemRows;
        const std::size_t r1 = std::min(w->rows, r0 + kMatvecItemRows);
        matvec_range(*w, x, &xq, &xw, m, r0, r1, y + r0);
        return;
      }
      item -= w_items;
    }
  });
}

// y_j = x W_j^T on gemm_bf16, x converted once for all the W_j.
void matmul_bf16_gemm(const float* x, std::size_t m,
                      std::initializer_list<std::pair<const WeightMatrix*, float*>> outputs) {
  // The calling thread's: matmul is called from outside parallel regions.
  thread_local Bf16Rows rows;
  // Quantized weights are approximations already (q8_0: up to 2^-8 of a
  // block's largest weight), so x is rounded to bf16 (2^-9) rather than
  // split, as llama.cpp rounds x to 8 bits for them: half the dot products.
  const bool quantized = std::all_of(outputs.begin(), outputs.end(), [](const auto& output) {
    return is_block_quantized(output.first->dtype);
  });
  to_bf16_rows(x, m, outputs.begin()->first->cols,
               quantized ? Bf16Precision::kRounded : bf16_activation_precision(), rows);
  for (const auto& [w, y] : outputs) {
    if (is_block_quantized(w->dtype)) {
      gemm_bf16_quantized(rows, w->dtype, static_cast<const std::uint8_t*>(w->data), w->rows, y,
                          w->order);
    } else {
      gemm_bf16(rows, static_cast<const std::uint16_t*>(w->data), w->rows, y);
    }
  }
}

void check_weight_dtype(const WeightMatrix& w) {
  if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F16 &&
      !is_block_quantized(w.dtype)) {
    throw Error("matmul: weights of dtype " + std::string(dtype_name(w.dtype)) +
                " are not supported");
  }
}

}  // namespace

void matmul(const float* x, std::size_t m, const WeightMatrix& w, float* y) {
  check_weight_dtype(w);
  if (m <= kMatvecMaxRows) {
    matvec_rows(x, m, {{&w, y}});
    return;
  }
  const std::size_t n = w.rows, k = w.cols;
  if (w.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, x, static_cast<int>(k),
                static_cast<const float*>(w.data), static_cast<int>(k), 0.0f, y,
                static_cast<int>(n));
    return;
  }
  if (use_bf16_gemm(w)) {
    matmul_bf16_gemm(x, m, {{&w, y}});
    return;
  }
  if (matmul_bf16_onednn(x, m, w, y)) return;
  std::vector<float> block(std::min(kWidenBlockRows, n) * k);
  for (std::size_t r0 = 0; r0 < n; r0 += kWidenBlockRows) {
    const std::size_t nb = std::min(kWidenBlockRows, n - r0);
    widen_rows(w, r0, nb, block.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(nb),
                static_cast<int>(k), 1.0f, x, static_cast<int>(k), block.data(),
                static_cast<int>(k), 0.0f, y + r0, static_cast<int>(n));
  }
}

void matmul_shared_input(const float* x, std::size_t m,
                         std::initializer_list<std::pair<const WeightMatrix*, float*>> outputs) {
  for (const auto& [w, y] : outputs) check_weight_dtype(*w);
  if (m <= kMatvecMaxRows) {
    matvec_rows(x, m, outputs);
    return;
  }
  if (std::all_of(outputs.begin(), outputs.end(),
                  [](const auto& output) { return use_bf16_gemm(*output.first); })) {
    matmul_bf16_gemm(x, m, outputs);
    return;
  }
  for (const auto& [w, y] : outputs) matmul(x, m, *w, y);
}

const char* bf16_prefill_kernel() {
  const WeightMatrix bf16{DType::BF16, nullptr, 0, 0};
  if (use_bf16_gemm(bf16)) {
    return bf16_activation_precision() == Bf16Precision::kSplit ? "vdpbf16ps gemm, x split"
                                                                : "vdpbf16ps gemm, x rounded";
  }
  return onednn_native_bf16() ? "oneDNN bf16 matmul, x split" : "widened to f32, OpenBLAS sgemm";
}

void gather_rows(const WeightMatrix& w, const std::int32_t* ids, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= w.rows) {
      throw Error("token id " + std::to_string(ids[i]) + " is outside the embedding table (" +
                  std::to_string(w.rows) + " rows)");
    }
    widen_rows(w, static_cast<std::size_t>(ids[i]), 1, out + i * w.cols);
  }
}

}  // namespace lclm
