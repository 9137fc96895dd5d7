// KV cache types (--cache-type-k / --cache-type-v): each type stores the
// rounding its format defines (checked against the scalar definitions in
// format/), keeps its rows through growth and compaction, counts its bytes,
// and attention over stored rows gives bit for bit what it gives over those
// rows widened to f32 (and the double reference within 1e-4). The logits'
// tolerance per type against the PyTorch reference is checked by
// forward_parity_torch_cache_* (tests/core/tests.cmake).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cli/cli_runner.h"
#include "core/naive_attention.h"
#include "core/test_models.h"
#include "format/quant_blocks.h"
#include "model/kv_cache.h"
#include "model/qwen3_model.h"
#include "ops/attention.h"
#include "runtime/engine.h"
#include "runtime/session.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::random_vector;

constexpr DType kStoredTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};

// x [rows, D] -> the bytes each row of `type` holds, by the scalar
// definitions of format/dtype.h and format/quant_blocks.h.
std::vector<std::uint8_t> store(DType type, const std::vector<float>& x, std::size_t D) {
  const std::size_t rows = x.size() / D, rb = row_bytes(type, D);
  std::vector<std::uint8_t> out(rows * rb);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* in = x.data() + r * D;
    std::uint8_t* o = out.data() + r * rb;
    if (is_block_quantized(type)) {
      quantize_row(type, in, D, o);
      continue;
    }
    for (std::size_t i = 0; i < D; ++i) {
      if (type == DType::F32) {
        std::memcpy(o + 4 * i, in + i, 4);
      } else {
        const std::uint16_t h = type == DType::BF16 ? f32_to_bf16(in[i]) : f32_to_f16(in[i]);
        std::memcpy(o + 2 * i, &h, 2);
      }
    }
  }
  return out;
}

// The inverse, widened to f32.
std::vector<float> widen(DType type, const std::vector<std::uint8_t>& bytes, std::size_t D) {
  const std::size_t rb = row_bytes(type, D), rows = bytes.size() / rb;
  std::vector<float> out(rows * D);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint8_t* in = bytes.data() + r * rb;
    float* o = out.data() + r * D;
    if (is_block_quantized(type)) {
      dequantize_row(type, in, D, o);
      continue;
    }
    for (std::size_t i = 0; i < D; ++i) {
      if (type == DType::F32) {
        std::memcpy(o + i, in + 4 * i, 4);
      } else {
        std::uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        o[i] = type == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
    }
  }
  return out;
}

TEST(KVCacheTypes, ParsesLlamaCppNamesAndNamesTheFlagOtherwise) {
  EXPECT_EQ(parse_kv_cache_type("f32", "--cache-type-k"), DType::F32);
  EXPECT_EQ(parse_kv_cache_type("f16", "--cache-type-k"), DType::F16);
  EXPECT_EQ(parse_kv_cache_type("bf16", "--cache-type-k"), DType::BF16);
  EXPECT_EQ(parse_kv_cache_type("q8_0", "--cache-type-v"), DType::Q8_0);
  EXPECT_EQ(parse_kv_cache_type("q4_0", "--cache-type-v"), DType::Q4_0);
  for (DType t : kStoredTypes) {
    EXPECT_EQ(parse_kv_cache_type(kv_cache_type_name(t), "x"), t);
  }
  try {
    parse_kv_cache_type("q5_1", "--cache-type-v");
    FAIL() << "q5_1 was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--cache-type-v 'q5_1'"), std::string::npos) << what;
    EXPECT_NE(what.find("f32, f16, bf16, q8_0, q4_0"), std::string::npos) << what;
  }
}

TEST(KVCacheTypes, BlockTypesNeedAHeadDimOfWholeBlocks) {
  try {
    KVCache(1, 1, 48, 8, 0, {DType::Q8_0, DType::F32});
    FAIL() << "q8_0 keys of 48 elements were accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--cache-type-k q8_0"), std::string::npos) << what;
    EXPECT_NE(what.find("head_dim is 48"), std::string::npos) << what;
  }
  EXPECT_THROW(KVCache(1, 1, 48, 8, 0, {DType::F32, DType::Q4_0}), Error);
  EXPECT_NO_THROW(KVCache(1, 1, 48, 8, 0, {DType::BF16, DType::F16}));
  EXPECT_NO_THROW(KVCache(1, 1, 64, 8, 0, {DType::Q8_0, DType::Q4_0}));
}

