// y = x W^T for a weight matrix W [rows, cols] stored as f32, bf16 or f16
// (PyTorch's Linear layout: one row per output feature).
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/dtype.h"

namespace lclm {

struct WeightMatrix {
  DType dtype = DType::F32;
  const void* data = nullptr;
  std::size_t rows = 0;  // output features
  std::size_t cols = 0;  // input features

  std::size_t bytes() const { return rows * cols * dtype_size(dtype); }
};

// x [m, W.cols] -> y [m, W.rows]. Few rows (decode) run a fused
// convert-and-dot over the weights, streaming them once; many rows (prefill)
// widen blocks of W to f32 and hand them to OpenBLAS sgemm.
void matmul(const float* x, std::size_t m, const WeightMatrix& w, float* y);

// out [n, W.cols] = rows ids[i] of W as f32 (embedding lookup).
void gather_rows(const WeightMatrix& w, const std::int32_t* ids, std::size_t n, float* out);

}  // namespace lclm
