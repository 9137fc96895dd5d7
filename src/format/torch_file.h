// One tensor in torch.save's format, the file `torch.load` reads and the
// base64 payload vLLM's `prompt_embeds` takes: a zip archive (entries stored,
// not deflated) holding
//   archive/data.pkl   a pickle (protocol 2) of
//                      torch._utils._rebuild_tensor_v2(storage, offset, size,
//                      stride, requires_grad, OrderedDict()), the storage a
//                      persistent id ('storage', torch.<T>Storage, key, 'cpu', numel)
//   archive/data/<key> the storage's bytes, little-endian
//   archive/version    "3\n"
// Reading accepts what PyTorch's own torch.save writes for one contiguous
// tensor of float32, bfloat16 or float16 (any archive name, memoized or not,
// protocol 2 to 5 opcodes of that shape); anything else is an lclm::Error
// naming the file and what was found. Nothing in the pickle is executed: the
// only callables honoured are the two above, by name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "format/dtype.h"

namespace lclm {

struct TorchTensor {
  std::vector<std::int64_t> shape;
  DType dtype = DType::F32;  // as stored: F32, BF16 or F16
  std::vector<float> data;   // row-major, converted to float
};

// The bytes of torch.save(tensor) for data [rows, cols] stored as `dtype`
// (F32, BF16 rounded to nearest even, or F16).
std::string torch_tensor_bytes(const float* data, std::size_t rows, std::size_t cols, DType dtype);
// Writes them to path (through a temporary file renamed into place).
void write_torch_tensor(const std::filesystem::path& path, const float* data, std::size_t rows,
                        std::size_t cols, DType dtype);

// max_bytes bounds the tensor's storage (a corrupt or hostile file cannot
// make the reader allocate more). `what` names the input in errors.
TorchTensor parse_torch_tensor(std::string_view bytes, const std::string& what,
                               std::size_t max_bytes = std::size_t{4} << 30);
TorchTensor read_torch_tensor(const std::filesystem::path& path,
                              std::size_t max_bytes = std::size_t{4} << 30);

}  // namespace lclm
