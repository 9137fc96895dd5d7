// lclm-bench-qwen3: prefill and decode speed of the engine on a model of
// Qwen3-0.6B's shape with seeded random weights (speed does not depend on the
// weight values), reported llama-bench style and judged against the machine's
// fp32 matmul peak (OpenBLAS sgemm) and memory read bandwidth, both measured
// in the same run (bench/yardsticks.h) unless given.
//
// Every run goes through lclm::Session (chunked prefill, then greedy decode
// of exactly --gen tokens) with a fresh KV cache. With P = the parameters of
// one layer's q/k/v/o/gate/up/down projections, V x H the lm_head (the
// embedding matrix when tied), L the prompt length and G the generated tokens:
//
//   prefill FLOPs = 2 * n_layers * P * L                            projections
//                 + 2 * V * H                                       lm_head, last token only
//                 + n_layers * 4 * n_heads * head_dim * L^2 / 2     causal QK^T and PV
//   prefill time  = GenerationStats::ttft_seconds (prefill + the first token's
//                   lm_head and sampling, which the FLOPs above include)
//
//   decode bytes per token = bytes of the n_layers * P + V * H matrix weights
//                            in the type they run in (bf16: 2 per weight,
//                            q8_0: 34/32, q4_0: 18/32; --quant converts them)
//                          + n_layers * n_kv_heads * (K + V) * (L + G / 2)
//   (every matmul weight is read once per token; K and V: the bytes of one
//   head's key and value row in the cache's types, --cache-type-k/-v, bf16 by
//   default as in the engine; counted at the mean cache length of the decode)
//   decode speed = GenerationStats::decode_tokens_per_second() = (G - 1) /
//   decode_seconds (the engine's definition: the first token belongs to the
//   prefill)
//
// With --batch 1,2,4,8, decode is also timed for B sequences at once
// (runtime/decode_batch.h: one forward pass per step for all B, each weight
// read once): B prompts of --batch-prompt tokens are prefilled, then B * G
// tokens decoded greedily; batch tokens/s = B * (G - 1) / the time of steps
// 2..G (step 1 samples the prefill's token, as above), and the speed-up is
// over batch 1 in the same run.
//
// On a CPU with AVX512_BF16 the prefill is also judged against the bf16
// dot-product peak measured in the same run at --threads threads
// (measure_bf16_dot_gflops): matmul FLOPs = the projections and the lm_head
// terms above (no attention), divided by the prefill time and the peak. The
// default kernels multiply x in two bf16 parts (ops/bf16_gemm.h), twice the
// dot products of these FLOPs, so they can reach at most half of it.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/random_qwen3.h"
#include "format/quant_blocks.h"
#include "model/qwen3_model.h"
#include "ops/bf16_kernels.h"
#include "ops/matmul.h"
#include "ops/quant_kernels.h"
#include "runtime/decode_batch.h"
#include "runtime/session.h"
#include "util/error.h"
#include "util/process_stats.h"
#include "util/threads.h"
#include "yardsticks.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGiB = 1024.0 * kMiB;
// Prompt ids stay below Qwen3's first special token (<|endoftext|> = 151643).
constexpr std::int64_t kOrdinaryVocab = 151643;
constexpr std::uint64_t kPromptSeed = 0;

struct BenchArgs {
  std::string model_dir;
  int threads = 2;
  int prompt_tokens = 512;
  int gen_tokens = 64;
  int repeats = 3;
  int layers = 0;
  std::string json_path;
  std::string quant;                  // empty: the matrices as stored
  KVCacheTypes cache_types = kDefaultKVCacheTypes;
  double peak_gflops = 0;             // 0: measured in this run
  double peak_gbytes_per_second = 0;  // 0: measured in this run
  bool portable_baseline = false;     // also time the portable kernels, interleaved
  std::vector<int> batches;           // decode batch sizes to time (none: skip)
  int batch_prompt_tokens = 64;
  int busy_threads = 0;  // threads of this process spinning while the runs are timed
};

