// The LCLM prompt path in the engine: window tiling, model_config.json
// parsing, adapter shape checks, LclmModel::prepare (the splice of latents into
// the decoder's embeddings), the latent cache behind compress(), and the
// ratio override. Numerical parity with the PyTorch reference is checked
// separately (tests/reference/check_lclm.py).
//
// Most checkpoints here use a byte-level tokenizer (256 byte tokens, no
// merges): every ASCII byte is one token, so region lengths and latent counts
// follow from the text alone, and a checkpoint takes milliseconds to write
// and load instead of seconds with the real 151k-token vocabulary. One test
// runs the real Qwen3 tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "compression/latent_encoder.h"
#include "compression/lclm_config.h"
#include "compression/lclm_model.h"
#include "compression/memory_regions.h"
#include "core/test_models.h"
#include "fixtures/random_lclm.h"
#include "fixtures/random_qwen3.h"
#include "format/json_file.h"
#include "model/kv_cache.h"
#include "ops/bf16_gemm.h"
#include "ops/bf16_kernels.h"
#include "ops/matmul.h"
#include "util/error.h"
#include "util/threads.h"

namespace lclm {
namespace {

using testing::error_of;

namespace fs = std::filesystem;
using testing::scratch_dir;
using testing::write_text;

// ---- helpers ---------------------------------------------------------------

std::size_t ceil_div(std::size_t a, std::size_t b) {
  return (a + b - 1) / b;
}

LclmConfig config_of(std::int64_t ratio, std::int64_t window, std::int64_t overlap = 0,
                     AttentionMask mask = AttentionMask::Causal) {
  LclmConfig c;
  c.compression_ratio = ratio;
  c.encoder_window_size = window;
  c.boundary_overlap = overlap;
  c.encoder_mask = mask;
  return c;
}

std::string utf8(char32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {  // byte-level BPE maps bytes to code points below 0x800
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// The Qwen2/Qwen3 tokenizer.json Split pattern.
constexpr std::string_view kQwen2PreTokenizerRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*)"
    R"(|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A tokenizer.json in the Qwen2 format whose vocabulary is the 256 byte-level
// symbols (GPT-2's bytes_to_unicode, token id = byte value) with no merges,
// plus <|endoftext|>, <|im_start|>, <|im_end|> as added tokens 256..258.
fs::path byte_tokenizer_dir() {
  static const fs::path dir = [] {
    const fs::path d = scratch_dir("byte_tokenizer");
    nlohmann::json vocab = nlohmann::json::object();
    char32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      vocab[utf8(printable ? static_cast<char32_t>(b) : extra++)] = b;
    }
    nlohmann::json added = nlohmann::json::array();
    int id = 256;
    for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
      added.push_back({{"id", id++},
                       {"content", t},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", true}});
    }
    const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                       {"add_prefix_space", false},
                                       {"trim_offsets", false},
                                       {"use_regex", false}};
    const nlohmann::json tokenizer = {
        {"version", "1.0"},
        {"added_tokens", added},
        {"normalizer", {{"type", "NFC"}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", std::string(kQwen2PreTokenizerRegex)}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            byte_level}}}},
        {"decoder", byte_level},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
    write_text(d / "tokenizer.json", tokenizer.dump());
    write_text(d / "tokenizer_config.json", R"({"pad_token": "<|endoftext|>"})");
    return d;
  }();
  return dir;
}

// A tiny_lclm_spec checkpoint with r = 4, W = 16 and the byte-level
// tokenizer; `edit` adjusts the spec first.
fs::path write_checkpoint(const std::string& name, std::uint64_t seed = 5,
                          const std::function<void(RandomLclmSpec&)>& edit = {}) {
  RandomLclmSpec spec = tiny_lclm_spec(byte_tokenizer_dir());
  spec.seed = seed;
  spec.config.compression_ratio = 4;
  spec.config.encoder_window_size = 16;
  if (edit) edit(spec);
  const fs::path dir = scratch_dir(name);
  write_random_lclm(dir, spec);
  return dir;
}

bool same_bits(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// 50 ASCII bytes: 50 tokens with the byte tokenizer, so with r = 4 and W = 16
// four windows (16, 16, 16, 2) and ceil(50 / 4) = 13 latents.
const std::string kLongText = "Fifty bytes of text to compress in four windows...";

// ---- tile_windows ------------------------------------------------------------

void expect_window(const EncoderWindow& w, std::size_t begin, std::size_t end, std::size_t left,
                   std::size_t right, std::size_t latents) {
  EXPECT_EQ(w.begin, begin);
  EXPECT_EQ(w.end, end);
  EXPECT_EQ(w.left_context, left) << "window [" << begin << ", " << end << ")";
  EXPECT_EQ(w.right_context, right) << "window [" << begin << ", " << end << ")";
  EXPECT_EQ(w.latents, latents) << "window [" << begin << ", " << end << ")";
}

TEST(LclmTileWindows, EmptyRegionHasNoWindows) {
  EXPECT_TRUE(tile_windows(0, config_of(4, 16)).empty());
  EXPECT_TRUE(tile_windows(0, config_of(4, 16, 3, AttentionMask::Bidirectional)).empty());
}

TEST(LclmTileWindows, FewerTokensThanTheRatioGiveOneLatent) {
  const auto w = tile_windows(3, config_of(4, 16));
  ASSERT_EQ(w.size(), 1u);
  expect_window(w[0], 0, 3, 0, 0, 1);
}

TEST(LclmTileWindows, ExactlyOneWindowAndOneTokenMore) {
  const auto one = tile_windows(16, config_of(4, 16));
  ASSERT_EQ(one.size(), 1u);
  expect_window(one[0], 0, 16, 0, 0, 4);

  const auto two = tile_windows(17, config_of(4, 16));
  ASSERT_EQ(two.size(), 2u);
  expect_window(two[0], 0, 16, 0, 0, 4);
  expect_window(two[1], 16, 17, 0, 0, 1);
}

TEST(LclmTileWindows, CausalOverlapAddsLeftContextOnly) {
  const auto w = tile_windows(40, config_of(4, 16, 5, AttentionMask::Causal));
  ASSERT_EQ(w.size(), 3u);
  expect_window(w[0], 0, 16, 0, 0, 4);  // nothing before the region's first token
  expect_window(w[1], 16, 32, 5, 0, 4);
  expect_window(w[2], 32, 40, 5, 0, 2);
}

TEST(LclmTileWindows, BidirectionalOverlapAddsContextOnBothSidesWithinTheRegion) {
  const auto w = tile_windows(40, config_of(4, 16, 5, AttentionMask::Bidirectional));
  ASSERT_EQ(w.size(), 3u);
  expect_window(w[0], 0, 16, 0, 5, 4);
  expect_window(w[1], 16, 32, 5, 5, 4);
  expect_window(w[2], 32, 40, 5, 0, 2);  // nothing after the region's last token
}

TEST(LclmTileWindows, ContextIsClippedAtTheRegionEdges) {
  // An overlap longer than the window: left context reaches back to token 0 at
  // most, right context forward to the region's end at most.
  const auto w = tile_windows(40, config_of(4, 16, 20, AttentionMask::Bidirectional));
  ASSERT_EQ(w.size(), 3u);
  expect_window(w[0], 0, 16, 0, 20, 4);
  expect_window(w[1], 16, 32, 16, 8, 4);
  expect_window(w[2], 32, 40, 20, 0, 2);
}

TEST(LclmTileWindows, WindowsTileTheRegionAndYieldCeilTOverRLatents) {
  for (std::int64_t r : {1, 2, 3, 4, 5, 8, 16}) {
    for (std::int64_t k : {1, 2, 3, 5}) {
      for (std::int64_t overlap : {0, 2, 7}) {
        for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::Bidirectional}) {
          const LclmConfig c = config_of(r, k * r, overlap, mask);
          for (std::size_t T = 0; T <= 130; ++T) {
            const auto windows = tile_windows(T, c);
            std::size_t next = 0, latents = 0;
            for (const EncoderWindow& w : windows) {
              ASSERT_EQ(w.begin, next) << "T=" << T << " r=" << r << " W=" << k * r;
              ASSERT_GT(w.end, w.begin);
              ASSERT_LE(w.end - w.begin, static_cast<std::size_t>(k * r));
              ASSERT_EQ(w.latents, ceil_div(w.end - w.begin, r));
              ASSERT_EQ(w.left_context, std::min<std::size_t>(overlap, w.begin));
              ASSERT_EQ(w.right_context, mask == AttentionMask::Bidirectional
                                             ? std::min<std::size_t>(overlap, T - w.end)
                                             : 0u);
              next = w.end;
              latents += w.latents;
            }
            ASSERT_EQ(next, T);
            ASSERT_EQ(latents, ceil_div(T, r)) << "T=" << T << " r=" << r << " W=" << k * r;
          }
        }
      }
    }
  }
}

// ---- LclmConfig::from_file ---------------------------------------------------

nlohmann::json released_config_json() {
  return {{"compression_ratio", 4},        {"encoder_window_size", 1024}, {"pooling", "mean"},
          {"encoder_mask_type", "causal"}, {"boundary_overlap", 0},       {"adapter_type", "mlp"}};
}

LclmConfig config_from(const nlohmann::json& j) {
  const fs::path file = scratch_dir("model_config") / "model_config.json";
  write_text(file, j.dump());
  return LclmConfig::from_file(file);
}

std::string config_error(const nlohmann::json& j) {
  return error_of([&] { config_from(j); });
}

// The encoder's window caches store bf16 exactly where its products round x
// (bf16 matrices, x rounded, the native kernels), so its attention takes the
// bf16 kernels there; f32 matrices or x split keep them f32 (exact).
TEST(LatentEncoderCache, Bf16WhereTheProductsRoundX) {
  for (const DType dtype : {DType::BF16, DType::F32}) {
    RandomQwen3Spec spec;
    spec.config = testing::tiny_config();
    spec.dtype = dtype;
    spec.seed = 3;
    const auto dir = scratch_dir(std::string("encoder_cache_") + std::string(dtype_name(dtype)));
    write_random_qwen3(dir, spec);
    const Qwen3Model model = Qwen3Model::load(dir);
    const LatentEncoder encoder(model, 0);
    const bool bf16 = dtype == DType::BF16 && native_bf16_enabled();
    {
      const testing::Bf16ActivationsScope rounded_x(Bf16Precision::kRounded);
      EXPECT_EQ(encoder.window_cache_types(), bf16 ? kDefaultKVCacheTypes : KVCacheTypes{})
          << dtype_name(dtype);
    }
    const testing::Bf16ActivationsScope split_x(Bf16Precision::kSplit);
    EXPECT_EQ(encoder.window_cache_types(), KVCacheTypes{}) << dtype_name(dtype);
  }
}

TEST(LclmConfigFile, ReadsTheReleasedConfiguration) {
  const LclmConfig c = config_from(released_config_json());
  EXPECT_EQ(c.compression_ratio, 4);
  EXPECT_EQ(c.encoder_window_size, 1024);
  EXPECT_EQ(c.pooling, Pooling::Mean);
  EXPECT_EQ(c.encoder_mask, AttentionMask::Causal);
  EXPECT_EQ(c.boundary_overlap, 0);
  EXPECT_EQ(c.adapter_type, AdapterType::Mlp);

  auto j = released_config_json();
  j["pooling"] = "concat";
  j["encoder_mask_type"] = "bidirectional";
  j["adapter_type"] = "mlp_attn";
  j["num_adapter_layers"] = 3;
  j["boundary_overlap"] = 8;
  const LclmConfig d = config_from(j);
  EXPECT_EQ(d.pooling, Pooling::Concat);
  EXPECT_EQ(d.encoder_mask, AttentionMask::Bidirectional);
  EXPECT_EQ(d.adapter_type, AdapterType::MlpAttn);
  EXPECT_EQ(d.num_adapter_layers, 3);
  EXPECT_EQ(d.boundary_overlap, 8);
  j["pooling"] = "eos";
  j["adapter_type"] = "attn_mlp";
  const LclmConfig e = config_from(j);
  EXPECT_EQ(e.pooling, Pooling::Eos);
  EXPECT_EQ(e.adapter_type, AdapterType::AttnMlp);
  // attn_mlp cannot take concat-pooled latents: refused naming both.
  j["pooling"] = "concat";
  const std::string message = testing::error_of([&] { config_from(j); });
  EXPECT_NE(message.find("attn_mlp"), std::string::npos) << message;
  EXPECT_NE(message.find("concat"), std::string::npos) << message;
}

// The benchmark's scaled-down published LCLM keeps every matrix of the
// published pair (spec: Qwen3-0.6B encoder, Qwen3-4B decoder) and only cuts
// the depth.
TEST(PublishedLclmSpec, HasThePublishedShapesAndTakesLayerCounts) {
  const RandomLclmSpec full = published_lclm_spec("tok");
  EXPECT_EQ(full.config.encoder_window_size, 1024);
  EXPECT_EQ(full.config.pooling, Pooling::Mean);
  EXPECT_EQ(full.config.encoder_mask, AttentionMask::Causal);
  EXPECT_EQ(full.config.adapter_type, AdapterType::Mlp);
  EXPECT_EQ(full.encoder.hidden_size, 1024);
  EXPECT_EQ(full.encoder.intermediate_size, 3072);
  EXPECT_EQ(full.encoder.num_hidden_layers, 28);
  EXPECT_EQ(full.encoder.num_attention_heads, 16);
  EXPECT_EQ(full.encoder.num_key_value_heads, 8);
  EXPECT_EQ(full.decoder.hidden_size, 2560);
  EXPECT_EQ(full.decoder.intermediate_size, 9728);
  EXPECT_EQ(full.decoder.num_hidden_layers, 36);
  EXPECT_EQ(full.decoder.num_attention_heads, 32);
  EXPECT_EQ(full.decoder.num_key_value_heads, 8);
  EXPECT_EQ(full.decoder.head_dim, 128);
  EXPECT_TRUE(full.decoder.tie_word_embeddings);
  const RandomLclmSpec cut = published_lclm_spec("tok", 2, 3);
  EXPECT_EQ(cut.encoder.num_hidden_layers, 2);
  EXPECT_EQ(cut.decoder.num_hidden_layers, 3);
  EXPECT_EQ(cut.decoder.hidden_size, 2560);
}

TEST(LclmConfigFile, WindowMustBeAMultipleOfTheRatio) {
  auto j = released_config_json();
  j["encoder_window_size"] = 1022;
  const std::string e = config_error(j);
  EXPECT_NE(e.find("model_config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("1022"), std::string::npos) << e;
  EXPECT_NE(e.find("not a multiple"), std::string::npos) << e;
}

// Nonsense once passed: a ratio of 4.5 read as 4, a window of 2^40, an
// overlap as wide as the window.
TEST(LclmConfigFile, NonsenseValuesAreRefusedNamingTheKey) {
  for (const auto& [key, value, part] :
       std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"compression_ratio", 4.5, "must be an integer, not 4.5"},
           {"encoder_window_size", std::int64_t{1} << 40, "past 2^20"},
           {"compression_ratio", 4096, "past 1024"},
           {"boundary_overlap", 1024, "smaller than encoder_window_size"}}) {
    auto j = released_config_json();
    j[key] = value;
    const std::string e = config_error(j);
    EXPECT_NE(e.find(key), std::string::npos) << e;
    EXPECT_NE(e.find(part), std::string::npos) << e;
  }
}

TEST(LclmConfigFile, UnknownNamesAreRejectedWithTheKeyAndValue) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"pooling", "max"}, {"encoder_mask_type", "sliding"}, {"adapter_type", "linear"}}) {
    auto j = released_config_json();
    j[key] = value;
    const std::string e = config_error(j);
    EXPECT_NE(e.find(key), std::string::npos) << e;
    EXPECT_NE(e.find("\"" + value + "\""), std::string::npos) << e;
  }
}

