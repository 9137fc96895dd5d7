// Lexing follows jinja2's lexer.py rule by rule, since whitespace control
// decides every byte of a chat template's output: `-` strips all whitespace
// beside a tag, trim_blocks removes the first newline after a block or
// comment tag, lstrip_blocks removes the spaces and tabs between the start of
// a line and a block or comment tag, `+` turns either off for one tag.
#include <cstdint>
#include <cstdlib>

#include "runtime/jinja_ast.h"

namespace lclm::jinja {
namespace {

struct Token {
  enum class Type {
    Data,
    VarBegin,
    VarEnd,
    BlockBegin,
    BlockEnd,
    Name,
    String,
    Int,
    Float,
    Op,
    Eof
  };
  Type type;
  std::string text;  // Data: the text; String: the decoded literal; Name, Op: the token
  std::int64_t integer = 0;
  double number = 0;
  int line = 0;
};

// One code point of UTF-8 text at i; its length in n.
char32_t code_point_at(std::string_view s, std::size_t i, std::size_t& n) {
  const auto c = static_cast<unsigned char>(s[i]);
  n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (i + n > s.size()) {
    n = 1;
    return 0xFFFD;
  }
  return decode_utf8(s.substr(i, n))[0];
}

// Python's str.rstrip() (Unicode whitespace).
std::string_view rstrip_space(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    std::size_t n = 0;
    if (!is_space(code_point_at(s, start, n))) break;
    end = start;
  }
  return s.substr(0, end);
}

// The length of the whitespace (\s*) at s[pos...].
std::size_t space_run(std::string_view s, std::size_t pos) {
  std::size_t i = pos;
  while (i < s.size()) {
    std::size_t n = 0;
    if (!is_space(code_point_at(s, i, n))) break;
    i += n;
  }
  return i - pos;
}

std::string_view starts(std::string_view s, std::size_t pos) {
  return s.substr(pos);
}

bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // Every line break becomes \n, and one trailing newline is dropped
    // (keep_trailing_newline is off).
    src_.reserve(source.size());
    for (std::size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const std::size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        data(src_.substr(pos_));
        advance(src_.size());
        break;
      }
      const char kind = src_[tag + 1];
      std::size_t after = tag + 2;
      const char sign =
          after < src_.size() && (src_[after] == '-' || src_[after] == '+') ? src_[after] : 0;
      if (sign) ++after;
      std::string_view text = std::string_view(src_).substr(pos_, tag - pos_);
      const std::size_t raw_end = kind == '%' ? raw_begin(after) : 0;
      text = strip_before(text, sign, kind != '{');
      data(std::string(text));
      advance(after);
      line_starting_ = false;
      if (raw_end) {
        raw(raw_end);
      } else if (kind == '#') {
        comment();
      } else {
        tag_tokens(kind == '%');
      }
    }
    tokens_.push_back({Token::Type::Eof, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& message) const { throw LineError(line_, message); }

  std::size_t find_tag(std::size_t from) const {
    for (std::size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  // Moves to `to`, counting lines.
  void advance(std::size_t to) {
    for (std::size_t i = pos_; i < to; ++i) line_ += src_[i] == '\n';
    pos_ = to;
  }

  void data(std::string text) {
    if (!text.empty()) tokens_.push_back({Token::Type::Data, std::move(text), 0, 0, line_});
  }

  // The data before a tag, with `-` or lstrip_blocks applied.
  std::string_view strip_before(std::string_view text, char sign, bool block_or_comment) const {
    if (sign == '-') return rstrip_space(text);
    if (sign == '+' || !block_or_comment) return text;
    const std::size_t nl = text.rfind('\n');
    const std::size_t line_start = nl == std::string_view::npos ? 0 : nl + 1;
    if (line_start == 0 && !line_starting_) return text;
    const std::string_view rest = text.substr(line_start);
    if (!rest.empty() && space_run(rest, 0) == rest.size()) return text.substr(0, line_start);
    return text;
  }

  // After `{%` and its sign at `at`: the end of `raw %}` when the tag is
  // {% raw %}, else 0.
  std::size_t raw_begin(std::size_t at) const {
    std::size_t i = at + space_run(src_, at);
    if (starts(src_, i).substr(0, 3) != "raw") return 0;
    i += 3;
    i += space_run(src_, i);
    if (starts(src_, i).substr(0, 3) == "-%}") return i + 3 + space_run(src_, i + 3);
    if (starts(src_, i).substr(0, 2) == "%}") return i + 2;
    return 0;
  }

  void raw(std::size_t content_start) {
    advance(content_start);
    for (std::size_t i = src_.find("{%", pos_); i != std::string::npos;
         i = src_.find("{%", i + 1)) {
      std::size_t j = i + 2;
      const char sign = j < src_.size() && (src_[j] == '-' || src_[j] == '+') ? src_[j] : 0;
      if (sign) ++j;
      j += space_run(src_, j);
      if (starts(src_, j).substr(0, 6) != "endraw") continue;
      j += 6;
      j += space_run(src_, j);
      std::size_t end = block_end_at(j);
      if (!end) continue;
      const std::string_view text =
          strip_before(std::string_view(src_).substr(pos_, i - pos_), sign, true);
      data(std::string(text));
      advance(end);
      line_starting_ = src_[end - 1] == '\n';
      return;
    }
    fail("Missing end of raw directive");
  }

  // The end of a block end tag (+%}, -%} and the whitespace after it, %} and
  // one newline) at i, or 0.
  std::size_t block_end_at(std::size_t i) const {
    const std::string_view s = starts(src_, i);
    if (s.substr(0, 3) == "+%}") return i + 3;
    if (s.substr(0, 3) == "-%}") return i + 3 + space_run(src_, i + 3);
    if (s.substr(0, 2) == "%}") return i + 2 + (i + 2 < src_.size() && src_[i + 2] == '\n');
    return 0;
  }

  void comment() {
    const std::size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) fail("Missing end of comment tag");
    std::size_t end = close + 2;
    const char sign = close > pos_ ? src_[close - 1] : 0;
    if (sign == '-') {
      end += space_run(src_, end);
    } else if (sign != '+' && end < src_.size() && src_[end] == '\n') {
      ++end;
    }
    advance(end);
    line_starting_ = src_[end - 1] == '\n';
  }

  void tag_tokens(bool block) {
    tokens_.push_back({block ? Token::Type::BlockBegin : Token::Type::VarBegin, "", 0, 0, line_});
    std::string balance;
    for (;;) {
      if (pos_ >= src_.size()) {
        fail(std::string("unexpected end of template, expected '") + (block ? "%}" : "}}") + "'");
      }
      if (balance.empty()) {
        std::size_t end = 0;
        if (block) {
          end = block_end_at(pos_);
        } else if (starts(src_, pos_).substr(0, 3) == "-}}") {
          end = pos_ + 3 + space_run(src_, pos_ + 3);
        } else if (starts(src_, pos_).substr(0, 2) == "}}") {
          end = pos_ + 2;
        }
        if (end) {
          tokens_.push_back({block ? Token::Type::BlockEnd : Token::Type::VarEnd, "", 0, 0, line_});
          advance(end);
          line_starting_ = src_[end - 1] == '\n';
          return;
        }
      }
      if (const std::size_t n = space_run(src_, pos_)) {
        advance(pos_ + n);
        continue;
      }
      const char c = src_[pos_];
      if (is_digit(c)) {
        // After a dot only an integer (x.0 is an item): jinja2's float rule
        // refuses a preceding dot.
        number(pos_ > 0 && src_[pos_ - 1] == '.');
      } else if (is_name_start(c)) {
        std::size_t i = pos_;
        while (i < src_.size() && (is_name_start(src_[i]) || is_digit(src_[i]))) ++i;
        tokens_.push_back({Token::Type::Name, src_.substr(pos_, i - pos_), 0, 0, line_});
        advance(i);
      } else if (c == '\'' || c == '"') {
        string_literal();
      } else {
        op(balance);
      }
    }
  }

  // Digits with optional single underscores between them, from i; returns
  // the end, or i when there is none.
  std::size_t digits(std::size_t i, std::string& out) const {
    const std::size_t start = i;
    while (i < src_.size() && is_digit(src_[i])) {
      out += src_[i++];
      if (i + 1 < src_.size() && src_[i] == '_' && is_digit(src_[i + 1])) ++i;
    }
    return i == start ? start : i;
  }

  void number(bool integer_only) {
    std::string text;
    std::size_t i = digits(pos_, text);
    bool is_float = false;
    if (!integer_only && i + 1 < src_.size() && src_[i] == '.' && is_digit(src_[i + 1])) {
      text += '.';
      i = digits(i + 1, text);
      is_float = true;
    }
    if (!integer_only && i < src_.size() && (src_[i] == 'e' || src_[i] == 'E')) {
      std::size_t j = i + 1;
      std::string exp = "e";
      if (j < src_.size() && (src_[j] == '+' || src_[j] == '-')) exp += src_[j++];
      const std::size_t end = digits(j, exp);
      if (end != j) {
        text += exp;
        i = end;
        is_float = true;
      }
    }
    Token t{is_float ? Token::Type::Float : Token::Type::Int, text, 0, 0, line_};
    if (is_float) {
      t.number = std::strtod(text.c_str(), nullptr);
    } else {
      // 0x.., 0o.., 0b..
      if (text == "0" && i + 1 < src_.size() &&
          (src_[i] == 'x' || src_[i] == 'X' || src_[i] == 'o' || src_[i] == 'O' || src_[i] == 'b' ||
           src_[i] == 'B')) {
        const char base_char = static_cast<char>(src_[i] | 0x20);
        const int base = base_char == 'x' ? 16 : base_char == 'o' ? 8 : 2;
        std::size_t j = i + 1;
        std::string body;
        while (j < src_.size() &&
               (std::isxdigit(static_cast<unsigned char>(src_[j])) || src_[j] == '_')) {
          if (src_[j] != '_') body += src_[j];
          ++j;
        }
        t.integer = std::strtoll(body.c_str(), nullptr, base);
        i = j;
      } else {
        errno = 0;
        t.integer = std::strtoll(text.c_str(), nullptr, 10);
        if (errno == ERANGE) fail("the integer " + text + " is too large for the renderer");
      }
    }
    tokens_.push_back(std::move(t));
    advance(i);
  }

  // A string literal with Python's escapes (jinja2 decodes literals with
  // unicode-escape); unknown escapes keep their backslash.
  void string_literal() {
    const char quote = src_[pos_];
    std::string out;
    std::size_t i = pos_ + 1;
    const auto hex = [&](std::size_t n) {
      if (i + n > src_.size()) fail("truncated \\x, \\u or \\U escape in a string literal");
      const std::string h = src_.substr(i, n);
      for (char c : h) {
        if (!std::isxdigit(static_cast<unsigned char>(c))) {
          fail("truncated \\x, \\u or \\U escape in a string literal");
        }
      }
      i += n;
      append_utf8(out, static_cast<char32_t>(std::strtoul(h.c_str(), nullptr, 16)));
    };
    for (;;) {
      if (i >= src_.size()) fail(std::string("unexpected char '") + quote + "'");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\' || i + 1 >= src_.size()) {
        out += c;
        ++i;
        continue;
      }
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          if (e >= '0' && e <= '7') {
            unsigned value = static_cast<unsigned>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
              value = value * 8 + static_cast<unsigned>(src_[i++] - '0');
            }
            append_utf8(out, value);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    tokens_.push_back({Token::Type::String, std::move(out), 0, 0, line_});
    advance(i + 1);
  }

  void op(std::string& balance) {
    static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                       "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                       ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};
    for (const char* o : kOps) {
      const std::string_view sv(o);
      if (starts(src_, pos_).substr(0, sv.size()) != sv) continue;
      if (sv == "(" || sv == "[" || sv == "{") {
        balance += sv == "(" ? ')' : sv == "[" ? ']' : '}';
      } else if (sv == ")" || sv == "]" || sv == "}") {
        if (balance.empty()) fail("unexpected '" + std::string(sv) + "'");
        if (balance.back() != sv[0]) {
          fail("unexpected '" + std::string(sv) + "', expected '" + balance.back() + "'");
        }
        balance.pop_back();
      }
      tokens_.push_back({Token::Type::Op, std::string(sv), 0, 0, line_});
      advance(pos_ + sv.size());
      return;
    }
    fail("unexpected char '" + std::string(1, src_[pos_]) + "'");
  }

  std::string src_;
  std::size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, int max_depth)
      : tokens_(std::move(tokens)), max_depth_(max_depth) {}

  Body parse() {
    std::string end;
    Body body = subparse({}, end);
    return body;
  }

 private:
  // Bounds recursion: each nested expression or block holds one.
  struct Depth {
    explicit Depth(Parser& p) : parser(p) {
      if (++parser.depth_ > parser.max_depth_) {
        parser.fail("the template nests expressions or blocks deeper than " +
                    std::to_string(parser.max_depth_));
      }
    }
    ~Depth() { --parser.depth_; }
    Parser& parser;
  };

  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek(std::size_t k = 1) const {
    return tokens_[std::min(pos_ + k, tokens_.size() - 1)];
  }
  Token next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  [[noreturn]] void fail(const std::string& message) const { throw LineError(cur().line, message); }

  bool is_op(const char* op) const { return cur().type == Token::Type::Op && cur().text == op; }
  bool is_name(const char* name) const {
    return cur().type == Token::Type::Name && cur().text == name;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    ++pos_;
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    ++pos_;
    return true;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Token::Type::Eof:
        return "end of template";
      case Token::Type::BlockEnd:
        return "end of statement block";
      case Token::Type::VarEnd:
        return "end of print statement";
      case Token::Type::String:
        return "string";
      case Token::Type::Int:
      case Token::Type::Float:
        return "number";
      default:
        return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != Token::Type::Name) fail("expected a name, got " + describe(cur()));
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != Token::Type::BlockEnd) {
      fail("expected end of statement block, got " + describe(cur()));
    }
    ++pos_;
  }

  static ExprPtr node(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  static StmtPtr stmt(Stmt::Kind kind, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = line;
    return s;
  }

  // Statements until a block tag named in `ends` (left unconsumed after its
  // name, which goes to `end`) or the end of the template (only when `ends`
  // is empty).
  Body subparse(const std::vector<std::string>& ends, std::string& end) {
    Depth depth(*this);
    Body body;
    for (;;) {
      const Token& t = cur();
      if (t.type == Token::Type::Eof) {
        if (!ends.empty()) {
          std::string wanted;
          for (const std::string& e : ends) {
            wanted.append(wanted.empty() ? "'" : " or '").append(e).append("'");
          }
          fail("unexpected end of template; jinja was looking for " + wanted);
        }
        return body;
      }
      if (t.type == Token::Type::Data) {
        auto s = stmt(Stmt::Kind::Text, t.line);
        s->text = t.text;
        body.push_back(std::move(s));
        ++pos_;
      } else if (t.type == Token::Type::VarBegin) {
        ++pos_;
        auto s = stmt(Stmt::Kind::Output, t.line);
        s->expr = parse_tuple(true);
        if (cur().type != Token::Type::VarEnd) {
          fail("expected end of print statement, got " + describe(cur()));
        }
        ++pos_;
        body.push_back(std::move(s));
      } else if (t.type == Token::Type::BlockBegin) {
        ++pos_;
        if (cur().type != Token::Type::Name) fail("expected a tag name, got " + describe(cur()));
        for (const std::string& e : ends) {
          if (cur().text == e) {
            end = next().text;
            return body;
          }
        }
        body.push_back(statement());
      } else {
        fail("unexpected " + describe(t));
      }
    }
  }

  StmtPtr statement() {
    const Token t = next();
    const std::string& tag = t.text;
    if (tag == "if") return parse_if(t.line);
    if (tag == "for") return parse_for(t.line);
    if (tag == "set") return parse_set(t.line);
    if (tag == "macro") return parse_macro(t.line);
    if (tag == "call") return parse_call_block(t.line);
    if (tag == "filter") return parse_filter_block(t.line);
    if (tag == "with") return parse_with(t.line);
    if (tag == "break" || tag == "continue") {
      if (loops_ == 0) fail("'" + tag + "' outside of a loop");
      expect_block_end();
      return stmt(tag == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue, t.line);
    }
    if (tag == "generation") {
      expect_block_end();
      auto s = stmt(Stmt::Kind::Generation, t.line);
      s->body = body_until({"endgeneration"});
      expect_block_end();
      return s;
    }
    --pos_;
    if (tag == "include" || tag == "import" || tag == "from" || tag == "extends" ||
        tag == "block") {
      fail("the tag '" + tag + "' is not supported in a chat template (no other templates)");
    }
    fail("Encountered unknown tag '" + tag + "'.");
  }

  // A body ending in one of `ends`, whose name is consumed.
  Body body_until(const std::vector<std::string>& ends, std::string* which = nullptr) {
    std::string end;
    Body b = subparse(ends, end);
    if (which) *which = end;
    return b;
  }

  StmtPtr parse_if(int line) {
    auto s = stmt(Stmt::Kind::If, line);
    for (;;) {
      ExprPtr cond = parse_tuple(false);
      expect_block_end();
      std::string end;
      Body body = body_until({"elif", "else", "endif"}, &end);
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        s->else_body = body_until({"endif"});
      }
      expect_block_end();
      return s;
    }
  }

  // A name, or names separated by commas (parenthesised or not).
  std::vector<std::string> assign_names() {
    std::vector<std::string> names;
    const bool paren = skip_op("(");
    do {
      if (paren && is_op(")")) break;
      names.push_back(expect_name());
    } while (skip_op(","));
    if (paren) expect_op(")");
    return names;
  }

  StmtPtr parse_for(int line) {
    auto s = stmt(Stmt::Kind::For, line);
    s->names = assign_names();
    if (!skip_name("in")) fail("expected 'in', got " + describe(cur()));
    s->expr = parse_tuple(false, /*with_condexpr=*/false);
    if (skip_name("if")) s->cond = parse_tuple(false);
    if (is_name("recursive")) fail("recursive loops are not supported");
    expect_block_end();
    ++loops_;
    std::string end;
    s->body = body_until({"endfor", "else"}, &end);
    --loops_;
    if (end == "else") {
      expect_block_end();
      s->else_body = body_until({"endfor"});
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(int line) {
    auto s = stmt(Stmt::Kind::Set, line);
    if (cur().type == Token::Type::Name && peek().type == Token::Type::Op && peek().text == ".") {
      s->names.push_back(next().text);
      ++pos_;
      s->attr = expect_name();
    } else {
      s->names = assign_names();
    }
    if (skip_op("=")) {
      s->expr = parse_tuple(false);
      expect_block_end();
      return s;
    }
    if (s->names.size() != 1 || !s->attr.empty()) fail("expected '=', got " + describe(cur()));
    if (is_op("|")) fail("filters on a block set are not supported");
    expect_block_end();
    s->kind = Stmt::Kind::SetBlock;
    s->body = body_until({"endset"});
    expect_block_end();
    return s;
  }

  // (a, b=default, ...) of a macro or a call block.
  void parameters(Stmt& s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      if (is_op(")")) break;
      s.params.push_back(expect_name());
      s.defaults.push_back(skip_op("=") ? parse_expression() : nullptr);
    }
    expect_op(")");
  }

  StmtPtr parse_macro(int line) {
    auto s = stmt(Stmt::Kind::Macro, line);
    s->name = expect_name();
    parameters(*s);
    expect_block_end();
    const int loops = loops_;
    loops_ = 0;
    s->body = body_until({"endmacro"});
    loops_ = loops;
    expect_block_end();
    return s;
  }

  StmtPtr parse_call_block(int line) {
    auto s = stmt(Stmt::Kind::CallBlock, line);
    if (is_op("(")) parameters(*s);
    s->expr = parse_expression();
    if (s->expr->kind != Expr::Kind::Call) fail("expected a call after 'call'");
    expect_block_end();
    s->body = body_until({"endcall"});
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block(int line) {
    auto s = stmt(Stmt::Kind::FilterBlock, line);
    ExprPtr chain;
    do {
      chain = parse_filter(std::move(chain));
    } while (skip_op("|"));
    s->expr = std::move(chain);
    expect_block_end();
    s->body = body_until({"endfilter"});
    expect_block_end();
    return s;
  }

  StmtPtr parse_with(int line) {
    auto s = stmt(Stmt::Kind::With, line);
    while (cur().type != Token::Type::BlockEnd) {
      if (!s->assigns.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      s->assigns.emplace_back(std::move(name), parse_expression());
    }
    expect_block_end();
    s->body = body_until({"endwith"});
    expect_block_end();
    return s;
  }

  // Expressions, with jinja2's precedence (parser.py): conditional, or, and,
  // not, comparisons, + -, ~, * / // %, **, unary, then filters and tests.
  ExprPtr parse_expression(bool with_condexpr = true) {
    Depth depth(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  // An expression, or several separated by commas as a tuple.
  ExprPtr parse_tuple(bool explicit_parens, bool with_condexpr = true) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool comma = false;
    for (;;) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        comma = true;
      }
      if (tuple_ends(explicit_parens)) break;
      items.push_back(parse_expression(with_condexpr));
    }
    if (!comma && items.size() == 1) return std::move(items[0]);
    if (items.empty() && !explicit_parens) fail("expected an expression, got " + describe(cur()));
    auto e = node(Expr::Kind::Tuple, line);
    e->items = std::move(items);
    return e;
  }

  bool tuple_ends(bool explicit_parens) const {
    const Token& t = cur();
    if (t.type == Token::Type::VarEnd || t.type == Token::Type::BlockEnd ||
        t.type == Token::Type::Eof) {
      return true;
    }
    if (explicit_parens && t.type == Token::Type::Op && t.text == ")") return true;
    return false;
  }

  ExprPtr parse_condexpr() {
    ExprPtr expr = parse_or();
    while (is_name("if")) {
      const int line = next().line;
      auto e = node(Expr::Kind::Cond, line);
      e->b = std::move(expr);
      e->a = parse_or();
      if (skip_name("else")) e->c = parse_condexpr();
      expr = std::move(e);
    }
    return expr;
  }

  ExprPtr binary(Expr::Kind kind, ExprPtr left, ExprPtr right, std::string op = "") {
    auto e = node(kind, left->line);
    e->a = std::move(left);
    e->b = std::move(right);
    e->name = std::move(op);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (skip_name("or")) left = binary(Expr::Kind::Or, std::move(left), parse_and());
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (skip_name("and")) left = binary(Expr::Kind::And, std::move(left), parse_not());
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const int line = next().line;
      Depth depth(*this);
      auto e = node(Expr::Kind::Not, line);
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    auto e = node(Expr::Kind::Compare, first->line);
    for (;;) {
      const Token& t = cur();
      if (t.type == Token::Type::Op && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                        t.text == "<=" || t.text == ">" || t.text == ">=")) {
        e->ops.push_back(next().text);
      } else if (is_name("in")) {
        ++pos_;
        e->ops.push_back("in");
      } else if (is_name("not") && peek().type == Token::Type::Name && peek().text == "in") {
        pos_ += 2;
        e->ops.push_back("notin");
      } else {
        break;
      }
      e->items.push_back(parse_math1());
    }
    if (e->ops.empty()) return first;
    e->a = std::move(first);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = next().text;
      left = binary(Expr::Kind::Binary, std::move(left), parse_concat(), op);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (skip_op("~")) left = binary(Expr::Kind::Binary, std::move(left), parse_math2(), "~");
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = next().text;
      left = binary(Expr::Kind::Binary, std::move(left), parse_pow(), op);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (skip_op("**"))
      left = binary(Expr::Kind::Binary, std::move(left), parse_unary(true), "**");
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    Depth depth(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token t = next();
      e = node(t.text == "-" ? Expr::Kind::Neg : Expr::Kind::Pos, t.line);
      e->a = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const int line = t.line;
    if (t.type == Token::Type::Name) {
      const std::string name = next().text;
      auto e = node(Expr::Kind::Const, line);
      if (name == "true" || name == "True") {
        e->value = Value::of(true);
      } else if (name == "false" || name == "False") {
        e->value = Value::of(false);
      } else if (name == "none" || name == "None") {
        e->value = Value::none();
      } else {
        e->kind = Expr::Kind::Name;
        e->name = name;
      }
      return e;
    }
    if (t.type == Token::Type::String) {
      std::string s;
      while (cur().type == Token::Type::String) s += next().text;
      auto e = node(Expr::Kind::Const, line);
      e->value = Value::of(std::move(s));
      return e;
    }
    if (t.type == Token::Type::Int || t.type == Token::Type::Float) {
      auto e = node(Expr::Kind::Const, line);
      e->value = t.type == Token::Type::Int ? Value::of(t.integer) : Value::of(t.number);
      ++pos_;
      return e;
    }
    if (skip_op("(")) {
      ExprPtr e = parse_tuple(true);
      expect_op(")");
      return e;
    }
    if (skip_op("[")) {
      auto e = node(Expr::Kind::List, line);
      while (!is_op("]")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op("]")) break;
        e->items.push_back(parse_expression());
      }
      expect_op("]");
      return e;
    }
    if (skip_op("{")) {
      auto e = node(Expr::Kind::Dict, line);
      while (!is_op("}")) {
        if (!e->items.empty()) expect_op(",");
        if (is_op("}")) break;
        e->items.push_back(parse_expression());
        expect_op(":");
        e->items.push_back(parse_expression());
      }
      expect_op("}");
      return e;
    }
    fail("unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      if (is_op(".")) {
        const int line = next().line;
        if (cur().type == Token::Type::Int) {
          auto item = node(Expr::Kind::Item, line);
          item->a = std::move(e);
          item->b = node(Expr::Kind::Const, line);
          item->b->value = Value::of(next().integer);
          e = std::move(item);
        } else {
          auto attr = node(Expr::Kind::Attr, line);
          attr->a = std::move(e);
          attr->name = expect_name();
          e = std::move(attr);
        }
      } else if (is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target) {
    const int line = next().line;
    std::vector<ExprPtr> parts;  // start, stop, step of a slice
    bool slice = false;
    ExprPtr index;
    if (!is_op(":")) index = parse_expression();
    if (is_op(":")) {
      slice = true;
      parts.push_back(std::move(index));
      ++pos_;
      parts.push_back(is_op("]") || is_op(":") ? nullptr : parse_expression());
      if (skip_op(":")) {
        parts.push_back(is_op("]") ? nullptr : parse_expression());
      } else {
        parts.push_back(nullptr);
      }
    }
    expect_op("]");
    auto e = node(slice ? Expr::Kind::Slice : Expr::Kind::Item, line);
    e->a = std::move(target);
    if (slice) {
      e->items = std::move(parts);
    } else {
      e->b = std::move(index);
    }
    return e;
  }

  void call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (!e.items.empty() || !e.kwargs.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail("*args and **kwargs in calls are not supported");
      if (cur().type == Token::Type::Name && peek().type == Token::Type::Op && peek().text == "=") {
        std::string key = next().text;
        ++pos_;
        e.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (!e.kwargs.empty()) fail("a positional argument follows a keyword argument");
        e.items.push_back(parse_expression());
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = node(Expr::Kind::Call, cur().line);
    e->a = std::move(callee);
    call_args(*e);
    return e;
  }

  // `| name(args)` applied to `input` (null in a filter block).
  ExprPtr parse_filter(ExprPtr input) {
    auto e = node(Expr::Kind::Filter, cur().line);
    e->name = expect_name();
    while (is_op(".") && peek().type == Token::Type::Name) {
      ++pos_;
      e->name.append(".").append(next().text);
    }
    if (is_op("(")) call_args(*e);
    e->a = std::move(input);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    for (;;) {
      if (skip_op("|")) {
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_test(ExprPtr operand) {
    const int line = next().line;
    const bool negated = skip_name("not");
    auto e = node(Expr::Kind::Test, line);
    e->name = expect_name();
    while (is_op(".") && peek().type == Token::Type::Name) {
      ++pos_;
      e->name.append(".").append(next().text);
    }
    e->a = std::move(operand);
    const Token& t = cur();
    if (is_op("(")) {
      call_args(*e);
    } else if ((t.type == Token::Type::Name || t.type == Token::Type::String ||
                t.type == Token::Type::Int || t.type == Token::Type::Float || is_op("[") ||
                is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("You cannot chain multiple tests with is");
      e->items.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return e;
    auto n = node(Expr::Kind::Not, line);
    n->a = std::move(e);
    return n;
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  int max_depth_;
  int depth_ = 0;
  int loops_ = 0;  // enclosing for loops: break and continue need one
};

}  // namespace

Body parse_template(std::string_view source, int max_depth) {
  return Parser(Lexer(source).run(), max_depth).parse();
}

}  // namespace lclm::jinja
