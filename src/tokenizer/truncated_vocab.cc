#include "tokenizer/truncated_vocab.h"

#include <nlohmann/json.hpp>
#include <string>

#include "format/json_file.h"
#include "util/error.h"

namespace lclm {

namespace fs = std::filesystem;

namespace {

// A merge is "left right" in older tokenizer.json files, [left, right] in newer.
std::string merged_token(const nlohmann::json& merge) {
  if (merge.is_array()) return merge.at(0).get<std::string>() + merge.at(1).get<std::string>();
  const std::string s = merge.get<std::string>();
  const std::size_t space = s.find(' ');
  if (space == std::string::npos) throw Error("malformed merge \"" + s + "\"");
  return s.substr(0, space) + s.substr(space + 1);
}

}  // namespace

std::int64_t write_truncated_tokenizer(const fs::path& in_dir, const fs::path& out_dir,
                                       std::int64_t vocab) {
  const fs::path in = in_dir / "tokenizer.json";
  nlohmann::json tokenizer = read_json_file(in);
  nlohmann::json& model = tokenizer.at("model");
  nlohmann::json& merges = model.at("merges");
  const auto full = static_cast<std::int64_t>(model.at("vocab").size());
  if (vocab <= 256 || vocab > full) {
    throw Error("truncated vocabulary of " + std::to_string(vocab) + " tokens: " + in.string() +
                " has " + std::to_string(full) + "; give 257.." + std::to_string(full));
  }
  const nlohmann::json& ids = model.at("vocab");
  for (std::int64_t k = 0; k < vocab - 256; ++k) {
    const std::string token = merged_token(merges.at(static_cast<std::size_t>(k)));
    const auto found = ids.find(token);
    if (found == ids.end() || found->get<std::int64_t>() != 256 + k) {
      throw Error(in.string() + ": merge " + std::to_string(k) + " does not make token " +
                  std::to_string(256 + k) +
                  "; only tokenizers whose merges make their tokens in id order can be cut");
    }
  }
  nlohmann::json kept = nlohmann::json::object();
  for (const auto& [token, id] : ids.items()) {
    if (id.get<std::int64_t>() < vocab) kept[token] = id;
  }
  model["vocab"] = std::move(kept);
  merges.erase(merges.begin() + (vocab - 256), merges.end());
  std::int64_t next = vocab;
  for (auto& added : tokenizer.at("added_tokens")) added["id"] = next++;

  fs::create_directories(out_dir);
  write_text_file(out_dir / "tokenizer.json", tokenizer.dump());
  const fs::path config_path = in_dir / "tokenizer_config.json";
  if (fs::exists(config_path)) {
    nlohmann::json config = read_json_file(config_path);
    // It maps the full tokenizer's ids; special tokens are found by name.
    config.erase("added_tokens_decoder");
    write_text_file(out_dir / "tokenizer_config.json", config.dump(2));
  }
  return next;
}

}  // namespace lclm
