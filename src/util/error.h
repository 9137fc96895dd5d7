// Errors the engine reports to its users. Every message names the file, tensor
// or flag at fault so the user can act on it.
#pragma once

#include <stdexcept>
#include <string>

namespace lclm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace lclm
