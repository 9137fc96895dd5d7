// Real text to hide needles in: the words of files every Debian system has,
// read once and joined with single spaces. By default held-out text: the
// copyright files of packages m-z, which the trainer never reads (it draws
// from /usr/share/common-licenses and packages a-l, scripts/train_small.sh).
#pragma once

#include <cstddef>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace lclm {

class Haystack {
 public:
  // Regular files, and the regular files of directories (sorted by name);
  // files containing "<|" (special-token syntax) are skipped. Throws
  // lclm::Error naming the path when one is missing or no words are found.
  static Haystack from_paths(const std::vector<std::filesystem::path>& paths);

  // n consecutive words of the corpus from a random start, wrapping from the
  // last file to the first.
  std::vector<std::string> words(std::mt19937_64& rng, std::size_t n) const;
  // Distinct lowercase alphabetic words of 4 to 10 letters, in first-seen order.
  const std::vector<std::string>& vocabulary() const { return vocabulary_; }
  std::size_t size() const { return words_.size(); }

 private:
  std::vector<std::string> words_;
  std::vector<std::string> vocabulary_;
};

// The default haystack: /usr/share/doc/PACKAGE/copyright for a fixed list
// of 23 Debian packages (m-z, held out from the trainer's text) that every
// machine set up by scripts/install_deps.sh has; docs/evaluation.md lists
// them. The same files whatever else is installed.
std::vector<std::filesystem::path> default_haystack_paths();
// For a path of default_haystack_paths(), what to do when it is missing
// (which package to install); "" for any other path.
std::string default_haystack_hint(const std::filesystem::path& missing);

}  // namespace lclm
