// Renders a batch of cases with Python's jinja2 in Hugging Face's
// environment (tests/runtime/render_template.py, run by LCLM_PYTHON), the
// reference the renderer must match byte for byte.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace lclm::test {

// A rendering, or the error that stopped it.
struct Rendered {
  bool ok = false;
  std::string text;
};

// One result per case (see render_template.py for the two forms of a
// case); nullopt when the reference cannot run (jinja2 missing: exit 77).
inline std::optional<std::vector<Rendered>> render_reference(const nlohmann::ordered_json& cases,
                                                             const std::string& tag) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(LCLM_BINARY_DIR) / "jinja_reference";
  fs::create_directories(dir);
  const std::string stem = tag + "-" + std::to_string(::getpid());
  const fs::path in = dir / (stem + ".cases.json"), out = dir / (stem + ".out.json");
  std::ofstream(in) << cases.dump();
  const std::string command = std::string(LCLM_PYTHON) + " " + LCLM_SOURCE_DIR +
                              "/tests/runtime/render_template.py " + in.string() + " " +
                              out.string();
  const int status = std::system(command.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) return std::nullopt;
  EXPECT_EQ(status, 0) << command;
  std::ifstream result(out);
  const nlohmann::json results = nlohmann::json::parse(result, nullptr, false);
  fs::remove(in);
  fs::remove(out);
  std::vector<Rendered> rendered;
  if (results.is_discarded() || results.size() != cases.size()) {
    ADD_FAILURE() << "the reference wrote no result for every case: " << command;
    return rendered;
  }
  for (const auto& r : results) {
    if (r.contains("output")) {
      rendered.push_back({true, r["output"].get<std::string>()});
    } else {
      rendered.push_back({false, r["error"].get<std::string>()});
    }
  }
  return rendered;
}

// Both rendered the same bytes, or both failed.
inline void expect_same(const Rendered& ours, const Rendered& reference, const std::string& what) {
  if (ours.ok && reference.ok) {
    if (ours.text == reference.text) return;
    std::size_t at = 0;
    while (at < ours.text.size() && at < reference.text.size() &&
           ours.text[at] == reference.text[at]) {
      ++at;
    }
    const std::size_t from = at > 80 ? at - 80 : 0;
    ADD_FAILURE() << what << "\nfirst difference at byte " << at << " of " << ours.text.size()
                  << " (lclm) and " << reference.text.size() << " (jinja2) after\n"
                  << ours.text.substr(from, at - from) << "\nlclm:   " << ours.text.substr(at, 80)
                  << "\njinja2: " << reference.text.substr(at, 80);
  } else if (ours.ok) {
    ADD_FAILURE() << what << "\njinja2 failed (" << reference.text << ") but lclm rendered:\n"
                  << ours.text;
  } else if (reference.ok) {
    ADD_FAILURE() << what << "\nlclm failed (" << ours.text << ") but jinja2 rendered:\n"
                  << reference.text;
  }
}

}  // namespace lclm::test
