// AVX-512 intrinsics for the kernel files that call them directly
// (bf16_gemm.cc, bf16_kernels.cc, bf16_matvec.cc, quant_vnni.cc). Only the
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
