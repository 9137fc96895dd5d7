// The encoder half of an LCLM: a memory region's tokens are cut into windows
// of W tokens, each encoded on its own (positions from 0, causal or
// bidirectional), and pooled in groups of r tokens into latents.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "compression/lclm_config.h"
#include "model/kv_cache.h"
#include "model/qwen3_model.h"

namespace lclm {

// One window of a region: the tokens it pools and the context around them.
struct EncoderWindow {
  std::size_t begin = 0, end = 0;  // pooled tokens [begin, end) of the region
  std::size_t left_context = 0;    // tokens before `begin` given as context only
  std::size_t right_context = 0;   // tokens after `end` (bidirectional masks only)
  std::size_t latents = 0;         // max(1, ceil((end - begin) / r))
};

// Tiles T tokens into windows of W: the last may be short, every one yields
// ceil(len / r) latents, so a region yields ceil(T / r) in all (W is a
// multiple of r). boundary_overlap B adds up to B tokens of context before
// each window and, with a bidirectional mask, after it.
std::vector<EncoderWindow> tile_windows(std::size_t n_tokens, const LclmConfig& config);

// Latents of a region, in order: ceil(T / r) rows of pooled_dim(config)
// values. The config (ratio, window, pooling, mask, overlap) is given per
// call, so one encoder serves every ratio a checkpoint allows.
class LatentEncoder {
 public:
  // pad_id: the token eos pooling appends after each window (the encoder
  // tokenizer's pad token, as the reference does).
  LatentEncoder(const Qwen3Model& encoder, std::int32_t pad_id);

  // E, or r * E for concat pooling.
  std::size_t pooled_dim(const LclmConfig& config) const;
  std::vector<float> encode_region(std::span<const std::int32_t> tokens,
                                   const LclmConfig& config) const;
  // What a window's KV cache stores: bf16 for bf16 or q8_0/q4_0 matrices
  // where attention runs on the bf16 kernels (bf16_attention_kernels: x
  // rounded, the default), as the decoder's does; f32 otherwise (f32/f16
  // matrices, or LCLM_BF16_ACTIVATIONS=split, as the parity tests run), exact.
  KVCacheTypes window_cache_types() const;

 private:
  // Encodes one window and writes its w.latents pooled rows to out.
  void encode_window(std::span<const std::int32_t> tokens, const EncoderWindow& w,
                     const LclmConfig& config, float* out) const;
  void pool_window(const float* hidden, const EncoderWindow& w, const LclmConfig& config,
                   float* out) const;

  const Qwen3Model& encoder_;
  std::int32_t pad_id_;
};

}  // namespace lclm