// Threads that keep cores busy, as other processes on a shared machine do,
// from construction to destruction.
class BusyThreads {
 public:
  explicit BusyThreads(int n) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this] {
        while (!stop_.load(std::memory_order_relaxed)) {
        }
      });
    }
  }
  ~BusyThreads() {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// The yardsticks the fractions of peak divide by: given, or measured in the
// run: sgemm once before the warm-up, the read bandwidth before every repeat
// (its median; a VM's bandwidth drifts by a third within minutes, so one
// sample at the start would judge later runs against another machine).
struct Peaks {
  double gflops = 0;
  double gbytes_per_second = 0;
  double bf16_dot_gflops = 0;  // 0 where the CPU lacks AVX512_BF16
  double int8_dot_gops = 0;    // 0 where the CPU lacks AVX512-VNNI
  bool measured_gflops = false, measured_bandwidth = false;
  std::vector<double> bandwidth_samples;
};

Qwen3Config bench_config(int layers) {
  Qwen3Config config = qwen3_0_6b_config();
  if (layers > 0) config.num_hidden_layers = layers;
  return config;
}

// $XDG_CACHE_HOME/lclm/NAME or ~/.cache/lclm/NAME; a layer override gets its
// own directory so it never shadows the full model.
fs::path default_model_dir(const Qwen3Config& config) {
  std::string name = "bench-qwen3-0.6b";
  if (config.num_hidden_layers != qwen3_0_6b_config().num_hidden_layers) {
    name += "-" + std::to_string(config.num_hidden_layers) + "layers";
  }
  name += "-bf16";
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  if (xdg != nullptr && *xdg != '\0') return fs::path(xdg) / "lclm" / name;
  if (home != nullptr && *home != '\0') return fs::path(home) / ".cache" / "lclm" / name;
  throw Error("neither XDG_CACHE_HOME nor HOME is set; pass --model-dir");
}

// Forgets the peak resident size so far (Linux: "5" to /proc/self/clear_refs)
// so that the memory of writing the model does not count as the inference's.
void reset_peak_resident() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

// Writes into a scratch directory, then renames it into place, so an
// interrupted write never leaves a directory that looks reusable.
void write_bench_model(const fs::path& dir, const Qwen3Config& config) {
  RandomQwen3Spec spec;  // seed 0, bf16
  spec.config = config;
  const fs::path scratch = dir.string() + ".partial";
  std::cerr << "writing a random-weight model to " << dir << " (once; later runs reuse it)\n";
  fs::remove_all(scratch);
  write_random_qwen3(scratch, spec);
  fs::rename(scratch, dir);
  reset_peak_resident();
}

std::vector<std::int32_t> make_prompt(int n, std::int64_t vocab_size,
                                      std::uint64_t seed = kPromptSeed) {
  std::mt19937_64 rng(seed);
  const auto range = static_cast<std::uint64_t>(std::min(vocab_size, kOrdinaryVocab));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % range);
  return ids;
}

// A fresh Session each run: nothing is reused between repeats.
GenerationStats run_generation(const Qwen3Model& model, const std::vector<std::int32_t>& prompt,
                               int gen_tokens, KVCacheTypes cache_types) {
  GenerationOptions options;
  options.n_predict = gen_tokens;
  // Greedy and no stop ids: decode always runs exactly n_predict tokens.
  options.sampling.temperature = 0.0f;
  const GenerationStats stats = Session(model, 0, cache_types).generate(prompt, options);
  if (stats.generated_tokens != static_cast<std::size_t>(gen_tokens)) {
    throw Error("generation stopped after " + std::to_string(stats.generated_tokens) + " of " +
                std::to_string(gen_tokens) + " tokens (" +
                std::string(stop_reason_name(stats.stop)) + ")");
  }
  return stats;
}

std::string fixed(double value, int precision) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(precision) << value;
  return out.str();
}

std::string percent(double fraction) {
  return fixed(100.0 * fraction, 1) + "%";
}

// The 1-minute load average (/proc/loadavg): other processes' work on the
// same cores, which the timings cannot separate from the engine's.
double load_average() {
  double one_minute = 0;
  std::ifstream("/proc/loadavg") >> one_minute;
  return one_minute;
}

struct Measurements {
  double load_seconds = 0;  // mapping, and converting with --quant
  std::vector<double> prefill_seconds;
  std::vector<double> decode_seconds;
  std::size_t kv_cache_bytes = 0;
  double load_at_start = 0;  // before the model is written or loaded
  double load_at_end = 0;
};

// One sample of the memory read bandwidth; its 512 MiB buffer is freed and
// forgotten by the peak resident size before the next run. (sgemm is
// sampled once, before the warm-up: OpenBLAS's threads spin for a while
// after a call, which would slow the run right after it.)
void sample_bandwidth(const BenchArgs& args, Peaks& peaks) {
  if (!peaks.measured_bandwidth) return;
  peaks.bandwidth_samples.push_back(
      measure_read_bandwidth(args.threads, 3, std::size_t{512} << 20));
  reset_peak_resident();
}

