// The syntax tree of a Jinja template and the parser that builds it, with
// jinja2's lexing as Hugging Face configures it (trim_blocks, lstrip_blocks,
// the loopcontrols extension). Internal to the renderer (runtime/jinja.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/jinja_value.h"
#include "util/error.h"

namespace lclm::jinja {

// An error at a line of the template (1-based), syntax or evaluation.
class LineError : public Error {
 public:
  LineError(int at_line, const std::string& message) : Error(message), line(at_line) {}
  int line;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
using KeywordArgs = std::vector<std::pair<std::string, ExprPtr>>;

struct Expr {
  enum class Kind {
    Const,    // value
    Name,     // name
    List,     // items
    Tuple,    // items
    Dict,     // items: key, value, key, value, ...
    Attr,     // a.name
    Item,     // a[b]
    Slice,    // a[items[0]:items[1]:items[2]], each may be null
    Call,     // a(items, kwargs)
    Filter,   // a | name(items, kwargs); a null: the body of a filter block
    Test,     // a is name(items)
    Neg,      // -a
    Pos,      // +a
    Not,      // not a
    Binary,   // a name b: + - * / // % ** ~
    And,      // a and b
    Or,       // a or b
    Compare,  // a ops[0] items[0] ops[1] items[1] ...: == != < <= > >= in notin
    Cond,     // b if a else c (c may be null)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;
  ExprPtr a, b, c;
  std::vector<ExprPtr> items;
  KeywordArgs kwargs;
  std::vector<std::string> ops;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    Text,         // text
    Output,       // {{ expr }}
    If,           // branches, else_body
    For,          // for names in expr [if cond] body [else else_body]
    Set,          // set names = expr; with attr: set names[0].attr = expr
    SetBlock,     // set names[0] body endset
    Macro,        // macro name(params = defaults) body
    CallBlock,    // call(params) expr body: expr's macro gets caller()
    FilterBlock,  // filter expr body
    With,         // with assigns body
    Break,
    Continue,
    Generation,  // Hugging Face's {% generation %} body: rendered as it is
  };
  Kind kind;
  int line = 0;
  std::string text, name, attr;
  ExprPtr expr, cond;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::vector<std::string> names, params;
  std::vector<ExprPtr> defaults;  // per param; null: none
  KeywordArgs assigns;
};

// Parses a template; throws LineError. max_depth bounds the nesting of
// expressions and blocks, so a hostile template cannot exhaust the stack.
Body parse_template(std::string_view source, int max_depth);

}  // namespace lclm::jinja
