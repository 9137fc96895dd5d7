#include "compression/latent_encoder.h"

#include <algorithm>
#include <exception>

#include "model/kv_cache.h"
#include "ops/attention.h"
#include "ops/simd.h"
#include "ops/transformer_ops.h"

namespace lclm {

std::vector<EncoderWindow> tile_windows(std::size_t n_tokens, const LclmConfig& config) {
  const auto W = static_cast<std::size_t>(config.encoder_window_size);
  const auto r = static_cast<std::size_t>(config.compression_ratio);
  const auto B = static_cast<std::size_t>(config.boundary_overlap);
  std::vector<EncoderWindow> windows;
  for (std::size_t begin = 0; begin < n_tokens; begin += W) {
    EncoderWindow w;
    w.begin = begin;
    w.end = std::min(n_tokens, begin + W);
    w.left_context = std::min(B, begin);
    w.right_context =
        config.encoder_mask == AttentionMask::Bidirectional ? std::min(B, n_tokens - w.end) : 0;
    w.latents = std::max<std::size_t>(1, (w.end - w.begin + r - 1) / r);
    windows.push_back(w);
  }
  return windows;
}

LatentEncoder::LatentEncoder(const Qwen3Model& encoder, std::int32_t pad_id)
    : encoder_(encoder), pad_id_(pad_id) {}

std::size_t LatentEncoder::pooled_dim(const LclmConfig& config) const {
  const auto E = static_cast<std::size_t>(encoder_.config().hidden_size);
  return config.pooling == Pooling::Concat ? E * static_cast<std::size_t>(config.compression_ratio)
                                           : E;
}

std::vector<float> LatentEncoder::encode_region(std::span<const std::int32_t> tokens,
                                                const LclmConfig& config) const {
  const auto windows = tile_windows(tokens.size(), config);
  const std::size_t dim = pooled_dim(config);
  // Where each window's latents start, and how many there are in all.
  std::vector<std::size_t> first(windows.size());
  std::size_t total = 0;
  for (std::size_t i = 0; i < windows.size(); ++i) {
    first[i] = total;
    total += windows[i].latents;
  }
  std::vector<float> latents(total * dim);

  // Windows are independent, and one window's matrices (64 rows of a small
  // encoder) are too small to split across threads, so each thread encodes
  // whole windows; the ops' own parallel regions inside are then inactive
  // (nested), and every window is computed as it is on one thread.
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic) if (windows.size() > 1)
  for (std::size_t i = 0; i < windows.size(); ++i) {
    try {
      encode_window(tokens, windows[i], config, latents.data() + first[i] * dim);
    } catch (...) {
#pragma omp critical(lclm_encode_region_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return latents;
}

void LatentEncoder::encode_window(std::span<const std::int32_t> tokens, const EncoderWindow& w,
                                  const LclmConfig& config, float* out) const {
  const auto E = static_cast<std::size_t>(encoder_.config().hidden_size);
  // [left context | pooled tokens | right context | eos slots]
  std::vector<std::int32_t> seq(
      tokens.begin() + static_cast<std::ptrdiff_t>(w.begin - w.left_context),
      tokens.begin() + static_cast<std::ptrdiff_t>(w.end + w.right_context));
  if (config.pooling == Pooling::Eos) seq.insert(seq.end(), w.latents, pad_id_);
  std::vector<float> hidden(seq.size() * E);
  encoder_.embed(seq, hidden.data());
  KVCache cache = encoder_.make_cache(seq.size(), seq.size(), window_cache_types());
  encoder_.forward(hidden.data(), seq.size(), cache, config.encoder_mask);
  pool_window(hidden.data(), w, config, out);
}

KVCacheTypes LatentEncoder::window_cache_types() const {
  // At a window of 1024 attention is a tenth of the encoder's FLOPs, and on
  // the f32 path it took about a fifth of its time.
  const DType matrices = encoder_.matrix_dtype();
  const bool rounded_matrices =
      matrices == DType::BF16 || matrices == DType::Q8_0 || matrices == DType::Q4_0;
  return rounded_matrices &&
                 bf16_attention_kernels(static_cast<std::size_t>(encoder_.config().head_dim))
             ? kDefaultKVCacheTypes
             : KVCacheTypes{};
}

void LatentEncoder::pool_window(const float* hidden, const EncoderWindow& w,
                                const LclmConfig& config, float* out) const {
  const auto E = static_cast<std::size_t>(encoder_.config().hidden_size);
  const auto r = static_cast<std::size_t>(config.compression_ratio);
  const std::size_t len = w.end - w.begin;
  if (config.pooling == Pooling::Eos) {
    // The eos slots sit at the end of the window's sequence.
    const std::size_t first = w.left_context + len + w.right_context;
    std::copy_n(hidden + first * E, w.latents * E, out);
    return;
  }
  const float* pooled = hidden + w.left_context * E;
  for (std::size_t g = 0; g < w.latents; ++g) {
    const std::size_t g0 = g * r, g1 = std::min(len, g0 + r);
    if (config.pooling == Pooling::Concat) {
      // Row-major flatten of the group, zero-padded to r * E when short.
      float* dst = out + g * r * E;
      std::fill(dst, dst + r * E, 0.0f);
      std::copy(pooled + g0 * E, pooled + g1 * E, dst);
    } else {
      float* dst = out + g * E;
      std::fill(dst, dst + E, 0.0f);
      for (std::size_t t = g0; t < g1; ++t) add_inplace(dst, pooled + t * E, E);
      scale_f32(dst, 1.0f / static_cast<float>(g1 - g0), E);
    }
  }
}

}  // namespace lclm
