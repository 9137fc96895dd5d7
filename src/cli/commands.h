// The subcommands of `lclm`. Each adds itself to the app and returns the work
// to run when it is the command the user chose.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iosfwd>

namespace lclm::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int(std::ostream& out, std::ostream& err)> run;
};

Command add_generate_command(CLI::App& app);
Command add_tokenize_command(CLI::App& app);
Command add_compress_command(CLI::App& app);
Command add_info_command(CLI::App& app);
Command add_agent_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_quantize_command(CLI::App& app);
Command add_chat_command(CLI::App& app);

}  // namespace lclm::cli
