// A published LCLM checkpoint: CKPT/model_config.json, decoder/ (Qwen3 causal
// LM with the memory tokens), encoder/ (Qwen3 encoder), adapter/. Turns prompts
// with <|memory_start|>...<|memory_end|> regions into decoder input embeddings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "compression/adapter.h"
#include "compression/latent_cache.h"
#include "compression/latent_encoder.h"
#include "compression/lclm_config.h"
#include "model/qwen3_model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

struct XXH3_state_s;
typedef struct XXH3_state_s XXH3_state_t;

namespace lclm {

struct LclmOptions {
  // The ratio of calls that name none (default: model_config.json's).
  std::optional<std::int64_t> compression_ratio;
  std::optional<DType> quant;  // decoder and encoder matrices converted at load (Q8_0, Q4_0)
  std::size_t memory_cache_bytes = 256u << 20;  // in-memory latent cache
  LatentStoreOptions cache_store;               // the SQLite file or Redis server behind it
};

// What building one prompt took.
struct PromptStats {
  std::size_t regions = 0;
  std::size_t compressed_tokens = 0;  // encoder tokens inside the regions
  std::size_t latents = 0;            // decoder positions they became
  std::size_t plain_tokens = 0;       // every other decoder position
  std::size_t cache_hits = 0;         // regions whose latents came from the cache
  std::size_t remote_hits = 0;        // of those, from the Redis store (another process's)
  double compress_seconds = 0;
};

// The decoder's input: ids (placeholders where latents go) and embeddings.
struct PreparedPrompt {
  std::vector<std::int32_t> ids;
  std::vector<float> embeddings;  // [ids.size(), decoder hidden]
  PromptStats stats;
};

// A prompt that would take more decoder positions than allowed (limit: the
// context less one position to generate into), found before any region is
// compressed: positions is exact, or a lower bound when at_least (the bytes
// alone ruled it out, before tokenizing).
class PromptTooLong : public Error {
 public:
  PromptTooLong(std::size_t positions, std::size_t limit, bool at_least, std::size_t plain_tokens,
                std::size_t latents);
  // "[at least ]N positions (P tokens + L latents)".
  std::string sizes() const;
  std::size_t positions, limit, plain_tokens, latents;
  bool at_least;
};

// "412 positions (12 tokens + 400 latents)", with "at least " before a lower bound.
std::string describe_positions(std::size_t positions, std::size_t plain_tokens, std::size_t latents,
                               bool at_least = false);

// Latents a region of n encoder tokens yields at `config`: ceil(len / r) per
// window, at least one per window.
std::size_t latent_count(std::size_t n_tokens, const LclmConfig& config);
// The most bytes one token decodes to (every text of B bytes has at least
// B / this many tokens).
std::size_t longest_token_bytes(const Tokenizer& tokenizer);

// The token eos pooling appends after each window: the encoder's pad_token
// from tokenizer_config.json, else <|endoftext|>, as the reference does.
std::int32_t encoder_pad_token_id(const std::filesystem::path& encoder_dir,
                                  const Tokenizer& encoder_tokenizer);

class LclmModel {
 public:
  static bool is_checkpoint(const std::filesystem::path& dir);
  // The latent encoder refers to this object's encoder: it never moves.
  LclmModel(const LclmModel&) = delete;
  LclmModel& operator=(const LclmModel&) = delete;
  // Throws lclm::Error naming the file, tensor or field at fault.
  static std::unique_ptr<LclmModel> load(const std::filesystem::path& dir,
                                         const LclmOptions& options = {});

  // The config at the default ratio (the load option's, else the file's).
  const LclmConfig& config() const { return config_; }
  // The config at `ratio` (none: the default): model_config.json's window cut
  // to a multiple of it. Throws lclm::Error for a ratio the checkpoint cannot
  // run (<= 0; any but its own with concat pooling).
  LclmConfig config_at(std::optional<std::int64_t> ratio) const;
  const Qwen3Model& decoder() const { return decoder_; }
  const Qwen3Model& encoder() const { return encoder_; }
  const Tokenizer& decoder_tokenizer() const { return decoder_tokenizer_; }
  const Tokenizer& encoder_tokenizer() const { return encoder_tokenizer_; }
  const Adapter& adapter() const { return adapter_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::int32_t memory_token_id() const { return memory_id_; }

  // Adapter outputs for one region's text at `ratio` (none: the default):
  // ceil(T / r) rows of decoder width. Looked up in the latent cache first,
  // stored there after.
  Latents compress(std::string_view text, std::optional<std::int64_t> ratio = std::nullopt,
                   bool* cache_hit = nullptr);

  // Splits the prompt into regions, compresses each at `ratio` (none: the
  // default), and splices the latents into the decoder's embeddings in place
  // of the <|memory|> placeholders. max_positions > 0: throws PromptTooLong
  // for a prompt of more decoder positions, found from its bytes and then its
  // tokens before any region is encoded (cached regions cost a lookup).
  // supplied: latents computed earlier (a latents file, checked by the
  // caller against fingerprint()), one for each kLatentSlot region of the
  // prompt, in order; a count that differs is an error.
  PreparedPrompt prepare(std::string_view prompt, std::optional<std::int64_t> ratio = std::nullopt,
                         std::size_t max_positions = 0, std::span<const Latents> supplied = {});

  // Hash of everything the latents depend on (model_config, encoder config,
  // tokenizer files and weights, adapter, the decoder config that shapes
  // mlp_attn layers, the ratio and window in force at `ratio`); the files are
  // hashed once, each ratio's settings added to that.
  const std::string& fingerprint(std::optional<std::int64_t> ratio = std::nullopt);
  const LatentCache& cache() const { return *cache_; }
  LatentCache& cache() { return *cache_; }

 private:
  LclmModel(const std::filesystem::path& dir, LclmConfig file_config, const LclmOptions& options);

  std::filesystem::path dir_;
  LclmConfig file_config_;  // model_config.json as stored
  LclmConfig config_;       // at the default ratio
  Qwen3Model decoder_, encoder_;
  Tokenizer decoder_tokenizer_, encoder_tokenizer_;
  Adapter adapter_;
  LatentEncoder latent_encoder_;
  std::int32_t memory_id_ = -1;
  std::size_t longest_decoder_token_ = 1, longest_encoder_token_ = 1;
  std::unique_ptr<LatentCache> cache_;
  struct XXH3State {
    void operator()(XXH3_state_t* s) const;
  };
  // The cache's latents for `key`, if they have the shape this model makes
  // for their token count: a row of another width or count (a damaged or
  // foreign cache file) is recomputed, never spliced.
  std::optional<Latents> cached_latents(const LatentKey& key, const LclmConfig& config,
                                        LatentSource* source = nullptr);
  Latents encode_latents(std::span<const std::int32_t> tokens, const LclmConfig& config) const;
  // The fingerprint's files, hashed once; each ratio's settings go on a copy.
  void hash_files();
  std::unique_ptr<XXH3_state_t, XXH3State> files_hash_;
  std::map<std::int64_t, std::string> fingerprints_;  // by ratio
};

}  // namespace lclm
