// lclm-loadtest: a bounded load test of `lclm serve` on loopback. Sends N
// chat completion requests from C concurrent clients to 127.0.0.1:PORT and
// prints requests/s and the p50/p99 latency (request sent to last byte read).
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Bounded load test of `lclm serve` on 127.0.0.1 (loopback only)"};
  int port = 8080, requests = 32, concurrency = 8, max_tokens = 16;
  bool stream = false;
  std::string prompt = "Write one sentence about the sea.";
  app.add_option("--port", port, "Port of the server on 127.0.0.1")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("-n,--requests", requests, "Requests in all")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("-c,--concurrency", concurrency, "Clients at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--max-tokens", max_tokens, "max_tokens per request")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("-p,--prompt", prompt, "Prompt (one user message)");
  app.add_flag("--stream", stream, "Stream the answers (server-sent events)");
  CLI11_PARSE(app, argc, argv);

  const std::string body = nlohmann::json{
      {"messages", {{{"role", "user"}, {"content", prompt}}}},
      {"max_tokens", max_tokens},
      {"temperature", 0},
      {"stream", stream}}.dump();
  std::atomic<int> next{0}, failed{0};
  std::vector<double> latencies(static_cast<std::size_t>(requests), -1);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(600, 0);
      for (int i = next++; i < requests; i = next++) {
        const auto start = std::chrono::steady_clock::now();
        const auto r = client.Post("/v1/chat/completions", body, "application/json");
        if (!r || r->status != 200) {
          ++failed;
          continue;
        }
        latencies[static_cast<std::size_t>(i)] =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    });
  }
  for (auto& t : clients) t.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  latencies.erase(std::remove(latencies.begin(), latencies.end(), -1.0), latencies.end());
  std::sort(latencies.begin(), latencies.end());
  const auto percentile = [&](double p) {
    if (latencies.empty()) return 0.0;
    const auto k = static_cast<std::size_t>(p * static_cast<double>(latencies.size() - 1) + 0.5);
    return latencies[k] * 1e3;
  };
  std::printf(
      "requests %d (failed %d), concurrency %d, max_tokens %d%s\n"
      "wall %.2f s | %.2f req/s | latency p50 %.0f ms, p99 %.0f ms\n",
      requests, failed.load(), concurrency, max_tokens, stream ? ", streaming" : "", wall,
      static_cast<double>(latencies.size()) / wall, percentile(0.50), percentile(0.99));
  return failed > 0 ? 1 : 0;
}
