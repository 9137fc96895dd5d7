#include "trainer/torch_lclm.h"

#include <cmath>
#include <map>
#include <string>

#include "compression/latent_encoder.h"
#include "util/error.h"

namespace lclm::train {
namespace {

constexpr double kAdapterNormEps = 1e-6;

torch::Tensor ids_tensor(std::span<const std::int32_t> ids) {
  torch::Tensor t = torch::empty({static_cast<std::int64_t>(ids.size())}, torch::kLong);
  std::int64_t* out = t.data_ptr<std::int64_t>();
  for (std::size_t i = 0; i < ids.size(); ++i) out[i] = ids[i];
  return t;
}

// The latents of one window from its encoder states hidden [S, E], S being
// [left context | len pooled tokens | right context | eos slots]:
// [w.latents, E] (mean, eos) or [w.latents, r * E] (concat).
torch::Tensor pool_window(const torch::Tensor& hidden, const EncoderWindow& w,
                          const LclmConfig& config) {
  const auto len = static_cast<std::int64_t>(w.end - w.begin);
  const auto latents = static_cast<std::int64_t>(w.latents);
  const auto left = static_cast<std::int64_t>(w.left_context);
  if (config.pooling == Pooling::Eos) {
    return hidden.narrow(0, left + len + static_cast<std::int64_t>(w.right_context), latents);
  }
  const std::int64_t r = config.compression_ratio, E = hidden.size(1);
  const torch::Tensor tokens = hidden.narrow(0, left, len);  // [len, E]
  if (config.pooling == Pooling::Concat) {
    // Row-major flatten of each group, the short last one zero-padded to r * E.
    return torch::constant_pad_nd(tokens, {0, 0, 0, latents * r - len}).view({latents, r * E});
  }
  // Mean of each group; a short last group averages what it has.
  const std::int64_t full = len / r, rest = len % r;
  std::vector<torch::Tensor> groups;
  if (full > 0) groups.push_back(tokens.narrow(0, 0, full * r).view({full, r, E}).mean(1));
  if (rest > 0) groups.push_back(tokens.narrow(0, full * r, rest).mean(0, /*keepdim=*/true));
  return torch::cat(groups, 0);
}

// Copies `from` into the leading block of `to` (from.size(d) <= to.size(d)).
void copy_leading(const torch::Tensor& to, const torch::Tensor& from) {
  torch::Tensor block = to;
  for (std::int64_t d = 0; d < from.dim(); ++d) block = block.narrow(d, 0, from.size(d));
  block.copy_(from);
}

// An RMS norm's weight for a k times wider input whose new entries are zero:
// the old weights over sqrt(k), so the old entries come out as before, and
// their mean over sqrt(k) for the new entries.
void copy_widened_norm(TorchRmsNorm& to, const TorchRmsNorm& from, std::int64_t k) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(k));
  to.weight.fill_(from.weight.mean().item<double>() * scale);
  copy_leading(to.weight, from.weight * scale);
}

// A linear layer widened in its inputs and/or outputs: the old weights in the
// leading block; the rest random (reads the new inputs, or makes new outputs
// that nothing reads yet) or zero (writes_new: its new rows and columns feed
// the residual stream, which must not move).
void copy_widened_linear(TorchLinear& to, const TorchLinear& from, bool writes_new) {
  if (writes_new) {
    to.weight.zero_();
  } else {
    to.weight.normal_(0.0, 0.02);
  }
  copy_leading(to.weight, from.weight);
  if (to.bias.defined()) {
    to.bias.zero_();
    copy_leading(to.bias, from.bias);
  }
}

}  // namespace

TorchAdapter::TorchAdapter(const LclmConfig& config, const Qwen3Config& encoder,
                           const Qwen3Config& decoder)
    : type_(config.adapter_type),
      input_dim_(config.pooling == Pooling::Concat ? config.compression_ratio * encoder.hidden_size
                                                   : encoder.hidden_size),
      output_dim_(decoder.hidden_size) {
  if (type_ == AdapterType::AttnMlp && config.pooling == Pooling::Concat) {
    throw Error(
        "adapter_type attn_mlp runs encoder-sized attention before the MLP, which cannot "
        "take concat-pooled latents of " +
        std::to_string(input_dim_) + " values");
  }
  norm = register_module("norm", std::make_shared<TorchRmsNorm>(input_dim_, kAdapterNormEps));
  fc1 = register_module("fc1", std::make_shared<TorchLinear>(input_dim_, output_dim_, true));
  fc2 = register_module("fc2", std::make_shared<TorchLinear>(output_dim_, output_dim_, true));
  attention_layers = register_module("attention_layers", torch::nn::ModuleList());
  if (type_ != AdapterType::Mlp) {
    const Qwen3Config& c = type_ == AdapterType::MlpAttn ? decoder : encoder;
    rope_.emplace(c.head_dim, c.rope_theta);
    for (std::int64_t l = 0; l < config.num_adapter_layers; ++l) {
      // The checkpoint nests each block as attention_layers.{i}.decoder_layer.
      auto slot = std::make_shared<torch::nn::Module>();
      attention_blocks_.push_back(
          slot->register_module("decoder_layer", std::make_shared<TorchQwen3Layer>(c)));
      attention_layers->push_back(slot);
    }
  }
}

