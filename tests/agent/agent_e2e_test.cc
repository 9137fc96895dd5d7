// `lclm agent` on the shipped model models/lclm-small (label e2e).
#include <filesystem>

#include "agent/agent_cli_check.h"

namespace lclm {
namespace {

TEST(AgentCli, RunsOnTheShippedModel) {
  const auto ckpt = std::filesystem::path(LCLM_SOURCE_DIR) / "models" / "lclm-small";
  testing::run_and_check(ckpt.string(), 5);
}

}  // namespace
}  // namespace lclm
