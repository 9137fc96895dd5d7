#include "compression/lclm_config.h"

#include <algorithm>

#include "format/json_file.h"
#include "util/error.h"

namespace lclm {

std::string pooling_name(Pooling p) {
  switch (p) {
    case Pooling::Mean:
      return "mean";
    case Pooling::Eos:
      return "eos";
    case Pooling::Concat:
      return "concat";
  }
  return "?";
}

std::string adapter_type_name(AdapterType t) {
  switch (t) {
    case AdapterType::Mlp:
      return "mlp";
    case AdapterType::MlpAttn:
      return "mlp_attn";
    case AdapterType::AttnMlp:
      return "attn_mlp";
  }
  return "?";
}

LclmConfig LclmConfig::from_file(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw Error(path.string() + " is missing");
  const nlohmann::json j = read_json_file(path);
  const std::string where = path.string();
  LclmConfig c;
  c.compression_ratio = j.contains("compression_ratio") || !j.contains("chunk_size")
                            ? require_key<std::int64_t>(j, "compression_ratio", path)
                            : require_key<std::int64_t>(j, "chunk_size", path);
  c.encoder_window_size = require_key<std::int64_t>(j, "encoder_window_size", path);
  c.boundary_overlap = require_key<std::int64_t>(j, "boundary_overlap", path);
  c.num_adapter_layers = key_or<std::int64_t>(j, "num_adapter_layers", 1, path);

  const auto pooling = require_key<std::string>(j, "pooling", path);
  if (pooling == "mean") {
    c.pooling = Pooling::Mean;
  } else if (pooling == "eos") {
    c.pooling = Pooling::Eos;
  } else if (pooling == "concat") {
    c.pooling = Pooling::Concat;
  } else {
    throw Error(where + ": pooling \"" + pooling + "\" is not one of mean, eos, concat");
  }
  const auto mask = require_key<std::string>(j, "encoder_mask_type", path);
  if (mask == "causal") {
    c.encoder_mask = AttentionMask::Causal;
  } else if (mask == "bidirectional") {
    c.encoder_mask = AttentionMask::Bidirectional;
  } else {
    throw Error(where + ": encoder_mask_type \"" + mask + "\" is not causal or bidirectional");
  }
  const auto adapter = require_key<std::string>(j, "adapter_type", path);
  if (adapter == "mlp") {
    c.adapter_type = AdapterType::Mlp;
  } else if (adapter == "mlp_attn") {
    c.adapter_type = AdapterType::MlpAttn;
  } else if (adapter == "attn_mlp") {
    c.adapter_type = AdapterType::AttnMlp;
  } else {
    throw Error(where + ": adapter_type \"" + adapter + "\" is not mlp, mlp_attn or attn_mlp");
  }
  c.validate(where);
  return c;
}

LclmConfig LclmConfig::at_ratio(std::int64_t r) const {
  if (r <= 0) throw Error("--ratio must be a positive integer, not " + std::to_string(r));
  if (pooling == Pooling::Concat && r != compression_ratio) {
    throw Error("--ratio " + std::to_string(r) +
                ": this checkpoint pools by concat, which fixes its ratio at " +
                std::to_string(compression_ratio) + " (its adapter reads r x E values per latent)");
  }
  LclmConfig c = *this;
  c.compression_ratio = r;
  c.encoder_window_size = std::max(r, encoder_window_size / r * r);
  return c;
}

void LclmConfig::validate(const std::string& where) const {
  const auto fail = [&](const std::string& why) { throw Error(where + ": " + why); };
  if (compression_ratio <= 0) fail("compression_ratio must be a positive integer");
  if (encoder_window_size <= 0) fail("encoder_window_size must be positive");
  if (compression_ratio > 1024) {
    fail("compression_ratio " + std::to_string(compression_ratio) + " is past 1024");
  }
  if (encoder_window_size > (std::int64_t{1} << 20)) {
    fail("encoder_window_size " + std::to_string(encoder_window_size) + " is past 2^20");
  }
  if (encoder_window_size % compression_ratio != 0) {
    fail("encoder_window_size " + std::to_string(encoder_window_size) +
         " is not a multiple of compression_ratio " + std::to_string(compression_ratio));
  }
  if (boundary_overlap < 0) fail("boundary_overlap must be >= 0");
  if (boundary_overlap >= encoder_window_size) {
    fail("boundary_overlap " + std::to_string(boundary_overlap) +
         " must be smaller than encoder_window_size " + std::to_string(encoder_window_size));
  }
  if (adapter_type == AdapterType::AttnMlp && pooling == Pooling::Concat) {
    fail("adapter_type attn_mlp runs encoder-sized attention before the MLP, which cannot take "
         "concat-pooled latents (compression_ratio x the encoder's width); use mean or eos "
         "pooling, or adapter_type mlp or mlp_attn");
  }
  if (adapter_type != AdapterType::Mlp && num_adapter_layers <= 0) {
    fail("num_adapter_layers must be positive for adapter_type " + adapter_type_name(adapter_type));
  }
}

}  // namespace lclm
