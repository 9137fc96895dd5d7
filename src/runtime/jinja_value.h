// The values a Jinja template computes with, and the Python behaviour they
// must copy for chat templates to render as jinja2 renders them: str() and
// repr() of every type, json.dumps (the tojson of Hugging Face), truthiness,
// equality and ordering, strings indexed by code point. Internal to the
// renderer (runtime/jinja.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace lclm::jinja {

struct Value;
using Array = std::vector<Value>;
// Insertion-ordered, as Python dicts are: tool schemas must come out of
// tojson in the order they came in.
using Map = std::vector<std::pair<std::string, Value>>;

// Arguments of a call: positional, then keyword in the order written.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Callable {
  std::string name;
  std::function<Value(CallArgs&)> fn;
};

// An error in evaluation; the renderer adds the template's name and line.
class EvalError : public Error {
 public:
  using Error::Error;
};

struct Value {
  // Tuple shares List's storage but prints as (a, b); Namespace shares
  // Dict's and is the one value a template may change after making it
  // ({% set ns.x = ... %}), so copies share it as Python objects do.
  enum class Kind : std::uint8_t {
    Undefined,
    None,
    Bool,
    Int,
    Float,
    String,
    List,
    Tuple,
    Dict,
    Namespace,
    Callable
  };
  Kind kind = Kind::Undefined;
  bool boolean = false;
  std::int64_t integer = 0;
  double number = 0;
  // String: the text (UTF-8). Undefined: why it is undefined, the message of
  // the error raised when it is used for more than printing or testing.
  std::string text;
  std::shared_ptr<Array> list;
  std::shared_ptr<Map> dict;
  std::shared_ptr<Callable> callable;

  static Value undefined(std::string why) {
    Value v;
    v.text = std::move(why);
    return v;
  }
  static Value none() { return make(Kind::None); }
  static Value of(bool b) {
    Value v = make(Kind::Bool);
    v.boolean = b;
    return v;
  }
  static Value of(std::int64_t i) {
    Value v = make(Kind::Int);
    v.integer = i;
    return v;
  }
  static Value of(int i) { return of(static_cast<std::int64_t>(i)); }
  static Value of(double d) {
    Value v = make(Kind::Float);
    v.number = d;
    return v;
  }
  static Value of(std::string s) {
    Value v = make(Kind::String);
    v.text = std::move(s);
    return v;
  }
  static Value of(const char* s) { return of(std::string(s)); }
  static Value of(Array l, Kind kind = Kind::List) {
    Value v = make(kind);
    v.list = std::make_shared<Array>(std::move(l));
    return v;
  }
  static Value of(Map d, Kind kind = Kind::Dict) {
    Value v = make(kind);
    v.dict = std::make_shared<Map>(std::move(d));
    return v;
  }
  static Value function(std::string name, std::function<Value(CallArgs&)> fn) {
    Value v = make(Kind::Callable);
    v.callable = std::make_shared<Callable>(Callable{std::move(name), std::move(fn)});
    return v;
  }
  static Value from_json(const nlohmann::ordered_json& j);

  bool is(Kind k) const { return kind == k; }
  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_sequence() const { return kind == Kind::List || kind == Kind::Tuple; }
  // Python's numbers: bool is an int.
  bool is_integral() const { return kind == Kind::Int || kind == Kind::Bool; }
  bool is_number() const { return is_integral() || kind == Kind::Float; }
  std::int64_t as_int() const { return kind == Kind::Bool ? boolean : integer; }
  double as_double() const { return kind == Kind::Float ? number : static_cast<double>(as_int()); }

  // A dict's value for a key, or null.
  const Value* find(std::string_view key) const;

 private:
  static Value make(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
};

// Python's bool(v); Undefined is false.
bool truthy(const Value& v);
// Python's str(v) as jinja2 prints it: None, True, 1.0, ['a', 1], {'k': 'v'};
// Undefined prints nothing.
std::string to_str(const Value& v);
// Python's repr(v).
std::string repr(const Value& v);
// Python's float repr: the shortest digits that round-trip, 1.0, 1e+16, 1e-05.
std::string float_repr(double d);
// json.dumps(v, ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys); indent none: one line. Throws EvalError for values
// JSON has no form for (Undefined, functions).
struct JsonFormat {
  std::optional<std::string> indent;  // the text of one level
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};
std::string to_json(const Value& v, const JsonFormat& format);

// "str", "int", "list", ...: Python's type name, for error messages.
std::string type_name(const Value& v);
// Python's ==.
bool equal(const Value& a, const Value& b);
// Python's <: numbers with numbers, strings with strings, sequences
// element-wise; else EvalError naming both types.
bool less(const Value& a, const Value& b);

// Strings as Python sees them: sequences of code points.
std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(const std::u32string& s);
void append_utf8(std::string& out, char32_t c);
std::size_t utf8_length(std::string_view s);
// Python's str.isspace() for one code point (also what \s matches).
bool is_space(char32_t c);

}  // namespace lclm::jinja