torch::Tensor TorchAdapter::run_attention(const torch::Tensor& x) {
  const RopeTables rope = rope_->tables(x.size(0));
  torch::Tensor h = x.unsqueeze(0);  // [1, n, width]
  for (const auto& block : attention_blocks_) {
    h = block->forward(h, rope, AttentionMask::Bidirectional);
  }
  return h.squeeze(0);
}

torch::Tensor TorchAdapter::run_mlp(const torch::Tensor& x) const {
  return fc2->forward(torch::gelu(fc1->forward(norm->forward(x))));
}

torch::Tensor TorchAdapter::forward(const torch::Tensor& pooled) {
  if (pooled.dim() != 2 || pooled.size(1) != input_dim_) {
    throw Error("TorchAdapter::forward takes pooled latents [n, " + std::to_string(input_dim_) +
                "], not " + shape_string(pooled));
  }
  if (pooled.size(0) == 0) return torch::zeros({0, output_dim_});  // an empty region
  if (type_ == AdapterType::AttnMlp) return run_mlp(run_attention(pooled));
  const torch::Tensor out = run_mlp(pooled);
  return type_ == AdapterType::MlpAttn ? run_attention(out) : out;
}

TorchLclm::TorchLclm(const LclmConfig& config, const Qwen3Config& encoder_config,
                     const Qwen3Config& decoder_config, const LclmTokenIds& token_ids)
    : config_(config), token_ids_(token_ids) {
  config_.validate("TorchLclm config");
  encoder = register_module("encoder", std::make_shared<TorchQwen3>(encoder_config, false));
  adapter = register_module(
      "adapter", std::make_shared<TorchAdapter>(config_, encoder_config, decoder_config));
  decoder = register_module("decoder", std::make_shared<TorchQwen3>(decoder_config, true));
}

void TorchLclm::widen_encoder(std::int64_t hidden_size) {
  const Qwen3Config old = encoder->config();
  if (hidden_size <= old.hidden_size || hidden_size % old.hidden_size != 0) {
    throw Error("widen the encoder to " + std::to_string(hidden_size) +
                ": give a larger multiple of its hidden size " + std::to_string(old.hidden_size));
  }
  if (config_.adapter_type != AdapterType::Mlp || config_.pooling == Pooling::Concat) {
    throw Error("widening the encoder needs the mlp adapter and mean, last or eos pooling");
  }
  const std::int64_t k = hidden_size / old.hidden_size;
  Qwen3Config wide = old;
  wide.hidden_size = hidden_size;
  wide.intermediate_size *= k;
  wide.num_attention_heads *= k;
  wide.num_key_value_heads *= k;
  const torch::NoGradGuard no_grad;
  auto grown = std::make_shared<TorchQwen3>(wide, false);
  grown->embed_tokens->weight.zero_();
  copy_leading(grown->embed_tokens->weight, encoder->embed_tokens->weight);
  for (std::size_t l = 0; l < encoder->layers->size(); ++l) {
    const auto& from = *encoder->layers[l]->as<TorchQwen3Layer>();
    auto& to = *grown->layers[l]->as<TorchQwen3Layer>();
    copy_widened_norm(*to.input_layernorm, *from.input_layernorm, k);
    copy_widened_norm(*to.post_attention_layernorm, *from.post_attention_layernorm, k);
    // New heads follow the old ones, so query head h still reads kv head
    // h / (n_heads / n_kv_heads).
    copy_widened_linear(*to.self_attn->q_proj, *from.self_attn->q_proj, false);
    copy_widened_linear(*to.self_attn->k_proj, *from.self_attn->k_proj, false);
    copy_widened_linear(*to.self_attn->v_proj, *from.self_attn->v_proj, false);
    copy_widened_linear(*to.self_attn->o_proj, *from.self_attn->o_proj, true);
    to.self_attn->q_norm->weight.copy_(from.self_attn->q_norm->weight);
    to.self_attn->k_norm->weight.copy_(from.self_attn->k_norm->weight);
    copy_widened_linear(*to.mlp->gate_proj, *from.mlp->gate_proj, false);
    copy_widened_linear(*to.mlp->up_proj, *from.mlp->up_proj, false);
    copy_widened_linear(*to.mlp->down_proj, *from.mlp->down_proj, true);
  }
  copy_widened_norm(*grown->norm, *encoder->norm, k);

  auto wide_adapter = std::make_shared<TorchAdapter>(config_, wide, decoder->config());
  copy_widened_norm(*wide_adapter->norm, *adapter->norm, k);
  copy_widened_linear(*wide_adapter->fc1, *adapter->fc1, false);
  wide_adapter->fc2->weight.copy_(adapter->fc2->weight);  // [D, D]: not widened
  wide_adapter->fc2->bias.copy_(adapter->fc2->bias);
  encoder = replace_module("encoder", grown);
  adapter = replace_module("adapter", wide_adapter);
}

