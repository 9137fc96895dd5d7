// Pieces the `lclm` commands share: prompt input, model loading, and the
// stats line every run ends with.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>

#include "compression/lclm_model.h"
#include "runtime/engine.h"
#include "runtime/generator.h"

namespace lclm::cli {

// Where the prompt text comes from: -p TEXT or -f FILE.
struct PromptSource {
  std::string text;
  std::string file;

  void add_options(CLI::App& app);
  std::string read() const;
  bool given() const { return !text.empty() || !file.empty(); }
};

// A text input: a file, a pipe (-f <(cmd)) or, for "-", standard input;
// `what` names it in errors. A directory, or more than kMaxInputBytes, is an
// error naming the path.
inline constexpr std::size_t kMaxInputBytes = std::size_t{256} << 20;
std::string read_file(const std::string& path, const std::string& what);

// The prompt a run reads: `document` (when given) as one memory region
// before `text`.
std::string compose_prompt(std::string text, const std::optional<std::string>& document);
// `text` as the user's turn (after a system turn when `system` is not
// empty) in the model's chat template, the assistant's turn opened.
std::string chat_turn(const Engine& engine, const std::string& system, const std::string& text);

// --quant q8_0|q4_0: the block type matrices are converted to at load.
struct QuantArg {
  std::string type;  // empty: as stored

  void add_option(CLI::App& app);
  std::optional<DType> value() const;
};

// Options that load an LCLM checkpoint (and --quant, which plain models take too).
struct LclmArgs {
  std::int64_t ratio = 0;             // 0: the checkpoint's
  std::string latent_cache;           // an SQLite file or redis://HOST:PORT[/DB]
  std::int64_t latent_cache_ttl = 0;  // seconds, Redis only (0: never expire)
  QuantArg quant;
  std::string cache_type_k = "bf16", cache_type_v = "bf16";

  void add_options(CLI::App& app);
  // With the -t value, which the engine applies on every thread that runs it.
  EngineOptions engine_options(int threads) const;
};

// --chat-template FILE|chatml: how chat messages become a prompt, instead of
// the model's own template (tokenizer_config.json chat_template).
struct ChatTemplateArg {
  std::string file;  // empty: the model's

  void add_option(CLI::App& app);
  // The engine options of `lclm` with this template.
  EngineOptions apply(EngineOptions o) const {
    if (!file.empty()) o.chat_template = file;
    return o;
  }
};

// -n, -c, -b, the sampling flags, -s and -t, with the current values as defaults.
void add_generation_options(CLI::App& app, GenerationOptions& options, std::int64_t& seed,
                            int& threads);
// "15043+1" / "15043-100" (llama.cpp's --logit-bias form) -> (token id,
// bias); throws lclm::Error naming the flag and the value otherwise.
std::pair<std::int32_t, float> parse_logit_bias(const std::string& value);
// A seed of -1 picks a random one.
std::uint64_t resolve_seed(std::int64_t seed);

constexpr double kMiB = 1024.0 * 1024.0;

// "load 120 ms | ..." head of the stats line.
void print_load_time(std::ostream& err, double seconds);
// Prompt tokens; with memory regions also tokens in, latents out, effective
// compression, cache hits and compression time.
void print_prompt_stats(std::ostream& err, const PromptStats& s);
// TTFT, decode speed, stop reason, seed, KV cache, peak RSS.
// Generates on `session`, writing each piece of the answer to `out` as it
// comes (whole UTF-8 characters), then a newline.
GenerationStats generate_to(std::ostream& out, Session& session, const PreparedPrompt& prompt,
                            const GenerationOptions& options, const Tokenizer& tokenizer);
void print_generation_stats(std::ostream& err, const GenerationStats& s, double ttft_extra_seconds,
                            std::uint64_t seed);

// The same figures as the stats line, as JSON: load_ms, ttft_ms (compression
// included), compress_ms, prompt_positions, plain_tokens, compressed_tokens,
// latents, regions, cache_hits, remote_cache_hits, generated_tokens,
// decode_tokens_per_s, stop, seed, kv_cache_bytes, peak_rss_bytes, and the
// generated token ids.
void write_stats_json(const std::string& path, double load_seconds, const PromptStats& prompt,
                      const GenerationStats& s, std::uint64_t seed);

}  // namespace lclm::cli