TEST(LclmConfigFile, EveryRequiredKeyIsNamedWhenMissing) {
  for (const char* key : {"compression_ratio", "encoder_window_size", "pooling",
                          "encoder_mask_type", "boundary_overlap", "adapter_type"}) {
    auto j = released_config_json();
    j.erase(key);
    const std::string e = config_error(j);
    EXPECT_NE(e.find(std::string("\"") + key + "\""), std::string::npos) << key << ": " << e;
  }
}

TEST(LclmConfigFile, LegacyChunkSizeIsTheRatio) {
  auto j = released_config_json();
  j.erase("compression_ratio");
  j["chunk_size"] = 8;
  EXPECT_EQ(config_from(j).compression_ratio, 8);
}

TEST(LclmConfigFile, MissingFileIsNamed) {
  const fs::path missing = scratch_dir("no_config") / "model_config.json";
  const std::string e = error_of([&] { LclmConfig::from_file(missing); });
  EXPECT_NE(e.find(missing.string()), std::string::npos) << e;
}

// ---- adapter shapes ----------------------------------------------------------

// Overwrites CKPT/adapter/adapter.safetensors with random tensors of the
// given shapes.
void write_adapter(const fs::path& ckpt,
                   const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& shapes) {
  std::vector<OwnedTensor> tensors;
  for (const auto& [name, shape] : shapes) {
    tensors.push_back(random_tensor(name, shape, DType::BF16, 9, 0.0f, 0.05f));
  }
  write_owned_tensors(ckpt / "adapter" / "adapter.safetensors", tensors, DType::BF16);
}

