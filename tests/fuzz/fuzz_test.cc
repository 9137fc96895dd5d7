// Seeded mutation fuzzing of everything lclm reads from files and requests:
// the safetensors header, a Qwen3 model directory's config.json (then the
// whole load and a forward pass), model_config.json, tokenizer.json (then
// encode and decode) and the memory-region parser. Each target starts from a
// valid input and mutates it, structure-aware (a JSON value replaced by an
// extreme one, a key dropped) and byte-wise (flips, cuts, inserts). The rule
// under test: an input is either used or refused with lclm::Error; anything
// else (another exception type, a crash, a sanitizer report) is a defect.
// The failing input is written to the test's scratch directory.
//
// LCLM_FUZZ_ITERATIONS (default 200 per target) and LCLM_FUZZ_SEED (default
// 1) set the run; CI runs the default, also under ASan and UBSan
// (scripts/test.sh). A longer run: LCLM_FUZZ_ITERATIONS=100000
// build/tests/fuzz_test.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "compression/lclm_config.h"
#include "compression/memory_regions.h"
#include "core/test_models.h"
#include "fixtures/random_qwen3.h"
#include "format/json_file.h"
#include "format/safetensors.h"
#include "model/qwen3_model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

std::uint64_t iterations() {
  return env_or("LCLM_FUZZ_ITERATIONS", 200);
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A value that breaks assumptions: extremes, wrong types, empties.
json extreme_value(std::mt19937_64& rng) {
  static const std::vector<json> values = {
      json(-1),
      json(0),
      json(1),
      json(3),
      json(std::int64_t{1} << 31),
      json(std::numeric_limits<std::int64_t>::max()),
      json(std::numeric_limits<std::int64_t>::min()),
      json(std::numeric_limits<std::uint64_t>::max()),
      json(1e308),
      json(-1e308),
      json(0.5),
      json(4.5),
      json(1e-320),
      json(""),
      json(std::string(4096, 'x')),
      json("BF16"),
      json("bf16"),
      json("<|im_start|>"),
      json(nullptr),
      json(true),
      json::array(),
      json::array({-1, 0}),
      json::array({0, std::numeric_limits<std::int64_t>::max()}),
      json::object()};
  return values[rng() % values.size()];
}

// Every node of j (objects' and arrays' members), to pick one to change.
void collect(json& j, std::vector<json*>& out) {
  out.push_back(&j);
  if (out.size() > 20000) return;
  if (j.is_object() || j.is_array()) {
    for (auto& child : j) collect(child, out);
  }
}

// One structural change: a node replaced by an extreme value, an object
// member dropped or renamed, an array element duplicated or dropped.
void mutate_json(json& root, std::mt19937_64& rng) {
  std::vector<json*> nodes;
  collect(root, nodes);
  json& node = *nodes[rng() % nodes.size()];
  switch (rng() % 4) {
    case 0:
    case 1:
      if (&node != &root) {
        node = extreme_value(rng);
        return;
      }
      [[fallthrough]];
    case 2:
      if (node.is_object() && !node.empty()) {
        auto it = node.begin();
        std::advance(it, static_cast<long>(rng() % node.size()));
        const std::string key = it.key();
        json value = *it;
        node.erase(key);
        if (rng() % 2) node[key + "_"] = value;  // renamed
        return;
      }
      [[fallthrough]];
    default:
      if (node.is_array() && !node.empty()) {
        const std::size_t at = rng() % node.size();
        if (rng() % 2) {
          node.push_back(node[at]);
        } else {
          node.erase(at);
        }
      } else if (&node != &root) {
        node = extreme_value(rng);
      }
  }
}

// Byte-level damage: flipped bits, random or interesting bytes, a cut, an
// insertion.
void mutate_bytes(std::string& s, std::mt19937_64& rng) {
  if (s.empty()) {
    s.push_back(static_cast<char>(rng()));
    return;
  }
  const std::size_t at = rng() % s.size();
  switch (rng() % 5) {
    case 0:
      s[at] = static_cast<char>(s[at] ^ (1 << (rng() % 8)));
      break;
    case 1:
      s[at] = "\x00\xff\x7f\x80{}[]\",:0-9e\\"[rng() % 17];
      break;
    case 2:
      s.resize(at);
      break;
    case 3:
      s.insert(at, std::string(1 + rng() % 16, static_cast<char>(rng())));
      break;
    default:
      s.erase(at, 1 + rng() % 8);
  }
}

// Runs `use` on `iterations()` mutants made by `mutate`; an lclm::Error is a
// refusal, any other exception a failure that keeps the input.
void fuzz(const std::string& name, const std::function<std::string(std::mt19937_64&)>& mutant,
          const fs::path& input, const std::function<void()>& use) {
  const std::uint64_t seed = env_or("LCLM_FUZZ_SEED", 1);
  std::mt19937_64 rng(seed ^ std::hash<std::string>{}(name));
  std::size_t used = 0, refused = 0;
  for (std::uint64_t i = 0; i < iterations(); ++i) {
    const std::string bytes = mutant(rng);
    write_bytes(input, bytes);
    try {
      use();
      ++used;
    } catch (const Error&) {
      ++refused;
    } catch (const std::exception& e) {
      const fs::path kept = input.parent_path() / ("failing-" + std::to_string(i));
      write_bytes(kept, bytes);
      ADD_FAILURE() << name << " iteration " << i << " (seed " << seed
                    << "): not an lclm::Error: " << e.what() << "; input kept in " << kept;
      return;
    }
  }
  std::cout << name << ": " << used << " used, " << refused << " refused\n";
  EXPECT_GT(refused, 0u) << "no mutant was refused: the mutations do nothing";
}

// A mutant of a JSON document: usually structural, sometimes byte-wise.
std::function<std::string(std::mt19937_64&)> json_mutants(const json& valid) {
  return [valid](std::mt19937_64& rng) {
    json j = valid;
    const std::size_t changes = 1 + rng() % 3;
    for (std::size_t c = 0; c < changes; ++c) mutate_json(j, rng);
    std::string text = j.dump();
    if (rng() % 4 == 0) mutate_bytes(text, rng);
    return text;
  };
}

// A small Qwen3 (vocab 512) so that a load takes milliseconds.
fs::path small_model(const std::string& name) {
  const fs::path dir = testing::scratch_dir(name);
  RandomQwen3Spec spec;
  spec.config = testing::tiny_config();
  spec.config.vocab_size = 512;
  spec.config.eos_token_ids = {2};
  write_random_qwen3(dir, spec);
  return dir;
}

TEST(Fuzz, SafetensorsHeaders) {
  const fs::path dir = small_model("fuzz_safetensors");
  const std::string valid = read_bytes(dir / "model.safetensors");
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, valid.data(), 8);
  const json header = json::parse(valid.substr(8, header_len));
  const std::string data = valid.substr(8 + header_len);
  const auto json_mutant = json_mutants(header);
  const fs::path input = dir / "fuzzed.safetensors";
  fuzz(
      "safetensors",
      [&](std::mt19937_64& rng) {
        std::string h = json_mutant(rng);
        std::string bytes(8, '\0');
        const std::uint64_t n = h.size();
        std::memcpy(bytes.data(), &n, 8);
        bytes += h + data;
        if (rng() % 4 == 0) mutate_bytes(bytes, rng);
        return bytes;
      },
      input,
      [&] {
        const SafetensorsFile f(input);
        std::uint64_t sum = 0;  // every byte of every tensor is readable
        for (const TensorView& t : f.tensors()) {
          for (std::size_t b = 0; b < t.nbytes; ++b) sum += t.data[b];
        }
        EXPECT_GE(sum, 0u);
      });
}

