// Runs `lclm agent` on a checkpoint and checks what every run must satisfy.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/cli_runner.h"
#include "core/test_models.h"

namespace lclm::testing {

inline std::string lighthouse_log() {
  std::string doc;
  for (int i = 0; i < 40; ++i) {
    doc += "On night " + std::to_string(i) + " the lighthouse keeper counted " +
           std::to_string(i * 7 % 31) + " ships passing the northern cape. ";
  }
  return doc;
}

// Runs the agent and checks what every run must satisfy: the answer on stdout
// is the transcript's, round 1 expands, no more rounds than allowed.
inline nlohmann::json run_and_check(const std::string& ckpt, int max_rounds) {
  const auto dir = scratch_dir("agent_cli_run");
  write_text(dir / "doc.txt", lighthouse_log());
  const auto r =
      cli({"agent", "-m", ckpt, "-f", (dir / "doc.txt").string(), "-q",
           "How many ships on night 12?", "--max-rounds", std::to_string(max_rounds),
           "--chunk-tokens", "120", "--transcript", (dir / "t.json").string(), "-n", "24"});
  EXPECT_EQ(r.code, 0) << r.err;
  std::ifstream in(dir / "t.json");
  const nlohmann::json t = nlohmann::json::parse(in);
  EXPECT_EQ(r.out, t["answer"].get<std::string>() + "\n");
  EXPECT_GT(t["chunks"].size(), 2u);
  EXPECT_GE(t["rounds"].size(), 2u);
  EXPECT_LE(t["rounds"].size(), static_cast<std::size_t>(max_rounds));
  EXPECT_EQ(t["rounds"][0]["rule"], "must_expand");
  EXPECT_FALSE(t["rounds"][0]["expanded"].empty());
  EXPECT_EQ(count_lines(r.err), 2 + static_cast<int>(t["rounds"].size())) << r.err;
  return t;
}

}  // namespace lclm::testing