// One uncounted warm-up (pages the mmapped weights in, starts the thread
// pools), then the timed repeats; with a portable baseline each repeat runs
// the native kernels, then the portable ones, so both see the same machine.
struct Timings {
  Measurements native, portable;
};
Timings measure(const Qwen3Model& model, const std::vector<std::int32_t>& prompt,
                const BenchArgs& args, Peaks& peaks) {
  if (peaks.measured_gflops) peaks.gflops = measure_sgemm_gflops();
  peaks.bf16_dot_gflops = measure_bf16_dot_gflops(args.threads);
  peaks.int8_dot_gops = measure_int8_dot_gops(args.threads);
  std::cerr << "warm-up run\n";
  run_generation(model, prompt, args.gen_tokens, args.cache_types);
  Timings t;
  const auto timed = [&](Measurements& m, const char* what, int r) {
    const GenerationStats stats = run_generation(model, prompt, args.gen_tokens, args.cache_types);
    m.prefill_seconds.push_back(stats.ttft_seconds);
    m.decode_seconds.push_back(stats.decode_seconds);
    m.kv_cache_bytes = stats.kv_cache_bytes;
    std::cerr << "repeat " << r + 1 << "/" << args.repeats << what << ": prefill "
              << fixed(stats.ttft_seconds, 3) << " s, decode " << fixed(stats.decode_seconds, 3)
              << " s\n";
  };
  for (int r = 0; r < args.repeats; ++r) {
    sample_bandwidth(args, peaks);
    timed(t.native, "", r);
    if (args.portable_baseline) {
      set_native_bf16(false);
      set_native_vnni(false);
      timed(t.portable, " (portable kernels)", r);
      set_native_bf16(true);
      set_native_vnni(true);
    }
  }
  return t;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

// Decode of B sequences at once: each B's median over the repeats of
// B * (G - 1) tokens over the time of decode steps 2..G.
struct BatchedDecode {
  int batch = 0;
  std::vector<double> seconds;
  double tokens_per_second = 0;
};

double time_batched_decode(const Qwen3Model& model, int batch, const BenchArgs& args) {
  std::vector<Session> sessions;
  std::vector<std::vector<std::int32_t>> prompts;
  std::vector<std::vector<float>> inputs;
  const auto H = static_cast<std::size_t>(model.config().hidden_size);
  for (int b = 0; b < batch; ++b) {
    sessions.emplace_back(model, 0, args.cache_types);
    std::vector<std::int32_t> ids = make_prompt(args.batch_prompt_tokens, model.config().vocab_size,
                                                kPromptSeed + 1 + static_cast<std::uint64_t>(b));
    std::vector<float> x(ids.size() * H);
    model.embed(ids, x.data());
    prompts.push_back(std::move(ids));
    inputs.push_back(std::move(x));
  }
  GenerationOptions options;
  options.n_predict = args.gen_tokens;
  options.sampling.temperature = 0.0f;
  std::vector<std::unique_ptr<Generation>> gens;
  std::vector<Generation*> running;
  for (int b = 0; b < batch; ++b) {
    const auto i = static_cast<std::size_t>(b);
    gens.push_back(
        std::make_unique<Generation>(sessions[i], prompts[i], inputs[i].data(), options));
    while (gens.back()->prefilling()) gens.back()->prefill_step();
    running.push_back(gens.back().get());
  }
  DecodeBatch decode(model);
  decode.step(running);  // samples the prefills' tokens
  const auto t0 = std::chrono::steady_clock::now();
  while (std::any_of(running.begin(), running.end(), [](Generation* g) { return !g->done(); })) {
    decode.step(running);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& g : gens) {
    const GenerationStats stats = g->finish();
    if (stats.generated_tokens != static_cast<std::size_t>(args.gen_tokens)) {
      throw Error("a batched generation stopped after " + std::to_string(stats.generated_tokens) +
                  " of " + std::to_string(args.gen_tokens) + " tokens");
    }
  }
  return seconds;
}

std::vector<BatchedDecode> measure_batched_decode(const Qwen3Model& model, const BenchArgs& args) {
  std::vector<BatchedDecode> out;
  for (int b : args.batches) out.push_back({b, {}, 0});
  if (out.empty()) return out;
  std::cerr << "batched decode warm-up\n";
  time_batched_decode(model, args.batches.back(), args);
  // Interleaved: each repeat times every batch size, so all see the same machine.
  for (int r = 0; r < args.repeats; ++r) {
    for (BatchedDecode& d : out) {
      d.seconds.push_back(time_batched_decode(model, d.batch, args));
      std::cerr << "repeat " << r + 1 << "/" << args.repeats << ": batch " << d.batch << " decode "
                << fixed(d.seconds.back(), 3) << " s\n";
    }
  }
  for (BatchedDecode& d : out) {
    d.tokens_per_second = d.batch * (args.gen_tokens - 1) / median(d.seconds);
  }
  return out;
}

// Parameters of one layer's projection matrices (P in the header comment).
double projection_params_per_layer(const Qwen3Config& c) {
  const double hidden = static_cast<double>(c.hidden_size);
  const double q_width = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kv_width = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double mlp = 3.0 * hidden * static_cast<double>(c.intermediate_size);
  return 2.0 * hidden * q_width + 2.0 * hidden * kv_width + mlp;
}

double lm_head_params(const Qwen3Config& c) {
  return static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
}

// Every tensor of the checkpoint, to turn its byte size into bytes per weight.
double checkpoint_params(const Qwen3Config& c) {
  const double norms_per_layer = static_cast<double>(2 * c.hidden_size + 2 * c.head_dim);
  const double embeddings = (c.tie_word_embeddings ? 1.0 : 2.0) * lm_head_params(c);
  return static_cast<double>(c.num_hidden_layers) *
             (projection_params_per_layer(c) + norms_per_layer) +
         embeddings + static_cast<double>(c.hidden_size);
}

// The projections and the last token's lm_head.
double prefill_matmul_flops(const Qwen3Config& c, double prompt_tokens) {
  const double layers = static_cast<double>(c.num_hidden_layers);
  return 2.0 * layers * projection_params_per_layer(c) * prompt_tokens + 2.0 * lm_head_params(c);
}

double prefill_flops(const Qwen3Config& c, double prompt_tokens) {
  const double layers = static_cast<double>(c.num_hidden_layers);
  const double attention = layers * 4.0 * static_cast<double>(c.num_attention_heads * c.head_dim) *
                           prompt_tokens * prompt_tokens / 2.0;
  return prefill_matmul_flops(c, prompt_tokens) + attention;
}

double decode_bytes_per_token(const Qwen3Model& model, double prompt_tokens, double gen_tokens,
                              KVCacheTypes cache_types) {
  const Qwen3Config& c = model.config();
  const auto weights = static_cast<double>(model.decode_matrix_bytes());
  const auto head_dim = static_cast<std::size_t>(c.head_dim);
  const double kv_bytes_per_position =
      static_cast<double>(c.num_hidden_layers * c.num_key_value_heads) *
      static_cast<double>(row_bytes(cache_types.keys, head_dim) +
                          row_bytes(cache_types.values, head_dim));
  return weights + kv_bytes_per_position * (prompt_tokens + gen_tokens / 2.0);
}

struct Summary {
  double prefill_seconds = 0;  // medians
  double decode_seconds = 0;
  double prefill_tokens_per_second = 0;
  double decode_tokens_per_second = 0;
  double prefill_flops = 0;
  double prefill_gflops = 0;
  double prefill_matmul_flops = 0;
  double prefill_matmul_gflops = 0;
  double decode_bytes_per_token = 0;
  double decode_gbytes_per_second = 0;
};

Summary summarize(const Qwen3Model& model, const Measurements& m, const BenchArgs& args) {
  const auto prompt = static_cast<double>(args.prompt_tokens);
  const auto gen = static_cast<double>(args.gen_tokens);
  Summary s;
  s.prefill_seconds = median(m.prefill_seconds);
  s.decode_seconds = median(m.decode_seconds);
  s.prefill_tokens_per_second = prompt / s.prefill_seconds;
  s.decode_tokens_per_second = (gen - 1.0) / s.decode_seconds;
  s.prefill_flops = prefill_flops(model.config(), prompt);
  s.prefill_gflops = s.prefill_flops / s.prefill_seconds / 1e9;
  s.prefill_matmul_flops = prefill_matmul_flops(model.config(), prompt);
  s.prefill_matmul_gflops = s.prefill_matmul_flops / s.prefill_seconds / 1e9;
  s.decode_bytes_per_token = decode_bytes_per_token(model, prompt, gen, args.cache_types);
  s.decode_gbytes_per_second = s.decode_bytes_per_token * s.decode_tokens_per_second / 1e9;
  return s;
}

// A markdown table with padded columns; the first row is the header.
void print_table(const std::vector<std::vector<std::string>>& rows, std::ostream& out) {
  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  const auto print_row = [&](const std::vector<std::string>& row) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out << "| " << std::setw(static_cast<int>(widths[i])) << std::left << row[i] << " ";
    }
    out << "|\n";
  };
  print_row(rows.front());
  for (std::size_t i = 0; i < widths.size(); ++i) out << "|" << std::string(widths[i] + 2, '-');
  out << "|\n";
  for (std::size_t r = 1; r < rows.size(); ++r) print_row(rows[r]);
}