TEST(Fuzz, ModelConfigThenLoadAndForward) {
  const fs::path dir = small_model("fuzz_model");
  const json valid = read_json_file(dir / "config.json");
  fuzz("config.json", json_mutants(valid), dir / "config.json", [&] {
    const Qwen3Model m = Qwen3Model::load(dir);
    const auto H = static_cast<std::size_t>(m.config().hidden_size);
    const std::vector<std::int32_t> ids = {3, 7, 11};
    std::vector<float> x(ids.size() * H);
    m.embed(ids, x.data());
    KVCache cache = m.make_cache(8);
    m.forward(x.data(), ids.size(), cache, AttentionMask::Causal);
    std::vector<float> logits(static_cast<std::size_t>(m.config().vocab_size));
    m.logits(x.data() + 2 * H, 1, logits.data());
  });
}

TEST(Fuzz, LclmModelConfig) {
  const fs::path dir = testing::scratch_dir("fuzz_lclm_config");
  const json valid = {{"compression_ratio", 4},     {"encoder_window_size", 1024},
                      {"pooling", "mean"},          {"encoder_mask_type", "causal"},
                      {"boundary_overlap", 0},      {"adapter_type", "mlp_attn"},
                      {"num_adapter_layers", 1}};
  const fs::path input = dir / "model_config.json";
  fuzz("model_config.json", json_mutants(valid), input, [&] { LclmConfig::from_file(input); });
}

TEST(Fuzz, TokenizerJsonThenEncodeAndDecode) {
  // The shipped model's tokenizer: the real format with a 4,096-token vocabulary.
  const fs::path source = fs::path(LCLM_SOURCE_DIR) / "models/lclm-small/decoder/tokenizer.json";
  if (!fs::exists(source)) GTEST_SKIP() << source << " is absent";
  const json valid = read_json_file(source);
  const fs::path input = testing::scratch_dir("fuzz_tokenizer") / "tokenizer.json";
  std::mt19937_64 text_rng(7);
  fuzz("tokenizer.json", json_mutants(valid), input, [&] {
    const Tokenizer t = Tokenizer::from_file(input);
    const std::vector<std::int32_t> ids =
        t.encode("The special magic number for calm-ember is 4417235. <|im_end|> héllo");
    EXPECT_FALSE(t.decode(ids).empty());
    std::string bytes(16, '\0');
    for (char& c : bytes) c = static_cast<char>(text_rng());
    try {
      t.encode(bytes);  // invalid UTF-8 is an lclm::Error
    } catch (const Error&) {
    }
    std::vector<std::int32_t> random_ids(8);
    for (auto& id : random_ids) id = static_cast<std::int32_t>(text_rng() % (t.size() + 4));
    t.decode(random_ids);
  });
}

TEST(Fuzz, MemoryRegions) {
  const fs::path input = testing::scratch_dir("fuzz_regions") / "prompt.txt";
  const std::vector<std::string> pieces = {"<|memory_start|>", "<|memory_end|>", "<|memory|>",
                                           "<|memory_", "|>", "text ", "\n", "<|im_start|>",
                                           "\xe2\x82", "\xac"};
  fuzz(
      "memory regions",
      [&](std::mt19937_64& rng) {
        std::string prompt;
        const std::size_t n = rng() % 12;
        for (std::size_t i = 0; i < n; ++i) prompt += pieces[rng() % pieces.size()];
        return prompt;
      },
      input,
      [&] {
        const std::string prompt = read_bytes(input);
        const std::vector<PromptSegment> segments = split_memory_regions(prompt);
        std::size_t bytes = 0;  // the segments hold the prompt's text, markers aside
        for (const PromptSegment& s : segments) bytes += s.text.size();
        EXPECT_LE(bytes, prompt.size());
      });
}

}  // namespace
}  // namespace lclm
