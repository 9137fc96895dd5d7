// The model `lclm serve` runs: an LCLM checkpoint (prompts may hold memory
// regions) or a plain Qwen3 model directory. Used by the worker thread only.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "compression/lclm_model.h"
#include "model/qwen3_model.h"
#include "tokenizer/tokenizer.h"

namespace lclm::server {

class ServingModel {
 public:
  static std::unique_ptr<ServingModel> load(const std::filesystem::path& dir,
                                            const LclmOptions& options);
  explicit ServingModel(std::unique_ptr<LclmModel> lclm);

  // Throws lclm::Error for a bad region, or any region with a plain model.
  PreparedPrompt prepare(const std::string& prompt);

  LclmModel* lclm() { return lclm_.get(); }
  const LclmModel* lclm() const { return lclm_.get(); }
  const Qwen3Model& decoder() const { return lclm_ ? lclm_->decoder() : *plain_; }
  const Tokenizer& tokenizer() const {
    return lclm_ ? lclm_->decoder_tokenizer() : *plain_tokenizer_;
  }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  ServingModel(const std::filesystem::path& dir, Qwen3Model model, Tokenizer tokenizer);

  std::filesystem::path dir_;
  std::unique_ptr<LclmModel> lclm_;
  std::optional<Qwen3Model> plain_;
  std::optional<Tokenizer> plain_tokenizer_;
};

}  // namespace lclm::server