std::string shape_description(const Qwen3Config& c) {
  return std::to_string(c.num_hidden_layers) + " layers, hidden " + std::to_string(c.hidden_size) +
         ", " + std::to_string(c.num_attention_heads) + " q / " +
         std::to_string(c.num_key_value_heads) + " kv heads of " + std::to_string(c.head_dim) +
         ", intermediate " + std::to_string(c.intermediate_size) + ", vocab " +
         std::to_string(c.vocab_size) + (c.tie_word_embeddings ? ", tied" : ", untied") +
         " embeddings";
}

// The directory's name, with the matrix type when --quant converted it.
std::string model_name(const Qwen3Model& model) {
  const std::string dir = model.dir().filename().string();
  if (model.converted_bytes() == 0) return dir;
  std::string type(dtype_name(model.matrix_dtype()));
  std::transform(type.begin(), type.end(), type.begin(), [](char ch) { return std::tolower(ch); });
  return dir + " --quant " + type;
}

// The kernels bf16 weights run on now, as the report names them.
std::string kernels_name() {
  return native_bf16_enabled() ? "native bf16" : "portable";
}

// "median of 3 samples (23.9-30.5), one before each repeat".
std::string sample_range(const std::vector<double>& samples) {
  const auto [lo, hi] = std::minmax_element(samples.begin(), samples.end());
  return "median of " + std::to_string(samples.size()) + " samples (" + fixed(*lo, 1) + "-" +
         fixed(*hi, 1) + "), one before each repeat";
}

