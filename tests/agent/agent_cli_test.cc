// `lclm agent` end to end on a tiny random LCLM.
#include <gtest/gtest.h>

#include "agent/agent_cli_check.h"
#include "core/test_models.h"
#include "fixtures/random_lclm.h"

namespace lclm {
namespace {

TEST(AgentCli, RunsOnATinyLclm) {
  const auto dir = testing::scratch_dir("agent_cli");
  RandomLclmSpec spec = tiny_lclm_spec(testing::qwen3_tokenizer_dir());
  spec.seed = 9;
  write_random_lclm(dir / "ckpt", spec);
  const nlohmann::json t = testing::run_and_check((dir / "ckpt").string(), 3);
  EXPECT_EQ(t["rounds"][1]["cache_hits"], t["chunks"].size());

  const auto usage = testing::cli({"agent", "-m", (dir / "ckpt").string(), "-q", "x"});
  EXPECT_EQ(usage.code, 2);
  const auto rounds = testing::cli(
      {"agent", "-m", (dir / "ckpt").string(), "-f", "x", "-q", "x", "--max-rounds", "1"});
  EXPECT_EQ(rounds.code, 2);
}

}  // namespace
}  // namespace lclm
