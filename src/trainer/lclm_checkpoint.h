// LCLM checkpoints in the published layout, read into and written from a
// TorchLclm: CKPT/model_config.json, decoder/ (Qwen3ForCausalLM, "model."
// tensor prefix), encoder/ (Qwen3Model, no prefix, no lm_head) and
// adapter/adapter.safetensors.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>

#include "format/dtype.h"
#include "trainer/torch_lclm.h"

namespace lclm::train {

// Reads the configs, the memory and pad token ids from the tokenizers, and
// every weight (F32, BF16 or F16) into float32 parameters. The encoder and
// decoder tensors may carry a "model." prefix or not. Throws lclm::Error
// naming the file or tensor at fault: a missing or mis-shaped tensor, and
// also a tensor the model has no place for, since saving would drop it.
std::shared_ptr<TorchLclm> load_lclm_checkpoint(const std::filesystem::path& dir);

// A Qwen3ForCausalLM directory (an LCLM checkpoint's decoder/, say) as a
// float32 TorchQwen3 with an lm_head; errors as load_lclm_checkpoint's.
std::shared_ptr<TorchQwen3> load_qwen3_decoder(const std::filesystem::path& dir);

// Writes the model's parameters as dtype (F32, BF16 or F16; BF16 and F16
// round to nearest even) with configs from the model, plus every file of
// source_checkpoint's decoder/ and encoder/ other than config.json and
// weights (tokenizer files, generation_config.json). The checkpoint is
// written to DIR.tmp and then takes DIR's place by one rename, so DIR holds
// the previous checkpoint or the new one, never part of one. source_checkpoint
// may be DIR itself. Refuses to replace a DIR that is not an LCLM checkpoint.
// add_files, when given, writes more files into the staged directory before
// the rename, so they replace DIR's together with the weights (the trainer's
// state).
void save_lclm_checkpoint(
    const TorchLclm& model, const std::filesystem::path& dir, DType dtype,
    const std::filesystem::path& source_checkpoint,
    const std::function<void(const std::filesystem::path& staged)>& add_files = {});

}  // namespace lclm::train