// Rows written to a cache of each type read back as the format's rounding of
// them, through a regrowth and a compaction; the byte counts follow the type.
TEST(KVCacheTypes, EachTypeStoresItsRoundingThroughGrowthAndCompaction) {
  constexpr std::size_t D = 64, kHeads = 2, kRows = 10;
  for (DType kt : kStoredTypes) {
    for (DType vt : {DType::BF16, DType::Q8_0}) {
      SCOPED_TRACE(std::string(kv_cache_type_name(kt)) + " keys, " +
                   std::string(kv_cache_type_name(vt)) + " values");
      KVCache cache(2, kHeads, D, 100, 4, {kt, vt});
      const auto keys = random_vector(kHeads * kRows * D, 11);
      const auto values = random_vector(kHeads * kRows * D, 12);
      for (std::size_t i = 0; i < kRows; ++i) {  // capacity 4, 8, then 16: two regrowths
        cache.reserve_more(1);
        for (std::size_t g = 0; g < kHeads; ++g) {
          cache.write(1, g, i, keys.data() + (g * kRows + i) * D,
                      values.data() + (g * kRows + i) * D);
        }
        cache.advance(1);
      }
      EXPECT_EQ(cache.capacity(), 16u);
      const auto want_k = widen(kt, store(kt, keys, D), D);
      const auto want_v = widen(vt, store(vt, values, D), D);
      std::vector<float> got(D);
      const auto expect_row = [&](std::size_t g, std::size_t entry, std::size_t from) {
        cache.read_key(1, g, entry, got.data());
        EXPECT_EQ(got, std::vector<float>(want_k.begin() + (g * kRows + from) * D,
                                          want_k.begin() + (g * kRows + from + 1) * D))
            << "key of head " << g << " entry " << entry;
        cache.read_value(1, g, entry, got.data());
        EXPECT_EQ(got, std::vector<float>(want_v.begin() + (g * kRows + from) * D,
                                          want_v.begin() + (g * kRows + from + 1) * D))
            << "value of head " << g << " entry " << entry;
      };
      for (std::size_t g = 0; g < kHeads; ++g) {
        for (std::size_t i = 0; i < kRows; ++i) expect_row(g, i, i);
      }
      EXPECT_EQ(cache.bytes(),
                2 * kHeads * cache.capacity() * (row_bytes(kt, D) + row_bytes(vt, D)));
      const std::vector<std::vector<std::size_t>> keep = {{1, 4, 9}, {0, 2, 3}};
      cache.compact(1, keep);
      for (std::size_t g = 0; g < kHeads; ++g) {
        for (std::size_t i = 0; i < 3; ++i) expect_row(g, i, keep[g][i]);
      }
      EXPECT_EQ(cache.entry_bytes(), kHeads * (kRows + 3) * (row_bytes(kt, D) + row_bytes(vt, D)));
      if (kt != DType::F32) {
        EXPECT_THROW(cache.f32_keys(0), Error);
      }
    }
  }
  KVCache f32(1, 1, D, 8, 8), bf16(1, 1, D, 8, 8, kDefaultKVCacheTypes);
  EXPECT_EQ(bf16.bytes() * 2, f32.bytes());
}