std::vector<std::vector<std::string>> table_rows(const Qwen3Model& model, const Summary& s,
                                                 const BenchArgs& args, const Peaks& peaks,
                                                 const std::string& kernels) {
  const std::string name = model_name(model);
  const std::string size = fixed(static_cast<double>(model.weight_bytes()) / kGiB, 2) + " GiB";
  const std::string params = fixed(checkpoint_params(model.config()) / 1e9, 2) + " B";
  const std::string threads = std::to_string(args.threads);
  return {{name, size, params, threads, kernels, "pp" + std::to_string(args.prompt_tokens),
           fixed(s.prefill_tokens_per_second, 2), fixed(s.prefill_gflops, 1) + " GFLOP/s",
           percent(s.prefill_gflops / peaks.gflops) + " of " + fixed(peaks.gflops, 0) + " GFLOP/s"},
          {name, size, params, threads, kernels, "tg" + std::to_string(args.gen_tokens),
           fixed(s.decode_tokens_per_second, 2), fixed(s.decode_gbytes_per_second, 1) + " GB/s",
           percent(s.decode_gbytes_per_second / peaks.gbytes_per_second) + " of " +
               fixed(peaks.gbytes_per_second, 1) + " GB/s"}};
}

void print_report(const Qwen3Model& model, const Measurements& m, const Summary& s,
                  const Summary* portable, const BenchArgs& args, const Peaks& peaks,
                  std::ostream& out) {
  out << "model:   " << model.dir().string() << "\n"
      << "shape:   " << shape_description(model.config()) << "\n"
      << "weights: " << model.weight_bytes() << " bytes mapped; matrices "
      << dtype_name(model.matrix_dtype()) << ", " << model.decode_matrix_bytes()
      << " bytes read per token, " << model.converted_bytes() << " bytes converted and "
      << model.repacked_bytes() << " repacked at load; load " << fixed(m.load_seconds, 2) << " s\n"
      << "yardsticks: fp32 matmul " << fixed(peaks.gflops, 1) << " GFLOP/s ("
      << (peaks.measured_gflops ? "OpenBLAS sgemm 2048^3, best of 3 before the warm-up" : "given")
      << "), memory read " << fixed(peaks.gbytes_per_second, 1) << " GB/s ("
      << (peaks.measured_bandwidth ? std::to_string(args.threads) + " threads over 512 MiB, " +
                                         sample_range(peaks.bandwidth_samples)
                                   : std::string("given"))
      << "), bf16 dot products " << fixed(peaks.bf16_dot_gflops, 1) << " GFLOP/s (" << args.threads
      << " threads of vdpbf16ps on registers, best of 20), int8 dot products "
      << fixed(peaks.int8_dot_gops, 1) << " GOP/s (vpdpbusd, the same way)\n"
      << "bf16 prefill kernel: " << bf16_prefill_kernel() << "\n"
      << "KV cache: keys " << kv_cache_type_name(args.cache_types.keys) << ", values "
      << kv_cache_type_name(args.cache_types.values) << "\n\n";
  std::vector<std::vector<std::string>> rows = {
      {"model", "size", "params", "threads", "kernels", "test", "t/s", "achieved", "of peak"}};
  for (auto& row : table_rows(model, s, args, peaks, kernels_name()))
    rows.push_back(std::move(row));
  if (portable) {
    for (auto& row : table_rows(model, *portable, args, peaks, "portable")) {
      rows.push_back(std::move(row));
    }
  }
  print_table(rows, out);
  out << "\nmedian of " << args.repeats << " runs after a warm-up; prefill "
      << fixed(s.prefill_flops / 1e9, 1) << " GFLOP in " << fixed(s.prefill_seconds, 3)
      << " s; decode " << fixed(s.decode_bytes_per_token / 1e6, 1) << " MB read per token\n";
  if (peaks.bf16_dot_gflops > 0) {
    out << "prefill matmuls: " << fixed(s.prefill_matmul_flops / 1e9, 1) << " GFLOP, "
        << fixed(s.prefill_matmul_gflops, 1) << " GFLOP/s, "
        << percent(s.prefill_matmul_gflops / peaks.bf16_dot_gflops) << " of the bf16 peak ("
        << fixed(peaks.bf16_dot_gflops, 0) << " GFLOP/s)";
    // Block-quantized weights are multiplied on the bf16 GEMM too (widened
    // as they are packed; docs/quantization.md), so the bf16 peak is their
    // bound; the int8 one is shown beside it.
    if (is_block_quantized(model.matrix_dtype()) && peaks.int8_dot_gops > 0) {
      out << ", " << percent(s.prefill_matmul_gflops / peaks.int8_dot_gops) << " of the int8 peak ("
          << fixed(peaks.int8_dot_gops, 0) << " GOP/s)";
    }
    out << "\n";
  }
  if (portable) {
    out << "native vs portable kernels, repeats interleaved: prefill "
        << fixed(portable->prefill_seconds / s.prefill_seconds, 2) << "x, decode "
        << fixed(portable->decode_seconds / s.decode_seconds, 2) << "x\n";
  }
  out << "KV cache: " << fixed(static_cast<double>(m.kv_cache_bytes) / kMiB, 1)
      << " MiB | peak RSS (VmHWM): " << fixed(static_cast<double>(peak_resident_bytes()) / kMiB, 1)
      << " MiB\n"
      << "load average (1 min): " << fixed(m.load_at_start, 2) << " at start, "
      << fixed(m.load_at_end, 2) << " at end (this run adds up to " << args.threads
      << "; more means other processes shared the cores)\n";
  if (args.busy_threads > 0) {
    out << "busy: " << args.busy_threads
        << " thread(s) of this run spun on a core each while the runs were timed (--busy)\n";
  }
}

