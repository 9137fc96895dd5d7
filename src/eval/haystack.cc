#include "eval/haystack.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
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
      throw Error("haystack text " + p.string() + " does not exist" + default_haystack_hint(p));
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

namespace {

// The Debian packages whose copyright files are the default haystack: those
// scripts/install_deps.sh names and those of priority required, so every
// machine set up by it has the same text, whatever else is installed (a
// glob over /usr/share/doc took in any package installed later, and moved
// the shipped model's recall). All start with m-z: the trainer reads
// common-licenses and packages a-l. nodejs is left out, since
// install_deps.sh accepts a Node.js from elsewhere, and mount and
// python3-dev, whose files are util-linux's and python3's.
constexpr std::array<std::string_view, 23> kHaystackPackages = {
    "manpages-zh",
    "mawk",
    "ncurses-base",
    "ncurses-bin",
    "ninja-build",
    "nlohmann-json3-dev",
    "passwd",
    "perl-base",
    "pkg-config",
    "pybind11-dev",
    "python3",
    "python3-jinja2",
    "python3-numpy",
    "python3-pybind11",
    "python3-torch",
    "redis-server",
    "sed",
    "sensible-utils",
    "sysvinit-utils",
    "tar",
    "tzdata",
    "unicode-data",
    "util-linux",
};

const fs::path kDocDir = "/usr/share/doc";

}  // namespace

std::vector<fs::path> default_haystack_paths() {
  std::vector<fs::path> files;
  for (std::string_view package : kHaystackPackages) {
    files.push_back(kDocDir / std::string(package) / "copyright");
  }
  return files;
}

std::string default_haystack_hint(const fs::path& missing) {
  for (std::string_view package : kHaystackPackages) {
    if (missing == kDocDir / std::string(package) / "copyright") {
      return " (a file of the default haystack, the copyright files of " +
             std::to_string(kHaystackPackages.size()) +
             " Debian packages scripts/install_deps.sh installs: install " + std::string(package) +
             ", or give other text with --haystack)";
    }
  }
  return "";
}

}  // namespace lclm
