// lclm-loadtest: a bounded load test of `lclm serve` on loopback. For each
// concurrency C given, sends N streamed chat completion requests from C
// clients at once to 127.0.0.1:PORT (each prompt numbered, so no request
// reuses another's cached prefix) and prints requests/s, the aggregate
// generated tokens/s (usage.completion_tokens over the wall time), and the
// p50/p99 time to first token (request sent to the first text chunk read)
// and latency (to the last byte).
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Sample {
  double ttft = -1, latency = -1;
  long tokens = 0;
};

// One streamed request: the first chunk with text marks the first token;
// the usage chunk (stream_options.include_usage) gives the token count.
Sample send(httplib::Client& client, const std::string& body) {
  Sample s;
  const auto start = Clock::now();
  std::string buffer;
  bool failed = false;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.set_header("Content-Type", "application/json");
  req.body = body;
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    buffer.append(data, n);
    std::size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      const auto j = nlohmann::json::parse(event.substr(6), nullptr, false);
      if (j.is_discarded() || j.contains("error")) {
        failed = true;
        continue;
      }
      if (s.ttft < 0 && !j["choices"].empty() &&
          !j["choices"][0]["delta"].value("content", std::string()).empty()) {
        s.ttft = seconds_since(start);
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        s.tokens = j["usage"].value("completion_tokens", 0L);
      }
    }
    return true;
  };
  const auto r = client.send(req);
  if (!r || r->status != 200 || failed) return Sample{};
  s.latency = seconds_since(start);
  return s;
}

double percentile(std::vector<double> v, double p) {
  v.erase(std::remove(v.begin(), v.end(), -1.0), v.end());
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5)] * 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Bounded load test of `lclm serve` on 127.0.0.1 (loopback only)"};
  int port = 8080, requests = 32, max_tokens = 16;
  std::vector<int> concurrency = {8};
  std::string prompt = "Write one sentence about the sea.";
  app.add_option("--port", port, "Port of the server on 127.0.0.1")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("-n,--requests", requests, "Requests per concurrency")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("-c,--concurrency", concurrency,
                 "Clients at once; several (1,2,4,8) run one after another [default: 8]")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  app.add_option("--max-tokens", max_tokens, "max_tokens per request")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("-p,--prompt", prompt, "Prompt (one user message; \" (request i)\" is appended)");
  CLI11_PARSE(app, argc, argv);

  int total_failed = 0;
  std::printf(
      "| clients | requests | failed | req/s | tokens/s | TTFT p50 ms | TTFT p99 ms | "
      "latency p50 ms | latency p99 ms |\n|---|---|---|---|---|---|---|---|---|\n");
  int numbered = 0;
  for (const int c : concurrency) {
    std::atomic<int> next{0};
    std::vector<Sample> samples(static_cast<std::size_t>(requests));
    const int first = numbered;
    numbered += requests;
    const auto t0 = Clock::now();
    std::vector<std::thread> clients;
    for (int k = 0; k < c; ++k) {
      clients.emplace_back([&] {
        httplib::Client client("127.0.0.1", port);
        client.set_read_timeout(600, 0);
        for (int i = next++; i < requests; i = next++) {
          const std::string body = nlohmann::json{
              {"messages",
               {{{"role", "user"},
                 {"content", prompt + " (request " + std::to_string(first + i) + ")"}}}},
              {"max_tokens", max_tokens},
              {"temperature", 0},
              {"stream", true},
              {"stream_options",
               {{"include_usage",
                 true}}}}.dump();
          samples[static_cast<std::size_t>(i)] = send(client, body);
        }
      });
    }
    for (auto& t : clients) t.join();
    const double wall = seconds_since(t0);
    std::vector<double> ttft, latency;
    long tokens = 0;
    int failed = 0;
    for (const Sample& s : samples) {
      if (s.latency < 0) ++failed;
      ttft.push_back(s.ttft);
      latency.push_back(s.latency);
      tokens += s.tokens;
    }
    total_failed += failed;
    std::printf("| %d | %d | %d | %.2f | %.1f | %.0f | %.0f | %.0f | %.0f |\n", c, requests, failed,
                static_cast<double>(requests - failed) / wall, static_cast<double>(tokens) / wall,
                percentile(ttft, 0.5), percentile(ttft, 0.99), percentile(latency, 0.5),
                percentile(latency, 0.99));
    std::fflush(stdout);
  }
  return total_failed > 0 ? 1 : 0;
}
