// An LCLM in libtorch, for training: the encoder, the adapter and the decoder
// of a published checkpoint as one module, computing what the engine's
// LatentEncoder, Adapter and LclmModel::prepare + Qwen3Model compute, with
// autograd through all three. Sequences are unbatched: the trainer packs
// its data into one decoder sequence per step.
//
// Submodules are "encoder", "adapter" and "decoder"; below them parameters
// carry the checkpoint's tensor names (see trainer/torch_qwen3.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "compression/lclm_config.h"
#include "model/qwen3_config.h"
#include "trainer/torch_qwen3.h"

namespace lclm::train {

// The adapter: RMSNorm(eps 1e-6) -> fc1 (+bias) -> exact GELU -> fc2 (+bias);
// mlp_attn runs bidirectional Qwen3 layers with the decoder's config after
// the MLP, attn_mlp runs them with the encoder's config before it.
class TorchAdapter : public torch::nn::Module {
 public:
  TorchAdapter(const LclmConfig& config, const Qwen3Config& encoder, const Qwen3Config& decoder);

  std::int64_t input_dim() const { return input_dim_; }    // E, or r * E for concat pooling
  std::int64_t output_dim() const { return output_dim_; }  // D

  // pooled [n, input_dim] (one memory region) -> [n, D]. The attention layers
  // see the region's latents together, at positions 0..n-1.
  torch::Tensor forward(const torch::Tensor& pooled);

  std::shared_ptr<TorchRmsNorm> norm;      // [input_dim]
  std::shared_ptr<TorchLinear> fc1;        // [D, input_dim], bias [D]
  std::shared_ptr<TorchLinear> fc2;        // [D, D], bias [D]
  torch::nn::ModuleList attention_layers;  // "{i}.decoder_layer" blocks; empty for mlp

 private:
  torch::Tensor run_attention(const torch::Tensor& x);  // [n, width] -> [n, width]
  torch::Tensor run_mlp(const torch::Tensor& x) const;  // [n, input_dim] -> [n, D]

  AdapterType type_;
  std::int64_t input_dim_, output_dim_;
  std::vector<std::shared_ptr<TorchQwen3Layer>> attention_blocks_;  // the registered blocks
  std::optional<RopeCache> rope_;  // of the attention layers' config
};

// Token ids the LCLM path needs besides the configs, read from the
// checkpoint's tokenizers.
struct LclmTokenIds {
  std::int32_t memory = -1;       // the decoder's <|memory|>: one latent per position
  std::int32_t encoder_pad = -1;  // what eos pooling appends to each window
};

class TorchLclm : public torch::nn::Module {
 public:
  TorchLclm(const LclmConfig& config, const Qwen3Config& encoder_config,
            const Qwen3Config& decoder_config, const LclmTokenIds& token_ids);

  const LclmConfig& config() const { return config_; }
  const LclmTokenIds& token_ids() const { return token_ids_; }

  // The pooled encoder states of one memory region's T encoder tokens:
  // [ceil(T / r), adapter->input_dim()]. Windows of W tokens are encoded on
  // their own with positions from 0; windows of equal length run as a batch.
  // ratio > 0 runs the config at that ratio (LclmConfig::at_ratio), as the
  // engine's --ratio does; 0 keeps the checkpoint's.
  torch::Tensor pool_region(std::span<const std::int32_t> tokens, std::int64_t ratio = 0);
  // The region's latents adapter(pool_region(tokens)): [ceil(T / r), D].
  torch::Tensor encode_region(std::span<const std::int32_t> tokens, std::int64_t ratio = 0);

  // The decoder's input [L, D]: embeddings of decoder_ids [L] with the k-th
  // <|memory|> position replaced by the k-th latent of the regions, taken in
  // order; region i is compressed at ratios[i] when ratios is not empty.
  // Throws lclm::Error when the placeholders and latents differ in number.
  torch::Tensor decoder_inputs(std::span<const std::int32_t> decoder_ids,
                               std::span<const std::vector<std::int32_t>> regions,
                               std::span<const std::int64_t> ratios = {});
  // logits [L, vocab] of the spliced sequence: causal, positions 0..L-1.
  torch::Tensor forward(std::span<const std::int32_t> decoder_ids,
                        std::span<const std::vector<std::int32_t>> regions,
                        std::span<const std::int64_t> ratios = {});

  // Widens the encoder to hidden_size, a multiple k of its hidden size, with
  // k times the heads (head_dim kept) and MLP width, and the mlp adapter's
  // input with it. The old weights fill the leading blocks; what writes the
  // new residual dimensions (embedding columns, o_proj and down_proj) starts
  // at zero, so they stay zero and the latents are the old ones up to the
  // RMS norms' epsilon (their weights are scaled by 1/sqrt(k), as the mean
  // square now runs over k times the dimensions); what reads them starts
  // random, so training gives them a use. Throws lclm::Error for another
  // size, concat pooling or an adapter with attention layers.
  void widen_encoder(std::int64_t hidden_size);

  std::shared_ptr<TorchQwen3> encoder;
  std::shared_ptr<TorchAdapter> adapter;
  std::shared_ptr<TorchQwen3> decoder;

 private:
  LclmConfig config_;
  LclmTokenIds token_ids_;
};

}  // namespace lclm::train
