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

std::size_t peak_resident_bytes() {
  return status_kib("VmHWM:");
}
bool reset_peak_resident() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}
std::size_t current_resident_bytes() {
  return status_kib("VmRSS:");
}

}  // namespace lclm
