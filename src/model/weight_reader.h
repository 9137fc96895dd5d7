// Reads a model's weight matrices from its tensors: as mmapped views of float
// tensors; converted at load to a block type (--quant); or as mmapped views of
// the block-quantized tensors a quantized checkpoint stores (see
// docs/quantization.md): U8 [rows, row_bytes(type, cols)] with the metadata
// entry "lclm.dtype.NAME" = "Q8_0" / "Q4_0".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "ops/matmul.h"

namespace lclm {

// The metadata key that marks tensor `name` as block-quantized.
std::string block_type_key(const std::string& name);

class WeightReader {
 public:
  // Reads matrices as they are stored.
  explicit WeightReader(const TensorStore& store) : store_(store) {}
  // Matrices converted to `convert_to` are written into `converted`, which
  // the model keeps for as long as it uses them.
  // With `repacked`, q8_0 / q4_0 matrices whose rows are a multiple of 16
  // are put in the kInterleaved16 order decode's VNNI product reads
  // (format/quant_blocks.h): a converted one in place of its conversion,
  // a stored one into `repacked` (its mapped pages given back, as for a
  // conversion).
  WeightReader(const TensorStore& store, std::optional<DType> convert_to,
               std::vector<std::vector<std::uint8_t>>& converted,
               std::vector<std::vector<std::uint8_t>>* repacked = nullptr)
      : store_(store), convert_to_(convert_to), converted_(&converted), repacked_(repacked) {}

  const TensorStore& store() const { return store_; }

  // The [rows, cols] matrix `name`; errors name the tensor and both shapes.
  // A float matrix is converted when a block type was asked for and cols is
  // a multiple of 32 (else it stays as stored); a stored block-quantized
  // matrix is used as it is, whatever was asked.
  WeightMatrix matrix(const std::string& name, std::int64_t rows, std::int64_t cols) const;
  // `w`, a view into this reader's store, converted to the block type asked
  // for, or `w` itself when none was (the lm_head of a model whose embeddings
  // are tied). The pages of a converted `w` are given back (madvise): they
  // stay mapped and fault in again if read, but no longer count as resident
  // memory.
  WeightMatrix converted(const WeightMatrix& w) const;

 private:
  const TensorStore& store_;
  std::optional<DType> convert_to_;
  std::vector<std::vector<std::uint8_t>>* converted_ = nullptr;
  std::vector<std::vector<std::uint8_t>>* repacked_ = nullptr;

  // `w` interleaved where the constructor asked for it, or `w` itself.
  // `conversion`, when w is a conversion just made, is the buffer holding
  // it, replaced by the interleaved bytes; otherwise w is mapped, and they
  // go into repacked_ while w's pages are given back.
  WeightMatrix interleaved(const WeightMatrix& w,
                           std::vector<std::uint8_t>* conversion = nullptr) const;
};

// Whether models load q8_0 / q4_0 matrices interleaved (WeightReader's
// `repacked`): when decode's products run on VNNI
// (native_vnni_enabled()), unless LCLM_ROW_ORDER=rows is in the environment
// (benchmarks compare the two orders; any other value is an error naming
// the variable).
bool rows_interleaved_at_load();

// Parameters of the model's tensors, block-quantized ones counted by their
// [rows, cols] shape rather than their bytes.
std::int64_t stored_parameter_count(const TensorStore& store);

}  // namespace lclm
