// The `lclm` command line. Lives in the library so tests can drive it in-process.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace lclm {

// Runs `lclm ARGS...`; returns the process exit code: 0 on success, 1 when the
// work failed (one line "error: ..." on err), 2 for bad usage.
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace lclm
