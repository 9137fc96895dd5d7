// lclm info: architecture and sizes of a Qwen3 model directory or an LCLM checkpoint.
#include <iomanip>
#include <memory>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "compression/memory_regions.h"

namespace lclm::cli {
namespace {

void print_qwen3(std::ostream& out, const std::string& title, const Qwen3Model& m) {
  const Qwen3Config& c = m.config();
  out << title << ": " << m.dir().string() << "\n"
      << "  layers " << c.num_hidden_layers << ", hidden " << c.hidden_size << ", intermediate "
      << c.intermediate_size << ", heads " << c.num_attention_heads << " (kv "
      << c.num_key_value_heads << ") x " << c.head_dim << ", vocab " << c.vocab_size << "\n"
      << "  rope theta " << c.rope_theta << ", rms eps " << c.rms_norm_eps << ", max positions "
      << c.max_position_embeddings << ", lm_head "
      << (m.has_lm_head() ? (c.tie_word_embeddings ? "tied" : "separate") : "none (encoder)")
      << "\n"
      << std::fixed << std::setprecision(1) << "  parameters " << m.parameter_count() / 1e6
      << " M, " << dtype_name(m.weight_dtype()) << ", " << m.weight_bytes() / kMiB << " MiB\n"
      << "  matrices " << dtype_name(m.matrix_dtype()) << ", " << m.decode_matrix_bytes() / kMiB
      << " MiB read per decoded token\n"
      << std::defaultfloat;
}

int run(const std::string& path, const QuantArg& quant, std::ostream& out) {
  if (!LclmModel::is_checkpoint(path)) {
    print_qwen3(out, "Qwen3 model", Qwen3Model::load(path, {.quant = quant.value()}));
    return 0;
  }
  LclmOptions options;
  options.quant = quant.value();
  const auto m = LclmModel::load(path, options);
  const LclmConfig& c = m->config();
  out << "LCLM checkpoint: " << path << "\n"
      << "  compression_ratio " << c.compression_ratio << ", encoder_window_size "
      << c.encoder_window_size << ", pooling " << pooling_name(c.pooling) << ", encoder_mask_type "
      << (c.encoder_mask == AttentionMask::Causal ? "causal" : "bidirectional")
      << ", boundary_overlap " << c.boundary_overlap << ", adapter_type "
      << adapter_type_name(c.adapter_type);
  if (c.adapter_type != AdapterType::Mlp) out << " x " << c.num_adapter_layers;
  out << "\n";
  print_qwen3(out, "encoder", m->encoder());
  print_qwen3(out, "decoder", m->decoder());
  out << "adapter: " << m->adapter().input_dim() << " -> " << m->adapter().output_dim() << "\n"
      << "tokenizers: encoder " << m->encoder_tokenizer().size() << " tokens, decoder "
      << m->decoder_tokenizer().size() << " tokens; memory tokens";
  for (std::string_view t : {kMemoryStart, kMemoryEnd, kMemoryPlaceholder}) {
    out << " " << t << "=" << *m->decoder_tokenizer().token_id(t);
  }
  out << "\n";
  return 0;
}

}  // namespace

Command add_info_command(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto quant = std::make_shared<QuantArg>();
  CLI::App* cmd = app.add_subcommand("info", "Print the architecture and sizes of a model");
  cmd->add_option("-m,--model", *model, "Qwen3 model directory or LCLM checkpoint")->required();
  quant->add_option(*cmd);
  return {cmd,
          [model, quant](std::ostream& out, std::ostream&) { return run(*model, *quant, out); }};
}

}  // namespace lclm::cli
