// Safetensors files (Hugging Face layout): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then raw data.
// Files are mmapped; tensors are views into the mapping, never copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "util/mapped_file.h"

namespace lclm {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const std::uint8_t* data = nullptr;
  std::size_t nbytes = 0;

  std::int64_t numel() const;
  std::int64_t dim(std::size_t i) const { return shape.at(i); }
};

// "[1024, 151936]"
std::string shape_string(std::span<const std::int64_t> shape);

class SafetensorsFile {
 public:
  // Maps and validates the file; throws lclm::Error naming the file and the
  // fault (truncated, corrupt header, out-of-bounds or mis-sized tensor data).
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All weights of one HF model directory: model.safetensors, or the shards named
// by model.safetensors.index.json, or every *.safetensors file in the directory.
class TensorStore {
 public:
  static TensorStore open_dir(const std::filesystem::path& dir);
  // The tensors of one safetensors file (an LCLM adapter, say).
  static TensorStore open_file(const std::filesystem::path& file);

  const TensorView* find(std::string_view name) const;
  // The tensor, checked against the expected shape; throws lclm::Error naming
  // the tensor and both shapes on a mismatch, or the tensor when missing.
  const TensorView& get(std::string_view name, std::span<const std::int64_t> expected_shape) const;
  const TensorView& get(std::string_view name,
                        std::initializer_list<std::int64_t> expected_shape) const {
    return get(name, std::span<const std::int64_t>(expected_shape.begin(), expected_shape.size()));
  }
  std::vector<std::string> names() const;
  // A `__metadata__` value of any of the files, or nullptr.
  const std::string* metadata(std::string_view key) const;
  std::size_t total_bytes() const;
  std::int64_t total_elements() const;
  // The directory or file the tensors were read from.
  const std::filesystem::path& dir() const { return dir_; }

 private:
  void add_file(const std::filesystem::path& path);
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*, std::less<>> by_name_;
  std::map<std::string, std::string, std::less<>> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::span<const std::uint8_t> data;
};

// Writes atomically (temporary file, then rename) so a crash never leaves a
// half-written checkpoint under the final name.
void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace lclm
