// Encodes every {"text": ...} line of a JSONL corpus with lclm's tokenizer,
// reports encode throughput, and optionally writes the ids as {"ids": [...]}
// lines and compares them with a reference file of the same shape. It also
// checks that decoding gives the text back: exactly for NFC text, up to
// canonical equivalence otherwise (the tokenizer normalizes to NFC).
#include <utf8proc.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace {

using nlohmann::json;

std::vector<std::string> read_texts(const std::filesystem::path& corpus) {
  std::ifstream in(corpus);
  if (!in) throw lclm::Error("cannot open " + corpus.string());
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line)) {
    const json doc = json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.contains("text") || !doc["text"].is_string()) {
      throw lclm::Error(corpus.string() + ":" + std::to_string(texts.size() + 1) +
                        ": not a {\"text\": ...} line");
    }
    texts.push_back(doc["text"].get<std::string>());
  }
  return texts;
}

std::vector<std::vector<std::int32_t>> read_ids(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw lclm::Error("cannot open " + file.string());
  std::vector<std::vector<std::int32_t>> all_ids;
  std::string line;
  while (std::getline(in, line)) {
    const json doc = json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.contains("ids") || !doc["ids"].is_array()) {
      throw lclm::Error(file.string() + ":" + std::to_string(all_ids.size() + 1) +
                        ": not an {\"ids\": [...]} line");
    }
    all_ids.push_back(doc["ids"].get<std::vector<std::int32_t>>());
  }
  return all_ids;
}

std::string nfc(const std::string& text) {
  utf8proc_uint8_t* normalized = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &normalized,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(normalized, &std::free);
  if (length < 0) throw lclm::Error(std::string("NFC failed: ") + utf8proc_errmsg(length));
  return {reinterpret_cast<const char*>(normalized), static_cast<std::size_t>(length)};
}

// `bytes` as a quoted string: valid UTF-8 as JSON escapes it, other bytes
// (a token or snippet that cuts a character) as \xNN.
std::string quoted(const std::string& bytes) {
  std::string out = "\"";
  const auto* cursor = reinterpret_cast<const utf8proc_uint8_t*>(bytes.data());
  auto remaining = static_cast<utf8proc_ssize_t>(bytes.size());
  while (remaining > 0) {
    utf8proc_int32_t code_point = 0;
    const utf8proc_ssize_t length = utf8proc_iterate(cursor, remaining, &code_point);
    if (length > 0) {
      const std::string character(reinterpret_cast<const char*>(cursor), length);
      const std::string escaped = json(character).dump();
      out += escaped.substr(1, escaped.size() - 2);
      cursor += length;
      remaining -= length;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof(hex), "\\x%02X", *cursor);
      out += hex;
      ++cursor;
      --remaining;
    }
  }
  return out + "\"";
}

void print_ids_around(const char* label, const lclm::Tokenizer& tokenizer,
                      const std::vector<std::int32_t>& ids, std::size_t position) {
  const std::size_t begin = position >= 4 ? position - 4 : 0;
  const std::size_t end = std::min(ids.size(), position + 8);
  std::cout << "  " << label << " ids [" << begin << ", " << end << ") of " << ids.size() << ":";
  for (std::size_t i = begin; i < end; ++i) {
    std::cout << (i == position ? "  >>" : "  ") << ids[i];
    if (ids[i] >= 0 && static_cast<std::size_t>(ids[i]) < tokenizer.size()) {
      std::cout << ' ' << quoted(tokenizer.token_bytes(ids[i]));
    }
  }
  std::cout << '\n';
}

void print_mismatch(const lclm::Tokenizer& tokenizer, std::size_t doc, const std::string& text,
                    const std::vector<std::int32_t>& ours,
                    const std::vector<std::int32_t>& reference) {
  const auto first_difference = static_cast<std::size_t>(
      std::mismatch(ours.begin(), ours.end(), reference.begin(), reference.end()).first -
      ours.begin());
  const std::string normalized = tokenizer.decode(ours);
  const std::size_t byte_offset = tokenizer.decode(std::span(ours).first(first_difference)).size();
  const std::size_t before = std::min<std::size_t>(byte_offset, 60);
  std::cout << "first mismatch: document " << doc + 1 << " (" << text.size() << " bytes), token "
            << first_difference << ", byte " << byte_offset << " of the NFC text\n"
            << "  text before: " << quoted(normalized.substr(byte_offset - before, before)) << '\n'
            << "  text from there: " << quoted(normalized.substr(byte_offset, 60)) << '\n';
  print_ids_around("lclm     ", tokenizer, ours, first_difference);
  print_ids_around("reference", tokenizer, reference, first_difference);
}

