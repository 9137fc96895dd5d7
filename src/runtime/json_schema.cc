#include "runtime/json_schema.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <set>

#include "util/error.h"

namespace lclm {

using nlohmann::json;

struct JsonGrammar::Node {
  enum class Kind { Object, Array, String, Number, Integer, Literal, AnyOf };
  Kind kind = Kind::AnyOf;
  // Object
  std::vector<std::pair<std::string, const Node*>> properties;
  std::uint64_t required = 0;        // bit i: properties[i] is required
  const Node* additional = nullptr;  // the schema of other keys; null: none allowed
  // Array
  const Node* items = nullptr;
  std::size_t min_items = 0, max_items = std::numeric_limits<std::size_t>::max();
  // String
  std::size_t min_length = 0, max_length = std::numeric_limits<std::size_t>::max();
  // Literal: the compact JSON text (true, null, "red", 42)
  std::string text;
  // AnyOf
  std::vector<const Node*> options;
};

JsonGrammar::~JsonGrammar() = default;

namespace {

using Node = JsonGrammar::Node;
using Kind = Node::Kind;

constexpr std::size_t kMaxProperties = 64;
constexpr std::size_t kMaxKeyBytes = 256;
constexpr std::size_t kMaxNumberDigits = 32;
constexpr std::size_t kMaxAlternatives = 64;
constexpr std::size_t kMaxDepth = 64;

}  // namespace

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const json& root) : root_(root) {}

  std::shared_ptr<const JsonGrammar> run() {
    grammar_.reset(new JsonGrammar());
    grammar_->root_ = compile(root_, "#", 0);
    return std::move(grammar_);
  }

  // Any value, and any object (JSON mode).
  static std::shared_ptr<const JsonGrammar> any_object() {
    SchemaCompiler c(json::object());
    c.grammar_.reset(new JsonGrammar());
    const Node* any = c.any_value();
    Node* object = c.add(Kind::Object);
    object->additional = any;
    c.grammar_->root_ = object;
    return std::move(c.grammar_);
  }

 private:
  Node* add(Kind kind) {
    grammar_->nodes_.push_back(std::make_unique<Node>());
    grammar_->nodes_.back()->kind = kind;
    return grammar_->nodes_.back().get();
  }
  Node* literal(std::string text) {
    Node* n = add(Kind::Literal);
    n->text = std::move(text);
    return n;
  }
  // {} : any JSON value, objects and arrays of any values included.
  const Node* any_value() {
    if (any_) return any_;
    Node* any = add(Kind::AnyOf);
    any_ = any;
    Node* object = add(Kind::Object);
    object->additional = any;
    Node* array = add(Kind::Array);
    array->items = any;
    any->options = {
        object,           array,          add(Kind::String), add(Kind::Number), literal("true"),
        literal("false"), literal("null")};
    return any;
  }

  [[noreturn]] static void bad(const std::string& where, const std::string& why) {
    throw Error("response_format schema at " + where + ": " + why);
  }

  static std::size_t count(const json& s, const char* key, const std::string& where) {
    const json& v = s.at(key);
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0) {
      bad(where + "/" + key, "must be a non-negative integer");
    }
    return v.get<std::size_t>();
  }

  const Node* type_node(const std::string& type, const json& s, const std::string& where,
                        int depth) {
    if (type == "string") {
      Node* n = add(Kind::String);
      if (s.contains("minLength")) n->min_length = count(s, "minLength", where);
      if (s.contains("maxLength")) n->max_length = count(s, "maxLength", where);
      return n;
    }
    if (type == "number") return add(Kind::Number);
    if (type == "integer") return add(Kind::Integer);
    if (type == "boolean") {
      Node* n = add(Kind::AnyOf);
      n->options = {literal("true"), literal("false")};
      return n;
    }
    if (type == "null") return literal("null");
    if (type == "array") {
      Node* n = add(Kind::Array);
      n->items =
          s.contains("items") ? compile(s["items"], where + "/items", depth + 1) : any_value();
      if (s.contains("minItems")) n->min_items = count(s, "minItems", where);
      if (s.contains("maxItems")) n->max_items = count(s, "maxItems", where);
      return n;
    }
    if (type == "object") {
      Node* n = add(Kind::Object);
      if (s.contains("properties")) {
        const json& props = s["properties"];
        if (!props.is_object()) bad(where + "/properties", "must be an object");
        if (props.size() > kMaxProperties) {
          bad(where + "/properties", "more than " + std::to_string(kMaxProperties) + " properties");
        }
        for (const auto& [name, sub] : props.items()) {
          if (name.empty() || name.size() > kMaxKeyBytes ||
              name.find_first_of("\"\\") != std::string::npos ||
              std::any_of(name.begin(), name.end(),
                          [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
            bad(where + "/properties", "property name '" + name +
                                           "' must be 1-256 bytes without quotes, backslashes or "
                                           "control characters");
          }
          n->properties.emplace_back(name, compile(sub, where + "/properties/" + name, depth + 1));
        }
      }
      if (s.contains("required")) {
        for (const json& r : s["required"]) {
          const auto it =
              std::find_if(n->properties.begin(), n->properties.end(),
                           [&](const auto& p) { return r.is_string() && p.first == r; });
          if (it == n->properties.end()) {
            bad(where + "/required", "'" + (r.is_string() ? r.get<std::string>() : r.dump()) +
                                         "' is not one of the properties");
          }
          n->required |= std::uint64_t{1} << (it - n->properties.begin());
        }
      }
      const json additional = s.value("additionalProperties", json(true));
      if (additional.is_boolean()) {
        n->additional = additional.get<bool>() ? any_value() : nullptr;
      } else {
        n->additional = compile(additional, where + "/additionalProperties", depth + 1);
      }
      return n;
    }
    bad(where + "/type", "unknown type '" + type + "'");
  }

  const Node* compile(const json& s, const std::string& where, int depth) {
    if (depth > static_cast<int>(kMaxDepth)) bad(where, "nested deeper than 64 levels");
    if (s.is_boolean()) {
      if (!s.get<bool>()) bad(where, "a schema of false matches nothing");
      return any_value();
    }
    if (!s.is_object()) bad(where, "a schema must be an object");
    static const std::set<std::string> kKnown = {
        "type",        "properties", "required",    "additionalProperties",
        "items",       "minItems",   "maxItems",    "minLength",
        "maxLength",   "enum",       "const",       "anyOf",
        "oneOf",       "allOf",      "$ref",        "$defs",
        "definitions", "title",      "description", "default",
        "examples",    "$schema",    "$id",         "$comment",
        "strict",      "name"};
    for (const auto& [key, value] : s.items()) {
      if (!kKnown.count(key)) bad(where + "/" + key, "the keyword '" + key + "' is not supported");
    }
    if (s.contains("$ref")) {
      const std::string ref = s["$ref"].is_string() ? s["$ref"].get<std::string>() : "";
      if (const auto it = refs_.find(ref); it != refs_.end()) return it->second;
      json::json_pointer pointer;
      try {
        if (ref != "#" && !ref.starts_with("#/")) throw std::invalid_argument("not local");
        pointer = json::json_pointer(ref.substr(1));
      } catch (const std::exception&) {
        bad(where + "/$ref", "only references inside the schema (#/$defs/...) are supported");
      }
      if (!root_.contains(pointer)) bad(where + "/$ref", "'" + ref + "' points at nothing");
      // A placeholder first, so that a recursive definition refers to itself.
      Node* node = add(Kind::AnyOf);
      refs_[ref] = node;
      node->options = {compile(root_.at(pointer), ref, depth + 1)};
      return node;
    }
    if (s.contains("const")) return literal(s["const"].dump());
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty())
        bad(where + "/enum", "must be a non-empty array");
      Node* n = add(Kind::AnyOf);
      for (const json& v : s["enum"]) n->options.push_back(literal(v.dump()));
      return n;
    }
    for (const char* key : {"anyOf", "oneOf", "allOf"}) {
      if (!s.contains(key)) continue;
      const json& list = s[key];
      if (!list.is_array() || list.empty()) bad(where + "/" + key, "must be a non-empty array");
      if (std::string(key) == "allOf" && list.size() != 1) {
        bad(where + "/allOf", "only an allOf of one schema is supported");
      }
      Node* n = add(Kind::AnyOf);
      for (std::size_t i = 0; i < list.size(); ++i) {
        n->options.push_back(
            compile(list[i], where + "/" + key + "/" + std::to_string(i), depth + 1));
      }
      return n;
    }
    if (!s.contains("type")) {
      // No type: only keywords of one type, or none at all.
      if (s.contains("properties") || s.contains("additionalProperties") ||
          s.contains("required")) {
        return type_node("object", s, where, depth);
      }
      if (s.contains("items")) return type_node("array", s, where, depth);
      return any_value();
    }
    const json& type = s["type"];
    if (type.is_string()) return type_node(type, s, where, depth);
    if (!type.is_array() || type.empty()) bad(where + "/type", "must be a name or a list of names");
    Node* n = add(Kind::AnyOf);
    for (const json& t : type) {
      if (!t.is_string()) bad(where + "/type", "must be a name or a list of names");
      n->options.push_back(type_node(t, s, where, depth));
    }
    return n;
  }

  const json& root_;
  std::unique_ptr<JsonGrammar> grammar_;
  const Node* any_ = nullptr;
  std::map<std::string, const Node*> refs_;
};

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const nlohmann::json& schema) {
  return SchemaCompiler(schema).run();
}

