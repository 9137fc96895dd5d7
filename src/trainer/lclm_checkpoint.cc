#include "trainer/lclm_checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (GNU)

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "compression/lclm_model.h"
#include "compression/memory_regions.h"
#include "fixtures/random_lclm.h"
#include "fixtures/random_qwen3.h"
#include "format/json_file.h"
#include "format/safetensors.h"
#include "model/qwen3_model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace lclm::train {
namespace {

namespace fs = std::filesystem;

// How a module's parameter names map to stored tensor names: a causal LM's
// body sits under "model." while its lm_head does not.
std::string stored_name(const std::string& parameter, const std::string& body_prefix) {
  return parameter == "lm_head.weight" ? parameter : body_prefix + parameter;
}

void copy_into(torch::Tensor& parameter, const TensorView& t) {
  float* out = parameter.data_ptr<float>();
  const auto n = static_cast<std::size_t>(t.numel());
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, t.data, n * sizeof(float));
      return;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      return;
    default:
      throw Error("tensor \"" + t.name + "\" has dtype " + std::string(dtype_name(t.dtype)) +
                  "; weights must be F32, BF16 or F16");
  }
}

// Fills every parameter of `module` from `store`, whose tensor names carry
// `body_prefix`; every stored tensor must find its parameter.
void load_parameters(torch::nn::Module& module, const TensorStore& store,
                     const std::string& body_prefix) {
  std::set<std::string> used;
  for (auto& item : module.named_parameters()) {
    const std::string name = stored_name(item.key(), body_prefix);
    const auto sizes = item.value().sizes();
    copy_into(item.value(),
              store.get(name, std::span<const std::int64_t>(sizes.data(), sizes.size())));
    used.insert(name);
  }
  for (const std::string& name : store.names()) {
    if (used.count(name) == 0) {
      throw Error(store.dir().string() + ": tensor \"" + name +
                  "\" has no place in the model (saving would drop it)");
    }
  }
}

std::int32_t memory_placeholder_id(const fs::path& decoder_dir) {
  const auto id = Tokenizer::from_dir(decoder_dir).token_id(kMemoryPlaceholder);
  if (!id) {
    throw Error(decoder_dir.string() + "/tokenizer.json lacks the special token " +
                std::string(kMemoryPlaceholder) + " that an LCLM decoder tokenizer adds");
  }
  return *id;
}

// Writes every parameter of `module` as dtype into one safetensors file.
void save_parameters(const torch::nn::Module& module, const fs::path& path,
                     const std::string& body_prefix, DType dtype) {
  std::vector<torch::Tensor> values;              // contiguous float32, kept alive for F32
  std::vector<std::vector<std::uint8_t>> halves;  // BF16 / F16 encodings
  std::vector<TensorToWrite> tensors;
  for (const auto& item : module.named_parameters()) {
    const torch::Tensor value = item.value().detach().contiguous();
    const float* data = value.data_ptr<float>();
    const auto n = static_cast<std::size_t>(value.numel());
    TensorToWrite t{stored_name(item.key(), body_prefix), dtype, value.sizes().vec(), {}};
    if (dtype == DType::F32) {
      t.data = {reinterpret_cast<const std::uint8_t*>(data), n * sizeof(float)};
    } else {
      std::vector<std::uint8_t>& bytes = halves.emplace_back(n * 2);
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = dtype == DType::BF16 ? f32_to_bf16(data[i]) : f32_to_f16(data[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
      t.data = bytes;
    }
    values.push_back(value);
    tensors.push_back(std::move(t));
  }
  write_safetensors(path, tensors, {{"format", "pt"}});
}

// Copies the files of a source model directory that are neither its config
// nor its weights: tokenizer files, generation_config.json.
void copy_model_side_files(const fs::path& from, const fs::path& to) {
  if (!fs::exists(from / "tokenizer.json")) {
    throw Error("cannot copy the tokenizer: " + (from / "tokenizer.json").string() + " is missing");
  }
  for (const fs::directory_entry& e : fs::directory_iterator(from)) {
    const fs::path name = e.path().filename();
    if (!e.is_regular_file() || name == "config.json" || name.extension() == ".safetensors" ||
        name == "model.safetensors.index.json") {
      continue;
    }
    fs::copy_file(e.path(), to / name);
  }
}

// Puts the finished checkpoint `staged` in place of `dir`. An existing dir is
// swapped with it in one renameat2(RENAME_EXCHANGE); filesystems without that
// get two renames, between which dir is briefly absent but never partial.
void replace_dir(const fs::path& staged, const fs::path& dir) {
  if (!fs::exists(dir)) {
    fs::rename(staged, dir);
    return;
  }
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(staged);  // now the previous checkpoint
    return;
  }
  if (errno != EINVAL && errno != ENOSYS) {
    throw Error("cannot move " + staged.string() + " into place as " + dir.string() + ": " +
                std::strerror(errno));
  }
  const fs::path previous = dir.string() + ".old";
  fs::remove_all(previous);
  fs::rename(dir, previous);
  fs::rename(staged, dir);
  fs::remove_all(previous);
}

}  // namespace

