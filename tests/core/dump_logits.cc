// Test driver for tests/reference/check_forward.py: runs the engine on the
// given token ids, prefilling `chunk` positions per forward pass through the
// KV cache (f32, or the type --cache-type names for keys and values), and
// writes the logits of every position as raw f32 [n, vocab].
// --bf16-activations split|rounded sets the precision of x in products with
// bf16 weights (ops/bf16_gemm.h); the prefill kernel's name goes to
// standard output.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "model/qwen3_model.h"
#include "ops/bf16_gemm.h"
#include "ops/matmul.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: dump_logits MODEL_DIR CHUNK OUT.f32 [--cache-type TYPE] "
                 "[--bf16-activations split|rounded] ID...\n";
    return 2;
  }
  try {
    const auto model = lclm::Qwen3Model::load(argv[1]);
    const std::size_t chunk = std::strtoul(argv[2], nullptr, 10);
    int first_id = 4;
    lclm::KVCacheTypes types;
    for (; first_id + 1 < argc && std::string(argv[first_id]).starts_with("--"); first_id += 2) {
      const std::string flag = argv[first_id], value = argv[first_id + 1];
      if (flag == "--cache-type") {
        const lclm::DType type = lclm::parse_kv_cache_type(value, "--cache-type");
        types = {type, type};
      } else if (flag == "--bf16-activations" && (value == "split" || value == "rounded")) {
        lclm::set_bf16_activation_precision(value == "split" ? lclm::Bf16Precision::kSplit
                                                             : lclm::Bf16Precision::kRounded);
      } else {
        std::cerr << "dump_logits: unknown option " << flag << " " << value << "\n";
        return 2;
      }
    }
    std::cout << "bf16 prefill kernel: " << lclm::bf16_prefill_kernel() << "\n";
    std::vector<std::int32_t> ids;
    for (int i = first_id; i < argc; ++i) ids.push_back(std::atoi(argv[i]));
    const auto H = static_cast<std::size_t>(model.config().hidden_size);
    const auto V = static_cast<std::size_t>(model.config().vocab_size);
    auto cache = model.make_cache(ids.size(), 0, types);
    std::vector<float> logits(ids.size() * V);
    for (std::size_t start = 0; start < ids.size(); start += chunk) {
      const std::size_t n = std::min(chunk, ids.size() - start);
      std::vector<float> x(n * H);
      model.embed({ids.data() + start, n}, x.data());
      model.forward(x.data(), n, cache, lclm::AttentionMask::Causal);
      model.logits(x.data(), n, logits.data() + start * V);
    }
    std::ofstream out(argv[3], std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data()),
              static_cast<std::streamsize>(logits.size() * sizeof(float)));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