std::shared_ptr<const JsonGrammar> JsonGrammar::any_object() {
  return SchemaCompiler::any_object();
}

std::shared_ptr<const JsonGrammar> JsonGrammar::from_user_schema(const nlohmann::json& schema) {
  return schema == nlohmann::json::object() ? any_object() : from_schema(schema);
}

// ---- the recognizer ----

namespace {

enum class Phase : std::uint8_t {
  Start,          // before the value (blanks allowed)
  ObjOpen,        // after '{': a key or '}'
  ObjKey,         // inside a key
  ObjColon,       // after a key: ':'
  ObjAfterValue,  // after a member's value: ',' or '}'
  ObjComma,       // after ',': a key
  ArrOpen,        // after '[': a value or ']'
  ArrAfterValue,  // after an item: ',' or ']'
  ArrComma,       // after ',': a value
  StrBody,
  StrEscape,
  StrHex,
  NumMinus,
  NumZero,
  NumInt,
  NumDot,
  NumFrac,
  NumE,
  NumESign,
  NumExp,
  Literal,
};

struct Frame {
  const Node* node = nullptr;
  Phase phase = Phase::Start;
  std::uint8_t blanks = 0;   // whitespace in a row
  std::uint8_t pending = 0;  // string: UTF-8 continuation bytes still due, or \u hex digits
  std::uint32_t count = 0;   // array items, string characters, literal bytes, number digits
  std::uint64_t seen = 0;    // object: properties present
  std::int32_t member = -1;  // object: the property being read (-1: an additional key)
  std::string key;           // object: the key so far
  bool operator==(const Frame&) const = default;
};

using Stack = std::vector<Frame>;

bool blank(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}
bool digit(char c) {
  return c >= '0' && c <= '9';
}
bool hex_digit(char c) {
  return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool number_can_end(Phase p) {
  return p == Phase::NumZero || p == Phase::NumInt || p == Phase::NumFrac || p == Phase::NumExp;
}

// Whether the key so far can still become an allowed key, and which
// property it names when whole.
bool key_possible(const Frame& f) {
  if (f.node->additional) return true;
  for (std::size_t i = 0; i < f.node->properties.size(); ++i) {
    if (!(f.seen >> i & 1) && f.node->properties[i].first.starts_with(f.key)) return true;
  }
  return false;
}
// Another member can follow: an unseen property or any additional key.
bool more_keys(const Frame& f) {
  if (f.node->additional) return true;
  const std::size_t n = f.node->properties.size();
  return n < 64 ? f.seen != (std::uint64_t{1} << n) - 1 : ~f.seen != 0;
}
bool required_present(const Frame& f) {
  return (f.seen & f.node->required) == f.node->required;
}

// Feeds c to the stack; appends every stack that results (none: c is refused).
void step(Stack s, char c, std::vector<Stack>& out);

// A value of s.back().node starts with c (blanks before it handled by the
// caller). hops counts any-of nodes passed through, so that a schema
// referring to itself ({"$ref": "#"}) ends instead of looping.
void start_value(Stack s, char c, std::vector<Stack>& out, std::size_t hops = 0) {
  if (s.size() > kMaxDepth || hops > kMaxDepth) return;
  Frame& f = s.back();
  const Node* n = f.node;
  switch (n->kind) {
    case Kind::AnyOf:
      for (const Node* option : n->options) {
        Stack t = s;
        t.back() = Frame{};
        t.back().node = option;
        start_value(std::move(t), c, out, hops + 1);
      }
      return;
    case Kind::Object:
      if (c != '{') return;
      f.phase = Phase::ObjOpen;
      break;
    case Kind::Array:
      if (c != '[') return;
      f.phase = Phase::ArrOpen;
      break;
    case Kind::String:
      if (c != '"') return;
      f.phase = Phase::StrBody;
      break;
    case Kind::Number:
    case Kind::Integer:
      if (c == '-') {
        f.phase = Phase::NumMinus;
      } else if (c == '0') {
        f.phase = Phase::NumZero;
      } else if (c >= '1' && c <= '9') {
        f.phase = Phase::NumInt;
      } else {
        return;
      }
      f.count = 1;
      break;
    case Kind::Literal:
      if (c != n->text[0]) return;
      if (n->text.size() == 1) {
        s.pop_back();
      } else {
        f.phase = Phase::Literal;
        f.count = 1;
      }
      break;
  }
  out.push_back(std::move(s));
}

// Pushes a child value frame for `node` and feeds it c.
void child_value(Stack s, const Node* node, char c, std::vector<Stack>& out) {
  Frame child;
  child.node = node;
  s.push_back(std::move(child));
  step(std::move(s), c, out);
}

// Blanks where the grammar allows them: true when c was one (and taken).
bool take_blank(Stack& s, char c, std::vector<Stack>& out) {
  if (!blank(c)) {
    s.back().blanks = 0;
    return false;
  }
  if (++s.back().blanks <= kMaxWhitespace) out.push_back(std::move(s));
  return true;
}

void step(Stack s, char c, std::vector<Stack>& out) {
  if (s.empty()) return;  // the document is closed: nothing may follow
  Frame& f = s.back();
  const Node* n = f.node;
  switch (f.phase) {
    case Phase::Start:
      if (take_blank(s, c, out)) return;
      start_value(std::move(s), c, out);
      return;
    case Phase::ObjOpen:
    case Phase::ObjComma:
      if (take_blank(s, c, out)) return;
      if (c == '"') {
        if (!more_keys(f)) return;
        f.phase = Phase::ObjKey;
        f.key.clear();
        out.push_back(std::move(s));
      } else if (c == '}' && f.phase == Phase::ObjOpen && required_present(f)) {
        s.pop_back();
        out.push_back(std::move(s));
      }
      return;
    case Phase::ObjKey: {
      if (c == '"') {
        f.member = -1;
        for (std::size_t i = 0; i < n->properties.size(); ++i) {
          if (n->properties[i].first == f.key) f.member = static_cast<std::int32_t>(i);
        }
        if (f.member >= 0 && (f.seen >> f.member & 1)) return;  // a duplicate key
        if (f.member < 0 && !n->additional) return;
        if (f.member >= 0) f.seen |= std::uint64_t{1} << f.member;
        f.phase = Phase::ObjColon;
        out.push_back(std::move(s));
        return;
      }
      if (c == '\\' || static_cast<unsigned char>(c) < 0x20 || f.key.size() >= kMaxKeyBytes) return;
      f.key += c;
      if (key_possible(f)) out.push_back(std::move(s));
      return;
    }
    case Phase::ObjColon:
      if (take_blank(s, c, out)) return;
      if (c != ':') return;
      f.phase = Phase::ObjAfterValue;
      {
        const Node* value = f.member >= 0 ? n->properties[static_cast<std::size_t>(f.member)].second
                                          : n->additional;
        Frame child;
        child.node = value;
        s.push_back(std::move(child));
      }
      out.push_back(std::move(s));
      return;
    case Phase::ObjAfterValue:
      if (take_blank(s, c, out)) return;
      if (c == ',' && more_keys(f)) {
        f.phase = Phase::ObjComma;
        out.push_back(std::move(s));
      } else if (c == '}' && required_present(f)) {
        s.pop_back();
        out.push_back(std::move(s));
      }
      return;
    case Phase::ArrOpen:
      if (take_blank(s, c, out)) return;
      if (c == ']') {
        if (n->min_items == 0) {
          s.pop_back();
          out.push_back(std::move(s));
        }
        return;
      }
      if (n->max_items == 0) return;
      f.phase = Phase::ArrAfterValue;
      f.count = 1;
      child_value(std::move(s), n->items, c, out);
      return;
    case Phase::ArrAfterValue:
      if (take_blank(s, c, out)) return;
      if (c == ',' && f.count < n->max_items) {
        f.phase = Phase::ArrComma;
        out.push_back(std::move(s));
      } else if (c == ']' && f.count >= n->min_items) {
        s.pop_back();
        out.push_back(std::move(s));
      }
      return;
    case Phase::ArrComma:
      if (take_blank(s, c, out)) return;
      f.phase = Phase::ArrAfterValue;
      ++f.count;
      child_value(std::move(s), n->items, c, out);
      return;
    case Phase::StrBody: {
      const auto b = static_cast<unsigned char>(c);
      if (f.pending > 0) {  // inside a UTF-8 sequence
        if ((b & 0xc0) != 0x80) return;
        --f.pending;
      } else if (c == '"') {
        if (f.count < n->min_length) return;
        s.pop_back();
      } else if (c == '\\') {
        f.phase = Phase::StrEscape;
      } else if (b < 0x20 || (b >= 0x80 && b < 0xc2) || b > 0xf4) {
        return;
      } else {
        if (f.count >= n->max_length) return;
        ++f.count;
        f.pending = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
      }
      out.push_back(std::move(s));
      return;
    }
    case Phase::StrEscape:
      if (f.count >= n->max_length) return;
      if (c == 'u') {
        f.phase = Phase::StrHex;
        f.pending = 4;
      } else if (std::string_view("\"\\/bfnrt").find(c) != std::string_view::npos) {
        f.phase = Phase::StrBody;
      } else {
        return;
      }
      ++f.count;
      out.push_back(std::move(s));
      return;
    case Phase::StrHex:
      if (!hex_digit(c)) return;
      if (--f.pending == 0) f.phase = Phase::StrBody;
      out.push_back(std::move(s));
      return;
    case Phase::NumMinus:
    case Phase::NumZero:
    case Phase::NumInt:
    case Phase::NumDot:
    case Phase::NumFrac:
    case Phase::NumE:
    case Phase::NumESign:
    case Phase::NumExp: {
      const bool real = n->kind == Kind::Number;
      Phase next = f.phase;
      if (digit(c)) {
        switch (f.phase) {
          case Phase::NumMinus:
            next = c == '0' ? Phase::NumZero : Phase::NumInt;
            break;
          case Phase::NumZero:
            next = Phase::Literal;  // no digit after a leading zero (marks refusal below)
            break;
          case Phase::NumDot:
            next = Phase::NumFrac;
            break;
          case Phase::NumE:
          case Phase::NumESign:
            next = Phase::NumExp;
            break;
          default:
            break;
        }
        if (next == Phase::Literal || f.count >= kMaxNumberDigits) return;
        f.phase = next;
        ++f.count;
        out.push_back(std::move(s));
        return;
      }
      if (real && c == '.' && (f.phase == Phase::NumZero || f.phase == Phase::NumInt)) {
        f.phase = Phase::NumDot;
      } else if (real && (c == 'e' || c == 'E') &&
                 (f.phase == Phase::NumZero || f.phase == Phase::NumInt ||
                  f.phase == Phase::NumFrac)) {
        f.phase = Phase::NumE;
      } else if ((c == '+' || c == '-') && f.phase == Phase::NumE) {
        f.phase = Phase::NumESign;
      } else {
        // The number ends here: c belongs to what follows it.
        if (!number_can_end(f.phase)) return;
        s.pop_back();
        step(std::move(s), c, out);
        return;
      }
      out.push_back(std::move(s));
      return;
    }
    case Phase::Literal:
      if (c != n->text[f.count]) return;
      if (++f.count == n->text.size()) s.pop_back();
      out.push_back(std::move(s));
      return;
  }
}

bool stack_complete(const Stack& s) {
  return s.empty() || (s.size() == 1 && number_can_end(s.back().phase));
}

}  // namespace

struct JsonMatcher::State {
  std::vector<Stack> stacks;
};

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonGrammar> grammar)
    : grammar_(std::move(grammar)), state_(std::make_unique<State>()) {
  Frame root;
  root.node = grammar_->root();
  state_->stacks.push_back({root});
}
JsonMatcher::~JsonMatcher() = default;
JsonMatcher::JsonMatcher(const JsonMatcher& o)
    : grammar_(o.grammar_), state_(std::make_unique<State>(*o.state_)) {}
