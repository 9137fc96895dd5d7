// bf16 helpers for the CPU's native bf16 arithmetic (AVX512_BF16, AMX),
// which ops/onednn_matmul.h multiplies with.
//
// Accuracy: x is split into two bf16 parts, x = hi + lo with hi = bf16(x)
// and lo = bf16(x - hi). The pair carries 16 significant bits of x (against
// f32's 24), so a product of bf16 weights with both parts is within about
// 2^-15 of its f32 value relative to sum |w x|: the engine's 1e-4 parity with
// the f32 reference holds, where bf16(x) alone (8 bits) would miss it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lclm {

// Whether this CPU has AVX512_BF16.
bool cpu_has_avx512_bf16();
// Whether bf16 weights take the native kernels (ops/onednn_matmul.h): on by
// default where the CPU has them, off with LCLM_NATIVE_BF16=0 in the
// environment or set_native_bf16(false), so the portable path can be
// measured and tested on the same machine.
bool native_bf16_enabled();
void set_native_bf16(bool on);

// hi[i] = bf16(x[i]), lo[i] = bf16(x[i] - float(hi[i])), round to nearest
// even, length n.
void split_bf16(const float* x, std::size_t n, std::uint16_t* hi, std::uint16_t* lo);

}  // namespace lclm
