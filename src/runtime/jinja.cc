// The evaluator: statements, expressions, and the filters, tests, globals and
// methods of jinja2 as chat templates use them. Behaviour follows jinja2 and
// Python, including the quirks templates depend on: `a.b` on a dict tries
// the dict's methods before its keys, an undefined value prints nothing but
// fails when used, a loop body starts each iteration from the scope outside
// the loop (hence namespace()).
#include "runtime/jinja.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <limits>
#include <unordered_map>

#include "runtime/jinja_ast.h"
#include "runtime/jinja_value.h"

namespace lclm::jinja {

struct Template::Program {
  std::string name;
  Limits limits;
  Body body;
};

namespace {

using Kind = Value::Kind;

// The sandbox's cap on range() (jinja2.sandbox.MAX_RANGE).
constexpr std::int64_t kMaxRange = 100000;

[[noreturn]] void fail(const std::string& message) {
  throw EvalError(message);
}

// Using an undefined value for more than printing, testing or iterating.
void require_defined(const Value& v) {
  if (v.is_undefined()) fail(v.text);
}

// ---- strings as Python sees them --------------------------------------

std::string map_case(std::string_view s, bool upper) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : decode_utf8(s)) {
    const auto cp = static_cast<utf8proc_int32_t>(c);
    append_utf8(out, static_cast<char32_t>(upper ? utf8proc_toupper(cp) : utf8proc_tolower(cp)));
  }
  return out;
}

bool is_cased_letter(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// str.capitalize(): the first character upper, the rest lower.
std::string capitalize(std::string_view s) {
  std::u32string cps = decode_utf8(s);
  for (std::size_t i = 0; i < cps.size(); ++i) {
    const auto cp = static_cast<utf8proc_int32_t>(cps[i]);
    cps[i] = static_cast<char32_t>(i == 0 ? utf8proc_toupper(cp) : utf8proc_tolower(cp));
  }
  return encode_utf8(cps);
}

// str.title(): a cased letter after an uncased character starts a word.
std::string py_title(std::string_view s) {
  std::u32string cps = decode_utf8(s);
  bool previous_cased = false;
  for (char32_t& c : cps) {
    const auto cp = static_cast<utf8proc_int32_t>(c);
    c = static_cast<char32_t>(previous_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp));
    previous_cased = is_cased_letter(c);
  }
  return encode_utf8(cps);
}

// jinja2's title filter: words start after spaces, '-', '(', '{', '[', '<'.
std::string jinja_title(std::string_view s) {
  std::u32string cps = decode_utf8(s);
  bool word_start = true;
  for (char32_t& c : cps) {
    const bool separator = is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    const auto cp = static_cast<utf8proc_int32_t>(c);
    if (!separator) {
      c = static_cast<char32_t>(word_start ? utf8proc_toupper(cp) : utf8proc_tolower(cp));
    }
    word_start = separator;
  }
  return encode_utf8(cps);
}

// str.strip/lstrip/rstrip with Python's whitespace or the given characters.
std::string strip(std::string_view s, const Value* chars, bool left, bool right) {
  const std::u32string cps = decode_utf8(s);
  std::u32string set;
  if (chars && !chars->is(Kind::None)) {
    if (!chars->is(Kind::String)) fail("strip arg must be None or str");
    set = decode_utf8(chars->text);
  }
  const auto strip_it = [&](char32_t c) {
    return chars && !chars->is(Kind::None) ? set.find(c) != std::u32string::npos : is_space(c);
  };
  std::size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return encode_utf8(cps.substr(b, e - b));
}

