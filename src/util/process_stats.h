// Memory figures of the running process, reported by every run.
#pragma once

#include <cstddef>

namespace lclm {

// Peak resident set size so far (VmHWM), in bytes.
std::size_t peak_resident_bytes();
// Resets the peak resident set size to the current one (Linux's
// /proc/self/clear_refs); false where the kernel does not allow it, and the
// peak then keeps counting from the start of the process.
bool reset_peak_resident();
// Current resident set size (VmRSS), in bytes.
std::size_t current_resident_bytes();

}  // namespace lclm
