// Models and files the core tests share: tiny random Qwen3 directories made
// with the project's own writer, and the real Qwen3 tokenizer files fetched by
// scripts/fetch_tokenizer.sh.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fixtures/random_qwen3.h"
#include "ops/bf16_gemm.h"
#include "util/error.h"

namespace lclm::testing {

// Sets the precision of x in products with bf16 weights (ops/bf16_gemm.h)
// while it lives, then restores the one before it. Tests that hold the
// engine to an f32 reference at 1e-4 need kSplit (x exact), not the rounded
// default.
class Bf16ActivationsScope {
 public:
  explicit Bf16ActivationsScope(Bf16Precision precision = Bf16Precision::kSplit)
      : before_(bf16_activation_precision()) {
    set_bf16_activation_precision(precision);
  }
  ~Bf16ActivationsScope() { set_bf16_activation_precision(before_); }
  Bf16ActivationsScope(const Bf16ActivationsScope&) = delete;
  Bf16ActivationsScope& operator=(const Bf16ActivationsScope&) = delete;

 private:
  Bf16Precision before_;
};

// CTest runs each test in its own process, several at once: every process
// gets its own scratch root, removed when the process exits.
class ScratchRoot {
 public:
  ScratchRoot()
      : path_(std::filesystem::path(LCLM_BINARY_DIR) / "test-scratch" /
              std::to_string(::getpid())) {}
  ~ScratchRoot() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::filesystem::path scratch_dir(const std::string& name) {
  static const ScratchRoot root;
  const auto dir = root.path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The tiny shape with a short context, so context limits are quick to reach.
inline Qwen3Config tiny_config() {
  Qwen3Config c = tiny_qwen3_config();
  c.max_position_embeddings = 256;
  return c;
}

inline std::filesystem::path qwen3_tokenizer_dir() {
  return std::filesystem::path(LCLM_SOURCE_DIR) / "third_party" / "qwen3-tokenizer";
}

// A tiny random model with the real Qwen3 tokenizer files beside it. The
// tokenizer is fetched by the test command; its absence is a setup failure.
inline std::filesystem::path tiny_model_with_tokenizer(const std::string& name) {
  const auto dir = scratch_dir(name);
  RandomQwen3Spec spec;
  spec.config = tiny_config();
  spec.seed = 7;
  spec.weight_std = 0.08f;
  write_random_qwen3(dir, spec);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    const auto src = qwen3_tokenizer_dir() / f;
    if (!std::filesystem::exists(src)) {
      ADD_FAILURE() << src << " is missing: run scripts/fetch_tokenizer.sh";
      continue;
    }
    std::filesystem::copy_file(src, dir / f);
  }
  return dir;
}

// The message of the lclm::Error that f throws; a test failure if none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no lclm::Error thrown";
  return "";
}

// n standard-normal floats from a seeded generator.
inline std::vector<float> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace lclm::testing
