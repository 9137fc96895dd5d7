#include "format/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace lclm {
namespace {

using nlohmann::json;

// A header larger than this is not a real header but a corrupt length field.
constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;

std::uint64_t read_le_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::vector<std::int64_t> parse_shape(const json& j, const std::string& context) {
  if (!j.is_array()) throw Error(context + ": \"shape\" is not an array");
  std::vector<std::int64_t> shape;
  for (const json& d : j) {
    if (!d.is_number_integer() || d.get<std::int64_t>() < 0) {
      throw Error(context + ": shape has a non-integer or negative dimension");
    }
    shape.push_back(d.get<std::int64_t>());
  }
  return shape;
}

// Elements times the dtype's size, or an error when the product does not fit
// 64 bits: a wrapped product once let a shape of 2^32 x 2^32 pass as 0 bytes.
std::uint64_t checked_nbytes(std::span<const std::int64_t> shape, DType dtype,
                             const std::string& context) {
  std::int64_t numel = 1;
  for (std::int64_t d : shape) {
    if (__builtin_mul_overflow(numel, d, &numel)) {
      throw Error(context + ": shape " + shape_string(shape) + " is too large");
    }
  }
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(numel), dtype_size(dtype), &bytes)) {
    throw Error(context + ": shape " + shape_string(shape) + " is too large");
  }
  return bytes;
}

}  // namespace

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  const std::string where = path.string();
  const auto bytes = file_.bytes();
  if (bytes.size() < 8) {
    throw Error(where + ": truncated safetensors file (" + std::to_string(bytes.size()) +
                " bytes, shorter than the 8-byte header length)");
  }
  const std::uint64_t header_len = read_le_u64(bytes.data());
  if (header_len > kMaxHeaderBytes) {
    throw Error(where + ": corrupt safetensors header length " + std::to_string(header_len));
  }
  if (header_len > bytes.size() - 8) {
    throw Error(where + ": truncated safetensors header (header says " +
                std::to_string(header_len) + " bytes, file has " +
                std::to_string(bytes.size() - 8) + " after the length)");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  json header = json::parse(header_begin, header_begin + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    throw Error(where + ": corrupt safetensors header (not a JSON object)");
  }
  const std::uint8_t* data_begin = bytes.data() + 8 + header_len;
  const std::uint64_t data_size = bytes.size() - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) throw Error(where + ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string context = where + ": tensor \"" + it.key() + "\"";
    const json& entry = *it;
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      throw Error(context + ": entry needs dtype, shape and data_offsets");
    }
    if (!entry["dtype"].is_string()) throw Error(context + ": dtype is not a string");
    TensorView view;
    view.name = it.key();
    const std::string dtype = entry["dtype"].get<std::string>();
    view.dtype = parse_dtype(dtype, context);
    if (dtype != dtype_name(view.dtype)) {  // flags may say bf16; files say BF16
      throw Error(context + ": dtype \"" + dtype + "\" is not a safetensors dtype (they are " +
                  "upper case: \"" + std::string(dtype_name(view.dtype)) + "\")");
    }
    view.shape = parse_shape(entry["shape"], context);
    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      throw Error(context + ": data_offsets must be two non-negative integers");
    }
    const auto begin = offsets[0].get<std::uint64_t>();
    const auto end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data_size) {
      throw Error(context + ": data_offsets [" + std::to_string(begin) + ", " +
                  std::to_string(end) + "] fall outside the " + std::to_string(data_size) +
                  "-byte data section (truncated file?)");
    }
    const std::uint64_t expected = checked_nbytes(view.shape, view.dtype, context);
    if (end - begin != expected) {
      throw Error(context + ": holds " + std::to_string(end - begin) + " bytes but shape " +
                  shape_string(view.shape) + " of " + std::string(dtype_name(view.dtype)) +
                  " needs " + std::to_string(expected));
    }
    view.data = data_begin + begin;
    view.nbytes = end - begin;
    tensors_.push_back(std::move(view));
  }
  // No two tensors may share bytes: a write through one (or a quantizer
  // reading one) would see the other.
  std::vector<const TensorView*> by_start;
  for (const TensorView& t : tensors_) {
    if (t.nbytes > 0) by_start.push_back(&t);
  }
  std::sort(by_start.begin(), by_start.end(),
            [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  for (std::size_t i = 1; i < by_start.size(); ++i) {
    if (by_start[i - 1]->data + by_start[i - 1]->nbytes > by_start[i]->data) {
      throw Error(where + ": tensors \"" + by_start[i - 1]->name + "\" and \"" +
                  by_start[i]->name + "\" overlap in the data section");
    }
  }
}

TensorStore TensorStore::open_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw Error("model directory not found: " + dir.string());
  TensorStore store;
  store.dir_ = dir;

  std::vector<fs::path> shard_paths;
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    json index = json::parse(in, nullptr, false);
    if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw Error(index_path.string() + ": not a valid index (needs a \"weight_map\" object)");
    }
    std::vector<std::string> names;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string())
        throw Error(index_path.string() + ": weight_map[" + tensor + "] is not a file name");
      names.push_back(file.get<std::string>());
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    for (const std::string& name : names) {
      const fs::path shard = dir / name;
      if (!fs::exists(shard)) {
        throw Error(index_path.string() + " names shard " + name + ", which is missing from " +
                    dir.string());
      }
      shard_paths.push_back(shard);
    }
  } else if (fs::exists(dir / "model.safetensors")) {
    shard_paths.push_back(dir / "model.safetensors");
  } else {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() == ".safetensors") shard_paths.push_back(entry.path());
    }
    std::sort(shard_paths.begin(), shard_paths.end());
  }
  if (shard_paths.empty()) throw Error("no *.safetensors weights in " + dir.string());

  for (const fs::path& p : shard_paths) store.add_file(p);
  return store;
}

