#include "eval/haystack.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "util/error.h"

namespace lclm {

namespace fs = std::filesystem;

Haystack Haystack::from_paths(const std::vector<fs::path>& paths) {
  if (paths.empty()) throw Error("no haystack text: give files or directories (--haystack)");
  std::vector<fs::path> files;
  for (const fs::path& p : paths) {
    if (fs::is_directory(p)) {
      const std::size_t first = files.size();
      for (const auto& e : fs::directory_iterator(p)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin() + static_cast<std::ptrdiff_t>(first), files.end());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      throw Error("haystack text " + p.string() + " does not exist");
    }
  }
  Haystack h;
  std::unordered_set<std::string> seen;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (text.str().find("<|") != std::string::npos) continue;
    for (std::string word; text >> word;) {
      const bool plain =
          word.size() >= 4 && word.size() <= 10 &&
          std::all_of(word.begin(), word.end(), [](char c) { return c >= 'a' && c <= 'z'; });
      if (plain && seen.insert(word).second) h.vocabulary_.push_back(word);
      h.words_.push_back(std::move(word));
    }
  }
  if (h.words_.empty()) throw Error("no haystack text (words) under the given paths");
  return h;
}

std::vector<std::string> Haystack::words(std::mt19937_64& rng, std::size_t n) const {
  std::vector<std::string> out;
  out.reserve(n);
  for (std::size_t i = rng() % words_.size(); out.size() < n; i = (i + 1) % words_.size()) {
    out.push_back(words_[i]);
  }
  return out;
}

std::vector<fs::path> default_haystack_paths() {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/share/doc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] < 'm' || name[0] > 'z') continue;
    if (fs::is_regular_file(e.path() / "copyright", ec)) files.push_back(e.path() / "copyright");
  }
  // As bash sorts the glob in the C locale, whole strings (manpages-dev/
  // before manpages/), so the samples are those of the documented commands.
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.string() < b.string(); });
  return files;
}

}  // namespace lclm
