#include "server/serving_model.h"

#include "compression/memory_regions.h"
#include "util/error.h"

namespace lclm::server {

std::unique_ptr<ServingModel> ServingModel::load(const std::filesystem::path& dir,
                                                 const LclmOptions& options) {
  if (LclmModel::is_checkpoint(dir)) {
    return std::make_unique<ServingModel>(LclmModel::load(dir, options));
  }
  return std::unique_ptr<ServingModel>(
      new ServingModel(dir, Qwen3Model::load(dir), Tokenizer::from_dir(dir)));
}

ServingModel::ServingModel(std::unique_ptr<LclmModel> lclm)
    : dir_(lclm->dir()), lclm_(std::move(lclm)) {}

ServingModel::ServingModel(const std::filesystem::path& dir, Qwen3Model model, Tokenizer tokenizer)
    : dir_(dir), plain_(std::move(model)), plain_tokenizer_(std::move(tokenizer)) {}

PreparedPrompt ServingModel::prepare(const std::string& prompt) {
  if (lclm_) return lclm_->prepare(prompt);
  if (prompt.find(kMemoryStart) != std::string::npos) {
    throw Error(dir_.string() +
                " is not an LCLM checkpoint (no model_config.json): memory regions need one");
  }
  PreparedPrompt p;
  p.ids = plain_tokenizer_->encode(prompt);
  p.embeddings.resize(p.ids.size() * static_cast<std::size_t>(plain_->config().hidden_size));
  plain_->embed(p.ids, p.embeddings.data());
  p.stats.plain_tokens = p.ids.size();
  return p;
}

}  // namespace lclm::server