std::shared_ptr<TorchQwen3> load_qwen3_decoder(const fs::path& dir) {
  auto model = std::make_shared<TorchQwen3>(Qwen3Config::from_dir(dir), true);
  const torch::NoGradGuard no_grad;
  const TensorStore store = TensorStore::open_dir(dir);
  load_parameters(*model, store, qwen3_tensor_prefix(store));
  return model;
}

std::shared_ptr<TorchLclm> load_lclm_checkpoint(const fs::path& dir) {
  for (const char* part : {"decoder", "encoder", "adapter"}) {
    if (!fs::is_directory(dir / part)) {
      throw Error(dir.string() + " is not an LCLM checkpoint: " + part + "/ is missing");
    }
  }
  const LclmConfig config = LclmConfig::from_file(dir / "model_config.json");
  const Qwen3Config encoder_config = Qwen3Config::from_dir(dir / "encoder");
  const Qwen3Config decoder_config = Qwen3Config::from_dir(dir / "decoder");
  LclmTokenIds ids;
  ids.memory = memory_placeholder_id(dir / "decoder");
  ids.encoder_pad = encoder_pad_token_id(dir / "encoder", Tokenizer::from_dir(dir / "encoder"));
  if (ids.memory >= decoder_config.vocab_size || ids.encoder_pad >= encoder_config.vocab_size) {
    throw Error(dir.string() + ": the memory token id " + std::to_string(ids.memory) +
                " or the encoder pad id " + std::to_string(ids.encoder_pad) +
                " lies outside its model's vocab_size");
  }

  auto model = std::make_shared<TorchLclm>(config, encoder_config, decoder_config, ids);
  const torch::NoGradGuard no_grad;
  const TensorStore decoder = TensorStore::open_dir(dir / "decoder");
  load_parameters(*model->decoder, decoder, qwen3_tensor_prefix(decoder));
  const TensorStore encoder = TensorStore::open_dir(dir / "encoder");
  load_parameters(*model->encoder, encoder, qwen3_tensor_prefix(encoder));
  load_parameters(*model->adapter, TensorStore::open_file(dir / "adapter" / "adapter.safetensors"),
                  "");
  return model;
}

void save_lclm_checkpoint(const TorchLclm& model, const fs::path& dir, DType dtype,
                          const fs::path& source_checkpoint,
                          const std::function<void(const fs::path& staged)>& add_files) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16) {
    throw Error("checkpoint weights must be F32, BF16 or F16, not " +
                std::string(dtype_name(dtype)));
  }
  // "out/" names the directory "out", whose staging sibling is "out.tmp".
  const fs::path target = dir.has_filename() ? dir : dir.parent_path();
  if (fs::exists(target) && !fs::is_empty(target) && !fs::exists(target / "model_config.json")) {
    throw Error("refusing to replace " + target.string() +
                ": it exists and is not an LCLM checkpoint");
  }
  const fs::path staged = target.string() + ".tmp";
  fs::remove_all(staged);  // left by an interrupted save
  try {
    for (const char* part : {"decoder", "encoder", "adapter"}) {
      fs::create_directories(staged / part);
    }
    write_text_file(staged / "model_config.json", lclm_config_json(model.config()));
    write_text_file(staged / "decoder" / "config.json",
                    qwen3_config_json(model.decoder->config(), dtype));
    save_parameters(*model.decoder, staged / "decoder" / "model.safetensors", "model.", dtype);
    write_text_file(staged / "encoder" / "config.json",
                    qwen3_config_json(model.encoder->config(), dtype));
    save_parameters(*model.encoder, staged / "encoder" / "model.safetensors", "", dtype);
    save_parameters(*model.adapter, staged / "adapter" / "adapter.safetensors", "", dtype);
    copy_model_side_files(source_checkpoint / "decoder", staged / "decoder");
    copy_model_side_files(source_checkpoint / "encoder", staged / "encoder");
    if (add_files) add_files(staged);
    replace_dir(staged, target);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staged, ignored);
    throw;
  }
}

}  // namespace lclm::train
