#include "cli/common.h"

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "compression/memory_regions.h"
#include "format/quant_blocks.h"
#include "runtime/chat_template.h"
#include "util/error.h"
#include "util/process_stats.h"
#include "util/threads.h"

namespace lclm::cli {

namespace {

// Reads at most kMaxInputBytes from `in`: /dev/zero or an endless pipe ends
// in an error instead of taking all memory.
std::string read_bounded(std::istream& in, const std::string& what, const std::string& path) {
  std::string out;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<std::size_t>(in.gcount()));
    if (out.size() > kMaxInputBytes) {
      throw Error(what + " " + path + " is larger than " + std::to_string(kMaxInputBytes >> 20) +
                  " MiB");
    }
  }
  if (in.bad()) throw Error("cannot read " + what + " " + path);
  return out;
}

}  // namespace

std::string read_file(const std::string& path, const std::string& what) {
  if (path == "-") return read_bounded(std::cin, what, "(standard input)");
  if (std::filesystem::is_directory(path)) {
    throw Error(what + " " + path + " is a directory, not a file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + what + " " + path);
  return read_bounded(in, what, path);
}

std::string compose_prompt(std::string text, const std::optional<std::string>& document) {
  if (!document) return text;
  return std::string(kMemoryStart) + *document + std::string(kMemoryEnd) +
         (text.empty() ? "" : "\n" + text);
}

std::string chat_turn(const Engine& engine, const std::string& system, const std::string& text) {
  std::vector<ChatMessage> messages;
  if (!system.empty()) messages.push_back({"system", system});
  messages.push_back({"user", text});
  return engine.chat_template().render(messages_json(messages), true);
}

void PromptSource::add_options(CLI::App& app) {
  auto* p = app.add_option("-p,--prompt", text, "Prompt text");
  auto* f = app.add_option("-f,--file", file, "Read the prompt from this file (-: standard input)");
  p->excludes(f);
}

std::string PromptSource::read() const {
  return file.empty() ? text : read_file(file, "prompt file");
}

void QuantArg::add_option(CLI::App& app) {
  app.add_option("--quant", type,
                 "Convert the projection and lm_head matrices to this block type at load "
                 "(see `lclm quantize` to store them converted)")
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
}

std::optional<DType> QuantArg::value() const {
  if (type.empty()) return std::nullopt;
  return parse_quant_type(type, "--quant");
}

void LclmArgs::add_options(CLI::App& app) {
  quant.add_option(app);
  const auto cache_types = CLI::IsMember(kv_cache_type_names());
  app.add_option("--cache-type-k", cache_type_k,
                 "What the KV cache stores keys as (-ctk; q8_0/q4_0: head_dim a multiple of 32)")
      ->capture_default_str()
      ->check(cache_types);
  app.add_option("--cache-type-v", cache_type_v, "What the KV cache stores values as (-ctv)")
      ->capture_default_str()
      ->check(cache_types);
  app.add_option("--ratio", ratio,
                 "Compression ratio: encoder tokens per latent (default: the checkpoint's)")
      ->check(CLI::NonNegativeNumber);
  // A malformed URL is a usage error here, before the model loads.
  const CLI::Validator store_location(
      [](std::string& location) {
        try {
          check_latent_store_options({.location = location});
        } catch (const Error& e) {
          // CLI11 names the flag itself, in front of the message.
          std::string why = e.what();
          constexpr std::string_view flag = "--latent-cache ";
          if (why.starts_with(flag)) why.erase(0, flag.size());
          return why;
        }
        return std::string();
      },
      "FILE|redis://HOST:PORT[/DB]");
  app.add_option("--latent-cache", latent_cache,
                 "Where compressed regions are kept across runs: an SQLite file (created if "
                 "missing) or a Redis server that several processes share, "
                 "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (or the password in "
                 "LCLM_REDIS_PASSWORD, kept off the command line; no TLS)")
      ->check(store_location);
  app.add_option("--latent-cache-ttl", latent_cache_ttl,
                 "Redis only: a region's latents expire this many seconds after their last use "
                 "(0: never)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{10} * 365 * 24 * 3600));  // 10 years
}

void ChatTemplateArg::add_option(CLI::App& app) {
  app.add_option("--chat-template", file,
                 "A Jinja chat template to render chats with, or \"chatml\" (default: the "
                 "model's tokenizer_config.json chat_template, else ChatML)");
}

EngineOptions LclmArgs::engine_options(int threads) const {
  EngineOptions o;
  o.threads = threads;
  if (ratio > 0) o.ratio = ratio;
  o.latent_store = {.location = latent_cache, .ttl_seconds = latent_cache_ttl};
  o.quant = quant.value();
  o.cache_types = {parse_kv_cache_type(cache_type_k, "--cache-type-k"),
                   parse_kv_cache_type(cache_type_v, "--cache-type-v")};
  return o;
}

std::pair<std::int32_t, float> parse_logit_bias(const std::string& value) {
  const std::size_t sign = value.find_first_of("+-", 1);
  const auto fail = [&]() -> std::pair<std::int32_t, float> {
    throw Error("--logit-bias '" + value +
                "': expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043+1");
  };
  if (sign == std::string::npos || sign == 0) return fail();
  std::size_t used = 0;
  long long id = 0;
  float bias = 0;
  try {
    id = std::stoll(value.substr(0, sign), &used);
    if (used != sign || id < 0 || id > std::numeric_limits<std::int32_t>::max()) return fail();
    bias = std::stof(value.substr(sign), &used);
    if (used != value.size() - sign) return fail();
  } catch (const std::logic_error&) {
    return fail();
  }
  if (!(bias >= -100.0f && bias <= 100.0f)) {
    throw Error("--logit-bias '" + value + "': the bias must be in [-100, 100]");
  }
  return {static_cast<std::int32_t>(id), bias};
}

void add_generation_options(CLI::App& app, GenerationOptions& options, std::int64_t& seed,
                            int& threads) {
  SamplingParams& s = options.sampling;
  app.add_option("-n,--n-predict", options.n_predict, "Tokens to generate (-1: until a stop token)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 30));
  app.add_option("-c,--ctx-size", options.context,
                 "Context size in tokens (0: the model's maximum)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 30));
  app.add_option("-b,--batch-size", options.prefill_chunk, "Prompt tokens per prefill pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--temp", s.temperature, "Temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k", s.top_k, "Keep the k most likely tokens (0: all)")
      ->capture_default_str();
  app.add_option("--top-p", s.top_p, "Nucleus sampling mass (1: off)")->capture_default_str();
  app.add_option("--min-p", s.min_p, "Drop tokens below min-p x the top probability (0: off)")
      ->capture_default_str();
  app.add_option("--repeat-penalty", s.repeat_penalty, "Penalty on recent tokens (1: off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", s.repeat_last_n, "How many recent tokens the penalties cover")
      ->capture_default_str();
  app.add_option("--frequency-penalty", s.frequency_penalty,
                 "Subtracted from a token's logit per occurrence in the last --repeat-last-n "
                 "tokens, in [-2, 2] (0: off)")
      ->capture_default_str();
  app.add_option("--presence-penalty", s.presence_penalty,
                 "Subtracted once from the logit of each token in the last --repeat-last-n "
                 "tokens, in [-2, 2] (0: off)")
      ->capture_default_str();
  app.add_option_function<std::vector<std::string>>(
         "-l,--logit-bias",
         [&s](const std::vector<std::string>& values) {
           try {
             for (const std::string& v : values) s.logit_bias.push_back(parse_logit_bias(v));
           } catch (const Error& e) {
             throw CLI::ValidationError(e.what());
           }
         },
         "Add BIAS to the logit of token TOKEN_ID, written TOKEN_ID+BIAS or TOKEN_ID-BIAS "
         "(llama.cpp's form; -l 15043-100 bans token 15043); repeatable")
      ->type_name("TOKEN_ID(+/-)BIAS");
  app.add_option("-s,--seed", seed, "Random seed (-1: random, printed at the end)")
      ->capture_default_str();
  app.add_option("-t,--threads", threads, "Threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, kMaxThreads));
}

std::uint64_t resolve_seed(std::int64_t seed) {
  return seed >= 0 ? static_cast<std::uint64_t>(seed) : std::random_device{}();
}

void print_load_time(std::ostream& err, double seconds) {
  err << std::fixed << std::setprecision(1) << "load " << seconds * 1e3 << " ms | ";
}

void print_prompt_stats(std::ostream& err, const PromptStats& s) {
  if (s.regions == 0) {
    err << "prompt " << s.plain_tokens << " tokens | ";
    return;
  }
  err << std::fixed << std::setprecision(1) << "prompt " << s.plain_tokens + s.latents
      << " positions: " << s.plain_tokens << " plain tokens + " << s.compressed_tokens
      << " tokens in " << s.regions << " region(s) compressed to " << s.latents << " latents ("
      << (s.latents ? static_cast<double>(s.compressed_tokens) / s.latents : 0.0)
      << "x), cache hits " << s.cache_hits;
  if (s.remote_hits > 0) err << " (" << s.remote_hits << " from Redis)";
  err << ", compress " << s.compress_seconds * 1e3 << " ms | ";
}

GenerationStats generate_to(std::ostream& out, Session& session, const PreparedPrompt& prompt,
                            const GenerationOptions& options, const Tokenizer& tokenizer) {
  Utf8Stream stream;
  const GenerationStats stats = session.generate(prompt, options, [&](std::int32_t id) {
    out << stream.push(tokenizer.token_bytes(id)) << std::flush;
    return true;
  });
  out << stream.flush() << "\n" << std::flush;
  return stats;
}

void print_generation_stats(std::ostream& err, const GenerationStats& s, double ttft_extra_seconds,
                            std::uint64_t seed) {
  const double ttft = s.ttft_seconds + ttft_extra_seconds;
  err << std::fixed << std::setprecision(1) << "TTFT " << ttft * 1e3 << " ms (prefill "
      << s.prompt_tokens / std::max(s.ttft_seconds, 1e-9) << " tok/s) | generated "
      << s.generated_tokens << " tokens, " << s.decode_tokens_per_second() << " tok/s | stop "
      << stop_reason_name(s.stop) << " | seed " << seed << " | KV cache " << s.kv_cache_bytes / kMiB
      << " MiB | peak RSS " << peak_resident_bytes() / kMiB << " MiB\n";
}

void write_stats_json(const std::string& path, double load_seconds, const PromptStats& prompt,
                      const GenerationStats& s, std::uint64_t seed) {
  const nlohmann::json j = {{"load_ms", load_seconds * 1e3},
                            {"ttft_ms", (s.ttft_seconds + prompt.compress_seconds) * 1e3},
                            {"compress_ms", prompt.compress_seconds * 1e3},
                            {"prompt_positions", s.prompt_tokens},
                            {"plain_tokens", prompt.plain_tokens},
                            {"compressed_tokens", prompt.compressed_tokens},
                            {"latents", prompt.latents},
                            {"regions", prompt.regions},
                            {"cache_hits", prompt.cache_hits},
                            {"remote_cache_hits", prompt.remote_hits},
                            {"generated_tokens", s.generated_tokens},
                            {"decode_tokens_per_s", s.decode_tokens_per_second()},
                            {"stop", std::string(stop_reason_name(s.stop))},
                            {"seed", seed},
                            {"kv_cache_bytes", s.kv_cache_bytes},
                            {"peak_rss_bytes", peak_resident_bytes()},
                            {"tokens", s.tokens}};
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error("cannot write " + path);
}

}  // namespace lclm::cli
