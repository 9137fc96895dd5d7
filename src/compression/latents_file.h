// The file `lclm compress` writes: a safetensors file holding one F32 tensor
// "latents" [N, D] (N latents of the decoder's width D, in order) and string
// metadata:
//   format             "lclm-latents"
//   version            "1"
//   n_tokens           encoder tokens of the compressed text
//   n_latents          N
//   compression_ratio  encoder tokens per latent
//   encoder_window_size, pooling, adapter_type   as in model_config.json
//   checkpoint_fingerprint   hash of what the latents depend on (see
//                      LclmModel::fingerprint); a checkpoint with another
//                      fingerprint must not consume them
//   source             the compressed file's path, for the record
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "compression/latent_cache.h"

namespace lclm {

class LclmModel;

struct LatentsFile {
  Latents latents;
  std::map<std::string, std::string> metadata;
};

void write_latents_file(const std::filesystem::path& path, const LatentsFile& file);
// Throws lclm::Error naming the file when it is not an lclm latents file or
// its metadata disagrees with its tensor.
LatentsFile read_latents_file(const std::filesystem::path& path);
// A latents file read for `model` to consume: made by this checkpoint (its
// fingerprint at the file's compression_ratio). Errors start with `what`
// (the flag, say) and name the file.
Latents read_checked_latents(const std::filesystem::path& path, LclmModel& model,
                             const std::string& what);

}  // namespace lclm
