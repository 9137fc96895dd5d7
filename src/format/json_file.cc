#include "format/json_file.h"

#include <cstdint>
#include <fstream>
#include <limits>
#include <type_traits>

#include "util/error.h"

namespace lclm {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open " + path.string());
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) throw Error(path.string() + ": not valid JSON");
  return j;
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out.flush()) throw Error("cannot write " + path.string());
}

template <typename T>
T require_key(const nlohmann::json& j, const std::string& key, const std::filesystem::path& file) {
  if (!j.contains(key)) throw Error(file.string() + ": missing key \"" + key + "\"");
  // nlohmann converts 4.5 to 4 when asked for an integer: refuse it instead.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const nlohmann::json& v = j[key];
    if (v.is_number_float()) {
      throw Error(file.string() + ": key \"" + key + "\" must be an integer, not " + v.dump());
    }
    // ... and wraps 2^64 - 1 to -1: refuse what T cannot hold.
    const bool too_big = v.is_number_unsigned() &&
                         v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<T>::max());
    const bool too_small = v.is_number_integer() && !v.is_number_unsigned() &&
                           (v.get<std::int64_t>() < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
                            v.get<std::int64_t>() > static_cast<std::int64_t>(std::numeric_limits<T>::max()));
    if (too_big || too_small) {
      throw Error(file.string() + ": key \"" + key + "\" is out of range: " + v.dump());
    }
  }
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(file.string() + ": key \"" + key + "\" has the wrong type (" + j[key].type_name() +
                ")");
  }
}

template int require_key<int>(const nlohmann::json&, const std::string&,
                              const std::filesystem::path&);
template std::int64_t require_key<std::int64_t>(const nlohmann::json&, const std::string&,
                                                const std::filesystem::path&);
template double require_key<double>(const nlohmann::json&, const std::string&,
                                    const std::filesystem::path&);
template bool require_key<bool>(const nlohmann::json&, const std::string&,
                                const std::filesystem::path&);
template std::string require_key<std::string>(const nlohmann::json&, const std::string&,
                                              const std::filesystem::path&);

}  // namespace lclm
