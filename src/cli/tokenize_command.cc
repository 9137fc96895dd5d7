// lclm tokenize: the ids (and pieces) of a text under a model's tokenizer.
#include <filesystem>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace lclm::cli {
namespace {

namespace fs = std::filesystem;

struct TokenizeArgs {
  std::string model;
  PromptSource prompt;
  bool ids_only = false;
  bool json = false;
};

// A model directory, an LCLM checkpoint (its decoder), or a tokenizer.json.
Tokenizer load_tokenizer(const fs::path& path) {
  if (fs::is_directory(path / "decoder")) return Tokenizer::from_dir(path / "decoder");
  if (fs::is_directory(path)) return Tokenizer::from_dir(path);
  if (fs::exists(path)) return Tokenizer::from_file(path);
  throw Error("model directory not found: " + path.string());
}

int run(const TokenizeArgs& a, std::ostream& out) {
  if (!a.prompt.given()) throw Error("tokenize needs text: -p TEXT or -f FILE");
  const Tokenizer tokenizer = load_tokenizer(a.model);
  const std::vector<std::int32_t> ids = tokenizer.encode(a.prompt.read());
  if (a.json) {
    out << nlohmann::json(ids).dump() << "\n";
  } else if (a.ids_only) {
    for (std::size_t i = 0; i < ids.size(); ++i) out << (i ? " " : "") << ids[i];
    out << "\n";
  } else {
    for (std::int32_t id : ids) {
      out << std::setw(7) << id << " "
          << nlohmann::json(tokenizer.token_bytes(id))
                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
          << "\n";
    }
    out << ids.size() << " tokens\n";
  }
  return 0;
}

}  // namespace

Command add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("-m,--model", args->model,
                  "Model directory, LCLM checkpoint (decoder tokenizer) or tokenizer.json")
      ->required();
  args->prompt.add_options(*cmd);
  cmd->add_flag("--ids", args->ids_only, "Print only the ids, space-separated");
  cmd->add_flag("--json", args->json, "Print the ids as a JSON array");
  return {cmd, [args](std::ostream& out, std::ostream&) { return run(*args, out); }};
}

}  // namespace lclm::cli