JsonMatcher& JsonMatcher::operator=(const JsonMatcher& o) {
  grammar_ = o.grammar_;
  state_ = std::make_unique<State>(*o.state_);
  return *this;
}

namespace {

// The stacks after c, duplicates merged; empty when c is refused by all.
std::vector<Stack> advance_all(const std::vector<Stack>& stacks, char c) {
  std::vector<Stack> next;
  for (const Stack& s : stacks) step(s, c, next);
  if (next.size() > 1) {
    std::vector<Stack> unique;
    for (Stack& s : next) {
      if (std::find(unique.begin(), unique.end(), s) == unique.end())
        unique.push_back(std::move(s));
    }
    next = std::move(unique);
  }
  if (next.size() > kMaxAlternatives) next.resize(kMaxAlternatives);
  return next;
}

}  // namespace

bool JsonMatcher::feed(std::string_view bytes) {
  std::vector<Stack> stacks = state_->stacks;
  for (const char c : bytes) {
    stacks = advance_all(stacks, c);
    if (stacks.empty()) return false;
  }
  state_->stacks = std::move(stacks);
  return true;
}

bool JsonMatcher::complete() const {
  return std::any_of(state_->stacks.begin(), state_->stacks.end(), stack_complete);
}

bool JsonMatcher::can_continue() const {
  return std::any_of(state_->stacks.begin(), state_->stacks.end(),
                     [](const Stack& s) { return !s.empty(); });
}

