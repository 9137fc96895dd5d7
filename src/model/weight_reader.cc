#include "model/weight_reader.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "format/quant_blocks.h"
#include "model/qwen3_block.h"
#include "ops/quant_kernels.h"
#include "util/error.h"

namespace lclm {
namespace {

// The stored block type of `t`, if the checkpoint marks it as quantized.
std::optional<DType> stored_block_type(const TensorStore& store, const TensorView& t) {
  const std::string* type = store.metadata(block_type_key(t.name));
  if (type == nullptr) return std::nullopt;
  if (*type != dtype_name(DType::Q8_0) && *type != dtype_name(DType::Q4_0)) {
    throw Error("tensor \"" + t.name + "\" in " + store.dir().string() + ": metadata " +
                block_type_key(t.name) + " = \"" + *type + "\" is not Q8_0 or Q4_0");
  }
  return *type == dtype_name(DType::Q8_0) ? DType::Q8_0 : DType::Q4_0;
}

// Gives the pages of a converted tensor back: the mapping stays valid (a
// later read faults them in from the file again), but they no longer count
// in this process's resident memory.
void release_pages(const void* data, std::size_t nbytes) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<std::uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(data) + nbytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

std::string block_type_key(const std::string& name) {
  return "lclm.dtype." + name;
}

WeightMatrix WeightReader::matrix(const std::string& name, std::int64_t rows,
                                  std::int64_t cols) const {
  const TensorView* t = store_.find(name);
  if (t != nullptr) {
    if (const auto type = stored_block_type(store_, *t)) {
      if (cols % static_cast<std::int64_t>(kQuantBlock) != 0) {
        throw Error("tensor \"" + name + "\" is stored as " + std::string(dtype_name(*type)) +
                    " but its " + std::to_string(cols) + " columns are not a multiple of 32");
      }
      const auto bytes =
          static_cast<std::int64_t>(row_bytes(*type, static_cast<std::size_t>(cols)));
      const TensorView& q = store_.get(name, {rows, bytes});
      if (q.dtype != DType::U8) {
        throw Error("tensor \"" + name + "\" is marked " + std::string(dtype_name(*type)) +
                    " but stored as " + std::string(dtype_name(q.dtype)) + ", not U8");
      }
      return interleaved(WeightMatrix{*type, q.data, static_cast<std::size_t>(rows),
                                      static_cast<std::size_t>(cols)});
    }
  }
  return converted(as_weight_matrix(store_.get(name, {rows, cols})));
}

WeightMatrix WeightReader::converted(const WeightMatrix& w) const {
  if (!convert_to_ || is_block_quantized(w.dtype) || w.cols % kQuantBlock != 0) return w;
  const DType type = *convert_to_;
  std::vector<std::uint8_t>& out = converted_->emplace_back(w.rows * row_bytes(type, w.cols));
  const std::int64_t rows = static_cast<std::int64_t>(w.rows);
#pragma omp parallel
  {
    std::vector<float> row(w.cols);
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto ids = static_cast<std::int32_t>(r);
      gather_rows(w, &ids, 1, row.data());
      quantize_row(type, row.data(), w.cols,
                   out.data() + static_cast<std::size_t>(r) * row_bytes(type, w.cols));
    }
  }
  release_pages(w.data, w.bytes());
  return interleaved(WeightMatrix{type, out.data(), w.rows, w.cols}, &out);
}

WeightMatrix WeightReader::interleaved(const WeightMatrix& w,
                                       std::vector<std::uint8_t>* conversion) const {
  if (repacked_ == nullptr || !is_block_quantized(w.dtype) || w.order != RowOrder::kRowMajor ||
      w.rows % kGroupRows != 0) {
    return w;
  }
  std::vector<std::uint8_t> out(w.bytes());
  interleave_rows(w.dtype, static_cast<const std::uint8_t*>(w.data), w.rows, w.cols, out.data());
  const void* data = out.data();
  if (conversion != nullptr) {
    *conversion = std::move(out);  // the conversion's bytes freed
  } else {
    release_pages(w.data, w.bytes());
    repacked_->push_back(std::move(out));
  }
  return WeightMatrix{w.dtype, data, w.rows, w.cols, RowOrder::kInterleaved16};
}

bool rows_interleaved_at_load() {
  const char* order = std::getenv("LCLM_ROW_ORDER");
  if (order != nullptr && std::string_view(order) != "interleaved" &&
      std::string_view(order) != "rows") {
    throw Error("LCLM_ROW_ORDER=\"" + std::string(order) +
                "\": expected \"interleaved\" or \"rows\"");
  }
  if (order != nullptr && std::string_view(order) == "rows") return false;
  return native_vnni_enabled();
}

std::int64_t stored_parameter_count(const TensorStore& store) {
  std::int64_t n = 0;
  for (const std::string& name : store.names()) {
    const TensorView& t = *store.find(name);
    const auto type = stored_block_type(store, t);
    if (!type) {
      n += t.numel();
      continue;
    }
    const auto block_bytes = static_cast<std::int64_t>(row_bytes(*type, kQuantBlock));
    if (t.dtype != DType::U8 || t.shape.size() != 2 || t.dim(1) % block_bytes != 0) {
      throw Error("tensor \"" + name + "\" in " + store.dir().string() + " is marked " +
                  std::string(dtype_name(*type)) + " but is " + std::string(dtype_name(t.dtype)) +
                  " " + shape_string(t.shape) + ", not U8 [rows, a multiple of " +
                  std::to_string(block_bytes) + " bytes]");
    }
    n += t.dim(0) * (t.dim(1) / block_bytes * static_cast<std::int64_t>(kQuantBlock));
  }
  return n;
}

}  // namespace lclm
