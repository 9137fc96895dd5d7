// Prefill attention's two products on AVX512_BF16 (`vdpbf16ps`), for a KV
// cache stored in bf16: the scores of query rows rounded to bf16 against a
// block of keys, and the sum of a block of values weighted by the softmax
// weights rounded to bf16; both sum in f32. ops/attention.cc runs the online
// softmax around them (bf16_prefill_attention() there says when).
//
// Layouts: a "pair word" holds two bf16 numbers, the first in its low half,
// as `vdpbf16ps` multiplies them. head_dim must be a multiple of 32 and the
// CPU must have AVX512_BF16 (cpu_has_avx512_bf16()).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lclm::bf16_attention {

// Keys per block, as the f32 path's: a block's packed keys and values (16
// KiB each at head_dim 128) stay in L1 together (blocks of 128 ran 7%
// slower at one thread on a Zen 5).
constexpr std::size_t kKeys = 64;

// kt [hd / 2][kKeys]: word j of line p = pair p (elements 2p, 2p + 1) of key
// j, for the nk (<= kKeys) keys k [nk][hd]; zero for keys nk .. kKeys - 1.
void pack_keys(const std::uint16_t* k, std::size_t nk, std::size_t hd, std::uint32_t* kt);

// vp [(nk + 1) / 2][hd]: word d of line t = (v[2t][d], v[2t + 1][d]) for the
// nk (<= kKeys) values v [nk][hd]; the missing partner of an odd last row is
// zero.
void pack_values(const std::uint16_t* v, std::size_t nk, std::size_t hd, std::uint32_t* vp);

// scores [n_rows][kKeys]: scores[r][j] = scale * (q_r . k_j) for j < 16 *
// chunks (chunks <= kKeys / 16), over the rounded queries q [n_rows][hd / 2] and the
// packed keys kt (pack_keys). The scores past the block's keys are 0.
// (round_bf16_pairs, ops/bf16_gemm.h, rounds the queries.)
void scores(const std::uint32_t* q, std::size_t n_rows, std::size_t hd, const std::uint32_t* kt,
            std::size_t chunks, float scale, float* scores);

// acc [n_rows][hd] = acc * correction[r] + sum_{j < n_keys} bf16(p[r][j]) v_j
// over the packed values vp (pack_values); p [n_rows][kKeys]. With n_keys odd
// the weight p[r][n_keys] is read too, and must be 0.
void accumulate_values(const float* p, std::size_t n_rows, std::size_t n_keys,
                       const std::uint32_t* vp, std::size_t hd, const float* correction,
                       float* acc);

}  // namespace lclm::bf16_attention