int run(const std::filesystem::path& tokenizer_file, const std::filesystem::path& corpus,
        const std::filesystem::path& output, const std::filesystem::path& expect) {
  const lclm::Tokenizer tokenizer = lclm::Tokenizer::from_file(tokenizer_file);
  const std::vector<std::string> texts = read_texts(corpus);
  const auto reference =
      expect.empty() ? std::vector<std::vector<std::int32_t>>{} : read_ids(expect);
  if (!expect.empty() && reference.size() != texts.size()) {
    throw lclm::Error(expect.string() + " has " + std::to_string(reference.size()) + " lines but " +
                      corpus.string() + " has " + std::to_string(texts.size()));
  }

  std::size_t total_bytes = 0;
  std::size_t total_tokens = 0;
  std::vector<std::vector<std::int32_t>> all_ids;
  all_ids.reserve(texts.size());
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& text : texts) {
    all_ids.push_back(tokenizer.encode(text));
    total_bytes += text.size();
    total_tokens += all_ids.back().size();
  }
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  std::cout << "encoded " << texts.size() << " documents, " << total_bytes << " bytes, "
            << total_tokens << " tokens in " << seconds.count()
            << " s: " << total_bytes / seconds.count() / 1e6 << " MB/s on one thread\n";

  if (!output.empty()) {
    std::ofstream out(output);
    for (const auto& ids : all_ids) out << json{{"ids", ids}}.dump() << '\n';
    if (!out) throw lclm::Error("cannot write " + output.string());
  }

  std::size_t round_trip_failures = 0;
  for (std::size_t doc = 0; doc < texts.size(); ++doc) {
    const std::string decoded = tokenizer.decode(all_ids[doc]);
    const std::string normalized = nfc(texts[doc]);
    const bool exact = normalized != texts[doc] || decoded == texts[doc];
    if (!exact || nfc(decoded) != normalized) {
      if (round_trip_failures++ == 0) {
        std::cout << "first round-trip failure: document " << doc + 1 << ": "
                  << quoted(texts[doc].substr(0, 200)) << " decodes to "
                  << quoted(decoded.substr(0, 200)) << '\n';
      }
    }
  }
  std::cout << "round-trip failures: " << round_trip_failures << " of " << texts.size()
            << " documents\n";

  std::size_t mismatches = 0;
  if (!expect.empty()) {
    for (std::size_t doc = 0; doc < texts.size(); ++doc) {
      if (all_ids[doc] == reference[doc]) continue;
      if (mismatches++ == 0)
        print_mismatch(tokenizer, doc, texts[doc], all_ids[doc], reference[doc]);
    }
    std::cout << "documents whose ids differ from " << expect.filename().string() << ": "
              << mismatches << " of " << texts.size() << '\n';
  }
  return mismatches == 0 && round_trip_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Encode a JSONL corpus with lclm's tokenizer and compare with reference ids"};
  std::filesystem::path tokenizer_file;
  std::filesystem::path corpus;
  std::filesystem::path output;
  std::filesystem::path expect;
  app.add_option("--tokenizer", tokenizer_file, "tokenizer.json")->required();
  app.add_option("--corpus", corpus, "JSONL file of {\"text\": ...} lines")->required();
  app.add_option("--output", output, "write {\"ids\": [...]} lines here");
  app.add_option("--expect", expect, "reference {\"ids\": [...]} lines to compare with");
  bool skip_if_no_tokenizer = false;
  app.add_flag("--skip-if-no-tokenizer", skip_if_no_tokenizer,
               "exit with 77 (CTest's skip code) when the tokenizer file is absent");
  CLI11_PARSE(app, argc, argv);
  if (skip_if_no_tokenizer && !std::filesystem::exists(tokenizer_file)) {
    std::cout << "skipped: " << tokenizer_file.string()
              << " is absent; run scripts/fetch_tokenizer.sh\n";
    return 77;
  }
  try {
    return run(tokenizer_file, corpus, output, expect);
  } catch (const std::exception& e) {
    std::cerr << "tokenize_jsonl: " << e.what() << '\n';
    return EXIT_FAILURE;
  }
}
