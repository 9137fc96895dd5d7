// `lclm agent` on the shipped model (label e2e): skipped until models/lclm-small is committed.
#include <filesystem>

#include "agent/agent_cli_check.h"

namespace lclm {
namespace {

TEST(AgentCli, RunsOnTheShippedModel) {
  const auto ckpt = std::filesystem::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
  if (!std::filesystem::exists(ckpt)) GTEST_SKIP() << ckpt << " is not there yet";
  testing::run_and_check(ckpt.string(), 5);
}

}  // namespace
}  // namespace lclm
