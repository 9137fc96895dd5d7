// AVX-512 intrinsics for the kernel files that call them directly
// (bf16_gemm.cc, bf16_kernels.cc, bf16_matvec.cc, bf16_attention.cc,
// quant_vnni.cc), and the register transpose two of them pack with. Only the
// functions that carry one of the attributes below use AVX-512
// instructions, so the rest of the binary runs on any x86-64; callers check
// the CPU (cpu_has_avx512_bf16(), cpu_has_avx512_vnni()) first.
//
// Include it from .cc files only: GCC 12's AVX-512 headers fill unused
// lanes from _mm512_undefined_*(), which its own -Wuninitialized then
// reports inside the intrinsics wherever they are inlined, so those two
// warnings are off for the rest of the including file.
#pragma once

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>  // IWYU pragma: export

#define LCLM_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define LCLM_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

namespace lclm {

// r[0..16) = the columns of the 16 x 16 matrix of 32-bit words whose rows
// were r[0..16): pairs of rows, then of pairs, interleaved within each
// 128-bit lane, then the lanes gathered across vectors.
LCLM_AVX512_BF16 inline void transpose_16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + c], lane L: column 4L + c of rows 4i .. 4i+3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    // Lanes 0, 1 of rows 0-3 and 4-7, then lanes 2, 3; likewise rows 8-15.
    const __m512i low0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44);
    const __m512i high0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xee);
    const __m512i low1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
    const __m512i high1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xee);
    t[c] = _mm512_shuffle_i32x4(low0, low1, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(low0, low1, 0xdd);
    t[8 + c] = _mm512_shuffle_i32x4(high0, high1, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(high0, high1, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace lclm
