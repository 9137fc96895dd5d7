#include "format/quant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "util/error.h"

namespace lclm {
namespace {

std::uint16_t load_scale(const std::uint8_t* block) {
  std::uint16_t d;
  std::memcpy(&d, block, sizeof d);
  return d;
}

void store_scale(std::uint8_t* block, float d) {
  const std::uint16_t h = f32_to_f16(d);
  std::memcpy(block, &h, sizeof h);
}

// The q4_0 nibble of element i (0..31) of a block's 16 data bytes.
int q4_nibble(const std::uint8_t* qs, std::size_t i) {
  return i < kQuantBlock / 2 ? qs[i] & 0x0f : qs[i - kQuantBlock / 2] >> 4;
}

void quantize_block_q8_0(const float* x, std::uint8_t* out) {
  float amax = 0.0f;
  for (std::size_t i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  store_scale(out, amax / 127.0f);
  const float d = f16_to_f32(load_scale(out));
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  auto* qs = reinterpret_cast<std::int8_t*>(out + 2);
  for (std::size_t i = 0; i < kQuantBlock; ++i) {
    qs[i] = static_cast<std::int8_t>(std::clamp(std::nearbyint(x[i] * id), -127.0f, 127.0f));
  }
}

// ggml's q4_0: the element of largest magnitude maps to q = 0 (value -8 d),
// so d carries its sign and the 16 levels cover -8 d .. 7 d.
void quantize_block_q4_0(const float* x, std::uint8_t* out) {
  float extreme = 0.0f;
  for (std::size_t i = 0; i < kQuantBlock; ++i) {
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  store_scale(out, extreme / -8.0f);
  const float d = f16_to_f32(load_scale(out));
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  std::uint8_t* qs = out + 2;
  auto level = [&](std::size_t i) {
    return static_cast<std::uint8_t>(std::clamp(std::nearbyint(x[i] * id) + 8.0f, 0.0f, 15.0f));
  };
  for (std::size_t j = 0; j < kQuantBlock / 2; ++j) {
    qs[j] = static_cast<std::uint8_t>(level(j) | (level(j + kQuantBlock / 2) << 4));
  }
}

void check_block_multiple(std::size_t n, const char* what) {
  if (n % kQuantBlock != 0) {
    throw Error(std::string(what) + ": length " + std::to_string(n) +
                " is not a multiple of the block length 32");
  }
}

}  // namespace

DType parse_quant_type(std::string_view name, std::string_view flag) {
  if (name == "q8_0") return DType::Q8_0;
  if (name == "q4_0") return DType::Q4_0;
  throw Error(std::string(flag) + ": unknown quantization type \"" + std::string(name) +
              "\" (expected q8_0 or q4_0)");
}

void quantize_row(DType type, const float* x, std::size_t n, std::uint8_t* out) {
  check_block_multiple(n, "quantize_row");
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  for (std::size_t b = 0; b < n / kQuantBlock; ++b) {
    if (type == DType::Q8_0) {
      quantize_block_q8_0(x + b * kQuantBlock, out + b * block_bytes);
    } else if (type == DType::Q4_0) {
      quantize_block_q4_0(x + b * kQuantBlock, out + b * block_bytes);
    } else {
      throw Error("quantize_row: " + std::string(dtype_name(type)) + " is not a block type");
    }
  }
}

void dequantize_row(DType type, const std::uint8_t* row, std::size_t n, float* y) {
  check_block_multiple(n, "dequantize_row");
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  for (std::size_t b = 0; b < n / kQuantBlock; ++b) {
    const std::uint8_t* block = row + b * block_bytes;
    const float d = f16_to_f32(load_scale(block));
    for (std::size_t i = 0; i < kQuantBlock; ++i) {
      const int q = type == DType::Q8_0 ? static_cast<std::int8_t>(block[2 + i])
                                        : q4_nibble(block + 2, i) - 8;
      y[b * kQuantBlock + i] = d * static_cast<float>(q);
    }
  }
}

namespace {

// A block's bytes in the kInterleaved16 order, for row r (of the matrix)
// and block b of n_blocks per row: the scale, and the quant bytes in pieces
// of 16 (q4_0: one, q8_0: two).
struct InterleavedPlace {
  std::size_t scale, pieces[2];
};
InterleavedPlace interleaved_place(DType type, std::size_t n_blocks, std::size_t r, std::size_t b) {
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  const std::size_t base = (r / kGroupRows * n_blocks + b) * kGroupRows * block_bytes;
  const std::size_t i = r % kGroupRows;
  const std::size_t piece = base + 2 * kGroupRows + 64 * (i % 4) + 16 * (i / 4);
  return {base + 2 * i, {piece, piece + 4 * 64}};
}

// Copies `n` bytes from src + from to dst + to, XOR `flip`.
void copy_flipped(const std::uint8_t* src, std::size_t from, std::uint8_t* dst, std::size_t to,
                  std::size_t n, std::uint8_t flip) {
  for (std::size_t k = 0; k < n; ++k) dst[to + k] = static_cast<std::uint8_t>(src[from + k] ^ flip);
}

// Copies the blocks of rows row0 .. row0 + n_rows and block0 .. block0 +
// n_blocks from the row-major form (rows of n_blocks blocks) to the
// interleaved one of a matrix of `cols` columns (kToInterleaved), or back.
template <bool kToInterleaved>
void move_blocks(DType type, const std::uint8_t* src, std::uint8_t* dst, std::size_t cols,
                 std::size_t row0, std::size_t n_rows, std::size_t block0, std::size_t n_blocks) {
  if (type != DType::Q8_0 && type != DType::Q4_0) {
    throw Error("interleaved rows: " + std::string(dtype_name(type)) + " is not Q8_0 or Q4_0");
  }
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  const std::size_t pieces = type == DType::Q8_0 ? 2 : 1;
  // q8_0 bytes are stored as w + 128 (the same XOR both ways).
  const auto flip = static_cast<std::uint8_t>(type == DType::Q8_0 ? 0x80 : 0);
  const auto copy = [&](std::size_t row_major, std::size_t interleaved, std::size_t n,
                        std::uint8_t bits) {
    if constexpr (kToInterleaved) {
      copy_flipped(src, row_major, dst, interleaved, n, bits);
    } else {
      copy_flipped(src, interleaved, dst, row_major, n, bits);
    }
  };
  for (std::size_t r = 0; r < n_rows; ++r) {
    for (std::size_t b = 0; b < n_blocks; ++b) {
      const std::size_t block = (r * n_blocks + b) * block_bytes;
      const InterleavedPlace at = interleaved_place(type, cols / kQuantBlock, row0 + r, block0 + b);
      copy(block, at.scale, 2, 0);
      for (std::size_t p = 0; p < pieces; ++p) copy(block + 2 + 16 * p, at.pieces[p], 16, flip);
    }
  }
}

}  // namespace

void interleave_rows(DType type, const std::uint8_t* rows, std::size_t n_rows, std::size_t cols,
                     std::uint8_t* out) {
  check_block_multiple(cols, "interleave_rows: columns");
  if (n_rows % kGroupRows != 0) {
    throw Error("interleave_rows: " + std::to_string(n_rows) + " rows are not a multiple of " +
                std::to_string(kGroupRows));
  }
  move_blocks<true>(type, rows, out, cols, 0, n_rows, 0, cols / kQuantBlock);
}

void deinterleave_rows(DType type, const std::uint8_t* w, std::size_t cols, std::size_t row0,
                       std::size_t n_rows, std::size_t block0, std::size_t n_blocks,
                       std::uint8_t* out) {
  move_blocks<false>(type, w, out, cols, row0, n_rows, block0, n_blocks);
}

RowMajorBlocks row_major_blocks(DType type, RowOrder order, const std::uint8_t* w, std::size_t cols,
                                std::size_t row0, std::size_t n_rows, std::size_t block0,
                                std::size_t n_blocks, std::vector<std::uint8_t>& scratch) {
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  if (order == RowOrder::kRowMajor) {
    const std::size_t stride = row_bytes(type, cols);
    return {w + row0 * stride + block0 * block_bytes, stride};
  }
  scratch.resize(n_rows * n_blocks * block_bytes);
  deinterleave_rows(type, w, cols, row0, n_rows, block0, n_blocks, scratch.data());
  return {scratch.data(), n_blocks * block_bytes};
}

void quantize_activations(const float* x, std::size_t rows, std::size_t cols,
                          QuantizedActivations& a) {
  check_block_multiple(cols, "quantize_activations");
  const std::size_t n = rows * cols, blocks_per_row = cols / kQuantBlock;
  a.q.resize(n);
  a.q8.resize(n + 64);  // the VNNI kernel reads 64 bytes for a row's odd last block
  a.d.resize(n / kQuantBlock);
  a.pairs_per_row = (blocks_per_row + 1) / 2;
  a.pair_sum.assign(rows * a.pairs_per_row * 16, 0);
  a.pair_d.assign(rows * a.pairs_per_row * 16, 0.0f);
  for (std::size_t b = 0; b < n / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    float amax = 0.0f;
    for (std::size_t i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    a.d[b] = d;
    std::int32_t sum = 0;
    for (std::size_t i = 0; i < kQuantBlock; ++i) {
      const auto q =
          static_cast<std::int16_t>(std::clamp(std::nearbyint(xb[i] * id), -127.0f, 127.0f));
      a.q[b * kQuantBlock + i] = q;
      a.q8[b * kQuantBlock + i] = static_cast<std::int8_t>(q);
      sum += q;
    }
    const std::size_t row = b / blocks_per_row, in_row = b % blocks_per_row;
    const std::size_t lane0 = (row * a.pairs_per_row + in_row / 2) * 16 + (in_row % 2) * 8;
    a.pair_sum[lane0] = sum;
    std::fill_n(a.pair_d.begin() + static_cast<std::ptrdiff_t>(lane0), 8, d);
  }
}

float dot_quantized_reference(DType type, const std::uint8_t* row, const std::int16_t* xq,
                              const float* xd, std::size_t n) {
  const std::size_t block_bytes = row_bytes(type, kQuantBlock);
  float sum = 0.0f;
  for (std::size_t b = 0; b < n / kQuantBlock; ++b) {
    const std::uint8_t* block = row + b * block_bytes;
    std::int32_t isum = 0;
    for (std::size_t i = 0; i < kQuantBlock; ++i) {
      const int q = type == DType::Q8_0 ? static_cast<std::int8_t>(block[2 + i])
                                        : q4_nibble(block + 2, i) - 8;
      isum += q * xq[b * kQuantBlock + i];
    }
    sum += f16_to_f32(load_scale(block)) * xd[b] * static_cast<float>(isum);
  }
  return sum;
}

}  // namespace lclm
