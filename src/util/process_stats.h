// Memory figures of the running process, reported by every run.
#pragma once

#include <cstddef>

namespace lclm {

// Peak resident set size so far (VmHWM), in bytes.
std::size_t peak_resident_bytes();
// Current resident set size (VmRSS), in bytes.
std::size_t current_resident_bytes();

}  // namespace lclm
