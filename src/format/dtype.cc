#include "format/dtype.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "util/error.h"

namespace lclm {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::I64:
      return 8;
    case DType::U8:
      return 1;
    case DType::Q8_0:
    case DType::Q4_0:
      break;
  }
  throw Error(std::string(dtype_name(t)) + " is a block type: it has no size per element");
}

bool is_block_quantized(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0;
}

std::size_t row_bytes(DType t, std::size_t cols) {
  if (t == DType::Q8_0) return cols / kQuantBlock * kQ8_0BlockBytes;
  if (t == DType::Q4_0) return cols / kQuantBlock * kQ4_0BlockBytes;
  return cols * dtype_size(t);
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
    case DType::Q8_0:
      return "Q8_0";
    case DType::Q4_0:
      return "Q4_0";
  }
  return "?";
}

DType parse_dtype(std::string_view name, const std::string& context) {
  // Safetensors spells them "BF16"; flags take "bf16" too.
  const auto same = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::toupper(static_cast<unsigned char>(x)) == y;
           });
  };
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8}) {
    if (same(name, dtype_name(t))) return t;
  }
  throw Error(context + ": unsupported dtype \"" + std::string(name) + "\"");
}

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: value = mantissa * 2^-24.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&bits, &magnitude, sizeof bits);
    bits |= sign;
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

std::uint16_t f32_to_f16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const float magnitude = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (magnitude >= 65520.0f) return sign | 0x7c00u;
  if (magnitude < 6.103515625e-05f) {
    // Subnormal half: round magnitude / 2^-24 to nearest even.
    return sign | static_cast<std::uint16_t>(std::nearbyint(std::ldexp(magnitude, 24)));
  }
  std::uint32_t m;
  std::memcpy(&m, &magnitude, sizeof m);
  m += 0xfffu + ((m >> 13) & 1u);  // round mantissa to 10 bits, nearest even
  return sign | static_cast<std::uint16_t>(((m >> 13) - (112u << 10)));
}

}  // namespace lclm
