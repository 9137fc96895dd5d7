// bf16 weight kernels on the CPU's native bf16 dot product (AVX512_BF16's
// vdpbf16ps: 32 bf16 products summed into 16 f32 lanes per instruction).
//
// Highway 1.0 has no target with native bf16 arithmetic (it widens bf16 to
// f32 and multiplies in f32), so these are written with intrinsics and
// chosen at run time; on CPUs without AVX512_BF16 the Highway kernels of
// ops/simd.h run instead.
//
// Accuracy: x is split into two bf16 parts, x = hi + lo with hi = bf16(x)
// and lo = bf16(x - hi), and each weight row is multiplied with both. The
// pair carries 16 significant bits of x (against f32's 24), so a dot product
// is within about 2^-16 of its f32 value relative to sum |w x|: the engine's
// 1e-4 parity with the f32 reference holds, where bf16(x) alone (8 bits)
// would miss it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lclm {

// Whether this CPU runs vdpbf16ps.
bool cpu_has_avx512_bf16();
// Whether bf16 weights take the native kernels (these and
// ops/onednn_matmul.h): on by default where the CPU has them, off with
// LCLM_NATIVE_BF16=0 in the environment or set_native_bf16(false), so the
// portable path can be measured and tested on the same machine.
bool native_bf16_enabled();
void set_native_bf16(bool on);

// hi[i] = bf16(x[i]), lo[i] = bf16(x[i] - float(hi[i])), round to nearest
// even, length n.
void split_bf16(const float* x, std::size_t n, std::uint16_t* hi, std::uint16_t* lo);

// y[r] = dot(W[r, :], hi + lo) for W [rows, cols] bf16 and x split by
// split_bf16. Needs cpu_has_avx512_bf16().
void matvec_bf16_split(const std::uint16_t* w, const std::uint16_t* x_hi, const std::uint16_t* x_lo,
                       std::size_t rows, std::size_t cols, float* y);

}  // namespace lclm
