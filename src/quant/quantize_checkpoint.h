// `lclm quantize`: writes a copy of a model whose matrices are stored
// block-quantized, so that loading it maps them with no conversion.
#pragma once

#include <cstddef>
#include <filesystem>

#include "format/dtype.h"

namespace lclm {

struct QuantizeSummary {
  std::size_t matrices = 0;   // tensors written block-quantized
  std::size_t bytes_in = 0;   // weights of the input
  std::size_t bytes_out = 0;  // weights written
};

// IN is a Qwen3 model directory or an LCLM checkpoint (decoder/ and encoder/
// are quantized; adapter/ and every other file are copied as they are). In
// each quantized directory the seven projections of every layer and the
// lm_head (made from the embeddings when they are tied, but for an encoder) become U8 tensors
// [rows, row_bytes(type, cols)] marked by metadata "lclm.dtype.NAME", the
// same conversion `--quant` does at load; every other tensor is kept as
// stored, all in one model.safetensors. Throws lclm::Error naming the path.
QuantizeSummary quantize_checkpoint(const std::filesystem::path& in,
                                    const std::filesystem::path& out, DType type);

}  // namespace lclm
