// y = x W^T for a weight matrix W [rows, cols] stored as f32, bf16, f16 or
// block-quantized q8_0 / q4_0 (PyTorch's Linear layout: one row per output
// feature).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "format/dtype.h"
#include "format/quant_blocks.h"

namespace lclm {

struct WeightMatrix {
  DType dtype = DType::F32;
  const void* data = nullptr;
  std::size_t rows = 0;  // output features
  std::size_t cols = 0;  // input features
  // kInterleaved16 for q8_0 / q4_0 matrices repacked at load for decode's
  // VNNI product (format/quant_blocks.h); every path reads either order.
  RowOrder order = RowOrder::kRowMajor;

  std::size_t bytes() const { return rows * row_bytes(dtype, cols); }
};

// Products of up to this many rows of x (decode, and decode batches of up to
// eight sequences) run the fused matvec: W is streamed once for all rows, and
// each row's result is bit for bit what it would be alone.
inline constexpr std::size_t kMatvecMaxRows = 8;

// x [m, W.cols] -> y [m, W.rows]. Few rows (decode) run a fused
// convert-and-dot over the weights, streaming them once (block-quantized
// weights multiply x quantized to int8 per block of 32, as ggml does); many
// rows (prefill) with bf16 weights run on the CPU's native bf16 arithmetic
// where it has some (oneDNN on AMX, else gemm_bf16 on AVX512_BF16; see
// ops/bf16_gemm.h), otherwise they widen blocks of W to f32 and hand them
// to OpenBLAS sgemm.
void matmul(const float* x, std::size_t m, const WeightMatrix& w, float* y);

// y_j = x W_j^T for several weight matrices that read the same x (q/k/v,
// gate/up). For few rows of x the threads split the matrices' rows taken
// together, in one parallel region instead of one per matrix: each region
// ends in a barrier, and decode runs hundreds of them per token.
void matmul_shared_input(const float* x, std::size_t m,
                         std::initializer_list<std::pair<const WeightMatrix*, float*>> outputs);

// Which kernel many-row products with bf16 weights take now, in words (for
// benchmark reports).
const char* bf16_prefill_kernel();

// out [n, W.cols] = rows ids[i] of W as f32 (embedding lookup).
void gather_rows(const WeightMatrix& w, const std::int32_t* ids, std::size_t n, float* out);

}  // namespace lclm
