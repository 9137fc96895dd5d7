// Facts in many wordings: the needles of the trainer's fact and agent tasks
// and of the evaluation's `facts` task. A fact is a subject ("the special
// magic number for misty-harbor", "the pass key", "the lucky number of
// Mara"), a value (a number of 3-10 digits or a word), a sentence that states
// it in the text in one of several forms, a question in one of several
// phrasings, and the answer in the question's own terms: "The SUBJECT is
// VALUE." whatever form the text used.
//
// Two disjoint splits: Train draws subjects, value words, sentence forms and
// question phrasings from one set of lists, Heldout from another, so an
// evaluation on Heldout asks in wordings, about keys and names, and for
// words the trainer never showed (tests/eval/facts_test.cc checks that no
// list entry is shared).
#pragma once

#include <cstddef>
#include <random>
#include <string>
#include <vector>

namespace lclm {

enum class FactSplit { Train, Heldout };

struct Fact {
  std::string subject;   // "special magic number for misty-harbor" (no article)
  std::string value;     // "4711023" or "walnut"
  std::string sentence;  // what the text states: "Remember: the pass key is 4711.", ...
  std::string question;  // "What is the pass key mentioned in the text above?", ...
  std::string answer;    // "The pass key is 4711."
  std::string prefix;    // the answer up to the value: "The pass key is "
  bool numeric = true;   // the value is a number
  int family = 0;        // facts of one family differ only in their key or name
};

// A fact of a random family of the split; `family` >= 0 picks the family
// (distractors: the same family, another key or name, drawn until the
// subject differs from every one in `avoid`). With a word `pool`
// (fact_word_pool), the train split also makes subjects up: "WORD KIND of
// NAME" (a pool word, a kind such as "number" or "label", a made-up name
// like "Torvek"), and half its word values are pool words, so that copying
// the subject the question names, not recalling a few trained ones, is
// what answers.
Fact make_fact(std::mt19937_64& rng, FactSplit split, int family = -1,
               const std::vector<std::string>& avoid = {},
               const std::vector<std::string>* pool = nullptr);

// The distinct lower-case words of 4-10 letters in `texts`, sorted, none of
// them a word of the held-out split's subjects, names or values; at most
// `max_words`, spread over the alphabet.
std::vector<std::string> fact_word_pool(const std::vector<std::string>& texts,
                                        std::size_t max_words);

// How many families a split has.
int fact_families(FactSplit split);

// A question about two facts ("What are the A and the B ...?") and its
// answer ("The A is X. The B is Y.").
std::string two_fact_question(std::mt19937_64& rng, FactSplit split, const Fact& a, const Fact& b);
std::string two_fact_answer(const Fact& a, const Fact& b);

// Every word list of a split (subject words, value words, sentence forms,
// question phrasings), for the test that the splits share nothing.
std::vector<std::string> fact_vocabulary(FactSplit split);

}  // namespace lclm
