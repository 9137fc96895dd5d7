#include "ops/onednn_matmul.h"

#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "ops/bf16_kernels.h"

namespace lclm {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// src [rows, k] bf16 times weights [k, n] stored as W [n, k] (oneDNN's "ba")
// into dst [rows, n] f32.
dnnl::matmul::primitive_desc product_desc(std::size_t rows, std::size_t n, std::size_t k) {
  const auto R = static_cast<dnnl::memory::dim>(rows), N = static_cast<dnnl::memory::dim>(n),
             K = static_cast<dnnl::memory::dim>(k);
  const dnnl::memory::desc src({R, K}, dt::bf16, tag::ab), weights({K, N}, dt::bf16, tag::ba),
      dst({R, N}, dt::f32, tag::ab);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), cpu_engine());
}

// The implementations that multiply bf16 natively: brgemm on AMX tiles or
// on AVX512_BF16 dot products (names as oneDNN 2.x reports them).
bool is_native(const std::string& impl) {
  return impl.find("amx") != std::string::npos ||
         impl.find("avx512_core_bf16") != std::string::npos;
}

// The implementation oneDNN picks for a bf16 product on this CPU; empty
// where it has none.
const std::string& bf16_impl() {
  static const std::string impl = [] {
    try {
      return std::string(product_desc(64, 64, 64).impl_info_str());
    } catch (const dnnl::error&) {
      return std::string();
    }
  }();
  return impl;
}

}  // namespace

bool onednn_native_bf16() {
  return is_native(bf16_impl()) && native_bf16_enabled();
}

bool onednn_uses_amx() {
  return bf16_impl().find("amx") != std::string::npos;
}

bool matmul_bf16_onednn(const float* x, std::size_t m, const WeightMatrix& w, float* y) {
  if (w.dtype != DType::BF16 || !onednn_native_bf16()) return false;
  const std::size_t n = w.rows, k = w.cols;
  // Primitives by shape; oneDNN caches their kernels too, this skips
  // re-creating the descriptor on every call. Prompts of every length bring
  // new row counts (the last chunk), so the map is emptied when it grows past
  // kMaxProducts instead of keeping one primitive per length ever seen.
  constexpr std::size_t kMaxProducts = 64;
  thread_local std::map<std::tuple<std::size_t, std::size_t, std::size_t>, dnnl::matmul> products;
  thread_local dnnl::stream stream(cpu_engine());
  thread_local std::vector<std::uint16_t> src;
  thread_local std::vector<float> dst;
  auto it = products.find({m, n, k});
  if (it == products.end()) {
    if (products.size() >= kMaxProducts) products.clear();
    it = products.emplace(std::tuple{m, n, k}, dnnl::matmul(product_desc(2 * m, n, k))).first;
  }
  // Rows 0..m-1 hold hi, rows m..2m-1 lo.
  src.resize(2 * m * k);
  // The calling thread's buffer: inside the region `src` would name each
  // thread's own.
  std::uint16_t* split = src.data();
  const auto rows = static_cast<std::ptrdiff_t>(m);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < rows; ++i) {
    const auto r = static_cast<std::size_t>(i);
    split_bf16(x + r * k, k, split + r * k, split + (m + r) * k);
  }
  dst.resize(2 * m * n);
  const auto M2 = static_cast<dnnl::memory::dim>(2 * m), N = static_cast<dnnl::memory::dim>(n),
             K = static_cast<dnnl::memory::dim>(k);
  const dnnl::memory src_mem({{M2, K}, dt::bf16, tag::ab}, cpu_engine(), src.data());
  const dnnl::memory weights_mem({{K, N}, dt::bf16, tag::ba}, cpu_engine(),
                                 const_cast<void*>(w.data));
  const dnnl::memory dst_mem({{M2, N}, dt::f32, tag::ab}, cpu_engine(), dst.data());
  it->second.execute(
      stream, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, weights_mem}, {DNNL_ARG_DST, dst_mem}});
  stream.wait();
  const float* hi_part = dst.data();
  const float* lo_part = dst.data() + m * n;
  const auto total = static_cast<std::ptrdiff_t>(m * n);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < total; ++i) y[i] = hi_part[i] + lo_part[i];
  return true;
}

}  // namespace lclm