// ---- tokens ----

// The vocabulary in byte order (special and empty tokens apart), built once
// per tokenizer and shared.
struct JsonConstraint::Vocab {
  std::vector<std::pair<std::string, std::int32_t>> sorted;  // (bytes, id)
  std::vector<std::string> bytes;                            // by id
  std::vector<bool> special;                                 // by id
};

JsonConstraint::JsonConstraint(std::shared_ptr<const JsonGrammar> grammar,
                               const Tokenizer& tokenizer, std::vector<std::int32_t> stop_ids)
    : vocab_(vocab(tokenizer)), stop_ids_(std::move(stop_ids)), matcher_(std::move(grammar)) {}
JsonConstraint::~JsonConstraint() = default;

bool JsonConstraint::allows(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= vocab_->bytes.size()) return false;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) {
    return matcher_.complete();
  }
  const std::string& b = vocab_->bytes[static_cast<std::size_t>(id)];
  if (vocab_->special[static_cast<std::size_t>(id)] || b.empty()) return false;
  JsonMatcher m = matcher_;
  return m.feed(b);
}

std::size_t JsonConstraint::mask(std::span<float> logits) const {
  const float kOff = -std::numeric_limits<float>::infinity();
  std::vector<bool> allowed(logits.size(), false);
  std::size_t n_allowed = 0;
  if (matcher_.complete()) {
    for (const std::int32_t id : stop_ids_) {
      if (id >= 0 && static_cast<std::size_t>(id) < allowed.size() && !allowed[id]) {
        allowed[static_cast<std::size_t>(id)] = true;
        ++n_allowed;
      }
    }
  }
  if (matcher_.can_continue()) {
    // Walk the tokens in byte order, keeping the stacks after each prefix
    // length of the current token; a prefix refused rules out every
    // following token that starts with it.
    std::vector<std::vector<Stack>> at_depth = {matcher_.state_->stacks};
    const std::string* previous = nullptr;
    std::size_t dead = std::numeric_limits<std::size_t>::max();  // length of a refused prefix
    for (const auto& [bytes, id] : vocab_->sorted) {
      std::size_t common = 0;
      if (previous) {
        const std::size_t limit = std::min(previous->size(), bytes.size());
        while (common < limit && (*previous)[common] == bytes[common]) ++common;
      }
      previous = &bytes;
      if (common >= dead) continue;
      dead = std::numeric_limits<std::size_t>::max();
      at_depth.resize(std::min(at_depth.size(), common + 1));
      bool alive = true;
      for (std::size_t d = at_depth.size() - 1; d < bytes.size(); ++d) {
        std::vector<Stack> next = advance_all(at_depth[d], bytes[d]);
        if (next.empty()) {
          dead = d + 1;
          alive = false;
          break;
        }
        at_depth.push_back(std::move(next));
      }
      if (alive && static_cast<std::size_t>(id) < allowed.size()) {
        allowed[static_cast<std::size_t>(id)] = true;
        ++n_allowed;
      }
    }
  }
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (!allowed[i]) logits[i] = kOff;
  }
  return n_allowed;
}