// Attention over stored rows widens them a block at a time: it gives exactly
// what it gives over the widened rows as f32, causal and not, for a decode
// query and for query blocks, and adds the same key scores. (With x rounded,
// the default, bf16 rows take the bf16 kernels instead, which
// tests/core/bf16_attention_test.cc holds to a rounded reference.)
TEST(KVCacheTypes, AttentionOverStoredRowsEqualsAttentionOverTheirWidening) {
  const testing::Bf16ActivationsScope exact_x;
  const AttentionShape shape{6, 2, 64, 160};
  const std::size_t n_keys = 150, D = shape.head_dim;
  const auto k = random_vector(shape.n_kv_heads * shape.kv_stride * D, 21);
  const auto v = random_vector(shape.n_kv_heads * shape.kv_stride * D, 22);
  for (DType type : kStoredTypes) {
    SCOPED_TRACE(kv_cache_type_name(type));
    const auto k_stored = store(type, k, D), v_stored = store(type, v, D);
    const auto k_wide = widen(type, k_stored, D), v_wide = widen(type, v_stored, D);
    for (std::size_t n_q : {1, 20, 70}) {
      for (bool causal : {true, false}) {
        const std::size_t pos0 = n_keys - n_q;
        auto q = random_vector(n_q * shape.n_heads * D, 23 + n_q);
        for (float& x : q) x *= 3.0f;
        const AttentionMask mask = causal ? AttentionMask::Causal : AttentionMask::Bidirectional;
        std::vector<float> out(q.size()), out_wide(q.size());
        std::vector<float> scores(shape.n_kv_heads * shape.kv_stride, 0.25f);
        std::vector<float> scores_wide = scores;
        const KeyScoreAccumulator acc{n_q / 2, scores.data()};
        const KeyScoreAccumulator acc_wide{n_q / 2, scores_wide.data()};
        attention(q.data(), n_q, pos0, KVRows{k_stored.data(), type}, KVRows{v_stored.data(), type},
                  n_keys, shape, mask, out.data(), &acc);
        attention(q.data(), n_q, pos0, k_wide.data(), v_wide.data(), n_keys, shape, mask,
                  out_wide.data(), &acc_wide);
        ASSERT_EQ(out, out_wide) << "n_q " << n_q << " causal " << causal;
        ASSERT_EQ(scores, scores_wide) << "n_q " << n_q << " causal " << causal;
        // And the widened rows' attention is attention (double reference).
        const std::size_t group = shape.n_heads / shape.n_kv_heads;
        for (std::size_t i = 0; i < n_q; ++i) {
          for (std::size_t h = 0; h < shape.n_heads; ++h) {
            const auto p =
                testing::naive_attention_weights(q, i, h, pos0, k_wide, n_keys, shape, causal);
            for (std::size_t d = 0; d < D; d += 7) {
              double want = 0;
              for (std::size_t j = 0; j < p.size(); ++j) {
                want += p[j] * v_wide[((h / group) * shape.kv_stride + j) * D + d];
              }
              ASSERT_NEAR(out[(i * shape.n_heads + h) * D + d], want, 1e-4);
            }
          }
        }
      }
    }
  }
}

// The engine's sessions store bf16 unless told otherwise; a type the model's
// head_dim cannot take is refused at load, naming the flag.
TEST(KVCacheTypes, EngineSessionsTakeTheConfiguredTypes) {
  const auto dir = testing::tiny_model_with_tokenizer("cache_types_engine");
  EngineOptions options_bf16;
  options_bf16.threads = 1;
  const auto engine = Engine::load(dir, options_bf16);
  EXPECT_EQ(engine->cache_types(), kDefaultKVCacheTypes);
  Session session = engine->new_session();
  EXPECT_EQ(session.cache_types(), kDefaultKVCacheTypes);
  GenerationOptions greedy;
  greedy.n_predict = 4;
  greedy.sampling.temperature = 0.0f;
  const std::vector<std::int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  const GenerationStats bf16 = session.generate(ids, greedy);
  EngineOptions options_q8 = options_bf16;
  options_q8.cache_types = {DType::Q8_0, DType::Q8_0};
  const auto q8 = Engine::load(dir, options_q8);
  Session q8_session = q8->new_session();
  const GenerationStats q8_stats = q8_session.generate(ids, greedy);
  Session f32_session(engine->decoder(), 1);
  const GenerationStats f32 = f32_session.generate(ids, greedy);
  // Reported cache bytes follow the type: bf16 rows of 32 take 64 bytes,
  // q8_0 34, f32 128.
  EXPECT_EQ(bf16.kv_cache_bytes * 2, f32.kv_cache_bytes);
  EXPECT_EQ(q8_stats.kv_cache_bytes * 128, f32.kv_cache_bytes * 34);
}

TEST(KVCacheTypes, CliTakesLlamaCppFlagsAndRefusesWhatTheModelCannotStore) {
  const auto dir = testing::tiny_model_with_tokenizer("cache_types_cli");
  const auto ok = testing::cli({"generate", "-m", dir.string(), "-p", "hello", "-n", "3", "--temp",
                                "0", "-ctk", "q8_0", "-ctv=q4_0", "-t", "1"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  const auto bad =
      testing::cli({"generate", "-m", dir.string(), "-p", "hello", "--cache-type-k", "q5_1"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("--cache-type-k"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace lclm
