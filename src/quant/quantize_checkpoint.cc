#include "quant/quantize_checkpoint.h"

#include <array>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "compression/lclm_model.h"
#include "format/safetensors.h"
#include "model/qwen3_config.h"
#include "model/weight_reader.h"
#include "util/error.h"

namespace lclm {
namespace fs = std::filesystem;
namespace {

constexpr std::array<std::string_view, 7> kProjections = {
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight",    "mlp.up_proj.weight",
    "mlp.down_proj.weight"};

bool is_projection(const std::string& name) {
  if (name.find("layers.") == std::string::npos) return false;
  for (std::string_view suffix : kProjections) {
    if (name.size() > suffix.size() && name.ends_with(suffix) &&
        name[name.size() - suffix.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

bool is_weight_file(const fs::path& p) {
  return p.extension() == ".safetensors" || p.filename() == "model.safetensors.index.json";
}

std::span<const std::uint8_t> matrix_bytes(const WeightMatrix& w) {
  return {static_cast<const std::uint8_t*>(w.data), w.bytes()};
}

// `lm_head`: false for an encoder, which has none, not even a tied one.
void quantize_model_dir(const fs::path& in, const fs::path& out, DType type, bool lm_head,
                        QuantizeSummary& summary) {
  const Qwen3Config config = Qwen3Config::from_dir(in);
  const TensorStore store = TensorStore::open_dir(in);
  std::vector<std::vector<std::uint8_t>> converted;
  const WeightReader weights(store, type, converted);
  std::vector<TensorToWrite> tensors;
  std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"lclm.quantization", std::string(dtype_name(type))}};
  const auto add_quantized = [&](const std::string& name, const WeightMatrix& w) {
    if (!is_block_quantized(w.dtype)) return false;  // columns not a multiple of 32
    tensors.push_back(
        {name,
         DType::U8,
         {static_cast<std::int64_t>(w.rows), static_cast<std::int64_t>(row_bytes(w.dtype, w.cols))},
         matrix_bytes(w)});
    metadata[block_type_key(name)] = std::string(dtype_name(w.dtype));
    ++summary.matrices;
    return true;
  };
  for (const std::string& name : store.names()) {
    const TensorView& t = *store.find(name);
    summary.bytes_in += t.nbytes;
    if ((is_projection(name) || name == "lm_head.weight") && t.shape.size() == 2 &&
        add_quantized(name, weights.matrix(name, t.dim(0), t.dim(1)))) {
      continue;
    }
    tensors.push_back({name, t.dtype, t.shape, {t.data, t.nbytes}});
  }
  if (lm_head && store.find("lm_head.weight") == nullptr && config.tie_word_embeddings) {
    const TensorView& embed = store.get(qwen3_tensor_prefix(store) + "embed_tokens.weight",
                                        {config.vocab_size, config.hidden_size});
    add_quantized("lm_head.weight", weights.converted(as_weight_matrix(embed)));
  }
  for (const TensorToWrite& t : tensors) summary.bytes_out += t.data.size();
  write_safetensors(out / "model.safetensors", tensors, metadata);
}

}  // namespace

QuantizeSummary quantize_checkpoint(const fs::path& in, const fs::path& out, DType type) {
  if (!is_block_quantized(type)) {
    throw Error("quantize: " + std::string(dtype_name(type)) + " is not a block type");
  }
  if (!fs::is_directory(in)) throw Error("model directory not found: " + in.string());
  if (fs::exists(out) && fs::equivalent(in, out)) {
    throw Error("quantize: the output " + out.string() + " is the input directory");
  }
  std::vector<fs::path> model_dirs;
  if (LclmModel::is_checkpoint(in)) {
    model_dirs = {"decoder", "encoder"};
  } else {
    model_dirs = {"."};
  }
  // Every file but the weights of the quantized directories, as it is.
  for (const auto& e : fs::recursive_directory_iterator(in)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), in);
    const fs::path parent = rel.parent_path().empty() ? fs::path(".") : rel.parent_path();
    bool replaced = false;
    for (const fs::path& d : model_dirs)
      replaced = replaced || (parent == d && is_weight_file(rel));
    if (replaced) continue;
    fs::create_directories(out / rel.parent_path());
    fs::copy_file(e.path(), out / rel, fs::copy_options::overwrite_existing);
  }
  QuantizeSummary summary;
  for (const fs::path& d : model_dirs) {
    fs::create_directories(out / d);
    quantize_model_dir(in / d, out / d, type, d != "encoder", summary);
  }
  return summary;
}

}  // namespace lclm
