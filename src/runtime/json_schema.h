// JSON by construction: OpenAI's response_format ({"type": "json_object"} or
// {"type": "json_schema", ...}) as a constraint on the tokens a generation
// may sample, so that the answer parses and matches the schema.
//
// A schema compiles to a JsonGrammar (nodes: object, array, string, number,
// integer, literal, any-of); a JsonMatcher follows text through it a byte at
// a time as a pushdown recognizer (a set of stacks, one per any-of branch
// still alive); a JsonConstraint turns that into the token level: whether a
// token's bytes can continue the text, and the mask of every token that can,
// found by walking the vocabulary in byte order so that a dead prefix rules
// out every token that shares it.
//
// The schema subset (anything else is an error naming the keyword and where
// it is, never silently ignored): type (a name or a list), properties,
// required, additionalProperties (false, true or a schema), items,
// minItems, maxItems, minLength, maxLength, enum, const, anyOf, oneOf (as
// anyOf: exact only for disjoint branches), allOf of one schema, $ref to
// #/$defs/... or #/definitions/..., and the annotations (title,
// description, default, examples, $schema, $id, $comment, format is NOT one:
// it is refused). Whitespace between tokens is limited to kMaxWhitespace
// characters, and object keys may not hold escapes, so a model cannot loop
// forever on blanks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace lclm {

inline constexpr std::size_t kMaxWhitespace = 4;  // blanks in a row between tokens

class JsonGrammar {
 public:
  struct Node;
  // Throws lclm::Error naming the unsupported keyword or bad value and its
  // JSON pointer ("#/properties/name/pattern").
  static std::shared_ptr<const JsonGrammar> from_schema(const nlohmann::json& schema);
  // Any JSON object ({"type": "json_object"}: OpenAI's JSON mode).
  static std::shared_ptr<const JsonGrammar> any_object();
  // A schema as the CLI's -j and Python's json_schema= take it: {} asks for
  // any object (llama.cpp's -j '{}'), anything else is from_schema's.
  static std::shared_ptr<const JsonGrammar> from_user_schema(const nlohmann::json& schema);
  ~JsonGrammar();
  const Node* root() const { return root_; }

 private:
  JsonGrammar() = default;
  friend class SchemaCompiler;
  std::vector<std::unique_ptr<Node>> nodes_;
  const Node* root_ = nullptr;
};

class JsonMatcher {
 public:
  explicit JsonMatcher(std::shared_ptr<const JsonGrammar> grammar);
  ~JsonMatcher();
  JsonMatcher(const JsonMatcher&);
  JsonMatcher& operator=(const JsonMatcher&);

  // Appends bytes when the text stays a prefix of some matching document;
  // returns false (leaving the matcher as it was) when it would not.
  bool feed(std::string_view bytes);
  // The text so far is a whole matching document.
  bool complete() const;
  // Some byte can still follow (false once the outermost value is closed).
  bool can_continue() const;

 private:
  struct State;
  std::shared_ptr<const JsonGrammar> grammar_;
  std::unique_ptr<State> state_;
  friend class JsonConstraint;
};

// The token-level constraint a Generation applies (GenerationOptions::
// constraint). Stateful: one per generation.
class JsonConstraint {
 public:
  // stop_ids: allowed exactly when the text is complete; other special
  // tokens never are.
  JsonConstraint(std::shared_ptr<const JsonGrammar> grammar, const Tokenizer& tokenizer,
                 std::vector<std::int32_t> stop_ids);
  ~JsonConstraint();

  bool allows(std::int32_t id) const;
  // Sets logits of every token the text cannot take next to -infinity;
  // returns how many tokens stay allowed.
  std::size_t mask(std::span<float> logits) const;
  // The sampled token: advances the text (a token allows() refused throws).
  void accept(std::int32_t id);
  const JsonMatcher& matcher() const { return matcher_; }

  struct Vocab;  // the tokenizer's tokens as bytes, in byte order (shared per tokenizer)
  // Built on first use and kept while someone holds it: a server holds it
  // so that each request's constraint does not sort the vocabulary again.
  static std::shared_ptr<const Vocab> vocab(const Tokenizer& tokenizer);

 private:
  std::shared_ptr<const Vocab> vocab_;
  std::vector<std::int32_t> stop_ids_;
  JsonMatcher matcher_;
};

}  // namespace lclm