// str.replace(old, new, count).
std::string replace(const std::string& s, const std::string& from, const std::string& to,
                    std::int64_t count, std::size_t cap) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` before every character and at the end
    const std::u32string cps = decode_utf8(s);
    std::int64_t done = 0;
    for (char32_t c : cps) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      append_utf8(out, c);
      if (out.size() > cap) fail("a string grew past the template's output limit");
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  std::size_t pos = 0;
  std::int64_t done = 0;
  for (;;) {
    const std::size_t at = count >= 0 && done >= count ? std::string::npos : s.find(from, pos);
    if (at == std::string::npos) break;
    out.append(s, pos, at - pos);
    out += to;
    if (out.size() > cap) fail("a string grew past the template's output limit");
    pos = at + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// str.split(sep, maxsplit) / str.rsplit.
Array split(const std::string& s, const Value& sep, std::int64_t maxsplit, bool from_right) {
  Array out;
  if (sep.is(Kind::None) || sep.is_undefined()) {  // runs of whitespace, none at the ends
    std::u32string cps = decode_utf8(s);
    if (from_right) std::reverse(cps.begin(), cps.end());
    std::vector<std::u32string> parts;
    std::size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_space(cps[i])) ++i;
      if (i == cps.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) == maxsplit) {
        parts.push_back(cps.substr(i));  // the rest keeps its trailing whitespace
        break;
      }
      std::size_t j = i;
      while (j < cps.size() && !is_space(cps[j])) ++j;
      parts.push_back(cps.substr(i, j - i));
      i = j;
    }
    if (from_right) {
      std::reverse(parts.begin(), parts.end());
      for (auto& p : parts) std::reverse(p.begin(), p.end());
    }
    for (const auto& p : parts) out.push_back(Value::of(encode_utf8(p)));
    return out;
  }
  if (!sep.is(Kind::String)) fail("must be str or None, not " + type_name(sep));
  const std::string& d = sep.text;
  if (d.empty()) fail("empty separator");
  std::vector<std::string> parts;
  if (!from_right) {
    std::size_t pos = 0;
    for (;;) {
      const std::size_t at = maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) >= maxsplit
                                 ? std::string::npos
                                 : s.find(d, pos);
      if (at == std::string::npos) break;
      parts.push_back(s.substr(pos, at - pos));
      pos = at + d.size();
    }
    parts.push_back(s.substr(pos));
  } else {
    std::size_t end = s.size();
    for (;;) {
      const bool full = maxsplit >= 0 && static_cast<std::int64_t>(parts.size()) >= maxsplit;
      const std::size_t at =
          full || end < d.size() ? std::string::npos : s.rfind(d, end - d.size());
      if (at == std::string::npos) break;
      parts.push_back(s.substr(at + d.size(), end - at - d.size()));
      end = at;
    }
    parts.push_back(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
  }
  for (auto& p : parts) out.push_back(Value::of(std::move(p)));
  return out;
}

// str.splitlines(): Python's line boundaries, which are more than \n.
std::vector<std::string> splitlines(std::string_view s) {
  const std::u32string cps = decode_utf8(s);
  std::vector<std::string> lines;
  std::u32string line;
  for (std::size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const bool boundary = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C ||
                          c == 0x1D || c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!boundary) {
      line += c;
      continue;
    }
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    lines.push_back(encode_utf8(line));
    line.clear();
  }
  if (!line.empty()) lines.push_back(encode_utf8(line));
  return lines;
}

// Python's slice indices for a sequence of length n.
std::vector<std::size_t> slice_indices(std::int64_t n, const Value& start, const Value& stop,
                                       const Value& step) {
  const auto as_index = [](const Value& v, const char* what) {
    if (!v.is_integral()) {
      fail(std::string("slice ") + what + " must be an integer or None, not " + type_name(v));
    }
    return v.as_int();
  };
  const std::int64_t st = step.is(Kind::None) ? 1 : as_index(step, "step");
  if (st == 0) fail("slice step cannot be zero");
  const auto clamp = [&](const Value& v, std::int64_t fallback, const char* what) {
    if (v.is(Kind::None)) return fallback;
    std::int64_t i = as_index(v, what);
    if (i < 0) i += n;
    if (st > 0) return std::clamp<std::int64_t>(i, 0, n);
    return std::clamp<std::int64_t>(i, -1, n - 1);
  };
  const std::int64_t b = clamp(start, st > 0 ? 0 : n - 1, "start");
  const std::int64_t e = clamp(stop, st > 0 ? n : -1, "stop");
  std::vector<std::size_t> out;
  for (std::int64_t i = b; st > 0 ? i < e : i > e; i += st)
    out.push_back(static_cast<std::size_t>(i));
  return out;
}

// ---- arithmetic ----------------------------------------------------------

std::int64_t checked(bool overflow, std::int64_t r) {
  if (overflow) fail("integer overflow (the renderer's integers have 64 bits)");
  return r;
}

std::int64_t add(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  const bool overflow = __builtin_add_overflow(a, b, &r);
  return checked(overflow, r);
}

std::int64_t sub(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  const bool overflow = __builtin_sub_overflow(a, b, &r);
  return checked(overflow, r);
}

std::int64_t mul(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  const bool overflow = __builtin_mul_overflow(a, b, &r);
  return checked(overflow, r);
}

[[noreturn]] void bad_operands(const char* op, const Value& a, const Value& b) {
  fail(std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" +
       type_name(b) + "'");
}

double py_fmod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((b < 0) != (m < 0))) m += b;
  return m;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  if (b == -1) return checked(a == std::numeric_limits<std::int64_t>::min(), -a);
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// printf-style `format % args` for %s, %r, %d, %i and %%.
std::string percent_format(const std::string& format, const Value& args) {
  const Array single{args};
  const Array& items = args.is(Kind::Tuple) ? *args.list : single;
  std::string out;
  std::size_t next = 0;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) fail("incomplete format");
    const char spec = format[i];
    if (spec == '%') {
      out += '%';
      continue;
    }
    if (next >= items.size()) fail("not enough arguments for format string");
    const Value& v = items[next++];
    if (spec == 's') {
      out += to_str(v);
    } else if (spec == 'r') {
      out += repr(v);
    } else if (spec == 'd' || spec == 'i') {
      if (!v.is_number()) fail("%d format: a real number is required, not " + type_name(v));
      out += std::to_string(v.is_integral() ? v.as_int() : static_cast<std::int64_t>(v.number));
    } else {
      fail(std::string("the format %") + spec + " is not supported by the renderer");
    }
  }
  if (next < items.size()) fail("not all arguments converted during string formatting");
  return out;
}

// ---- arguments -----------------------------------------------------------

// A function's arguments by position or keyword, as Python binds them.
class Args {
 public:
  Args(CallArgs& args, std::string function, std::vector<std::string> names)
      : args_(args), function_(std::move(function)), names_(std::move(names)) {
    if (args_.positional.size() > names_.size()) {
      fail(function_ + "() takes at most " + std::to_string(names_.size()) + " argument(s) (" +
           std::to_string(args_.positional.size()) + " given)");
    }
    for (const auto& [key, value] : args_.keyword) {
      if (std::find(names_.begin(), names_.end(), key) == names_.end()) {
        fail(function_ + "() got an unexpected keyword argument '" + key + "'");
      }
    }
  }
  // The argument, or null when not given.
  const Value* get(std::size_t index) const {
    if (index < args_.positional.size()) return &args_.positional[index];
    for (const auto& [key, value] : args_.keyword) {
      if (key == names_[index]) return &value;
    }
    return nullptr;
  }
  Value get_or(std::size_t index, Value fallback) const {
    const Value* v = get(index);
    return v ? *v : fallback;
  }
  const Value& required(std::size_t index) const {
    const Value* v = get(index);
    if (!v) fail(function_ + "() missing required argument '" + names_[index] + "'");
    return *v;
  }
  std::string string(std::size_t index) const {
    const Value& v = required(index);
    if (!v.is(Kind::String))
      fail(function_ + "() argument '" + names_[index] + "' must be a string");
    return v.text;
  }
  std::int64_t integer(std::size_t index, std::int64_t fallback) const {
    const Value* v = get(index);
    if (!v || v->is(Kind::None)) return fallback;
    if (!v->is_integral()) {
      fail(function_ + "() argument '" + names_[index] + "' must be an integer");
    }
    return v->as_int();
  }
  bool flag(std::size_t index, bool fallback) const {
    const Value* v = get(index);
    return v ? truthy(*v) : fallback;
  }

 private:
  CallArgs& args_;
  std::string function_;
  std::vector<std::string> names_;
};

void no_args(const CallArgs& a, const std::string& function) {
  if (!a.positional.empty() || !a.keyword.empty()) fail(function + "() takes no arguments");
}

// ---- the renderer ---------------------------------------------------------

// d[key] = v, keeping the key's place when it is there.
void put(Map& d, const std::string& key, Value v) {
  for (auto& [k, old] : d) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  d.emplace_back(key, std::move(v));
}

// Variables of one scope; a scope sees its parents'.
struct Frame {
  const Frame* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* find(const std::string& name) const {
    for (const Frame* f = this; f; f = f->parent) {
      for (const auto& [k, v] : f->vars) {
        if (k == name) return &v;
      }
    }
    return nullptr;
  }
  void set(const std::string& name, Value v) { put(vars, name, std::move(v)); }
};

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  explicit Renderer(const Template::Program& program) : program_(program) {}
  // The line being run, for error messages.
  int line() const { return line_; }

  std::string run(const nlohmann::ordered_json& context) {
    Frame root;
    add_globals(root);
    if (!context.is_object() && !context.is_null()) {
      fail("the context of a template must be a JSON object");
    }
    if (context.is_object()) {
      for (const auto& [k, v] : context.items()) root.set(k, Value::from_json(v));
    }
    root_ = &root;
    std::string out;
    exec(program_.body, root, out);
    return out;
  }

 private:
  const Limits& limits() const { return program_.limits; }

  void step(int line) {
    line_ = line;
    if (++steps_ > limits().max_steps) {
      fail("the template ran more than " + std::to_string(limits().max_steps) +
           " steps (a limit of the renderer)");
    }
  }

  void emit(std::string& out, std::string_view text) {
    if (out.size() + text.size() > limits().max_output_bytes) {
      fail("the output is longer than " + std::to_string(limits().max_output_bytes) +
           " bytes (a limit of the renderer)");
    }
    out.append(text);
  }

  Value checked_size(Value v) const {
    const std::size_t size = v.is(Kind::String) ? v.text.size()
                             : v.is_sequence()  ? v.list->size()
                                                : 0;
    if (size > limits().max_output_bytes) {
      fail("a value grew past " + std::to_string(limits().max_output_bytes) +
           " (a limit of the renderer)");
    }
    return v;
  }

  // ---- statements ----

  Flow exec(const Body& body, Frame& frame, std::string& out) {
    for (const StmtPtr& s : body) {
      const Flow f = exec(*s, frame, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Stmt& s, Frame& frame, std::string& out) {
    step(s.line);
    switch (s.kind) {
      case Stmt::Kind::Text:
        emit(out, s.text);
        return Flow::Normal;
      case Stmt::Kind::Output: {
        const Value v = eval(*s.expr, frame);
        line_ = s.line;
        emit(out, to_str(v));
        return Flow::Normal;
      }
      case Stmt::Kind::If:
        for (const auto& [cond, body] : s.branches) {
          if (truthy(eval(*cond, frame))) return exec(body, frame, out);
        }
        return exec(s.else_body, frame, out);
      case Stmt::Kind::For:
        return exec_for(s, frame, out);
      case Stmt::Kind::Set: {
        Value v = eval(*s.expr, frame);
        line_ = s.line;
        if (!s.attr.empty()) {
          const Value* ns = frame.find(s.names[0]);
          if (!ns || !ns->is(Kind::Namespace)) {
            fail("cannot assign attribute on non-namespace object");
          }
          put(*ns->dict, s.attr, std::move(v));
        } else {
          assign(s.names, std::move(v), frame);
        }
        return Flow::Normal;
      }
      case Stmt::Kind::SetBlock: {
        std::string text;
        exec(s.body, frame, text);
        frame.set(s.names[0], Value::of(std::move(text)));
        return Flow::Normal;
      }
      case Stmt::Kind::Macro:
        frame.set(s.name, macro(s, nullptr));
        return Flow::Normal;
      case Stmt::Kind::CallBlock: {
        const Value caller = macro(s, &frame);
        const Expr& call = *s.expr;
        const Value callee = eval(*call.a, frame);
        CallArgs args = eval_args(call, frame);
        args.keyword.emplace_back("caller", caller);
        line_ = s.line;
        emit(out, to_str(invoke(callee, args)));
        return Flow::Normal;
      }
      case Stmt::Kind::FilterBlock: {
        std::string text;
        exec(s.body, frame, text);
        emit(out, to_str(eval_filter(*s.expr, frame, Value::of(std::move(text)))));
        return Flow::Normal;
      }
      case Stmt::Kind::With: {
        Frame inner{&frame, {}};
        for (const auto& [name, expr] : s.assigns) inner.set(name, eval(*expr, frame));
        return exec(s.body, inner, out);
      }
      case Stmt::Kind::Break:
        return Flow::Break;
      case Stmt::Kind::Continue:
        return Flow::Continue;
      case Stmt::Kind::Generation: {
        // Hugging Face parses it as a call block, whose body has its own scope.
        Frame inner{&frame, {}};
        return exec(s.body, inner, out);
      }
    }
    return Flow::Normal;
  }

  void assign(const std::vector<std::string>& names, Value v, Frame& frame) {
    if (names.size() == 1) {
      frame.set(names[0], std::move(v));
      return;
    }
    const Array items = iterate(v);
    if (items.size() != names.size()) {
      fail("cannot unpack " + std::to_string(items.size()) + " values into " +
           std::to_string(names.size()) + " names");
    }
    for (std::size_t i = 0; i < names.size(); ++i) frame.set(names[i], items[i]);
  }

  Flow exec_for(const Stmt& s, Frame& frame, std::string& out) {
    Array items = iterate(eval(*s.expr, frame));
    if (s.cond) {
      Array kept;
      for (Value& item : items) {
        Frame probe{&frame, {}};
        assign(s.names, item, probe);
        if (truthy(eval(*s.cond, probe))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, frame, out);
    const auto n = static_cast<std::int64_t>(items.size());
    auto changed_last = std::make_shared<std::optional<Value>>();
    for (std::int64_t i = 0; i < n; ++i) {
      step(s.line);
      Frame inner{&frame, {}};
      Map loop{
          {"index", Value::of(i + 1)},
          {"index0", Value::of(i)},
          {"revindex", Value::of(n - i)},
          {"revindex0", Value::of(n - i - 1)},
          {"first", Value::of(i == 0)},
          {"last", Value::of(i == n - 1)},
          {"length", Value::of(n)},
          {"depth", Value::of(1)},
          {"depth0", Value::of(0)},
          {"previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)]
                             : Value::undefined("there is no previous item")},
          {"nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)]
                                 : Value::undefined("there is no next item")},
          {"cycle",
           Value::function("cycle",
                           [i](CallArgs& a) {
                             if (a.positional.empty()) fail("no items for cycling given");
                             return a.positional[static_cast<std::size_t>(i) % a.positional.size()];
                           })},
          {"changed", Value::function("changed", [changed_last](CallArgs& a) {
             const Value now = Value::of(a.positional, Kind::Tuple);
             const bool changed = !*changed_last || !equal(**changed_last, now);
             *changed_last = now;
             return Value::of(changed);
           })}};
      inner.set("loop", Value::of(std::move(loop)));
      assign(s.names, items[static_cast<std::size_t>(i)], inner);
      if (exec(s.body, inner, out) == Flow::Break) break;
    }
    return Flow::Normal;
  }

  // A macro (or a call block's body, as `caller`) as a function value.
  // `scope` is where the body runs: the template's top level for a macro,
  // the enclosing scope for a caller.
  Value macro(const Stmt& s, const Frame* scope) {
    const Frame* parent = scope ? scope : root_;
    const std::string name = s.kind == Stmt::Kind::Macro ? s.name : "caller";
    return Value::function(name, [this, &s, parent, name](CallArgs& args) {
      if (++depth_ > limits().max_depth) {
        fail("macro calls nest deeper than " + std::to_string(limits().max_depth) +
             " (a limit of the renderer)");
      }
      struct Unwind {
        int& d;
        ~Unwind() { --d; }
      } unwind{depth_};
      const int saved_line = line_;
      Frame frame{parent, {}};
      if (args.positional.size() > s.params.size()) {
        fail("macro '" + name + "' takes not more than " + std::to_string(s.params.size()) +
             " argument(s)");
      }
      for (std::size_t i = 0; i < s.params.size(); ++i) {
        const Value* given = i < args.positional.size() ? &args.positional[i] : nullptr;
        for (const auto& [key, value] : args.keyword) {
          if (key == s.params[i]) given = &value;
        }
        if (given) {
          frame.set(s.params[i], *given);
        } else if (s.defaults[i]) {
          frame.set(s.params[i], eval(*s.defaults[i], frame));
        } else {
          frame.set(s.params[i],
                    Value::undefined("parameter '" + s.params[i] + "' was not provided"));
        }
      }
      for (const auto& [key, value] : args.keyword) {
        if (key == "caller") {
          frame.set("caller", value);
        } else if (std::find(s.params.begin(), s.params.end(), key) == s.params.end()) {
          fail("macro '" + name + "' takes no keyword argument '" + key + "'");
        }
      }
      std::string out;
      exec(s.body, frame, out);
      line_ = saved_line;
      return Value::of(std::move(out));
    });
  }

  // ---- expressions ----

  Value eval(const Expr& e, const Frame& frame) {
    step(e.line);
    switch (e.kind) {
      case Expr::Kind::Const:
        return e.value;
      case Expr::Kind::Name: {
        const Value* v = frame.find(e.name);
        return v ? *v : Value::undefined("'" + e.name + "' is undefined");
      }
      case Expr::Kind::List:
      case Expr::Kind::Tuple: {
        Array items;
        for (const ExprPtr& x : e.items) items.push_back(eval(*x, frame));
        return Value::of(std::move(items), e.kind == Expr::Kind::List ? Kind::List : Kind::Tuple);
      }
      case Expr::Kind::Dict: {
        Map d;
        for (std::size_t i = 0; i < e.items.size(); i += 2) {
          const Value key = eval(*e.items[i], frame);
          if (!key.is(Kind::String)) fail("dict keys must be strings in the renderer");
          put(d, key.text, eval(*e.items[i + 1], frame));
        }
        return Value::of(std::move(d));
      }
      case Expr::Kind::Attr:
        return getattr(eval(*e.a, frame), e.name);
      case Expr::Kind::Item:
        return getitem(eval(*e.a, frame), eval(*e.b, frame));
      case Expr::Kind::Slice: {
        const Value target = eval(*e.a, frame);
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          parts[i] = e.items[static_cast<std::size_t>(i)]
                         ? eval(*e.items[static_cast<std::size_t>(i)], frame)
                         : Value::none();
        }
        return slice(target, parts[0], parts[1], parts[2]);
      }
      case Expr::Kind::Call: {
        const Value callee = eval(*e.a, frame);
        CallArgs args = eval_args(e, frame);
        line_ = e.line;
        return checked_size(invoke(callee, args));
      }
      case Expr::Kind::Filter:
        return checked_size(eval_filter(e, frame, Value()));
      case Expr::Kind::Test:
        return Value::of(eval_test(e, frame));
      case Expr::Kind::Neg:
      case Expr::Kind::Pos: {
        const Value v = eval(*e.a, frame);
        require_defined(v);
        if (!v.is_number()) {
          fail(std::string("bad operand type for unary ") +
               (e.kind == Expr::Kind::Neg ? "-" : "+") + ": '" + type_name(v) + "'");
        }
        if (e.kind == Expr::Kind::Pos) return v.is_integral() ? Value::of(v.as_int()) : v;
        if (v.is_integral()) return Value::of(checked(v.as_int() == INT64_MIN, -v.as_int()));
        return Value::of(-v.number);
      }
      case Expr::Kind::Not:
        return Value::of(!truthy(eval(*e.a, frame)));
      case Expr::Kind::And: {
        Value a = eval(*e.a, frame);
        return truthy(a) ? eval(*e.b, frame) : a;
      }
      case Expr::Kind::Or: {
        Value a = eval(*e.a, frame);
        return truthy(a) ? a : eval(*e.b, frame);
      }
      case Expr::Kind::Binary: {
        const Value a = eval(*e.a, frame);
        const Value b = eval(*e.b, frame);
        line_ = e.line;
        return checked_size(binary(e.name, a, b));
      }
      case Expr::Kind::Compare: {
        Value left = eval(*e.a, frame);
        for (std::size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.items[i], frame);
          line_ = e.line;
          if (!compare(e.ops[i], left, right)) return Value::of(false);
          left = std::move(right);
        }
        return Value::of(true);
      }
      case Expr::Kind::Cond:
        if (truthy(eval(*e.a, frame))) return eval(*e.b, frame);
        return e.c ? eval(*e.c, frame) : Value::undefined("the inline if has no else");
    }
    return Value();
  }

  CallArgs eval_args(const Expr& e, const Frame& frame) {
    CallArgs args;
    for (const ExprPtr& x : e.items) args.positional.push_back(eval(*x, frame));
    for (const auto& [k, x] : e.kwargs) args.keyword.emplace_back(k, eval(*x, frame));
    return args;
  }

  Value invoke(const Value& callee, CallArgs& args) {
    require_defined(callee);
    if (!callee.is(Kind::Callable)) fail("'" + type_name(callee) + "' object is not callable");
    return callee.callable->fn(args);
  }

  bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equal(a, b);
    if (op == "!=") return !equal(a, b);
    if (op == "in") return contains(b, a);
    if (op == "notin") return !contains(b, a);
    require_defined(a);
    require_defined(b);
    if (op == "<") return less(a, b);
    if (op == ">") return less(b, a);
    if (op == "<=") return less(a, b) || equal(a, b);
    return less(b, a) || equal(a, b);  // >=
  }

  bool contains(const Value& container, const Value& item) {
    switch (container.kind) {
      case Kind::Undefined:
        return false;
      case Kind::String:
        if (!item.is(Kind::String)) {
          fail("'in <string>' requires string as left operand, not " + type_name(item));
        }
        return container.text.find(item.text) != std::string::npos;
      case Kind::List:
      case Kind::Tuple:
        return std::any_of(container.list->begin(), container.list->end(),
                           [&](const Value& x) { return equal(x, item); });
      case Kind::Dict:
        return item.is(Kind::String) && container.find(item.text) != nullptr;
      default:
        fail("argument of type '" + type_name(container) + "' is not iterable");
    }
  }

  Value binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") return Value::of(to_str(a) + to_str(b));
    require_defined(a);
    require_defined(b);
    const bool ints = a.is_integral() && b.is_integral();
    const bool nums = a.is_number() && b.is_number();
    if (op == "+") {
      if (ints) return Value::of(add(a.as_int(), b.as_int()));
      if (nums) return Value::of(a.as_double() + b.as_double());
      if (a.is(Kind::String) && b.is(Kind::String)) return Value::of(a.text + b.text);
      if (a.is_sequence() && a.kind == b.kind) {
        Array l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::of(std::move(l), a.kind);
      }
      bad_operands("+", a, b);
    }
    if (op == "-") {
      if (ints) return Value::of(sub(a.as_int(), b.as_int()));
      if (nums) return Value::of(a.as_double() - b.as_double());
      bad_operands("-", a, b);
    }
    if (op == "*") {
      if (ints) return Value::of(mul(a.as_int(), b.as_int()));
      if (nums) return Value::of(a.as_double() * b.as_double());
      const Value& seq = a.is_integral() ? b : a;
      const Value& count = a.is_integral() ? a : b;
      if (count.is_integral() && (seq.is(Kind::String) || seq.is_sequence())) {
        const std::int64_t n = std::max<std::int64_t>(count.as_int(), 0);
        const std::size_t unit = seq.is(Kind::String) ? seq.text.size() : seq.list->size();
        if (unit > 0 && static_cast<std::uint64_t>(n) > limits().max_output_bytes / unit) {
          fail("a value grew past " + std::to_string(limits().max_output_bytes) +
               " (a limit of the renderer)");
        }
        if (seq.is(Kind::String)) {
          std::string s;
          for (std::int64_t i = 0; i < n; ++i) s += seq.text;
          return Value::of(std::move(s));
        }
        Array l;
        for (std::int64_t i = 0; i < n; ++i) l.insert(l.end(), seq.list->begin(), seq.list->end());
        return Value::of(std::move(l), seq.kind);
      }
      bad_operands("*", a, b);
    }
    if (op == "/") {
      if (!nums) bad_operands("/", a, b);
      if (b.as_double() == 0) fail("division by zero");
      return Value::of(a.as_double() / b.as_double());
    }
    if (op == "//") {
      if (!nums) bad_operands("//", a, b);
      if (b.as_double() == 0) fail("integer division or modulo by zero");
      if (ints) return Value::of(floor_div(a.as_int(), b.as_int()));
      const double x = a.as_double(), y = b.as_double();
      return Value::of(std::floor((x - py_fmod(x, y)) / y + 0.5));
    }
    if (op == "%") {
      if (a.is(Kind::String)) return Value::of(percent_format(a.text, b));
      if (!nums) bad_operands("%", a, b);
      if (b.as_double() == 0) fail("integer division or modulo by zero");
      if (ints) return Value::of(a.as_int() - floor_div(a.as_int(), b.as_int()) * b.as_int());
      return Value::of(py_fmod(a.as_double(), b.as_double()));
    }
    if (op == "**") {
      if (ints && b.as_int() >= 0) {
        std::int64_t result = 1, base = a.as_int();
        for (std::int64_t e = b.as_int(); e > 0; e >>= 1) {
          if (e & 1) result = mul(result, base);
          if (e > 1) base = mul(base, base);
        }
        return Value::of(result);
      }
      if (nums) return Value::of(std::pow(a.as_double(), b.as_double()));
      bad_operands("**", a, b);
    }
    fail("unknown operator " + op);
  }

  // ---- attribute and item access ----

  // a.name: jinja2 tries the object's attribute (a dict's methods among
  // them) and then its item.
  Value getattr(const Value& obj, const std::string& name) {
    require_defined(obj);
    if (name.starts_with("_")) {
      return Value::undefined("access to attribute '" + name + "' of '" + type_name(obj) +
                              "' object is unsafe.");
    }
    if (Value m = method(obj, name); !m.is_undefined()) return m;
    if (obj.is(Kind::Dict) || obj.is(Kind::Namespace)) {
      if (const Value* v = obj.find(name)) return *v;
    }
    return no_attribute(obj, name);
  }

  static Value no_attribute(const Value& obj, const std::string& name) {
    if (obj.is(Kind::None)) return Value::undefined("'None' has no attribute '" + name + "'");
    return Value::undefined("'" + type_name(obj) + " object' has no attribute '" + name + "'");
  }

  // a[key]: the item first, then (for a string key) the attribute.
  Value getitem(const Value& obj, const Value& key) {
    require_defined(obj);
    if (obj.is(Kind::Dict) || obj.is(Kind::Namespace)) {
      if (key.is(Kind::String)) {
        if (const Value* v = obj.find(key.text)) return *v;
        return getattr(obj, key.text);
      }
      return Value::undefined("'" + type_name(obj) + " object' has no attribute '" + to_str(key) +
                              "'");
    }
    if ((obj.is_sequence() || obj.is(Kind::String)) && key.is_integral()) {
      const std::u32string cps = obj.is(Kind::String) ? decode_utf8(obj.text) : std::u32string();
      const auto n =
          static_cast<std::int64_t>(obj.is(Kind::String) ? cps.size() : obj.list->size());
      std::int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) {
        return Value::undefined("'" + type_name(obj) + " object' has no element " +
                                std::to_string(key.as_int()));
      }
      if (obj.is(Kind::String)) {
        std::string c;
        append_utf8(c, cps[static_cast<std::size_t>(i)]);
        return Value::of(std::move(c));
      }
      return (*obj.list)[static_cast<std::size_t>(i)];
    }
    if (key.is(Kind::String)) return getattr(obj, key.text);
    return Value::undefined("'" + type_name(obj) + " object' has no element " + to_str(key));
  }

  Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
    require_defined(obj);
    if (obj.is(Kind::String)) {
      const std::u32string cps = decode_utf8(obj.text);
      std::u32string out;
      for (std::size_t i :
           slice_indices(static_cast<std::int64_t>(cps.size()), start, stop, step)) {
        out += cps[i];
      }
      return Value::of(encode_utf8(out));
    }
    if (obj.is_sequence()) {
      Array out;
      for (std::size_t i :
           slice_indices(static_cast<std::int64_t>(obj.list->size()), start, stop, step)) {
        out.push_back((*obj.list)[i]);
      }
      return Value::of(std::move(out), obj.kind);
    }
    return Value::undefined("'" + type_name(obj) + " object' cannot be sliced");
  }

  // The items a for loop or a filter walks: a dict's keys, a string's
  // characters; nothing for an undefined value.
  static Array iterate(const Value& v) {
    switch (v.kind) {
      case Kind::Undefined:
        return {};
      case Kind::List:
      case Kind::Tuple:
        return *v.list;
      case Kind::Dict: {
        Array keys;
        for (const auto& [k, x] : *v.dict) keys.push_back(Value::of(k));
        return keys;
      }
      case Kind::String: {
        Array chars;
        for (char32_t c : decode_utf8(v.text)) {
          std::string s;
          append_utf8(s, c);
          chars.push_back(Value::of(std::move(s)));
        }
        return chars;
      }
      default:
        fail("'" + type_name(v) + "' object is not iterable");
    }
  }

  // ---- methods ----

  // obj.name as a bound method, or Undefined when obj has no such method.
  // The sandbox refuses the methods that would change a list or dict.
  Value method(const Value& obj, const std::string& name) {
    using Fn = std::function<Value(const Value&, CallArgs&)>;
    const auto bind = [&](const Fn& fn) {
      return Value::function(name, [obj, fn](CallArgs& a) { return fn(obj, a); });
    };
    if (obj.is(Kind::String)) {
      const auto it = string_methods().find(name);
      if (it != string_methods().end()) return bind(it->second);
      return Value();
    }
    if (obj.is(Kind::Dict)) {
      if (name == "items") {
        return bind([](const Value& d, CallArgs& a) {
          no_args(a, "items");
          Array out;
          for (const auto& [k, v] : *d.dict)
            out.push_back(Value::of(Array{Value::of(k), v}, Kind::Tuple));
          return Value::of(std::move(out));
        });
      }
      if (name == "keys" || name == "values") {
        const bool keys = name == "keys";
        return bind([keys](const Value& d, CallArgs& a) {
          no_args(a, keys ? "keys" : "values");
          Array out;
          for (const auto& [k, v] : *d.dict) out.push_back(keys ? Value::of(k) : v);
          return Value::of(std::move(out));
        });
      }
      if (name == "get") {
        return bind([](const Value& d, CallArgs& a) {
          const Args args(a, "get", {"key", "default"});
          const Value& key = args.required(0);
          const Value* v = key.is(Kind::String) ? d.find(key.text) : nullptr;
          return v ? *v : args.get_or(1, Value::none());
        });
      }
      for (const char* unsafe : {"clear", "pop", "popitem", "setdefault", "update"}) {
        if (name == unsafe) return unsafe_method(obj, name);
      }
      return Value();
    }
    if (obj.is_sequence()) {
      if (name == "index" || name == "count") {
        const bool index = name == "index";
        return bind([index](const Value& l, CallArgs& a) {
          const Args args(a, index ? "index" : "count", {"value"});
          const Value& x = args.required(0);
          std::int64_t count = 0;
          for (std::size_t i = 0; i < l.list->size(); ++i) {
            if (!equal((*l.list)[i], x)) continue;
            if (index) return Value::of(static_cast<std::int64_t>(i));
            ++count;
          }
          if (index) fail(repr(x) + " is not in list");
          return Value::of(count);
        });
      }
      if (obj.is(Kind::List)) {
        for (const char* unsafe :
             {"append", "reverse", "insert", "sort", "extend", "remove", "pop", "clear"}) {
          if (name == unsafe) return unsafe_method(obj, name);
        }
      }
    }
    return Value();
  }

  static Value unsafe_method(const Value& obj, const std::string& name) {
    return Value::function(
        name,
        [message = "access to attribute '" + name + "' of '" + type_name(obj) +
                   "' object is unsafe."](CallArgs&) -> Value { fail(message); });
  }

  using StringMethod = std::function<Value(const Value&, CallArgs&)>;
  const std::unordered_map<std::string, StringMethod>& string_methods() {
    if (!string_methods_.empty()) return string_methods_;
    auto& m = string_methods_;
    const std::size_t cap = limits().max_output_bytes;
    const auto affix = [](bool prefix) {
      return [prefix](const Value& s, CallArgs& a) {
        const Args args(a, prefix ? "startswith" : "endswith", {"prefix"});
        const Value& x = args.required(0);
        const auto test = [&](const Value& p) {
          if (!p.is(Kind::String)) {
            fail(std::string(prefix ? "startswith" : "endswith") +
                 " first arg must be str or a tuple of str, not " + type_name(p));
          }
          return prefix ? s.text.starts_with(p.text) : s.text.ends_with(p.text);
        };
        if (x.is(Kind::Tuple)) {
          return Value::of(std::any_of(x.list->begin(), x.list->end(), test));
        }
        return Value::of(test(x));
      };
    };
    m["startswith"] = affix(true);
    m["endswith"] = affix(false);
    const auto stripper = [](const char* fname, bool left, bool right) {
      return [fname, left, right](const Value& s, CallArgs& a) {
        const Args args(a, fname, {"chars"});
        return Value::of(strip(s.text, args.get(0), left, right));
      };
    };
    m["strip"] = stripper("strip", true, true);
    m["lstrip"] = stripper("lstrip", true, false);
    m["rstrip"] = stripper("rstrip", false, true);
    const auto splitter = [](bool right) {
      return [right](const Value& s, CallArgs& a) {
        const Args args(a, right ? "rsplit" : "split", {"sep", "maxsplit"});
        return Value::of(split(s.text, args.get_or(0, Value::none()), args.integer(1, -1), right));
      };
    };
    m["split"] = splitter(false);
    m["rsplit"] = splitter(true);
    m["splitlines"] = [](const Value& s, CallArgs& a) {
      no_args(a, "splitlines");
      Array out;
      for (std::string& line : splitlines(s.text)) out.push_back(Value::of(std::move(line)));
      return Value::of(std::move(out));
    };
    m["replace"] = [cap](const Value& s, CallArgs& a) {
      const Args args(a, "replace", {"old", "new", "count"});
      return Value::of(replace(s.text, args.string(0), args.string(1), args.integer(2, -1), cap));
    };
    m["upper"] = [](const Value& s, CallArgs& a) {
      no_args(a, "upper");
      return Value::of(map_case(s.text, true));
    };
    m["lower"] = [](const Value& s, CallArgs& a) {
      no_args(a, "lower");
      return Value::of(map_case(s.text, false));
    };
    m["title"] = [](const Value& s, CallArgs& a) {
      no_args(a, "title");
      return Value::of(py_title(s.text));
    };
    m["capitalize"] = [](const Value& s, CallArgs& a) {
      no_args(a, "capitalize");
      return Value::of(capitalize(s.text));
    };
    const auto finder = [](const char* fname, bool right, bool count) {
      return [fname, right, count](const Value& s, CallArgs& a) {
        const Args args(a, fname, {"sub"});
        const std::string sub = args.string(0);
        if (count) {
          if (sub.empty()) return Value::of(static_cast<std::int64_t>(utf8_length(s.text) + 1));
          std::int64_t n = 0;
          for (std::size_t p = s.text.find(sub); p != std::string::npos;
               p = s.text.find(sub, p + sub.size())) {
            ++n;
          }
          return Value::of(n);
        }
        const std::size_t at = right ? s.text.rfind(sub) : s.text.find(sub);
        if (at == std::string::npos) return Value::of(-1);
        return Value::of(static_cast<std::int64_t>(utf8_length(s.text.substr(0, at))));
      };
    };
    m["find"] = finder("find", false, false);
    m["rfind"] = finder("rfind", true, false);
    m["count"] = finder("count", false, true);
    m["join"] = [cap](const Value& s, CallArgs& a) {
      const Args args(a, "join", {"iterable"});
      std::string out;
      bool first = true;
      for (const Value& x : iterate(args.required(0))) {
        if (!x.is(Kind::String))
          fail("sequence item: expected str instance, " + type_name(x) + " found");
        if (!first) out += s.text;
        out += x.text;
        first = false;
        if (out.size() > cap) fail("a string grew past the template's output limit");
      }
      return Value::of(std::move(out));
    };
    const auto predicate = [](const char* fname, bool (*holds)(char32_t)) {
      return [fname, holds](const Value& s, CallArgs& a) {
        no_args(a, fname);
        const std::u32string cps = decode_utf8(s.text);
        return Value::of(!cps.empty() && std::all_of(cps.begin(), cps.end(), holds));
      };
    };
    m["isspace"] = predicate("isspace", is_space);
    m["isdigit"] = predicate("isdigit", [](char32_t c) {
      return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
    });
    m["isalpha"] = predicate("isalpha", [](char32_t c) {
      const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
      return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
    });
    m["isalnum"] = predicate("isalnum", [](char32_t c) {
      const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
      return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
             cat == UTF8PROC_CATEGORY_ND;
    });
    m["format"] = [](const Value& s, CallArgs& a) { return Value::of(brace_format(s.text, a)); };
    return m;
  }

  // str.format with {} {0} {name} and no format specs.
  static std::string brace_format(const std::string& f, CallArgs& a) {
    std::string out;
    std::size_t auto_index = 0;
    for (std::size_t i = 0; i < f.size(); ++i) {
      const char c = f[i];
      if ((c == '{' || c == '}') && i + 1 < f.size() && f[i + 1] == c) {
        out += c;
        ++i;
        continue;
      }
      if (c == '}') fail("Single '}' encountered in format string");
      if (c != '{') {
        out += c;
        continue;
      }
      const std::size_t close = f.find('}', i);
      if (close == std::string::npos) fail("Single '{' encountered in format string");
      const std::string field = f.substr(i + 1, close - i - 1);
      if (field.find_first_of(":!.[") != std::string::npos) {
        fail("format specs and conversions in str.format are not supported by the renderer");
      }
      const Value* v = nullptr;
      if (field.empty() ||
          std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
        const std::size_t index = field.empty() ? auto_index++ : std::stoul(field);
        if (index >= a.positional.size())
          fail("Replacement index " + std::to_string(index) + " out of range");
        v = &a.positional[index];
      } else {
        for (const auto& [k, x] : a.keyword) {
          if (k == field) v = &x;
        }
        if (!v) fail("'" + field + "'");
      }
      out += to_str(*v);
      i = close;
    }
    return out;
  }

  // ---- filters ----

  // attribute="a.b.0" as jinja2's make_attrgetter reads it.
  Value get_path(const Value& v, const Value& attribute) {
    if (attribute.is_integral()) return getitem(v, attribute);
    Value cur = v;
    std::size_t start = 0;
    const std::string path = to_str(attribute);
    for (;;) {
      const std::size_t dot = path.find('.', start);
      const std::string part =
          path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                       [](char c) { return c >= '0' && c <= '9'; });
      cur = getitem(
          cur, digits ? Value::of(static_cast<std::int64_t>(std::stoll(part))) : Value::of(part));
      if (dot == std::string::npos) return cur;
      start = dot + 1;
    }
  }

  // The input of filters that want text.
  static std::string text_of(const Value& v) { return to_str(v); }

  // `block_input` is the text of a filter block, which the innermost filter
  // of its chain (the one without an input expression) takes.
  Value eval_filter(const Expr& e, const Frame& frame, const Value& block_input) {
    Value input = !e.a                              ? block_input
                  : e.a->kind == Expr::Kind::Filter ? eval_filter(*e.a, frame, block_input)
                                                    : eval(*e.a, frame);
    CallArgs args = eval_args(e, frame);
    line_ = e.line;
    return filter(e.name, input, args);
  }

  Value filter(const std::string& name, const Value& v, CallArgs& a) {
    const std::size_t cap = limits().max_output_bytes;
    if (name == "tojson") {
      const Args args(a, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
      JsonFormat f;
      if (args.flag(0, false)) fail("tojson(ensure_ascii=True) is not supported by the renderer");
      const Value indent = args.get_or(1, Value::none());
      if (indent.is(Kind::String)) {
        f.indent = indent.text;
      } else if (indent.is_integral()) {
        f.indent =
            std::string(static_cast<std::size_t>(std::max<std::int64_t>(indent.as_int(), 0)), ' ');
      } else if (!indent.is(Kind::None)) {
        fail("tojson indent must be an integer or a string");
      }
      if (f.indent) f.item_separator = ",";
      const Value separators = args.get_or(2, Value::none());
      if (!separators.is(Kind::None)) {
        if (!separators.is_sequence() || separators.list->size() != 2 ||
            !(*separators.list)[0].is(Kind::String) || !(*separators.list)[1].is(Kind::String)) {
          fail("tojson separators must be a pair of strings");
        }
        f.item_separator = (*separators.list)[0].text;
        f.key_separator = (*separators.list)[1].text;
      }
      f.sort_keys = args.flag(3, false);
      return Value::of(to_json(v, f));
    }
    if (name == "trim") {
      const Args args(a, "trim", {"chars"});
      return Value::of(strip(text_of(v), args.get(0), true, true));
    }
    if (name == "length" || name == "count") {
      no_args(a, name);
      return Value::of(static_cast<std::int64_t>(length(v)));
    }
    if (name == "lower" || name == "upper") {
      no_args(a, name);
      return Value::of(map_case(text_of(v), name == "upper"));
    }
    if (name == "capitalize") {
      no_args(a, name);
      return Value::of(capitalize(text_of(v)));
    }
    if (name == "title") {
      no_args(a, name);
      return Value::of(jinja_title(text_of(v)));
    }
    if (name == "string") {
      no_args(a, name);
      return v.is(Kind::String) ? v : Value::of(to_str(v));
    }
    if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
      no_args(a, name);
      if (name == "safe") return v.is(Kind::String) ? v : Value::of(to_str(v));
      return Value::of(html_escape(to_str(v)));
    }
    if (name == "first" || name == "last") {
      no_args(a, name);
      const Array items = iterate(v);
      if (items.empty()) return Value::undefined("No " + name + " item, sequence was empty.");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const Args args(a, "join", {"d", "attribute"});
      const std::string sep = to_str(args.get_or(0, Value::of("")));
      const Value* attribute = args.get(1);
      std::string out;
      bool first = true;
      for (const Value& x : iterate(v)) {
        if (!first) out += sep;
        out += to_str(attribute && !attribute->is(Kind::None) ? get_path(x, *attribute) : x);
        first = false;
        if (out.size() > cap) fail("a string grew past the template's output limit");
      }
      return Value::of(std::move(out));
    }
    if (name == "default" || name == "d") {
      const Args args(a, name, {"default_value", "boolean"});
      const bool use_default = args.flag(1, false) ? !truthy(v) : v.is_undefined();
      return use_default ? args.get_or(0, Value::of("")) : v;
    }
    if (name == "replace") {
      const Args args(a, "replace", {"old", "new", "count"});
      return Value::of(replace(text_of(v), to_str(args.required(0)), to_str(args.required(1)),
                               args.integer(2, -1), cap));
    }
    if (name == "int") {
      const Args args(a, "int", {"default", "base"});
      return to_int(v, args.get_or(0, Value::of(0)), args.integer(1, 10));
    }
    if (name == "float") {
      const Args args(a, "float", {"default"});
      if (v.is_number()) return Value::of(v.as_double());
      if (v.is(Kind::String)) {
        const std::string s = strip(v.text, nullptr, true, true);
        char* end = nullptr;
        const double d = std::strtod(s.c_str(), &end);
        if (!s.empty() && end == s.c_str() + s.size()) return Value::of(d);
      }
      return args.get_or(0, Value::of(0.0));
    }
    if (name == "abs") {
      no_args(a, name);
      require_defined(v);
      if (v.is_integral())
        return Value::of(checked(v.as_int() == INT64_MIN, std::llabs(v.as_int())));
      if (v.is(Kind::Float)) return Value::of(std::fabs(v.number));
      fail("bad operand type for abs(): '" + type_name(v) + "'");
    }
    if (name == "round") {
      const Args args(a, "round", {"precision", "method"});
      require_defined(v);
      if (!v.is_number()) fail("round() needs a number, not " + type_name(v));
      const std::int64_t precision = args.integer(0, 0);
      const std::string method = to_str(args.get_or(1, Value::of("common")));
      const double scale = std::pow(10.0, static_cast<double>(precision));
      const double x = v.as_double();
      if (method == "ceil") return Value::of(std::ceil(x * scale) / scale);
      if (method == "floor") return Value::of(std::floor(x * scale) / scale);
      if (method != "common") fail("method must be common, ceil or floor");
      if (precision < 0) fail("round() with a negative precision is not supported by the renderer");
      char buf[512];
      std::snprintf(buf, sizeof buf, "%.*f",
                    static_cast<int>(std::min<std::int64_t>(precision, 300)), x);
      return Value::of(std::strtod(buf, nullptr));
    }
    if (name == "list") {
      no_args(a, name);
      return Value::of(iterate(v));
    }
    if (name == "items") {
      no_args(a, name);
      if (v.is_undefined()) return Value::of(Array{});
      if (!v.is(Kind::Dict)) fail("Can only get item pairs from a mapping.");
      Array out;
      for (const auto& [k, x] : *v.dict)
        out.push_back(Value::of(Array{Value::of(k), x}, Kind::Tuple));
      return Value::of(std::move(out));
    }
    if (name == "reverse") {
      no_args(a, name);
      if (v.is(Kind::String)) {
        std::u32string cps = decode_utf8(v.text);
        std::reverse(cps.begin(), cps.end());
        return Value::of(encode_utf8(cps));
      }
      Array items = iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::of(std::move(items));
    }
    if (name == "indent") {
      const Args args(a, "indent", {"width", "first", "blank"});
      const Value width = args.get_or(0, Value::of(4));
      const std::string pad = width.is(Kind::String)
                                  ? width.text
                                  : std::string(static_cast<std::size_t>(std::max<std::int64_t>(
                                                    width.is_integral() ? width.as_int() : 4, 0)),
                                                ' ');
      const std::vector<std::string> lines = splitlines(text_of(v) + "\n");
      std::string out;
      for (std::size_t i = 0; i < lines.size(); ++i) {
        if (i > 0) out += '\n';
        if (i > 0 && (args.flag(2, false) || !lines[i].empty())) out += pad;
        out += lines[i];
      }
      if (args.flag(1, false)) out = pad + out;
      return Value::of(std::move(out));
    }
    if (name == "map") return map_filter(v, a);
    if (name == "select" || name == "reject") return select_filter(v, a, name == "select", false);
    if (name == "selectattr" || name == "rejectattr") {
      return select_filter(v, a, name == "selectattr", true);
    }
    if (name == "unique") {
      const Args args(a, "unique", {"case_sensitive", "attribute"});
      const bool cs = args.flag(0, false);
      const Value* attribute = args.get(1);
      Array out, seen;
      for (const Value& x : iterate(v)) {
        Value key = attribute ? get_path(x, *attribute) : x;
        if (!cs && key.is(Kind::String)) key = Value::of(map_case(key.text, false));
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, key); })) {
          seen.push_back(key);
          out.push_back(x);
        }
      }
      return Value::of(std::move(out));
    }
    if (name == "sort" || name == "min" || name == "max") {
      const bool sort = name == "sort";
      const Args args(a, name,
                      sort ? std::vector<std::string>{"reverse", "case_sensitive", "attribute"}
                           : std::vector<std::string>{"case_sensitive", "attribute"});
      const bool reverse = sort && args.flag(0, false);
      const bool cs = args.flag(sort ? 1 : 0, false);
      const Value* attribute = args.get(sort ? 2 : 1);
      const auto key = [&](const Value& x) {
        Value k = attribute ? get_path(x, *attribute) : x;
        if (!cs && k.is(Kind::String)) k = Value::of(map_case(k.text, false));
        return k;
      };
      Array items = iterate(v);
      const auto before = [&](const Value& x, const Value& y) { return less(key(x), key(y)); };
      if (sort) {
        std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
          return reverse ? before(y, x) : before(x, y);
        });
        return Value::of(std::move(items));
      }
      if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
      return name == "min" ? *std::min_element(items.begin(), items.end(), before)
                           : *std::max_element(items.begin(), items.end(), before);
    }
    if (name == "sum") {
      const Args args(a, "sum", {"attribute", "start"});
      const Value* attribute = args.get(0);
      Value total = args.get_or(1, Value::of(0));
      for (const Value& x : iterate(v)) {
        total = binary("+", total,
                       attribute && !attribute->is(Kind::None) ? get_path(x, *attribute) : x);
      }
      return total;
    }
    if (name == "dictsort") {
      const Args args(a, "dictsort", {"case_sensitive", "by", "reverse"});
      if (!v.is(Kind::Dict)) fail("You can only sort by either \"key\" or \"value\" of a mapping");
      const bool cs = args.flag(0, false);
      const std::string by = to_str(args.get_or(1, Value::of("key")));
      if (by != "key" && by != "value") fail("You can only sort by either \"key\" or \"value\"");
      const bool reverse = args.flag(2, false);
      Array items;
      for (const auto& [k, x] : *v.dict)
        items.push_back(Value::of(Array{Value::of(k), x}, Kind::Tuple));
      const std::size_t pos = by == "key" ? 0 : 1;
      const auto key = [&](const Value& t) {
        Value k = (*t.list)[pos];
        if (!cs && k.is(Kind::String)) k = Value::of(map_case(k.text, false));
        return k;
      };
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        return reverse ? less(key(y), key(x)) : less(key(x), key(y));
      });
      return Value::of(std::move(items));
    }
    if (name == "batch") {
      const Args args(a, "batch", {"linecount", "fill_with"});
      const std::int64_t n = args.integer(0, 0);
      if (n <= 0) fail("batch() needs a positive line count");
      const Value* fill = args.get(1);
      Array out, row;
      for (const Value& x : iterate(v)) {
        row.push_back(x);
        if (static_cast<std::int64_t>(row.size()) == n) {
          out.push_back(Value::of(std::move(row)));
          row.clear();
        }
      }
      if (!row.empty()) {
        while (fill && !fill->is(Kind::None) && static_cast<std::int64_t>(row.size()) < n)
          row.push_back(*fill);
        out.push_back(Value::of(std::move(row)));
      }
      return Value::of(std::move(out));
    }
    if (name == "wordcount") {
      no_args(a, name);
      std::int64_t n = 0;
      bool in_word = false;
      for (char32_t c : decode_utf8(text_of(v))) {
        const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
        const bool word = c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_NO);
        if (word && !in_word) ++n;
        in_word = word;
      }
      return Value::of(n);
    }
    if (name == "center") {
      const Args args(a, "center", {"width"});
      const std::string s = text_of(v);
      const std::int64_t width = args.integer(0, 80);
      const auto len = static_cast<std::int64_t>(utf8_length(s));
      if (width <= len) return Value::of(s);
      const std::int64_t marg = width - len;
      const std::int64_t left = marg / 2 + (marg & width & 1);
      return Value::of(std::string(static_cast<std::size_t>(left), ' ') + s +
                       std::string(static_cast<std::size_t>(marg - left), ' '));
    }
    if (name == "attr") {
      const Args args(a, "attr", {"name"});
      const std::string attr = args.string(0);
      if (Value m = method(v, attr); !m.is_undefined()) return m;
      return no_attribute(v, attr);
    }
    if (name == "format") {
      if (!a.keyword.empty())
        fail("format filter with keyword arguments is not supported by the renderer");
      return Value::of(percent_format(text_of(v), Value::of(a.positional, Kind::Tuple)));
    }
    fail("No filter named '" + name + "'.");
  }

  static std::string html_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&#34;";
          break;
        case '\'':
          out += "&#39;";
          break;
        default:
          out += c;
      }
    }
    return out;
  }

  static std::size_t length(const Value& v) {
    switch (v.kind) {
      case Kind::Undefined:
        return 0;
      case Kind::String:
        return utf8_length(v.text);
      case Kind::List:
      case Kind::Tuple:
        return v.list->size();
      case Kind::Dict:
        return v.dict->size();
      default:
        fail("object of type '" + type_name(v) + "' has no len()");
    }
  }

  static Value to_int(const Value& v, const Value& fallback, std::int64_t base) {
    if (v.is_integral()) return Value::of(v.as_int());
    if (v.is(Kind::Float)) {
      if (!std::isfinite(v.number)) return fallback;
      return Value::of(static_cast<std::int64_t>(v.number));
    }
    if (!v.is(Kind::String)) return fallback;
    std::string s = strip(v.text, nullptr, true, true);
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    if (s.empty()) return fallback;
    errno = 0;
    char* end = nullptr;
    const long long i = std::strtoll(s.c_str(), &end, static_cast<int>(base));
    if (end == s.c_str() + s.size() && errno == 0) return Value::of(static_cast<std::int64_t>(i));
    const double d = std::strtod(s.c_str(), &end);
    if (end == s.c_str() + s.size() && std::isfinite(d))
      return Value::of(static_cast<std::int64_t>(d));
    return fallback;
  }

  Value map_filter(const Value& v, CallArgs& a) {
    Array out;
    const auto attribute = std::find_if(a.keyword.begin(), a.keyword.end(),
                                        [](const auto& kv) { return kv.first == "attribute"; });
    if (attribute != a.keyword.end()) {
      const Value* fallback = nullptr;
      for (const auto& [k, x] : a.keyword) {
        if (k == "default")
          fallback = &x;
        else if (k != "attribute")
          fail("map() got an unexpected keyword argument '" + k + "'");
      }
      for (const Value& x : iterate(v)) {
        Value r = get_path(x, attribute->second);
        out.push_back(r.is_undefined() && fallback ? *fallback : r);
      }
      return Value::of(std::move(out));
    }
    if (a.positional.empty()) fail("map() needs a filter name or attribute=");
    const std::string fname = to_str(a.positional[0]);
    for (const Value& x : iterate(v)) {
      CallArgs rest{{a.positional.begin() + 1, a.positional.end()}, a.keyword};
      out.push_back(filter(fname, x, rest));
    }
    return Value::of(std::move(out));
  }

  // select/reject(test, args...) and selectattr/rejectattr(attr, test, args...).
  Value select_filter(const Value& v, CallArgs& a, bool keep, bool by_attribute) {
    std::size_t at = 0;
    Value attribute;
    if (by_attribute) {
      if (a.positional.empty()) fail("selectattr() needs an attribute");
      attribute = a.positional[at++];
    }
    std::string test_name;
    if (at < a.positional.size()) test_name = to_str(a.positional[at++]);
    Array out;
    for (const Value& x : iterate(v)) {
      const Value subject = by_attribute ? get_path(x, attribute) : x;
      bool result;
      if (test_name.empty()) {
        result = truthy(subject);
      } else {
        CallArgs rest{{a.positional.begin() + static_cast<std::ptrdiff_t>(at), a.positional.end()},
                      a.keyword};
        result = test(test_name, subject, rest);
      }
      if (result == keep) out.push_back(x);
    }
    return Value::of(std::move(out));
  }

  // ---- tests ----

  bool eval_test(const Expr& e, const Frame& frame) {
    const Value v = eval(*e.a, frame);
    CallArgs args = eval_args(e, frame);
    line_ = e.line;
    return test(e.name, v, args);
  }

  bool test(const std::string& name, const Value& v, CallArgs& a) {
    const auto none = [&]() { no_args(a, name); };
    const auto other = [&]() -> const Value& {
      if (a.positional.size() != 1 || !a.keyword.empty())
        fail("the test '" + name + "' takes one argument");
      return a.positional[0];
    };
    if (name == "defined") return none(), !v.is_undefined();
    if (name == "undefined") return none(), v.is_undefined();
    if (name == "none") return none(), v.is(Kind::None);
    if (name == "boolean") return none(), v.is(Kind::Bool);
    if (name == "true") return none(), v.is(Kind::Bool) && v.boolean;
    if (name == "false") return none(), v.is(Kind::Bool) && !v.boolean;
    if (name == "integer") return none(), v.is(Kind::Int);
    if (name == "float") return none(), v.is(Kind::Float);
    if (name == "number") return none(), v.is_number();
    if (name == "string") return none(), v.is(Kind::String);
    if (name == "mapping") return none(), v.is(Kind::Dict);
    if (name == "sequence") {
      return none(), v.is(Kind::String) || v.is_sequence() || v.is(Kind::Dict) || v.is_undefined();
    }
    if (name == "iterable") {
      return none(), v.is(Kind::String) || v.is_sequence() || v.is(Kind::Dict) || v.is_undefined();
    }
    if (name == "callable") return none(), v.is(Kind::Callable);
    if (name == "lower" || name == "upper") {
      none();
      const std::string s = to_str(v);
      return map_case(s, name == "upper") == s;
    }
    if (name == "odd" || name == "even") {
      none();
      require_defined(v);
      if (!v.is_integral()) fail("the test '" + name + "' needs an integer");
      return (v.as_int() % 2 != 0) == (name == "odd");
    }
    if (name == "divisibleby") {
      const Value& d = other();
      if (!v.is_integral() || !d.is_integral() || d.as_int() == 0) {
        fail("divisibleby needs integers and a divisor other than 0");
      }
      return v.as_int() % d.as_int() == 0;
    }
    if (name == "eq" || name == "equalto" || name == "==") return equal(v, other());
    if (name == "ne" || name == "!=") return !equal(v, other());
    if (name == "lt" || name == "lessthan" || name == "<") return compare("<", v, other());
    if (name == "le" || name == "<=") return compare("<=", v, other());
    if (name == "gt" || name == "greaterthan" || name == ">") return compare(">", v, other());
    if (name == "ge" || name == ">=") return compare(">=", v, other());
    if (name == "in") return contains(other(), v);
    if (name == "sameas") {
      const Value& o = other();
      if (v.is(Kind::None) || v.is(Kind::Bool) || v.is_undefined())
        return equal(v, o) && v.kind == o.kind;
      if (v.list || v.dict) return v.list == o.list && v.dict == o.dict;
      return false;
    }
    if (name == "escaped") return none(), false;
    fail("No test named '" + name + "'.");
  }

  // ---- globals ----

  void add_globals(Frame& root) {
    root.set("range", Value::function("range", [](CallArgs& a) {
               if (!a.keyword.empty() || a.positional.empty() || a.positional.size() > 3) {
                 fail("range() takes 1 to 3 integer arguments");
               }
               for (const Value& x : a.positional) {
                 if (!x.is_integral())
                   fail("'" + type_name(x) + "' object cannot be interpreted as an integer");
               }
               const auto& p = a.positional;
               const std::int64_t start = p.size() > 1 ? p[0].as_int() : 0;
               const std::int64_t stop = p.size() > 1 ? p[1].as_int() : p[0].as_int();
               const std::int64_t step = p.size() > 2 ? p[2].as_int() : 1;
               if (step == 0) fail("range() arg 3 must not be zero");
               const double count =
                   std::ceil((static_cast<double>(stop) - static_cast<double>(start)) /
                             static_cast<double>(step));
               if (count > static_cast<double>(kMaxRange)) {
                 fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
               }
               Array out;
               for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
                 out.push_back(Value::of(i));
               return Value::of(std::move(out));
             }));
    const auto dict_of = [](CallArgs& a, Kind kind) {
      Map d;
      for (const Value& x : a.positional) {
        if (!x.is(Kind::Dict)) fail("namespace() and dict() take a mapping and keyword arguments");
        for (const auto& [k, v] : *x.dict) put(d, k, v);
      }
      for (const auto& [k, v] : a.keyword) put(d, k, v);
      return Value::of(std::move(d), kind);
    };
    root.set("namespace", Value::function("namespace", [dict_of](CallArgs& a) {
               return dict_of(a, Kind::Namespace);
             }));
    root.set("dict",
             Value::function("dict", [dict_of](CallArgs& a) { return dict_of(a, Kind::Dict); }));
    root.set("raise_exception", Value::function("raise_exception", [](CallArgs& a) -> Value {
               const Args args(a, "raise_exception", {"message"});
               fail(to_str(args.required(0)));
             }));
    root.set("strftime_now", Value::function("strftime_now", [](CallArgs& a) {
               const Args args(a, "strftime_now", {"format"});
               const std::string format = args.string(0);
               const std::time_t now = std::time(nullptr);
               std::tm local{};
               localtime_r(&now, &local);
               if (format.empty()) return Value::of("");
               std::string buf(256 + format.size() * 16, '\0');
               const std::size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &local);
               buf.resize(n);
               return Value::of(std::move(buf));
             }));
  }

  const Template::Program& program_;
  const Frame* root_ = nullptr;
  std::uint64_t steps_ = 0;
  int depth_ = 0;
  int line_ = 0;
  std::unordered_map<std::string, StringMethod> string_methods_;
};

}  // namespace

Template::Template(std::string_view source, std::string name, Limits limits) {
  auto program = std::make_unique<Program>();
  program->name = std::move(name);
  program->limits = limits;
  try {
    program->body = parse_template(source, limits.max_depth);
  } catch (const LineError& e) {
    throw TemplateError(program->name + ", line " + std::to_string(e.line) + ": " + e.what(),
                        e.line, e.what());
  }
  program_ = std::move(program);
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

const std::string& Template::name() const {
  return program_->name;
}

std::string Template::render(const nlohmann::ordered_json& context) const {
  Renderer r(*program_);
  try {
    return r.run(context);
  } catch (const EvalError& e) {
    throw TemplateError(program_->name + ", line " + std::to_string(r.line()) + ": " + e.what(),
                        r.line(), e.what());
  }
}

}  // namespace lclm::jinja
