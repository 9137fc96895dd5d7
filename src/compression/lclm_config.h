// CKPT/model_config.json of a published LCLM checkpoint.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "ops/attention.h"

namespace lclm {

enum class Pooling { Mean, Eos, Concat };
enum class AdapterType { Mlp, MlpAttn, AttnMlp };

std::string pooling_name(Pooling p);
std::string adapter_type_name(AdapterType t);

struct LclmConfig {
  std::int64_t compression_ratio = 4;       // r: encoder tokens per latent
  std::int64_t encoder_window_size = 1024;  // W: tokens encoded together
  Pooling pooling = Pooling::Mean;
  AttentionMask encoder_mask = AttentionMask::Causal;
  std::int64_t boundary_overlap = 0;  // context tokens added around each window
  AdapterType adapter_type = AdapterType::Mlp;
  std::int64_t num_adapter_layers = 1;  // attention layers of mlp_attn / attn_mlp

  // The six fields are required as in the reference loader; the legacy key
  // "chunk_size" is read as compression_ratio. Errors name the file and key.
  static LclmConfig from_file(const std::filesystem::path& path);
  // Window a multiple of the ratio, sizes positive, overlap >= 0 (an overlap
  // beyond the region's start or end is clipped to the tokens there are).
  void validate(const std::string& where) const;

  // This config run at ratio r (any positive integer; mean pooling works at
  // every ratio): the window shrinks to a multiple of r, at least r. Throws
  // lclm::Error for r <= 0, and for concat pooling at any ratio but its own.
  LclmConfig at_ratio(std::int64_t r) const;
};

}  // namespace lclm
