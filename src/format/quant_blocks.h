// Block quantization of weight rows, in ggml's q8_0 and q4_0 layouts (see
// docs/quantization.md): blocks of 32 elements, each an f16 scale d followed
// by 32 int8 (q8_0: value d*q, 34 bytes) or 16 bytes of nibbles (q4_0: value
// d*(q-8), 18 bytes; byte j holds element j in its low nibble and element
// j+16 in its high nibble). These are the scalar definitions; the SIMD kernels
// in ops/quant_kernels.h are tested against them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "format/dtype.h"
#include "util/aligned_vector.h"

namespace lclm {

// "q8_0" -> DType::Q8_0, "q4_0" -> DType::Q4_0; throws lclm::Error naming
// `flag` and the accepted values otherwise.
DType parse_quant_type(std::string_view name, std::string_view flag);

// x [n] (n a multiple of 32) -> row_bytes(type, n) bytes at out. The scale
// is rounded to f16 first and the elements rounded with it, so the only
// error is the rounding of x / d (at most d/2 per element, d for the q4_0
// elements clipped at +7), and values already of the form d*q come back
// exactly.
void quantize_row(DType type, const float* x, std::size_t n, std::uint8_t* out);
// The inverse: row_bytes(type, n) bytes -> y [n].
void dequantize_row(DType type, const std::uint8_t* row, std::size_t n, float* y);

// How the rows of a block-quantized matrix are laid out.
enum class RowOrder {
  // One row after another, row_bytes(type, cols) bytes each (the stored form).
  kRowMajor,
  // Rows in groups of kGroupRows (16): for group g and block b, the 16
  // blocks' bytes (16 * block bytes) at (g * n_blocks + b) * that hold the
  // rows' f16 scales in row order (32 bytes), then 64-byte quarters: quarter
  // j holds 16 quant bytes of each of rows j, j+4, j+8, j+12 (in that
  // order). q4_0 has four quarters (a row's 16 bytes of nibbles); q8_0 has
  // eight, quarters 0-3 holding elements 0-15 of each row and 4-7 elements
  // 16-31, each byte stored as w + 128 (w XOR 0x80: the unsigned operand of
  // `vpdpbusd`). One 64-byte load then feeds a VNNI dot product of four
  // rows, and a group's 16 row sums come out of a short integer reduction
  // in row order (ops/quant_vnni.cc). The same number of bytes as the
  // row-major form.
  kInterleaved16,
};
inline constexpr std::size_t kGroupRows = 16;

// The row-major rows [n_rows, cols] of block type `type` (Q8_0 or Q4_0,
// n_rows a multiple of 16) -> the kInterleaved16 form at out
// (row_bytes(type, cols) * n_rows bytes).
void interleave_rows(DType type, const std::uint8_t* rows, std::size_t n_rows, std::size_t cols,
                     std::uint8_t* out);
// The inverse for rows row0 .. row0 + n_rows (any of them) and blocks
// block0 .. block0 + n_blocks of a kInterleaved16 matrix with `cols`
// columns: row-major rows of n_blocks blocks at out.
void deinterleave_rows(DType type, const std::uint8_t* w, std::size_t cols, std::size_t row0,
                       std::size_t n_rows, std::size_t block0, std::size_t n_blocks,
                       std::uint8_t* out);

// Blocks block0 .. block0 + n_blocks of rows row0 .. row0 + n_rows of a
// matrix `w` [rows, cols] of `type` in `order`, as row-major rows: where they
// lie for kRowMajor, else de-interleaved into `scratch` (resized). `stride`
// is the distance between two rows' first blocks.
struct RowMajorBlocks {
  const std::uint8_t* data;
  std::size_t stride;
};
RowMajorBlocks row_major_blocks(DType type, RowOrder order, const std::uint8_t* w, std::size_t cols,
                                std::size_t row0, std::size_t n_rows, std::size_t block0,
                                std::size_t n_blocks, std::vector<std::uint8_t>& scratch);

// An activation row quantized for the integer dot products: per block of 32
// a float scale d and q = round(x / d) in [-127, 127], stored as int16 so the
// kernels multiply them without widening.
// Rows start on cache lines (cols * 2 bytes apart: whole lines for the
// models' widths), like the float activations they come from.
struct QuantizedActivations {
  AlignedVector<std::int16_t> q;  // [rows * cols]
  std::vector<float> d;           // [rows * cols / 32]
  // The same q as int8 for the VNNI kernels (ops/quant_kernels.h), and per
  // pair of blocks (2p, 2p+1) of a row 16 lanes each: `pair_sum` holds the
  // sum of block 2p's q in lane 0 and of block 2p+1's in lane 8 (other lanes
  // 0), `pair_d` holds d of block 2p in lanes 0-7 and of 2p+1 in lanes 8-15;
  // a row's odd last block pairs with zeros.
  std::size_t pairs_per_row = 0;         // ceil(cols / 64)
  AlignedVector<std::int8_t> q8;         // [rows * cols], then 64 bytes of padding
  AlignedVector<std::int32_t> pair_sum;  // [rows * pairs_per_row * 16]
  AlignedVector<float> pair_d;           // [rows * pairs_per_row * 16]
};
// x [rows, cols] -> a (cols a multiple of 32).
void quantize_activations(const float* x, std::size_t rows, std::size_t cols,
                          QuantizedActivations& a);

// The reference dot product of one quantized weight row with one quantized
// activation row: sum over blocks of d_w * d_x * (integer dot of the block).
float dot_quantized_reference(DType type, const std::uint8_t* row, const std::int16_t* xq,
                              const float* xd, std::size_t n);

}  // namespace lclm
