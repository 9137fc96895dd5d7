// Reading JSON config files with errors that name the file and the key, and
// writing small text files (configs, tokenizers).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace lclm {

// Throws lclm::Error when the file is missing or not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

// Writes text to path (replacing it); throws lclm::Error when it cannot.
void write_text_file(const std::filesystem::path& path, const std::string& text);

// j[key] as T; throws lclm::Error naming the file and key when absent or
// mistyped (a number with a fraction where an integer is wanted included).
template <typename T>
T require_key(const nlohmann::json& j, const std::string& key, const std::filesystem::path& file);

template <typename T>
T key_or(const nlohmann::json& j, const std::string& key, T fallback,
         const std::filesystem::path& file) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return require_key<T>(j, key, file);
}

}  // namespace lclm
