// Kernels on block-quantized weight rows (layouts in format/quant_blocks.h), written
// once with Highway like ops/simd.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "format/dtype.h"

namespace lclm {

struct QuantizedActivations;

// y[i * y_stride + r] = dot(row r of W, x_i) for W [rows, cols] of block
// type `type` (Q8_0 or Q4_0, rows of row_bytes(type, cols) bytes) and the m
// rows of x quantized per block of 32 (xq [m, cols] int16 in [-127, 127],
// xd [m, cols / 32] scales): per block an integer multiply-add (int8/int4
// widened to int16, pairs summed into int32), then one float multiply-add by
// d_w * d_x. W is streamed once for all m rows, and y[i, r] comes out bit
// for bit the same whatever m is.
void matvec_quantized(DType type, const std::uint8_t* w, const std::int16_t* xq, const float* xd,
                      std::size_t m, std::size_t rows, std::size_t cols, float* y,
                      std::size_t y_stride);

// The same product on AVX512-VNNI (ops/quant_vnni.cc), from x's int8 form
// (QuantizedActivations::q8, pair_sum, pair_d; x quantized by
// quantize_activations with m rows). Exact integer block sums like the
// kernel above, summed in another fixed order, so y[i, r] is bit for bit
// the same whatever m is (not bit for bit matvec_quantized's). Needs
// cpu_has_avx512_vnni().
void matvec_quantized_vnni(DType type, const std::uint8_t* w, const QuantizedActivations& x,
                           std::size_t m, std::size_t rows, std::size_t cols, float* y,
                           std::size_t y_stride);
// The same product for W in the kInterleaved16 order (format/quant_blocks.h),
// `w` at the start of a group of 16 rows and rows a multiple of 16: per
// block, 64-byte loads of W (four for q4_0, eight for q8_0) feed eight
// `vpdpbusd` of 16 rows each, and an integer reduction gives the 16 rows'
// exact block sums in one vector, scaled and accumulated in float per
// block. y[i, r] is bit for bit the same whatever m is. Needs
// cpu_has_avx512_vnni().
void matvec_interleaved_vnni(DType type, const std::uint8_t* w, const QuantizedActivations& x,
                             std::size_t m, std::size_t rows, std::size_t cols, float* y,
                             std::size_t y_stride);
// AVX512F/BW/VL, AVX512_VNNI and F16C.
bool cpu_has_avx512_vnni();
// Whether decode's quantized products run matvec_quantized_vnni: the CPU has
// it and set_native_vnni(false) was not called (tests and benchmarks compare
// the two kernels).
bool native_vnni_enabled();
void set_native_vnni(bool on);

// out [n_rows, cols] = the rows of W widened to f32.
void dequantize_rows(DType type, const std::uint8_t* w, std::size_t n_rows, std::size_t cols,
                     float* out);

// out [n_rows, cols] = rows stored as `type` (F32, F16, BF16, Q8_0 or Q4_0;
// row_bytes(type, cols) bytes each, one after another) widened to f32: the
// weights of the prefill's f32 path, the KV cache's rows. Throws lclm::Error
// naming the dtype for any other type.
void widen_rows(DType type, const std::uint8_t* rows, std::size_t n_rows, std::size_t cols,
                float* out);

}  // namespace lclm
