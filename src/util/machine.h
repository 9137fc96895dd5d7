// What machine a figure was measured on, to print beside it: the CPU model
// and count and the instruction-set features the kernels choose by.
#pragma once

#include <string>

namespace lclm {

// "AMD EPYC 9B45, 2 CPUs, avx512f avx512_bf16 avx512_vnni, no amx" (from
// /proc/cpuinfo; "unknown CPU, N CPUs" where it cannot be read).
std::string machine_description();

}  // namespace lclm