nlohmann::ordered_json speed_json(const Measurements& m, const Summary& s, const Peaks& peaks) {
  return {{"prefill",
           {{"seconds", m.prefill_seconds},
            {"median_seconds", s.prefill_seconds},
            {"tokens_per_second", s.prefill_tokens_per_second},
            {"flops", s.prefill_flops},
            {"gflops_per_second", s.prefill_gflops},
            {"peak_gflops_per_second", peaks.gflops},
            {"fraction_of_peak", s.prefill_gflops / peaks.gflops},
            {"matmul_flops", s.prefill_matmul_flops},
            {"matmul_gflops_per_second", s.prefill_matmul_gflops},
            {"bf16_peak_gflops_per_second", peaks.bf16_dot_gflops},
            {"fraction_of_bf16_peak",
             peaks.bf16_dot_gflops > 0 ? s.prefill_matmul_gflops / peaks.bf16_dot_gflops : 0.0},
            {"int8_peak_gops_per_second", peaks.int8_dot_gops},
            {"fraction_of_int8_peak",
             peaks.int8_dot_gops > 0 ? s.prefill_matmul_gflops / peaks.int8_dot_gops : 0.0}}},
          {"decode",
           {{"seconds", m.decode_seconds},
            {"median_seconds", s.decode_seconds},
            {"tokens_per_second", s.decode_tokens_per_second},
            {"bytes_per_token", s.decode_bytes_per_token},
            {"gbytes_per_second", s.decode_gbytes_per_second},
            {"peak_gbytes_per_second", peaks.gbytes_per_second},
            {"fraction_of_peak", s.decode_gbytes_per_second / peaks.gbytes_per_second}}}};
}

