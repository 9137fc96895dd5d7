// Runs a test body once per instruction set the Highway kernels were
// compiled for, so each target's code path is tested on one machine.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>

#include "hwy/targets.h"

namespace lclm::testing {

// Runs f once for every instruction set the kernels were compiled for and
// this CPU runs (AVX-512, AVX2, SSE4, ... here), so that each target's code
// path (one, two or four vectors a block) is tested, then restores the best.
template <typename F>
void for_each_target(F&& f) {
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    SCOPED_TRACE(hwy::TargetName(target));
    f();
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

}  // namespace lclm::testing
