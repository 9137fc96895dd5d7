#include "eval/facts.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string_view>

#include "eval/ruler_tasks.h"
#include "util/error.h"
#include "util/random.h"

namespace lclm {
namespace {

using List = std::vector<std::string_view>;

std::string pick(std::mt19937_64& rng, const List& list) {
  return std::string(list[below(rng, list.size())]);
}
std::string pick_word(std::mt19937_64& rng, const std::vector<std::string>& words) {
  return words[below(rng, words.size())];
}

// The word lists of one split. A family is a subject pattern: "KEY" is an
// adjective-noun key, "NAME" a person's name, "ATTR" one of the family's
// attributes; no placeholder means one subject only (no distractors of the
// same family).
struct Family {
  std::string_view pattern;
  List attributes;  // for "ATTR"
  bool numeric;
};

struct Split {
  std::vector<Family> families;
  List adjectives, nouns;  // keys; none: needle_key's, the evaluation's niah keys
  List names;
  List words;          // word values
  List sentences;      // "{S}" subject, "{V}" value
  List questions;      // "{S}"
  List two_questions;  // "{A}", "{B}"
};

const Split& split_lists(FactSplit split) {
  // The trainer's needle keys are the evaluation's niah keys (ruler_tasks.cc);
  // the train split's family 0 is that needle, word for word.
  static const Split train{
      {{"special magic number for KEY", {}, true},
       {"special magic word for KEY", {}, false},
       {"pass key", {}, true},
       {"ATTR of NAME", {"lucky number", "room number", "locker number", "phone extension"}, true},
       {"ATTR of NAME", {"favourite colour", "secret word", "code name"}, false},
       // Generated from the caller's word pool (make_fact's `pool`): an
       // attribute of a pool word and a kind, of a made-up name.
       {"GEN of NAME", {"number", "code", "id", "count", "score", "level"}, true},
       {"GEN of NAME", {"word", "name", "label", "term", "city", "colour"}, false}},
      {},  // keys: needle_key's (no lists of its own)
      {},
      {"Alice", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ingrid", "Jonas",
       "Keiko", "Lars", "Maya", "Nikolai", "Olga", "Pablo"},
      {"walnut",  "copper", "violet",   "thunder", "marble",  "saffron", "willow",
       "granite", "velvet", "cobalt",   "maple",   "pepper",  "silver",  "tulip",
       "cedar",   "falcon", "river",    "lemon",   "mercury", "quartz",  "rocket",
       "sparrow", "tiger",  "umbrella", "window",  "yellow"},
      {"The {S} is {V}.", "Remember: the {S} is {V}.", "Note that the {S} is {V}.",
       "The {S} is {V}. Remember it. {V} is the {S}.", "We recorded the {S} as {V}.",
       "It is noted that the {S} is {V}.", "Please remember that the {S} is {V}.",
       "The {S}, by the way, is {V}."},
      {"What is the {S} mentioned in the text above?", "What is the {S}?",
       "According to the text above, what is the {S}?", "Tell me the {S} from the text above.",
       "Find the {S} in the text above.", "What does the text above say the {S} is?",
       "Look up the {S}.", "I need the {S}. What is it?", "Give me the {S} from the document.",
       "Which is the {S} in the text above?"},
      {"What are the {A} and the {B} mentioned in the text above?",
       "Tell me the {A} and the {B} from the text above."}};
  static const Split heldout{
      {{"secret code for KEY", {}, true},
       {"access code", {}, true},
       {"ATTR of NAME", {"badge number", "ticket number", "pin code"}, true},
       {"ATTR of NAME", {"favourite fruit", "password"}, false}},
      {"ancient", "bitter", "crimson", "distant", "fierce", "glassy", "humble", "icy"},
      {"comet", "dune", "glacier", "harp", "igloo", "jasper", "kiln", "lagoon"},
      {"Quentin", "Rosa", "Stefan", "Tamsin", "Ulrich", "Vera", "Wendell", "Xenia", "Yusuf",
       "Zora"},
      {"apricot", "bramble", "chestnut", "dahlia", "emerald", "fennel", "gravel", "hazel", "indigo",
       "juniper", "kestrel", "lilac", "mango", "nutmeg", "onyx", "plum"},
      {"{V} is the {S}.", "Keep in mind that the {S} is {V}.", "For the record, the {S} is {V}."},
      {"Which value does the text above give for the {S}?", "Can you look up the {S} in the text?",
       "Please state the {S} given above."},
      {"Can you look up the {A} and the {B} in the text?"}};
  return split == FactSplit::Train ? train : heldout;
}

std::string replace_all(std::string text, std::string_view from, std::string_view to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string number(std::mt19937_64& rng) {
  const std::size_t digits = 3 + below(rng, 8);  // 3-10
  std::string out(1, static_cast<char>('1' + below(rng, 9)));
  for (std::size_t d = 1; d < digits; ++d) out += static_cast<char>('0' + below(rng, 10));
  return out;
}

std::string capitalized(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

// A made-up name of 2-3 syllables ("Torvek"), none of the held-out names.
std::string made_up_name(std::mt19937_64& rng) {
  static constexpr std::string_view kConsonants = "bdfgklmnprstvz", kVowels = "aeiou";
  for (;;) {
    std::string name;
    const std::size_t syllables = 2 + below(rng, 2);
    for (std::size_t i = 0; i < syllables; ++i) {
      name += kConsonants[below(rng, kConsonants.size())];
      name += kVowels[below(rng, kVowels.size())];
    }
    if (below(rng, 2) == 0) name += kConsonants[below(rng, kConsonants.size())];
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    const List& held = split_lists(FactSplit::Heldout).names;
    if (std::find(held.begin(), held.end(), name) == held.end()) return name;
  }
}

std::string subject_of(std::mt19937_64& rng, const Split& lists, const Family& family,
                       const std::vector<std::string>* pool) {
  std::string s(family.pattern);
  if (s.rfind("GEN", 0) == 0) {
    return pick_word(rng, *pool) + " " + pick(rng, family.attributes) + " of " + made_up_name(rng);
  }
  // A key and a name are drawn for every subject, used or not: the data
  // streams built on these draws stay as they are.
  s = replace_all(s, "KEY",
                  lists.adjectives.empty()
                      ? needle_key(rng)
                      : pick(rng, lists.adjectives) + "-" + pick(rng, lists.nouns));
  s = replace_all(s, "NAME", pick(rng, lists.names));
  if (!family.attributes.empty()) s = replace_all(s, "ATTR", pick(rng, family.attributes));
  return s;
}

bool has_placeholder(const Family& family) {
  return family.pattern.find("KEY") != std::string_view::npos ||
         family.pattern.find("NAME") != std::string_view::npos;
}

}  // namespace

int fact_families(FactSplit split) {
  return static_cast<int>(split_lists(split).families.size());
}

Fact make_fact(std::mt19937_64& rng, FactSplit split, int family,
               const std::vector<std::string>& avoid, const std::vector<std::string>* pool) {
  const Split& lists = split_lists(split);
  if (pool && pool->empty()) pool = nullptr;
  // Without a pool the generated families are out of reach.
  int n = fact_families(split);
  while (!pool && n > 0 &&
         lists.families[static_cast<std::size_t>(n - 1)].pattern.rfind("GEN", 0) == 0)
    --n;
  if (family >= n) throw Error("fact family " + std::to_string(family) + " does not exist");
  const auto taken = [&](const std::string& s) {
    return std::find(avoid.begin(), avoid.end(), s) != avoid.end();
  };
  Fact f;
  // A family with one subject cannot give a second: another family then.
  for (int attempt = 0;; ++attempt) {
    f.family = family >= 0 && attempt < 16 ? family : static_cast<int>(below(rng, n));
    const Family& fam = lists.families[static_cast<std::size_t>(f.family)];
    if (attempt >= 16 && !has_placeholder(fam) && taken(std::string(fam.pattern))) continue;
    f.subject = subject_of(rng, lists, fam, pool);
    f.numeric = fam.numeric;
    if (!taken(f.subject)) break;
    if (attempt > 256) throw Error("no fact subject left outside the ones to avoid");
  }
  f.value = f.numeric                                                 ? number(rng)
            : pool && split == FactSplit::Train && below(rng, 2) == 0 ? pick_word(rng, *pool)
                                                                      : pick(rng, lists.words);
  const auto fill = [&](std::string_view form) {
    return replace_all(replace_all(std::string(form), "{S}", f.subject), "{V}", f.value);
  };
  f.sentence = capitalized(fill(pick(rng, lists.sentences)));
  f.question = fill(pick(rng, lists.questions));
  f.prefix = "The " + f.subject + " is ";
  f.answer = f.prefix + f.value + ".";
  return f;
}

std::vector<std::string> fact_word_pool(const std::vector<std::string>& texts,
                                        std::size_t max_words) {
  // Every word of the held-out split's subjects, names and values.
  std::vector<std::string> held;
  for (const std::string& entry : fact_vocabulary(FactSplit::Heldout)) {
    if (entry.find('{') != std::string::npos) continue;  // a form or a phrasing
    std::string word;
    for (char c : entry + " ") {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c >= 'a' && c <= 'z') {
        word += c;
      } else if (!word.empty()) {
        held.push_back(std::move(word));
        word.clear();
      }
    }
  }
  std::vector<std::string> words;
  for (const std::string& text : texts) {
    std::size_t i = 0;
    while (i < text.size()) {
      std::size_t j = i;
      while (j < text.size() && text[j] >= 'a' && text[j] <= 'z') ++j;
      const bool whole = (i == 0 || !std::isalnum(static_cast<unsigned char>(text[i - 1]))) &&
                         (j == text.size() || !std::isalnum(static_cast<unsigned char>(text[j])));
      if (whole && j - i >= 4 && j - i <= 10) words.emplace_back(text.substr(i, j - i));
      i = j == i ? i + 1 : j;
    }
  }
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  std::erase_if(words, [&](const std::string& w) {
    return std::find(held.begin(), held.end(), w) != held.end();
  });
  // Spread over the alphabet when there are more than asked for.
  if (words.size() > max_words && max_words > 0) {
    std::vector<std::string> kept;
    for (std::size_t k = 0; k < max_words; ++k) kept.push_back(words[k * words.size() / max_words]);
    words = std::move(kept);
  }
  return words;
}

std::string two_fact_question(std::mt19937_64& rng, FactSplit split, const Fact& a, const Fact& b) {
  return replace_all(replace_all(pick(rng, split_lists(split).two_questions), "{A}", a.subject),
                     "{B}", b.subject);
}

std::string two_fact_answer(const Fact& a, const Fact& b) {
  return a.answer + " " + b.answer;
}

std::vector<std::string> fact_vocabulary(FactSplit split) {
  const Split& lists = split_lists(split);
  std::vector<std::string> out;
  const auto add = [&](const List& list) {
    for (std::string_view s : list) out.emplace_back(s);
  };
  for (const Family& f : lists.families) {
    if (f.attributes.empty()) out.emplace_back(f.pattern);
    add(f.attributes);
  }
  add(lists.adjectives);
  add(lists.nouns);
  if (lists.adjectives.empty()) {
    for (const std::string& w : needle_key_words()) out.push_back(w);
  }
  add(lists.names);
  add(lists.words);
  add(lists.sentences);
  add(lists.questions);
  add(lists.two_questions);
  return out;
}

}  // namespace lclm