void print_batched(const std::vector<BatchedDecode>& batched, const BenchArgs& args,
                   std::ostream& out) {
  if (batched.empty()) return;
  out << "\nbatched decode (" << args.batch_prompt_tokens << "-token prompts, " << args.gen_tokens
      << " tokens each, median of " << args.repeats << ", batch sizes interleaved):\n";
  std::vector<std::vector<std::string>> rows = {{"batch", "t/s (all sequences)", "per sequence",
                                                 "vs batch " + std::to_string(batched[0].batch)}};
  for (const BatchedDecode& d : batched) {
    rows.push_back({std::to_string(d.batch), fixed(d.tokens_per_second, 2),
                    fixed(d.tokens_per_second / d.batch, 2),
                    fixed(d.tokens_per_second / batched[0].tokens_per_second, 2) + "x"});
  }
  print_table(rows, out);
}

void write_json(const Qwen3Model& model, const Timings& t, const Summary& s,
                const Summary* portable, const std::vector<BatchedDecode>& batched,
                const BenchArgs& args, const Peaks& peaks) {
  const Qwen3Config& c = model.config();
  const Measurements& m = t.native;
  nlohmann::ordered_json report = {
      {"model_dir", model.dir().string()},
      {"shape",
       {{"layers", c.num_hidden_layers},
        {"hidden", c.hidden_size},
        {"heads", c.num_attention_heads},
        {"kv_heads", c.num_key_value_heads},
        {"head_dim", c.head_dim},
        {"intermediate", c.intermediate_size},
        {"vocab", c.vocab_size},
        {"tied_embeddings", c.tie_word_embeddings}}},
      {"weight_bytes", model.weight_bytes()},
      {"matrix_dtype", dtype_name(model.matrix_dtype())},
      {"decode_matrix_bytes", model.decode_matrix_bytes()},
      {"converted_bytes", model.converted_bytes()},
      {"repacked_bytes", model.repacked_bytes()},
      {"load_seconds", m.load_seconds},
      {"threads", args.threads},
      {"prompt_tokens", args.prompt_tokens},
      {"gen_tokens", args.gen_tokens},
      {"repeats", args.repeats},
      {"busy_threads", args.busy_threads},
      {"kernels", kernels_name()},
      {"bf16_prefill_kernel", bf16_prefill_kernel()},
      {"cache_type_k", kv_cache_type_name(args.cache_types.keys)},
      {"cache_type_v", kv_cache_type_name(args.cache_types.values)},
      {"yardsticks",
       {{"sgemm_gflops_per_second", peaks.gflops},
        {"sgemm_measured", peaks.measured_gflops},
        {"read_gbytes_per_second", peaks.gbytes_per_second},
        {"read_measured", peaks.measured_bandwidth},
        {"read_samples", peaks.bandwidth_samples},
        {"bf16_dot_gflops_per_second", peaks.bf16_dot_gflops},
        {"int8_dot_gops_per_second", peaks.int8_dot_gops}}},
  };
  const nlohmann::ordered_json speed = speed_json(m, s, peaks);
  report["prefill"] = speed.at("prefill");
  report["decode"] = speed.at("decode");
  if (portable) report["portable"] = speed_json(t.portable, *portable, peaks);
  if (!batched.empty()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const BatchedDecode& d : batched) {
      list.push_back({{"batch", d.batch},
                      {"seconds", d.seconds},
                      {"tokens_per_second", d.tokens_per_second},
                      {"speedup", d.tokens_per_second / batched[0].tokens_per_second}});
    }
    report["batched_decode"] = {{"prompt_tokens", args.batch_prompt_tokens}, {"runs", list}};
  }
  report["kv_cache_bytes"] = m.kv_cache_bytes;
  report["peak_resident_bytes"] = peak_resident_bytes();
  report["load_average"] = {{"start", m.load_at_start}, {"end", m.load_at_end}};
  std::ofstream out(args.json_path);
  out << report.dump(2) << "\n";
  if (!out) throw Error("cannot write " + args.json_path);
}

Peaks given_peaks(const BenchArgs& args) {
  Peaks p;
  p.measured_bandwidth = args.peak_gbytes_per_second <= 0;
  p.measured_gflops = args.peak_gflops <= 0;
  p.gbytes_per_second = args.peak_gbytes_per_second;
  p.gflops = args.peak_gflops;
  return p;
}

