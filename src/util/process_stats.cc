#include "util/process_stats.h"

#include <fstream>
#include <string>

namespace lclm {
namespace {

// Reads a "Key:   1234 kB" line of /proc/self/status.
std::size_t status_kib(const std::string& key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key, 0) == 0) {
      return std::stoull(line.substr(key.size())) * 1024;
    }
  }
  return 0;
}

}  // namespace

std::size_t peak_resident_bytes() { return status_kib("VmHWM:"); }
std::size_t current_resident_bytes() { return status_kib("VmRSS:"); }

}  // namespace lclm