void JsonConstraint::accept(std::int32_t id) {
  if (!allows(id)) throw Error("the JSON constraint was handed a token it does not allow");
  if (std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) return;
  matcher_.feed(vocab_->bytes[static_cast<std::size_t>(id)]);
}

std::shared_ptr<const JsonConstraint::Vocab> JsonConstraint::vocab(const Tokenizer& tokenizer) {
  static std::mutex mutex;
  static std::map<const Tokenizer*, std::weak_ptr<const JsonConstraint::Vocab>> built;
  std::lock_guard<std::mutex> hold(mutex);
  if (auto v = built[&tokenizer].lock()) return v;
  auto v = std::make_shared<JsonConstraint::Vocab>();
  const std::size_t n = tokenizer.size();
  v->bytes.resize(n);
  v->special.resize(n);
  for (std::size_t id = 0; id < n; ++id) {
    const auto i = static_cast<std::int32_t>(id);
    v->special[id] = tokenizer.is_special(i);
    try {
      v->bytes[id] = tokenizer.token_bytes(i);
    } catch (const Error&) {
      continue;  // an id with no token (a gap in the vocabulary)
    }
    if (!v->special[id] && !v->bytes[id].empty()) v->sorted.emplace_back(v->bytes[id], i);
  }
  std::sort(v->sorted.begin(), v->sorted.end());
  built[&tokenizer] = v;
  return v;
}

}  // namespace lclm