torch::Tensor TorchLclm::pool_region(std::span<const std::int32_t> tokens, std::int64_t ratio) {
  const LclmConfig config = ratio > 0 ? config_.at_ratio(ratio) : config_;
  const std::vector<EncoderWindow> windows = tile_windows(tokens.size(), config);
  // Each window's encoder input [left context | pooled tokens | right context |
  // eos slots], grouped by length so that equal ones share a batch.
  std::vector<std::vector<std::int32_t>> inputs(windows.size());
  std::map<std::size_t, std::vector<std::size_t>> windows_by_length;
  for (std::size_t i = 0; i < windows.size(); ++i) {
    const EncoderWindow& w = windows[i];
    inputs[i].assign(tokens.begin() + static_cast<std::ptrdiff_t>(w.begin - w.left_context),
                     tokens.begin() + static_cast<std::ptrdiff_t>(w.end + w.right_context));
    if (config.pooling == Pooling::Eos) {
      inputs[i].insert(inputs[i].end(), w.latents, token_ids_.encoder_pad);
    }
    windows_by_length[inputs[i].size()].push_back(i);
  }
  std::vector<torch::Tensor> pooled(windows.size());
  for (const auto& [length, members] : windows_by_length) {
    std::vector<torch::Tensor> rows;
    for (std::size_t i : members) rows.push_back(ids_tensor(inputs[i]));
    const torch::Tensor ids = torch::stack(rows);  // [B, length]
    const torch::Tensor hidden =
        encoder->forward(encoder->embed(ids), config.encoder_mask);  // [B, length, E]
    for (std::size_t b = 0; b < members.size(); ++b) {
      pooled[members[b]] =
          pool_window(hidden[static_cast<std::int64_t>(b)], windows[members[b]], config);
    }
  }
  if (pooled.empty()) return torch::zeros({0, adapter->input_dim()});
  return torch::cat(pooled, 0);
}

torch::Tensor TorchLclm::encode_region(std::span<const std::int32_t> tokens, std::int64_t ratio) {
  return adapter->forward(pool_region(tokens, ratio));
}

torch::Tensor TorchLclm::decoder_inputs(std::span<const std::int32_t> decoder_ids,
                                        std::span<const std::vector<std::int32_t>> regions,
                                        std::span<const std::int64_t> ratios) {
  if (!ratios.empty() && ratios.size() != regions.size()) {
    throw Error("decoder_inputs: " + std::to_string(ratios.size()) + " ratios for " +
                std::to_string(regions.size()) + " memory regions");
  }
  std::vector<std::int64_t> slots;
  for (std::size_t i = 0; i < decoder_ids.size(); ++i) {
    if (decoder_ids[i] == token_ids_.memory) slots.push_back(static_cast<std::int64_t>(i));
  }
  std::vector<torch::Tensor> latents;
  std::int64_t n_latents = 0;
  for (std::size_t i = 0; i < regions.size(); ++i) {
    latents.push_back(encode_region(regions[i], ratios.empty() ? 0 : ratios[i]));
    n_latents += latents.back().size(0);
  }
  if (n_latents != static_cast<std::int64_t>(slots.size())) {
    throw Error("the decoder sequence has " + std::to_string(slots.size()) +
                " <|memory|> positions but its " + std::to_string(regions.size()) +
                " memory regions give " + std::to_string(n_latents) + " latents");
  }
  const torch::Tensor embeddings = decoder->embed(ids_tensor(decoder_ids));  // [L, D]
  if (slots.empty()) return embeddings;
  const torch::Tensor slot_index =
      torch::tensor(torch::ArrayRef<std::int64_t>(slots), torch::kLong);  // [M]
  return embeddings.index_copy(0, slot_index, torch::cat(latents, 0));
}

torch::Tensor TorchLclm::forward(std::span<const std::int32_t> decoder_ids,
                                 std::span<const std::vector<std::int32_t>> regions,
                                 std::span<const std::int64_t> ratios) {
  const torch::Tensor hidden =
      decoder->forward(decoder_inputs(decoder_ids, regions, ratios), AttentionMask::Causal);
  return decoder->logits(hidden);
}

}  // namespace lclm::train
