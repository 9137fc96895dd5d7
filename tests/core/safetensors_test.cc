#include "format/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "test_models.h"
#include "util/error.h"

namespace lclm {
namespace {

using testing::error_of;

using testing::scratch_dir;
using testing::write_text;

std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const auto dir = scratch_dir("st_roundtrip");
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f};
  std::vector<std::uint16_t> bf16, f16;
  for (float v : f32) {
    bf16.push_back(f32_to_bf16(v));
    f16.push_back(f32_to_f16(v));
  }
  const auto bytes = [](const auto& v) {
    return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(v.data()),
                                         v.size() * sizeof(v[0]));
  };
  const std::vector<TensorToWrite> tensors = {
      {"a.f32", DType::F32, {2, 3}, bytes(f32)},
      {"b.bf16", DType::BF16, {6}, bytes(bf16)},
      {"c.f16", DType::F16, {3, 2}, bytes(f16)},
  };
  write_safetensors(dir / "x.safetensors", tensors, {{"format", "pt"}});

  const SafetensorsFile file(dir / "x.safetensors");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  ASSERT_EQ(file.tensors().size(), 3u);
  for (const TensorView& t : file.tensors()) {
    ASSERT_EQ(t.numel(), 6);
    for (std::size_t i = 0; i < 6; ++i) {
      std::uint16_t h;
      float v;
      if (t.dtype == DType::F32) {
        std::memcpy(&v, t.data + 4 * i, 4);
      } else {
        std::memcpy(&h, t.data + 2 * i, 2);
        v = t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      EXPECT_NEAR(v, f32[i], std::abs(f32[i]) * 4e-3f) << t.name << "[" << i << "]";
    }
  }
  EXPECT_EQ(file.tensors()[0].shape, (std::vector<std::int64_t>{2, 3}));
}

TEST(Safetensors, Bf16AndF16ConversionsAreExactOnRepresentableValues) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  }
  for (float v : {0.0f, 1.0f, -3.0f, std::ldexp(1.5f, 126), 1.17549435e-38f}) {
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(v)), v) << v;
  }
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // ties round to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
}

TEST(Safetensors, MissingFileNamesThePath) {
  const std::string msg = error_of([] { SafetensorsFile("/nonexistent/w.safetensors"); });
  EXPECT_NE(msg.find("/nonexistent/w.safetensors"), std::string::npos) << msg;
}

TEST(Safetensors, TruncatedAndCorruptHeadersAreRejected) {
  const auto dir = scratch_dir("st_corrupt");
  write_text(dir / "short", "abc");
  EXPECT_NE(error_of([&] { SafetensorsFile(dir / "short"); }).find("truncated"), std::string::npos);

  std::string cut = raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  cut.resize(20);
  write_text(dir / "cut", cut);
  EXPECT_NE(error_of([&] { SafetensorsFile(dir / "cut"); }).find("truncated safetensors header"),
            std::string::npos);

  write_text(dir / "json", raw_file("{not json", ""));
  EXPECT_NE(error_of([&] { SafetensorsFile(dir / "json"); }).find("corrupt"), std::string::npos);

  std::string huge(8, '\xff');
  write_text(dir / "huge", huge + "{}");
  EXPECT_NE(error_of([&] { SafetensorsFile(dir / "huge"); }).find("corrupt"), std::string::npos);
}

TEST(Safetensors, TensorDataOutOfBoundsOrMissizedIsRejected) {
  const auto dir = scratch_dir("st_bounds");
  write_text(dir / "oob",
             raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", "12345678"));
  const std::string oob = error_of([&] { SafetensorsFile(dir / "oob"); });
  EXPECT_NE(oob.find("\"w\""), std::string::npos) << oob;
  EXPECT_NE(oob.find("outside"), std::string::npos) << oob;

  write_text(dir / "size",
             raw_file(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", "12345678"));
  const std::string size = error_of([&] { SafetensorsFile(dir / "size"); });
  EXPECT_NE(size.find("needs 6"), std::string::npos) << size;

  // 2^32 x 2^32 elements wrapped to 0 bytes and passed as an empty tensor.
  write_text(dir / "huge", raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                                    R"("data_offsets":[0,0]}})",
                                    ""));
  EXPECT_NE(error_of([&] { SafetensorsFile(dir / "huge"); }).find("too large"), std::string::npos);

  write_text(dir / "dtype",
             raw_file(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "1"));
  EXPECT_NE(error_of([&] { SafetensorsFile(dir / "dtype"); }).find("F8_E4M3"), std::string::npos);

  // A lower-case dtype, and two tensors sharing bytes, once loaded.
  write_text(dir / "lower",
             raw_file(R"({"w":{"dtype":"bf16","shape":[2],"data_offsets":[0,4]}})", "1234"));
  const std::string lower = error_of([&] { SafetensorsFile(dir / "lower"); });
  EXPECT_NE(lower.find("\"bf16\" is not a safetensors dtype"), std::string::npos) << lower;
  write_text(dir / "overlap",
             raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      "123456789012"));
  const std::string overlap = error_of([&] { SafetensorsFile(dir / "overlap"); });
  EXPECT_NE(overlap.find("\"a\" and \"b\" overlap"), std::string::npos) << overlap;
  // Adjacent tensors and empty ones at the same offset are fine.
  write_text(dir / "adjacent",
             raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      "12345678"));
  EXPECT_EQ(SafetensorsFile(dir / "adjacent").tensors().size(), 3u);
}

TEST(TensorStore, ShardedIndexAndShapeErrorsNameTheTensor) {
  const auto dir = scratch_dir("st_sharded");
  RandomQwen3Spec spec;
  spec.config = testing::tiny_config();
  spec.shards = 3;
  write_random_qwen3(dir, spec);
  const TensorStore store = TensorStore::open_dir(dir);
  EXPECT_NE(store.find("model.layers.1.mlp.up_proj.weight"), nullptr);
  EXPECT_EQ(store.names().size(), 1u + 2 * 11 + 1);

  const std::string shape = error_of([&] { store.get("model.norm.weight", {65}); });
  EXPECT_NE(shape.find("model.norm.weight"), std::string::npos) << shape;
  EXPECT_NE(shape.find("[64]"), std::string::npos) << shape;
  EXPECT_NE(shape.find("[65]"), std::string::npos) << shape;

  const std::string missing = error_of([&] { store.get("lm_head.weight", {1, 2}); });
  EXPECT_NE(missing.find("lm_head.weight"), std::string::npos) << missing;
  EXPECT_NE(missing.find("missing"), std::string::npos) << missing;

  std::filesystem::remove(dir / "model-00002-of-00003.safetensors");
  const std::string shard = error_of([&] { TensorStore::open_dir(dir); });
  EXPECT_NE(shard.find("model-00002-of-00003.safetensors"), std::string::npos) << shard;
}

TEST(TensorStore, EmptyOrMissingDirectoryIsAnError) {
  EXPECT_NE(error_of([] { TensorStore::open_dir("/nonexistent/model"); }).find("not found"),
            std::string::npos);
  const auto dir = scratch_dir("st_empty");
  EXPECT_NE(error_of([&] { TensorStore::open_dir(dir); }).find("no *.safetensors"),
            std::string::npos);
}

}  // namespace
}  // namespace lclm
