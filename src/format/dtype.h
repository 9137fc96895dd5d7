// Element types of stored tensors and their scalar conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lclm {

enum class DType : std::uint8_t { F32, F16, BF16, I32, I64, U8 };

std::size_t dtype_size(DType t);
// Safetensors spelling: "F32", "F16", "BF16", ...
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