TensorStore TensorStore::open_file(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) throw Error(file.string() + " is missing");
  TensorStore store;
  store.dir_ = file;
  store.add_file(file);
  return store;
}

void TensorStore::add_file(const std::filesystem::path& path) {
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  metadata_.insert(files_.back()->metadata().begin(), files_.back()->metadata().end());
  for (const TensorView& t : files_.back()->tensors()) {
    if (!by_name_.emplace(t.name, &t).second) {
      throw Error("tensor \"" + t.name + "\" appears twice in " + dir_.string() + " (again in " +
                  path.filename().string() + ")");
    }
  }
}

const TensorView* TensorStore::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& TensorStore::get(std::string_view name,
                                   std::span<const std::int64_t> expected_shape) const {
  const TensorView* t = find(name);
  if (t == nullptr) {
    throw Error("tensor \"" + std::string(name) + "\" (expected shape " +
                shape_string(expected_shape) + ") is missing from " + dir_.string());
  }
  if (!std::equal(t->shape.begin(), t->shape.end(), expected_shape.begin(), expected_shape.end())) {
    throw Error("tensor \"" + std::string(name) + "\" in " + dir_.string() + " has shape " +
                shape_string(t->shape) + ", expected " + shape_string(expected_shape));
  }
  return *t;
}

const std::string* TensorStore::metadata(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, view] : by_name_) out.push_back(name);
  return out;
}

std::size_t TensorStore::total_bytes() const {
  std::size_t n = 0;
  for (const auto& [name, view] : by_name_) n += view->nbytes;
  return n;
}

std::int64_t TensorStore::total_elements() const {
  std::int64_t n = 0;
  for (const auto& [name, view] : by_name_) n += view->numel();
  return n;
}

void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const std::uint64_t nbytes =
        checked_nbytes(t.shape, t.dtype, "write_safetensors: tensor \"" + t.name + "\"");
    if (nbytes != t.data.size()) {
      throw Error("write_safetensors: tensor \"" + t.name + "\" has " +
                  std::to_string(t.data.size()) + " bytes, shape " + shape_string(t.shape) +
                  " needs " + std::to_string(nbytes));
    }
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string header_text = header.dump();
  // Pad so the data section starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - (header_text.size() % 8)) % 8, ' ');

  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + tmp.string());
    std::uint8_t len[8];
    std::uint64_t n = header_text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const TensorToWrite& t : tensors) {
      out.write(reinterpret_cast<const char*>(t.data.data()),
                static_cast<std::streamsize>(t.data.size()));
    }
    if (!out.flush()) throw Error("write failed for " + tmp.string() + " (disk full?)");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace lclm
