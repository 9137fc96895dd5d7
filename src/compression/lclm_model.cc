#include "compression/lclm_model.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "compression/memory_regions.h"
#include "format/json_file.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace lclm {
namespace {

namespace fs = std::filesystem;

void require_memory_tokens(const Tokenizer& tokenizer, const fs::path& decoder_dir) {
  for (std::string_view t : {kMemoryStart, kMemoryEnd, kMemoryPlaceholder}) {
    if (!tokenizer.token_id(t)) {
      throw Error(decoder_dir.string() + "/tokenizer.json lacks the special token " +
                  std::string(t) +
                  "; an LCLM decoder tokenizer adds <|memory_start|>, "
                  "<|memory_end|> and <|memory|>");
    }
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::size_t latent_count(std::size_t n_tokens, const LclmConfig& config) {
  // ceil(T / r) per window of W (a multiple of r), at least one per window;
  // in closed form, so a forged or huge token count costs nothing.
  const auto W = static_cast<std::size_t>(config.encoder_window_size);
  const auto r = static_cast<std::size_t>(config.compression_ratio);
  const std::size_t rest = n_tokens % W;
  return n_tokens / W * (W / r) + (rest ? (rest + r - 1) / r : 0);
}

std::size_t longest_token_bytes(const Tokenizer& tokenizer) {
  std::size_t longest = 1;
  for (std::size_t id = 0; id < tokenizer.size(); ++id) {
    longest = std::max(longest, tokenizer.token_bytes(static_cast<std::int32_t>(id)).size());
  }
  return longest;
}

std::string describe_positions(std::size_t positions, std::size_t plain_tokens, std::size_t latents,
                               bool at_least) {
  return (at_least ? "at least " : "") + std::to_string(positions) + " positions (" +
         std::to_string(plain_tokens) + " tokens + " + std::to_string(latents) + " latents)";
}

PromptTooLong::PromptTooLong(std::size_t positions_, std::size_t limit_, bool at_least_,
                             std::size_t plain_tokens_, std::size_t latents_)
    : Error("the prompt is " + describe_positions(positions_, plain_tokens_, latents_, at_least_) +
            ", which does not fit the context of " + std::to_string(limit_ + 1) +
            " tokens with room to generate (raise it with -c)"),
      positions(positions_),
      limit(limit_),
      plain_tokens(plain_tokens_),
      latents(latents_),
      at_least(at_least_) {}

std::string PromptTooLong::sizes() const {
  return describe_positions(positions, plain_tokens, latents, at_least);
}

void LclmModel::XXH3State::operator()(XXH3_state_t* s) const {
  XXH3_freeState(s);
}

std::int32_t encoder_pad_token_id(const fs::path& encoder_dir, const Tokenizer& tokenizer) {
  std::string pad = "<|endoftext|>";
  const fs::path config = encoder_dir / "tokenizer_config.json";
  if (fs::exists(config)) {
    const auto j = read_json_file(config);
    if (j.contains("pad_token") && j["pad_token"].is_string()) pad = j["pad_token"];
  }
  const auto id = tokenizer.token_id(pad);
  if (!id) throw Error(encoder_dir.string() + ": the encoder tokenizer has no pad token " + pad);
  return *id;
}

bool LclmModel::is_checkpoint(const fs::path& dir) {
  return fs::is_directory(dir) && fs::exists(dir / "model_config.json");
}

LclmModel::LclmModel(const fs::path& dir, LclmConfig file_config, const LclmOptions& options)
    : dir_(dir),
      file_config_(std::move(file_config)),
      config_(options.compression_ratio ? file_config_.at_ratio(*options.compression_ratio)
                                        : file_config_),
      decoder_(Qwen3Model::load(dir / "decoder", {.quant = options.quant})),
      encoder_(Qwen3Model::load(dir / "encoder", {.quant = options.quant, .lm_head = false})),
      decoder_tokenizer_(Tokenizer::from_dir(dir / "decoder")),
      encoder_tokenizer_(Tokenizer::from_dir(dir / "encoder")),
      adapter_(Adapter::load(dir / "adapter" / "adapter.safetensors", config_, encoder_.config(),
                             decoder_.config())),
      latent_encoder_(encoder_, encoder_pad_token_id(dir / "encoder", encoder_tokenizer_)),
      cache_(std::make_unique<LatentCache>(options.memory_cache_bytes, options.cache_store)) {
  require_memory_tokens(decoder_tokenizer_, dir / "decoder");
  longest_decoder_token_ = longest_token_bytes(decoder_tokenizer_);
  longest_encoder_token_ = longest_token_bytes(encoder_tokenizer_);
  memory_id_ = *decoder_tokenizer_.token_id(kMemoryPlaceholder);
  if (static_cast<std::int64_t>(decoder_tokenizer_.size()) > decoder_.config().vocab_size) {
    throw Error(
        dir.string() + ": the decoder tokenizer has " + std::to_string(decoder_tokenizer_.size()) +
        " tokens but the decoder's vocab_size is " + std::to_string(decoder_.config().vocab_size));
  }
}

std::unique_ptr<LclmModel> LclmModel::load(const fs::path& dir, const LclmOptions& options) {
  if (!fs::is_directory(dir)) throw Error("checkpoint directory not found: " + dir.string());
  for (const char* part : {"decoder", "encoder", "adapter"}) {
    if (!fs::is_directory(dir / part)) {
      throw Error(dir.string() + " is not an LCLM checkpoint: " + part + "/ is missing");
    }
  }
  return std::unique_ptr<LclmModel>(
      new LclmModel(dir, LclmConfig::from_file(dir / "model_config.json"), options));
}

LclmConfig LclmModel::config_at(std::optional<std::int64_t> ratio) const {
  if (!ratio || *ratio == config_.compression_ratio) return config_;
  return file_config_.at_ratio(*ratio);
}

void LclmModel::hash_files() {
  files_hash_.reset(XXH3_createState());
  XXH3_state_t* state = files_hash_.get();
  XXH3_128bits_reset(state);
  const auto hash_file = [&](const fs::path& p) {
    const MappedFile f(p);
    XXH3_128bits_update(state, f.bytes().data(), f.size());
  };
  hash_file(dir_ / "model_config.json");
  hash_file(dir_ / "encoder" / "config.json");
  hash_file(dir_ / "encoder" / "tokenizer.json");
  if (fs::exists(dir_ / "encoder" / "tokenizer_config.json")) {
    hash_file(dir_ / "encoder" / "tokenizer_config.json");  // eos pooling's pad token
  }
  hash_file(dir_ / "decoder" / "config.json");
  hash_file(dir_ / "adapter" / "adapter.safetensors");
  std::vector<fs::path> weights;
  for (const auto& e : fs::directory_iterator(dir_ / "encoder")) {
    if (e.path().extension() == ".safetensors") weights.push_back(e.path());
  }
  std::sort(weights.begin(), weights.end());
  for (const fs::path& p : weights) hash_file(p);
}

const std::string& LclmModel::fingerprint(std::optional<std::int64_t> ratio) {
  const LclmConfig config = config_at(ratio);
  if (const auto it = fingerprints_.find(config.compression_ratio); it != fingerprints_.end()) {
    return it->second;
  }
  if (!files_hash_) hash_files();
  const std::unique_ptr<XXH3_state_t, XXH3State> state(XXH3_createState());
  XXH3_copyState(state.get(), files_hash_.get());
  // The encoder's matrix type: latents computed with matrices converted at
  // load (--quant) differ from those of the stored weights.
  const std::int64_t settings[] = {config.compression_ratio, config.encoder_window_size,
                                   static_cast<std::int64_t>(encoder_.matrix_dtype())};
  XXH3_128bits_update(state.get(), settings, sizeof settings);
  const XXH128_hash_t h = XXH3_128bits_digest(state.get());
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return fingerprints_[config.compression_ratio] = hex;
}

std::optional<Latents> LclmModel::cached_latents(const LatentKey& key, const LclmConfig& config,
                                                 LatentSource* source) {
  std::optional<Latents> cached = cache_->find(key, source);
  if (!cached) return cached;
  const std::size_t count = latent_count(cached->n_tokens, config);
  const bool fits = cached->dim == adapter_.output_dim() && cached->count() == count &&
                    cached->data.size() == count * cached->dim;
  return fits ? cached : std::nullopt;
}

Latents LclmModel::encode_latents(std::span<const std::int32_t> tokens,
                                  const LclmConfig& config) const {
  const std::vector<float> pooled = latent_encoder_.encode_region(tokens, config);
  Latents latents;
  latents.n_tokens = tokens.size();
  latents.dim = adapter_.output_dim();
  latents.data = adapter_.apply(pooled.data(), pooled.size() / latent_encoder_.pooled_dim(config));
  return latents;
}

Latents LclmModel::compress(std::string_view text, std::optional<std::int64_t> ratio,
                            bool* cache_hit) {
  const LclmConfig config = config_at(ratio);
  const LatentKey key = latent_key(fingerprint(config.compression_ratio), text);
  if (auto cached = cached_latents(key, config)) {
    if (cache_hit) *cache_hit = true;
    return std::move(*cached);
  }
  if (cache_hit) *cache_hit = false;
  Latents latents = encode_latents(encoder_tokenizer_.encode(text), config);
  cache_->store(key, latents);
  return latents;
}

PreparedPrompt LclmModel::prepare(std::string_view prompt, std::optional<std::int64_t> ratio,
                                  std::size_t max_positions, std::span<const Latents> supplied) {
  const auto t0 = std::chrono::steady_clock::now();
  const LclmConfig config = config_at(ratio);  // a bad ratio fails before any work
  const std::vector<PromptSegment> segments = split_memory_regions(prompt, !supplied.empty());
  const auto latent_slots = static_cast<std::size_t>(std::count_if(
      segments.begin(), segments.end(), [](const PromptSegment& s) { return s.slot; }));
  if (latent_slots != supplied.size()) {
    throw Error(std::to_string(supplied.size()) + " set(s) of latents given for " +
                std::to_string(latent_slots) + " latent slot(s) in the prompt");
  }
  for (const Latents& l : supplied) {
    if (l.dim != adapter_.output_dim() || l.count() == 0 || l.data.size() != l.count() * l.dim) {
      throw Error("latents of width " + std::to_string(l.dim) + " (" + std::to_string(l.count()) +
                  " rows) do not fit this decoder's " + std::to_string(adapter_.output_dim()));
    }
  }

  // The budget first, cheapest check first: bytes (no token is longer than
  // the vocabulary's longest), then tokens, and only then the encoder.
  if (max_positions > 0) {
    std::size_t plain_bytes = 0, latents = 0;
    for (const PromptSegment& s : segments) {
      if (s.slot) {
        latents += 2;  // the markers; the slot's own rows are added below
      } else if (s.compressed) {
        latents += latent_count(s.text.size() / longest_encoder_token_, config) + 2;
      } else {
        plain_bytes += s.text.size();
      }
    }
    const std::size_t plain = plain_bytes / longest_decoder_token_;
    for (const Latents& l : supplied) latents += l.count();
    if (plain + latents > max_positions) {
      throw PromptTooLong(plain + latents, max_positions, true, plain, latents);
    }
  }

  // Each region's latents from the cache, or its tokens to encode.
  struct Region {
    LatentKey key;
    std::optional<Latents> latents;
    std::vector<std::int32_t> tokens;
  };
  std::vector<Region> regions;
  std::vector<std::size_t> counts;
  std::size_t next_supplied = 0;
  PreparedPrompt out;
  const std::string& fp = fingerprint(config.compression_ratio);
  for (const PromptSegment& s : segments) {
    if (!s.compressed) continue;
    Region r;
    r.key = latent_key(fp, s.text);
    std::size_t n_tokens = 0;
    if (s.slot) {
      const Latents& given = supplied[next_supplied++];
      n_tokens = given.n_tokens;
      counts.push_back(given.count());
      out.stats.compressed_tokens += n_tokens;
      out.stats.latents += given.count();
      r.latents = given;
      regions.push_back(std::move(r));
      continue;
    }
    LatentSource source = LatentSource::kMemory;
    if (auto cached = cached_latents(r.key, config, &source)) {
      n_tokens = cached->n_tokens;
      r.latents = std::move(cached);
      ++out.stats.cache_hits;
      if (source == LatentSource::kRemote) ++out.stats.remote_hits;
    } else {
      r.tokens = encoder_tokenizer_.encode(s.text);
      n_tokens = r.tokens.size();
    }
    counts.push_back(latent_count(n_tokens, config));
    out.stats.compressed_tokens += n_tokens;
    out.stats.latents += counts.back();
    regions.push_back(std::move(r));
  }
  out.stats.regions = regions.size();
  out.ids = decoder_tokenizer_.encode(placeholder_prompt(segments, counts));
  out.stats.plain_tokens = out.ids.size() - out.stats.latents;
  if (max_positions > 0 && out.ids.size() > max_positions) {
    throw PromptTooLong(out.ids.size(), max_positions, false, out.stats.plain_tokens,
                        out.stats.latents);
  }
  for (Region& r : regions) {
    if (r.latents) continue;
    r.latents = encode_latents(r.tokens, config);
    cache_->store(r.key, *r.latents);
  }
  out.stats.compress_seconds = seconds_since(t0);

  const auto D = static_cast<std::size_t>(decoder_.config().hidden_size);
  out.embeddings.resize(out.ids.size() * D);
  decoder_.embed(out.ids, out.embeddings.data());

  // Splice: the k-th <|memory|> position takes the k-th latent, region by region.
  std::vector<const float*> rows;
  for (const Region& r : regions) {
    for (std::size_t i = 0; i < r.latents->count(); ++i)
      rows.push_back(r.latents->data.data() + i * D);
  }
  const auto slots =
      static_cast<std::size_t>(std::count(out.ids.begin(), out.ids.end(), memory_id_));
  if (slots != rows.size()) {
    throw Error("the decoder tokenizer produced " + std::to_string(slots) +
                " <|memory|> positions for " + std::to_string(rows.size()) + " latents");
  }
  std::size_t next = 0;
  for (std::size_t i = 0; i < out.ids.size(); ++i) {
    if (out.ids[i] == memory_id_) std::copy_n(rows[next++], D, out.embeddings.data() + i * D);
  }
  return out;
}

}  // namespace lclm