int run(const BenchArgs& args) {
  const double load_at_start = load_average();
  set_num_threads(args.threads);
  Peaks peaks = given_peaks(args);
  const Qwen3Config config = bench_config(args.layers);
  const fs::path dir =
      args.model_dir.empty() ? default_model_dir(config) : fs::path(args.model_dir);
  if (!fs::exists(dir / "config.json")) write_bench_model(dir, config);
  const auto t0 = std::chrono::steady_clock::now();
  Qwen3LoadOptions options;
  if (!args.quant.empty()) options.quant = parse_quant_type(args.quant, "--quant");
  const Qwen3Model model = Qwen3Model::load(dir, options);
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<std::int32_t> prompt =
      make_prompt(args.prompt_tokens, model.config().vocab_size);
  std::optional<BusyThreads> busy;
  if (args.busy_threads > 0) busy.emplace(args.busy_threads);
  Timings t = measure(model, prompt, args, peaks);
  const std::vector<BatchedDecode> batched = measure_batched_decode(model, args);
  busy.reset();
  if (peaks.measured_bandwidth) peaks.gbytes_per_second = median(peaks.bandwidth_samples);
  Measurements& m = t.native;
  m.load_seconds = load_seconds;
  m.load_at_start = load_at_start;
  m.load_at_end = load_average();
  const Summary s = summarize(model, m, args);
  const Summary portable = args.portable_baseline ? summarize(model, t.portable, args) : Summary{};
  const Summary* baseline = args.portable_baseline ? &portable : nullptr;
  print_report(model, m, s, baseline, args, peaks, std::cout);
  print_batched(batched, args, std::cout);
  if (!args.json_path.empty()) write_json(model, t, s, baseline, batched, args, peaks);
  return 0;
}

}  // namespace
}  // namespace lclm

int main(int argc, char** argv) {
  CLI::App app{"Prefill and decode speed of lclm on a Qwen3-0.6B-shaped model (random weights)."};
  lclm::BenchArgs args;
  app.add_option("--model-dir", args.model_dir,
                 "Model directory; written once with random weights (seed 0, bf16) when it has no "
                 "config.json [default: ${XDG_CACHE_HOME:-~/.cache}/lclm/bench-qwen3-0.6b-bf16]");
  app.add_option("-t,--threads", args.threads, "Threads")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--prompt", args.prompt_tokens, "Prompt (prefill) tokens")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--gen", args.gen_tokens, "Generated (decode) tokens")
      ->check(CLI::Range(2, 1 << 20))
      ->capture_default_str();
  app.add_option("--repeats", args.repeats, "Timed runs; medians are reported")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--layers", args.layers,
                 "Override the layer count for a quick run (its own default model directory)")
      ->check(CLI::PositiveNumber);
  app.add_option("--json", args.json_path, "Also write the results to this JSON file");
  app.add_option("--quant", args.quant,
                 "Convert the matrices to this block type at load; decode's bandwidth bound "
                 "then counts their quantized bytes")
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
  const auto cache_type = [](lclm::DType& type, const char* flag) {
    return [&type, flag](const std::string& name) {
      try {
        type = lclm::parse_kv_cache_type(name, flag);
      } catch (const lclm::Error& e) {
        throw CLI::ValidationError(e.what());
      }
    };
  };
  app.add_option_function<std::string>("--cache-type-k",
                                       cache_type(args.cache_types.keys, "--cache-type-k"),
                                       "What the KV cache stores keys as: f32, f16, bf16, q8_0, "
                                       "q4_0 [default: bf16, as the engine]");
  app.add_option_function<std::string>("--cache-type-v",
                                       cache_type(args.cache_types.values, "--cache-type-v"),
                                       "What the KV cache stores values as [default: bf16]");
  app.add_option("--peak-gflops", args.peak_gflops,
                 "The machine's fp32 matmul peak, GFLOP/s (the prefill yardstick; default: "
                 "OpenBLAS sgemm measured in this run)")
      ->check(CLI::PositiveNumber);
  app.add_option("--peak-bandwidth", args.peak_gbytes_per_second,
                 "The machine's memory read bandwidth, GB/s (the decode yardstick; default: "
                 "measured in this run with --threads threads)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--portable-baseline", args.portable_baseline,
               "Also time the portable (Highway + OpenBLAS) kernels with the native bf16 ones "
               "off, each repeat right after the native one, and print both");
  app.add_option("--batch", args.batches,
                 "Also time decode of this many sequences at once, for each size given "
                 "(e.g. --batch 1,2,4,8): one forward pass per step for all of them")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  app.add_option("--batch-prompt", args.batch_prompt_tokens,
                 "Prompt tokens of each sequence in the batched decode runs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--busy", args.busy_threads,
                 "Keep this many cores busy while the runs are timed (threads spinning), as "
                 "other work on a shared machine does: how much decode keeps when it loses a core")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return lclm::run(args);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
