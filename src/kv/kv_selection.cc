#include "kv/kv_selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lclm {

std::vector<std::size_t> top_k_indices(std::span<const float> values, std::size_t k) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  k = std::min(k, values.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::size_t a, std::size_t b) {
                      return values[a] > values[b] || (values[a] == values[b] && a < b);
                    });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<std::size_t> streaming_keep(std::size_t n, std::size_t sinks, std::size_t budget) {
  std::vector<std::size_t> keep;
  if (budget >= n) {
    keep.resize(n);
    std::iota(keep.begin(), keep.end(), std::size_t{0});
    return keep;
  }
  sinks = std::min(sinks, budget);
  for (std::size_t i = 0; i < sinks; ++i) keep.push_back(i);
  for (std::size_t i = n - (budget - sinks); i < n; ++i) keep.push_back(i);
  return keep;
}

namespace {

// The top `k` of the first `candidates` ranking values, then every entry from
// `candidates` to n.
std::vector<std::size_t> top_then_recent(std::span<const float> ranking, std::size_t candidates,
                                         std::size_t k, std::size_t n) {
  std::vector<std::size_t> keep = top_k_indices(ranking.first(candidates), k);
  for (std::size_t i = candidates; i < n; ++i) keep.push_back(i);
  return keep;
}

}  // namespace

std::vector<std::size_t> h2o_keep(std::span<const float> scores, std::size_t budget) {
  const std::size_t n = scores.size();
  if (budget >= n) return streaming_keep(n, 0, n);
  const std::size_t recent = budget / 2;
  return top_then_recent(scores, n - recent, budget - recent, n);
}

std::vector<std::size_t> snapkv_keep(std::span<const float> scores, std::size_t window,
                                     std::size_t kernel, std::size_t budget) {
  const std::size_t n = scores.size();
  if (budget >= n) return streaming_keep(n, 0, n);
  window = std::min(window, budget);
  const std::size_t prefix = n - window;
  // avg_pool1d(kernel, stride 1, padding kernel / 2, count_include_pad) over the prefix.
  kernel = std::max<std::size_t>(1, kernel);
  const std::size_t half = kernel / 2;
  std::vector<float> pooled(prefix);
  for (std::size_t i = 0; i < prefix; ++i) {
    const std::size_t lo = i >= half ? i - half : 0;
    const std::size_t hi = std::min(prefix, i + kernel - half);
    float sum = 0.0f;
    for (std::size_t j = lo; j < hi; ++j) sum += scores[j];
    pooled[i] = sum / static_cast<float>(kernel);
  }
  return top_then_recent(pooled, prefix, budget - window, n);
}

std::vector<std::size_t> pyramid_budgets(std::size_t n_layers, std::size_t budget,
                                         std::size_t window, double beta) {
  if (n_layers == 0) return {};
  window = std::min(window, budget);
  const std::size_t share = budget - window;
  if (n_layers == 1) return {budget};
  const auto least = static_cast<std::size_t>(std::floor(static_cast<double>(share) / beta));
  const std::size_t most = 2 * share - least;
  std::vector<std::size_t> out(n_layers);
  std::size_t total = 0;
  for (std::size_t l = 0; l < n_layers; ++l) {
    const double step = static_cast<double>(most - least) / static_cast<double>(n_layers - 1);
    out[l] = static_cast<std::size_t>(std::floor(static_cast<double>(most) - step * l));
    total += out[l];
  }
  // Flooring lost a few entries of the total: the first layers get them back.
  for (std::size_t l = 0; total < n_layers * share; l = (l + 1) % n_layers, ++total) ++out[l];
  for (std::size_t& b : out) b += window;
  return out;
}

}  // namespace lclm
