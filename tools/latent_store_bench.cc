// lclm-latent-store-bench: what one cached region costs to write to and read
// back from a latent store (--latent-cache: an SQLite file or a Redis
// server), through the engine's own LatentCache with its memory LRU off, so
// every read goes to the store and is validated as a run validates it (see
// docs/scaling.md). Rows are random floats of the given widths and counts.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "compression/latent_cache.h"
#include "util/error.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string store;
  std::vector<std::size_t> latents = {64, 512, 2048};
  std::vector<std::size_t> widths = {256, 2560};
  int repeat = 50;
};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The median and the 90th percentile of `ms`.
std::pair<double, double> median_p90(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 9 / 10)]};
}

int run(const Args& a) {
  lclm::LatentCache cache(0, {.location = a.store});
  if (const std::string e = cache.store_error(); !e.empty()) throw lclm::Error(e);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::cout << "store " << a.store << ", median (p90) of " << a.repeat << " runs each\n"
            << "| latents | width | row bytes | write ms | read ms | read MB/s |\n"
            << "|---|---|---|---|---|---|\n";
  for (const std::size_t width : a.widths) {
    for (const std::size_t count : a.latents) {
      lclm::Latents row;
      row.dim = width;
      row.n_tokens = count * 4;
      row.data.resize(count * width);
      for (float& x : row.data) x = normal(rng);
      std::vector<double> write, read;
      for (int i = 0; i < a.repeat; ++i) {
        const lclm::LatentKey key = lclm::latent_key(
            "lclm-latent-store-bench",
            std::to_string(width) + "x" + std::to_string(count) + "#" + std::to_string(i));
        auto t0 = Clock::now();
        cache.store(key, row);
        write.push_back(ms_since(t0));
        t0 = Clock::now();
        const auto got = cache.find(key);
        read.push_back(ms_since(t0));
        if (!got || got->data != row.data) {
          throw lclm::Error("the row read back from " + a.store + " is not the row written" +
                            (cache.store_error().empty() ? "" : ": " + cache.store_error()));
        }
      }
      const auto [w50, w90] = median_p90(write);
      const auto [r50, r90] = median_p90(read);
      std::cout << std::fixed << std::setprecision(3) << "| " << count << " | " << width << " | "
                << row.bytes() << " | " << w50 << " (" << w90 << ") | " << r50 << " (" << r90
                << ") | " << std::setprecision(0) << row.bytes() / (r50 * 1e3) << " |\n";
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "lclm-latent-store-bench: the time to write and read back one cached region's latents "
      "in a latent store (docs/scaling.md)"};
  Args a;
  app.add_option("--latent-cache", a.store, "The store: an SQLite file or redis://HOST:PORT[/DB]")
      ->required();
  app.add_option("--latents", a.latents, "Latents per region (rows)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--width", a.widths, "Latent widths (the decoder's hidden size)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--repeat", a.repeat, "Regions written and read per size")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