void expect_load_error(const fs::path& ckpt, const std::vector<std::string>& parts) {
  const std::string e = error_of([&] { LclmModel::load(ckpt); });
  for (const std::string& p : parts) EXPECT_NE(e.find(p), std::string::npos) << p << " in: " << e;
}

// "[a, b]" as the engine's errors print shapes.
std::string shape(std::vector<std::int64_t> dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// E and D of the tiny checkpoints.
std::int64_t encoder_width() {
  return tiny_lclm_spec(byte_tokenizer_dir()).encoder.hidden_size;
}
std::int64_t decoder_width() {
  return tiny_lclm_spec(byte_tokenizer_dir()).decoder.hidden_size;
}

TEST(LclmAdapter, Fc1InputWidthThatIsNotTheEncoderWidthIsNamed) {
  const fs::path ckpt = write_checkpoint("adapter_fc1");
  const std::int64_t E = encoder_width(), D = decoder_width();
  write_adapter(ckpt, {{"norm.weight", {E}},
                       {"fc1.weight", {D, E + 1}},
                       {"fc1.bias", {D}},
                       {"fc2.weight", {D, D}},
                       {"fc2.bias", {D}}});
  expect_load_error(ckpt, {"fc1.weight", shape({D, E + 1}), shape({D, E})});
}

TEST(LclmAdapter, ConcatPoolingNeedsAnAdapterOfRTimesEInputs) {
  // An adapter made for mean pooling (E inputs) under a config that says
  // concat (r * E inputs, r = 4).
  const fs::path ckpt = write_checkpoint("adapter_concat");
  auto j = read_json_file(ckpt / "model_config.json");
  j["pooling"] = "concat";
  write_text(ckpt / "model_config.json", j.dump());
  const std::int64_t E = encoder_width();
  expect_load_error(ckpt, {"norm.weight", shape({E}), shape({4 * E})});
}

TEST(LclmAdapter, AttentionLayersOfTheWrongWidthAreNamed) {
  // mlp_attn layers run at the decoder's width; attn_mlp expects the encoder's.
  const fs::path ckpt = write_checkpoint("adapter_attn", 5, [](RandomLclmSpec& s) {
    s.config.adapter_type = AdapterType::MlpAttn;
    s.config.num_adapter_layers = 1;
  });
  auto j = read_json_file(ckpt / "model_config.json");
  j["adapter_type"] = "attn_mlp";
  write_text(ckpt / "model_config.json", j.dump());
  expect_load_error(ckpt, {"attention_layers.0.decoder_layer.", shape({decoder_width()}),
                           shape({encoder_width()})});
}

TEST(LclmAdapter, AttnMlpCannotTakeConcatPooledLatents) {
  // attn_mlp runs encoder-width attention first; concat latents are r * E wide.
  const fs::path ckpt = write_checkpoint("adapter_attn_concat", 5, [](RandomLclmSpec& s) {
    s.config.adapter_type = AdapterType::AttnMlp;
  });
  auto j = read_json_file(ckpt / "model_config.json");
  j["pooling"] = "concat";
  write_text(ckpt / "model_config.json", j.dump());
  expect_load_error(ckpt, {"model_config.json", "attn_mlp", "concat"});
  // lclm-make-model --pooling concat --adapter attn_mlp once wrote such a
  // checkpoint for lclm to refuse; the writer now refuses it, writing nothing.
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.config.adapter_type = AdapterType::AttnMlp;
  spec.config.pooling = Pooling::Concat;
  const fs::path dir = testing::scratch_dir("adapter_attn_concat_written");
  const std::string message = testing::error_of([&] { write_random_lclm(dir / "ckpt", spec); });
  EXPECT_NE(message.find("attn_mlp"), std::string::npos) << message;
  EXPECT_NE(message.find("concat"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "ckpt"));
}

TEST(LclmAdapter, MissingAttentionLayerIsNamed) {
  const fs::path ckpt = write_checkpoint("adapter_layers", 5, [](RandomLclmSpec& s) {
    s.config.adapter_type = AdapterType::MlpAttn;
    s.config.num_adapter_layers = 1;
  });
  auto j = read_json_file(ckpt / "model_config.json");
  j["num_adapter_layers"] = 2;
  write_text(ckpt / "model_config.json", j.dump());
  expect_load_error(ckpt, {"attention_layers.1.decoder_layer."});
}

// ---- LclmModel::prepare ------------------------------------------------------

// Checks a prepared prompt against its parts: for each region k in order the
// ids hold <|memory_start|>, counts[k] x <|memory|>, <|memory_end|>; memory
// positions hold the region's compress() rows, bit for bit; every other
// position holds the decoder's embedding of its id.
void expect_spliced(LclmModel& model, const PreparedPrompt& p,
                    const std::vector<std::string>& region_texts) {
  const auto D = static_cast<std::size_t>(model.decoder().config().hidden_size);
  const std::int32_t start = *model.decoder_tokenizer().token_id(kMemoryStart);
  const std::int32_t end = *model.decoder_tokenizer().token_id(kMemoryEnd);
  const std::int32_t slot = model.memory_token_id();
  ASSERT_EQ(p.embeddings.size(), p.ids.size() * D);

  std::vector<float> plain(p.ids.size() * D);
  model.decoder().embed(p.ids, plain.data());

  std::size_t region = 0, i = 0, total_latents = 0;
  while (i < p.ids.size()) {
    if (p.ids[i] != start) {
      EXPECT_NE(p.ids[i], slot) << "a <|memory|> outside a region at " << i;
      EXPECT_TRUE(same_bits(&p.embeddings[i * D], &plain[i * D], D)) << "position " << i;
      ++i;
      continue;
    }
    ASSERT_LT(region, region_texts.size()) << "more regions in the ids than in the prompt";
    EXPECT_TRUE(same_bits(&p.embeddings[i * D], &plain[i * D], D)) << "<|memory_start|>";
    const Latents latents = model.compress(region_texts[region]);
    const std::size_t T = model.encoder_tokenizer().encode(region_texts[region]).size();
    const auto r = static_cast<std::size_t>(model.config().compression_ratio);
    EXPECT_EQ(latents.count(), ceil_div(T, r)) << "region " << region;
    EXPECT_EQ(latents.n_tokens, T);
    for (std::size_t k = 0; k < latents.count(); ++k) {
      const std::size_t pos = i + 1 + k;
      ASSERT_LT(pos, p.ids.size());
      ASSERT_EQ(p.ids[pos], slot) << "region " << region << " latent " << k;
      EXPECT_TRUE(same_bits(&p.embeddings[pos * D], latents.data.data() + k * D, D))
          << "region " << region << " latent " << k;
    }
    const std::size_t close = i + 1 + latents.count();
    ASSERT_LT(close, p.ids.size());
    EXPECT_EQ(p.ids[close], end) << "region " << region;
    EXPECT_TRUE(same_bits(&p.embeddings[close * D], &plain[close * D], D)) << "<|memory_end|>";
    total_latents += latents.count();
    i = close + 1;
    ++region;
  }
  EXPECT_EQ(region, region_texts.size());
  EXPECT_EQ(static_cast<std::size_t>(std::count(p.ids.begin(), p.ids.end(), slot)), total_latents);
  EXPECT_EQ(p.stats.regions, region_texts.size());
  EXPECT_EQ(p.stats.latents, total_latents);
  EXPECT_EQ(p.stats.plain_tokens, p.ids.size() - total_latents);
}

TEST(LclmModel, PrepareSplicesEachRegionsLatentsInOrder) {
  const auto model = LclmModel::load(write_checkpoint("prepare"));
  const std::string prompt = "Summarise: <|memory_start|>" + kLongText +
                             "<|memory_end|> and <|memory_start|>ab<|memory_end|>, then"
                             "<|memory_start|><|memory_end|> stop.";
  ASSERT_EQ(kLongText.size(), 50u);
  const PreparedPrompt p = model->prepare(prompt);
  expect_spliced(*model, p, {kLongText, "ab", ""});
  // The byte tokenizer makes the counts independent of the engine's own
  // tokenizer: 50 bytes -> 13 latents, 2 -> 1, 0 -> 0.
  EXPECT_EQ(p.stats.latents, 14u);
  EXPECT_EQ(p.stats.compressed_tokens, 52u);
  EXPECT_EQ(model->compress("").count(), 0u);
}

// Latents computed earlier (a latents file) fill a slot region exactly as
// compressing the text there would.
TEST(LclmModel, SuppliedLatentsFillTheSlotsAsTheirTextWould) {
  const auto model = LclmModel::load(write_checkpoint("supplied"));
  const std::vector<Latents> given = {model->compress(kLongText), model->compress("ab")};
  const PreparedPrompt want = model->prepare(
      "Q: <|memory_start|>" + kLongText + "<|memory_end|> and <|memory_start|>ab<|memory_end|>.");
  const std::string slot(kLatentSlot);
  const PreparedPrompt got =
      model->prepare("Q: " + slot + " and " + slot + ".", std::nullopt, 0, given);
  EXPECT_EQ(got.ids, want.ids);
  EXPECT_EQ(got.embeddings, want.embeddings);
  EXPECT_EQ(got.stats.latents, want.stats.latents);
  EXPECT_EQ(got.stats.compressed_tokens, want.stats.compressed_tokens);

  const auto error = [&](const std::string& prompt, std::span<const Latents> latents) {
    return testing::error_of([&] { model->prepare(prompt, std::nullopt, 0, latents); });
  };
  EXPECT_NE(
      error("Q: " + slot, std::span(given)).find("2 set(s) of latents given for 1 latent slot"),
      std::string::npos);
  Latents narrow = given[1];
  narrow.dim = 4;
  narrow.data.resize(8);
  EXPECT_NE(error("Q: " + slot, std::span(&narrow, 1)).find("width 4"), std::string::npos);
  // Without latents a slot is the hand-written <|memory|> it always was.
  EXPECT_NE(error("Q: " + slot, {}).find("not written by hand"), std::string::npos);
}

// The windows of a region are encoded in parallel, one thread each: the
// region's latents are, bit for bit, those of each window compressed alone,
// in order, and the same on one thread as on two. 64 bytes make four full
// windows of 4 latents each, so the adapter, which maps all of a call's rows
// at once, takes the same path for a window alone as for the region.
TEST(LclmModel, WindowsEncodedInParallelMatchEachWindowAloneInOrder) {
  const fs::path ckpt = write_checkpoint("parallel_windows", 5, [](RandomLclmSpec& s) {
    s.config.encoder_mask = AttentionMask::Causal;
    s.config.boundary_overlap = 0;  // so each window sees only its own tokens
    // 16 latents a window: more than kMatvecMaxRows, so the adapter's
    // products of one window's latents alone take the kernel they take with
    // all 64 together (the fused matvec and sgemm round differently).
    s.config.compression_ratio = 1;
  });
  const std::string text = kLongText + "and fourteen..";
  ASSERT_EQ(text.size(), 64u);
  ASSERT_GT(16u, kMatvecMaxRows);
  // Restores the thread count however the test ends (an ASSERT returns early).
  struct RestoreThreads {
    int n = num_threads();
    ~RestoreThreads() { set_num_threads(n); }
  } restore;
  set_num_threads(2);
  const Latents two = LclmModel::load(ckpt)->compress(text);  // 4 windows
  set_num_threads(1);
  const Latents one = LclmModel::load(ckpt)->compress(text);
  ASSERT_EQ(two.count(), 64u);
  ASSERT_EQ(one.data.size(), two.data.size());
  EXPECT_TRUE(same_bits(one.data.data(), two.data.data(), two.data.size()));
  const auto model = LclmModel::load(ckpt);
  std::size_t row = 0;
  for (std::size_t begin = 0; begin < text.size(); begin += 16) {
    const Latents alone = model->compress(text.substr(begin, 16));
    ASSERT_LE(row + alone.count(), two.count());
    EXPECT_TRUE(same_bits(alone.data.data(), two.data.data() + row * two.dim, alone.data.size()))
        << "window at byte " << begin;
    row += alone.count();
  }
  EXPECT_EQ(row, 64u);
}

TEST(LclmModel, PrepareWithTheRealQwen3Tokenizer) {
  // Several windows with the real tokenizer, and a region first thing in the
  // prompt.
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 3;
  spec.config.encoder_window_size = 8;
  const fs::path dir = scratch_dir("prepare_qwen3");
  write_random_lclm(dir, spec);
  const auto model = LclmModel::load(dir);
  const std::string a = "The quick brown fox jumps over the lazy dog, twice: 1, 2.";
  const std::string b = "Zürich";
  const PreparedPrompt p = model->prepare("<|memory_start|>" + a +
                                          "<|memory_end|>\n<|im_start|>user\nWhere?<|im_end|>"
                                          "<|memory_start|>" +
                                          b + "<|memory_end|><|memory_start|><|memory_end|>");
  expect_spliced(*model, p, {a, b, ""});
  EXPECT_GT(model->encoder_tokenizer().encode(a).size(), 2u * 8u);
}

TEST(LclmModel, EmptyRegionGivesNoLatents) {
  const auto model = LclmModel::load(write_checkpoint("empty_region"));
  const PreparedPrompt p = model->prepare("a<|memory_start|><|memory_end|>b");
  expect_spliced(*model, p, {""});
  EXPECT_EQ(p.stats.latents, 0u);
  EXPECT_EQ(p.stats.compressed_tokens, 0u);
  const std::vector<std::int32_t> want = {
      *model->decoder_tokenizer().token_id("a"), *model->decoder_tokenizer().token_id(kMemoryStart),
      *model->decoder_tokenizer().token_id(kMemoryEnd), *model->decoder_tokenizer().token_id("b")};
  EXPECT_EQ(p.ids, want);
}

TEST(LclmModel, PromptWithoutRegionsIsPlainEmbedding) {
  const auto model = LclmModel::load(write_checkpoint("no_regions"));
  const std::string prompt = "<|im_start|>user\nNo memory here.<|im_end|>\n";
  const PreparedPrompt p = model->prepare(prompt);
  EXPECT_EQ(p.ids, model->decoder_tokenizer().encode(prompt));
  std::vector<float> plain(p.embeddings.size());
  model->decoder().embed(p.ids, plain.data());
  EXPECT_TRUE(same_bits(p.embeddings.data(), plain.data(), plain.size()));
  EXPECT_EQ(p.stats.regions, 0u);
  EXPECT_EQ(p.stats.latents, 0u);
  EXPECT_EQ(p.stats.plain_tokens, p.ids.size());
}

TEST(LclmModel, DecoderTokenizerWithoutTheMemoryTokensIsRejected) {
  const fs::path ckpt = write_checkpoint("no_memory_tokens");
  // The decoder tokenizer gets the two markers but not <|memory|>.
  write_tokenizer_with_added_tokens(byte_tokenizer_dir() / "tokenizer.json",
                                    ckpt / "decoder" / "tokenizer.json",
                                    {std::string(kMemoryStart), std::string(kMemoryEnd)});
  expect_load_error(ckpt, {"<|memory|>", "decoder"});
}

// ---- latent cache ------------------------------------------------------------

TEST(LclmCache, SecondCompressionOfTheSameTextIsAMemoryHit) {
  const auto model = LclmModel::load(write_checkpoint("cache_memory"));
  bool hit = true;
  const Latents first = model->compress(kLongText, std::nullopt, &hit);
  EXPECT_FALSE(hit);
  const Latents second = model->compress(kLongText, std::nullopt, &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(model->cache().stats().memory_hits, 1u);
  ASSERT_EQ(first.data.size(), second.data.size());
  EXPECT_TRUE(same_bits(first.data.data(), second.data.data(), first.data.size()));

  const std::string prompt = "x<|memory_start|>" + kLongText + "<|memory_end|>y";
  EXPECT_EQ(model->prepare(prompt).stats.cache_hits, 1u);
  EXPECT_EQ(model->prepare("<|memory_start|>new text<|memory_end|>").stats.cache_hits, 0u);
}

TEST(LclmCache, DiskCacheServesASecondLoadBitForBit) {
  const fs::path ckpt = write_checkpoint("cache_disk");
  LclmOptions options;
  options.cache_store.location = (scratch_dir("cache_disk_db") / "latents.sqlite").string();
  Latents first;
  std::string fingerprint;
  {
    const auto model = LclmModel::load(ckpt, options);
    bool hit = true;
    first = model->compress(kLongText, std::nullopt, &hit);
    EXPECT_FALSE(hit);
    fingerprint = model->fingerprint();
  }
  const auto model = LclmModel::load(ckpt, options);
  EXPECT_EQ(model->fingerprint(), fingerprint);
  bool hit = false;
  const Latents again = model->compress(kLongText, std::nullopt, &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(model->cache().stats().disk_hits, 1u);
  EXPECT_EQ(again.n_tokens, first.n_tokens);
  ASSERT_EQ(again.data.size(), first.data.size());
  EXPECT_TRUE(same_bits(again.data.data(), first.data.data(), first.data.size()));
}

// A row under the right key whose width or count is not what the model
// makes (a damaged or foreign cache file) was spliced as it was: a
// heap-buffer-overflow under ASan, garbage in release. It is recomputed.
TEST(LclmCache, ARowOfAnotherShapeIsRecomputedNotSpliced) {
  const fs::path ckpt = write_checkpoint("cache_shape");
  LclmOptions options;
  options.cache_store.location = (scratch_dir("cache_shape_db") / "latents.sqlite").string();
  const std::string prompt = "x<|memory_start|>" + kLongText + "<|memory_end|>y";
  PreparedPrompt want;
  Latents latents;
  LatentKey key;
  {
    const auto model = LclmModel::load(ckpt, options);
    want = model->prepare(prompt);
    latents = model->compress(kLongText);
    key = latent_key(model->fingerprint(), kLongText);
  }
  // Well-formed rows (sizes and checksum consistent) of the wrong shape:
  // half the width, and twice the rows of half the width.
  Latents narrow = latents;
  narrow.dim /= 2;
  narrow.data.resize(narrow.data.size() / 2);
  Latents more_rows = latents;
  more_rows.dim /= 2;
  for (const Latents& forged : {narrow, more_rows}) {
    LatentCache(0, options.cache_store).store(key, forged);
    const auto model = LclmModel::load(ckpt, options);
    const PreparedPrompt got = model->prepare(prompt);
    EXPECT_EQ(got.stats.cache_hits, 0u);
    EXPECT_EQ(got.ids, want.ids);
    ASSERT_EQ(got.embeddings.size(), want.embeddings.size());
    EXPECT_TRUE(same_bits(got.embeddings.data(), want.embeddings.data(), want.embeddings.size()));
  }
}

TEST(LclmCache, ANewAdapterChangesTheFingerprintSoOldEntriesDoNotMatch) {
  const fs::path ckpt = write_checkpoint("cache_stale", 5);
  const fs::path other = write_checkpoint("cache_other", 6);
  LclmOptions options;
  options.cache_store.location = (scratch_dir("cache_stale_db") / "latents.sqlite").string();
  Latents old_latents;
  std::string old_fingerprint;
  {
    const auto model = LclmModel::load(ckpt, options);
    old_latents = model->compress(kLongText);
    old_fingerprint = model->fingerprint();
  }
  // Only the adapter changes (the other checkpoint's, same shapes).
  fs::copy_file(other / "adapter" / "adapter.safetensors", ckpt / "adapter" / "adapter.safetensors",
                fs::copy_options::overwrite_existing);
  const auto model = LclmModel::load(ckpt, options);
  EXPECT_NE(model->fingerprint(), old_fingerprint);
  bool hit = true;
  const Latents fresh = model->compress(kLongText, std::nullopt, &hit);
  EXPECT_FALSE(hit);
  EXPECT_EQ(model->cache().stats().disk_hits, 0u);
  ASSERT_EQ(fresh.data.size(), old_latents.data.size());
  EXPECT_FALSE(same_bits(fresh.data.data(), old_latents.data.data(), fresh.data.size()));
}

TEST(LclmCache, RewritingTheCheckpointWithAnotherSeedChangesTheFingerprint) {
  std::string old_fingerprint;
  {
    const auto model = LclmModel::load(write_checkpoint("reseeded", 5));
    old_fingerprint = model->fingerprint();
  }
  const auto model = LclmModel::load(write_checkpoint("reseeded", 6));
  EXPECT_NE(model->fingerprint(), old_fingerprint);
}

// ---- ratio override ----------------------------------------------------------

TEST(LclmModel, RatioOverrideShrinksTheWindowToAMultiple) {
  const fs::path ckpt = write_checkpoint("ratio", 5, [](RandomLclmSpec& s) {
    s.config.compression_ratio = 4;
    s.config.encoder_window_size = 32;
  });
  const auto base = LclmModel::load(ckpt);
  LclmOptions options;
  options.compression_ratio = 3;
  const auto model = LclmModel::load(ckpt, options);
  EXPECT_EQ(model->config().compression_ratio, 3);
  EXPECT_EQ(model->config().encoder_window_size, 30);
  // 50 tokens: windows of 30 and 20, ceil(50 / 3) = 17 latents.
  EXPECT_EQ(tile_windows(50, model->config()).size(), 2u);
  EXPECT_EQ(model->compress(kLongText).count(), 17u);
  EXPECT_EQ(base->compress(kLongText).count(), 13u);
  EXPECT_NE(model->fingerprint(), base->fingerprint());
  const PreparedPrompt p = model->prepare("<|memory_start|>" + kLongText + "<|memory_end|>");
  expect_spliced(*model, p, {kLongText});

  options.compression_ratio = 0;
  EXPECT_NE(error_of([&] { LclmModel::load(ckpt, options); }).find("ratio"), std::string::npos);
}

TEST(LclmModel, ConcatPoolingRunsOnlyAtItsOwnRatio) {
  const fs::path ckpt = write_checkpoint("concat-ratio", 5, [](RandomLclmSpec& s) {
    s.config.pooling = Pooling::Concat;
    s.config.compression_ratio = 4;
    s.config.encoder_window_size = 32;
  });
  LclmOptions options;
  options.compression_ratio = 4;
  EXPECT_EQ(LclmModel::load(ckpt, options)->compress(kLongText).count(), 13u);
  options.compression_ratio = 8;
  EXPECT_EQ(error_of([&] { LclmModel::load(ckpt, options); }),
            "--ratio 8: this checkpoint pools by concat, which fixes its ratio at 4 (its adapter "
            "reads r x E values per latent)");
}

}  // namespace
}  // namespace lclm
