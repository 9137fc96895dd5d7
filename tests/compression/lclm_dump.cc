// Test driver for tests/reference/check_lclm.py: runs the engine's LCLM prompt
// path on a prompt file and writes what the PyTorch reference recomputes.
//
// usage: lclm_dump CKPT_DIR PROMPT_FILE OUT_DIR
// writes OUT_DIR/dump.json:
//   regions: [{text, encoder_ids, latents: [[D floats] x N]}]  (in prompt order)
//   decoder_ids, memory_id, hidden_size, vocab_size, logits_file
// and OUT_DIR/logits.f32: raw f32 [decoder_ids.size(), vocab], the decoder's
// logits at every position of the spliced prompt (one causal forward pass).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compression/lclm_model.h"
#include "compression/memory_regions.h"

namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int run(const fs::path& ckpt, const fs::path& prompt_file, const fs::path& out_dir) {
  const auto model = lclm::LclmModel::load(ckpt);
  const std::string prompt = read_file(prompt_file);
  const lclm::PreparedPrompt prepared = model->prepare(prompt);

  nlohmann::json regions = nlohmann::json::array();
  for (const lclm::PromptSegment& s : lclm::split_memory_regions(prompt)) {
    if (!s.compressed) continue;
    // prepare() cached these latents: this is what it spliced in.
    const lclm::Latents latents = model->compress(s.text);
    nlohmann::json rows = nlohmann::json::array();
    for (std::size_t i = 0; i < latents.count(); ++i) {
      const float* row = latents.data.data() + i * latents.dim;
      rows.push_back(std::vector<float>(row, row + latents.dim));
    }
    regions.push_back({{"text", s.text},
                       {"encoder_ids", model->encoder_tokenizer().encode(s.text)},
                       {"latents", rows}});
  }

  const lclm::Qwen3Model& decoder = model->decoder();
  const std::size_t L = prepared.ids.size();
  const auto V = static_cast<std::size_t>(decoder.config().vocab_size);
  std::vector<float> x = prepared.embeddings;
  lclm::KVCache cache = decoder.make_cache(L, L);
  decoder.forward(x.data(), L, cache, lclm::AttentionMask::Causal);
  std::vector<float> logits(L * V);
  decoder.logits(x.data(), L, logits.data());

  fs::create_directories(out_dir);
  const fs::path logits_file = fs::absolute(out_dir / "logits.f32");
  std::ofstream logits_out(logits_file, std::ios::binary);
  logits_out.write(reinterpret_cast<const char*>(logits.data()),
                   static_cast<std::streamsize>(logits.size() * sizeof(float)));
  const nlohmann::json dump = {{"regions", regions},
                               {"decoder_ids", prepared.ids},
                               {"memory_id", model->memory_token_id()},
                               {"hidden_size", decoder.config().hidden_size},
                               {"vocab_size", decoder.config().vocab_size},
                               {"logits_file", logits_file.string()}};
  std::ofstream json_out(out_dir / "dump.json");
  json_out << dump.dump() << "\n";
  if (!logits_out.flush() || !json_out.flush()) {
    throw std::runtime_error("cannot write to " + out_dir.string());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: lclm_dump CKPT_DIR PROMPT_FILE OUT_DIR\n";
    return 2;
  }
  try {
    return run(argv[1], argv[2], argv[3]);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
