// torch.save's format, both ways, against PyTorch itself (Debian's
// python3-torch, tests/reference/torch_files.py): what lclm writes torch.load
// reads (weights_only) bit for bit, and what torch.save writes lclm reads;
// anything else is an error that says what was found, never a crash.
#include "format/torch_file.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "core/test_models.h"

namespace lclm {
namespace {

std::string run(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(command.c_str(), "r"), pclose);
  if (!p) return "";
  std::string out;
  std::array<char, 4096> buf;
  for (std::size_t n; (n = fread(buf.data(), 1, buf.size(), p.get())) > 0;)
    out.append(buf.data(), n);
  return out;
}

std::string reference(const std::string& args) {
  return run(std::string(LCLM_PYTHON) + " " + LCLM_SOURCE_DIR + "/tests/reference/torch_files.py " +
             args);
}

std::uint32_t bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

std::vector<float> sample(std::size_t n) {
  std::mt19937 rng(3);
  std::normal_distribution<float> d;
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  x[0] = 0.0f;
  x[1] = -1e-30f;   // a bf16 denormal
  x[2] = 65504.0f;  // the largest f16
  return x;
}

float stored(float f, DType t) {
  if (t == DType::BF16) return bf16_to_f32(f32_to_bf16(f));
  if (t == DType::F16) return f16_to_f32(f32_to_f16(f));
  return f;
}

TEST(TorchFile, TorchLoadReadsWhatLclmWritesBitForBit) {
  const auto dir = testing::scratch_dir("torch_write");
  const std::vector<float> x = sample(5 * 37);
  for (const auto& [t, name] : {std::pair{DType::F32, "torch.float32"},
                                {DType::BF16, "torch.bfloat16"},
                                {DType::F16, "torch.float16"}}) {
    SCOPED_TRACE(name);
    const auto path = dir / (std::string(dtype_name(t)) + ".pt");
    write_torch_tensor(path, x.data(), 5, 37, t);
    const auto j = nlohmann::json::parse(reference("load " + path.string()));
    EXPECT_EQ(j["dtype"], name);
    EXPECT_EQ(j["shape"], nlohmann::json({5, 37}));
    ASSERT_EQ(j["values"].size(), x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(static_cast<std::uint32_t>(j["values"][i].get<std::int32_t>()),
                bits(stored(x[i], t)))
          << i;
    }
    // And back: the same values, the same bytes for the same tensor.
    const TorchTensor back = read_torch_tensor(path);
    EXPECT_EQ(back.dtype, t);
    EXPECT_EQ(back.shape, (std::vector<std::int64_t>{5, 37}));
    for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(bits(back.data[i]), bits(stored(x[i], t)));
    EXPECT_EQ(torch_tensor_bytes(x.data(), 5, 37, t), torch_tensor_bytes(x.data(), 5, 37, t));
  }
}

TEST(TorchFile, LclmReadsWhatTorchSaveWrites) {
  const auto dir = testing::scratch_dir("torch_read");
  reference("make " + dir.string());
  for (const auto& [name, dtype] : {std::pair{"f32", DType::F32},
                                    {"bf16", DType::BF16},
                                    {"f16", DType::F16},
                                    {"offset", DType::F32},
                                    {"vector", DType::F32},
                                    {"protocol4", DType::F32}}) {
    SCOPED_TRACE(name);
    std::ifstream f(dir / (std::string(name) + ".json"));
    ASSERT_TRUE(f) << "the PyTorch reference wrote nothing";
    const auto want = nlohmann::json::parse(f);
    const TorchTensor t = read_torch_tensor(dir / (std::string(name) + ".pt"));
    EXPECT_EQ(t.dtype, dtype);
    EXPECT_EQ(nlohmann::json(t.shape), want["shape"]);
    ASSERT_EQ(t.data.size(), want["values"].size());
    for (std::size_t i = 0; i < t.data.size(); ++i) {
      ASSERT_EQ(bits(t.data[i]), static_cast<std::uint32_t>(want["values"][i].get<std::int32_t>()));
    }
  }
  const auto error = [&](const char* name) {
    return testing::error_of([&] { read_torch_tensor(dir / name); });
  };
  EXPECT_NE(error("transposed.pt").find("not contiguous"), std::string::npos);
  EXPECT_NE(error("dict.pt").find("something other than one tensor"), std::string::npos);
  EXPECT_NE(error("int64.pt").find("torch.LongStorage"), std::string::npos);
  // A pickle that calls os.system is refused by name, and nothing runs.
  EXPECT_NE(error("evil.pt").find("a call of posix.system, which lclm does not run"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "pwned"));
}

TEST(TorchFile, HostileOrBrokenFilesAreRefusedWithTheReason) {
  const std::vector<float> x = sample(4 * 8);
  const std::string good = torch_tensor_bytes(x.data(), 4, 8, DType::F32);
  const auto error = [](std::string_view bytes) {
    return testing::error_of([&] { parse_torch_tensor(bytes, "in.pt"); });
  };
  EXPECT_NE(error("hello").find("not a zip archive"), std::string::npos);
  EXPECT_NE(error(good.substr(0, good.size() / 2)).find("in.pt"), std::string::npos);
  // A storage bigger than the limit is refused before it is read.
  EXPECT_NE(testing::error_of([&] { parse_torch_tensor(good, "in.pt", 64); }).find("limit"),
            std::string::npos);

  // Seeded mutations: each is read or refused with lclm::Error.
  std::mt19937 rng(17);
  int refused = 0;
  for (int round = 0; round < 400; ++round) {
    std::string m = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) m[rng() % m.size()] = static_cast<char>(rng());
    try {
      const TorchTensor t = parse_torch_tensor(m, "mutant.pt");
      std::size_t n = 1;
      for (auto d : t.shape) n *= static_cast<std::size_t>(d);
      EXPECT_EQ(t.data.size(), n);
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace lclm
