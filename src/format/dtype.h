// Element types of stored tensors and their scalar conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lclm {

// Q8_0 and Q4_0 are block-quantized weights (see format/quant_blocks.h): never read
// from a safetensors dtype string, they carry a matrix's rows in memory.
enum class DType : std::uint8_t { F32, F16, BF16, I32, I64, U8, Q8_0, Q4_0 };

// A block holds kQuantBlock consecutive elements of a row: an f16 scale d,
// then 32 int8 q (Q8_0, value d*q) or 32 4-bit q (Q4_0, value d*(q-8)).
inline constexpr std::size_t kQuantBlock = 32;
inline constexpr std::size_t kQ8_0BlockBytes = 2 + kQuantBlock;
inline constexpr std::size_t kQ4_0BlockBytes = 2 + kQuantBlock / 2;

// Bytes of one element; throws lclm::Error for the block types, whose size is
// per block of elements (row_bytes).
std::size_t dtype_size(DType t);
bool is_block_quantized(DType t);
// Bytes of one row of `cols` elements; for a block type, cols is a multiple
// of the block length.
std::size_t row_bytes(DType t, std::size_t cols);
// Safetensors spelling: "F32", "F16", "BF16", ...; "Q8_0", "Q4_0" for blocks.
std::string_view dtype_name(DType t);
// Throws lclm::Error for types the engine does not read (context names the file).
DType parse_dtype(std::string_view name, const std::string& context);

inline float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

float f16_to_f32(std::uint16_t h);
std::uint16_t f32_to_f16(float f);

}  // namespace lclm
