#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <ostream>

#include "cli/commands.h"

namespace lclm {

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app{
      "lclm: inference for Latent Context Language Models (Qwen3 encoder + decoder) on CPU.\n"
      "Run `lclm COMMAND --help` for the options of a command."};
  app.name("lclm");
  app.require_subcommand(1);
  app.set_version_flag("--version", "lclm 0.1.0");
  const std::vector<cli::Command> commands = {
      cli::add_generate_command(app), cli::add_compress_command(app),
      cli::add_info_command(app),     cli::add_tokenize_command(app),
      cli::add_agent_command(app),    cli::add_serve_command(app),
      cli::add_eval_command(app),     cli::add_bench_command(app),
      cli::add_quantize_command(app)};

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    out << "lclm 0.1.0\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    err << "error: " << e.what() << " (see lclm --help)\n";
    return 2;
  }

  try {
    for (const cli::Command& c : commands) {
      if (c.app->parsed()) return c.run(out, err);
    }
  } catch (const std::exception& e) {
    err << "error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}

}  // namespace lclm
