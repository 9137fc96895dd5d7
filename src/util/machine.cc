#include "util/machine.h"

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

namespace lclm {

std::string machine_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && model == "unknown CPU") model = value;
    if (key == "flags" && flags.empty()) {
      std::istringstream words(value);
      for (std::string f; words >> f;) flags.insert(f);
    }
  }
  std::string out = model + ", " + std::to_string(std::thread::hardware_concurrency()) + " CPUs";
  std::string have;
  for (const char* f : {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"}) {
    if (flags.count(f)) have += std::string(have.empty() ? "" : " ") + f;
  }
  if (!flags.empty()) out += ", " + (have.empty() ? std::string("no AVX2") : have);
  if (!flags.empty() && !flags.count("amx_tile")) out += ", no AMX";
  return out;
}

}  // namespace lclm
