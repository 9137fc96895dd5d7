// Vector primitives on spans of memory, written once with Highway and
// dispatched at run time to the best instruction set (AVX2, AVX-512, NEON...).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lclm {

// sum_i a[i] * b[i], a and b of length n.
float dot_f32(const float* a, const float* b, std::size_t n);
// y[i * y_stride + r] = dot(W[r, :], x[i, :]) for W [rows, cols] stored as
// bf16 / f16 / f32 and x [m, cols]: W is streamed once for all m rows of x,
// and y[i, r] comes out bit for bit the same whatever m is (a sequence
// decoded in a batch gets the numbers it would alone).
void matvec_bf16(const std::uint16_t* w, const float* x, std::size_t m, std::size_t rows,
                 std::size_t cols, float* y, std::size_t y_stride);
void matvec_f16(const std::uint16_t* w, const float* x, std::size_t m, std::size_t rows,
                std::size_t cols, float* y, std::size_t y_stride);
void matvec_f32(const float* w, const float* x, std::size_t m, std::size_t rows, std::size_t cols,
                float* y, std::size_t y_stride);
// out[i] = float(in[i]), length n.
void convert_bf16_to_f32(const std::uint16_t* in, float* out, std::size_t n);
void convert_f16_to_f32(const std::uint16_t* in, float* out, std::size_t n);
// y[i] += a * x[i], length n.
void axpy_f32(float a, const float* x, float* y, std::size_t n);
// x[i] *= a, length n.
void scale_f32(float* x, float a, std::size_t n);

}  // namespace lclm
