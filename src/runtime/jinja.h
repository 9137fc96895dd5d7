// A Jinja renderer for chat templates: the subset of jinja2 that the
// templates shipped with models use, rendering byte for byte what Hugging
// Face's apply_chat_template renders (jinja2's ImmutableSandboxedEnvironment
// with trim_blocks, lstrip_blocks and loopcontrols; its tojson, which is
// json.dumps with ensure_ascii off; raise_exception; strftime_now).
//
//   Template t(source, "tokenizer_config.json chat_template");
//   std::string prompt = t.render({{"messages", ...}, {"add_generation_prompt", true}});
//
// Statements: if/elif/else, for (else, inline if, loop.*, break/continue),
// set (also ns.attr and block set), macro, call, filter, with, raw,
// generation. Expressions: literals, lists, dicts, tuples, attributes,
// subscripts and slices, arithmetic, ~, comparisons, in, and/or/not, tests,
// inline if, filters, calls, and the string, dict and list methods templates
// call. Not supported: include/import/extends/block (a chat template is one
// file), recursive loops, *args/**kwargs, integers beyond 64 bits.
// Strings are UTF-8 and index, slice and count by code point as Python's do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/error.h"

namespace lclm::jinja {

// What one render may spend, so that a hostile template (a model directory
// is not trusted input) cannot hang the server or exhaust its memory.
struct Limits {
  std::size_t max_output_bytes = 16u << 20;  // the output, and any one string or list built
  std::uint64_t max_steps = 20'000'000;      // expressions evaluated and statements run
  int max_depth = 200;                       // nesting of expressions and blocks; of macro calls
};

// A template that does not parse, or an error while rendering (an undefined
// value used, a type error, raise_exception, a limit): the message names the
// template and the line.
class TemplateError : public Error {
 public:
  TemplateError(const std::string& what, int at_line, std::string message)
      : Error(what), line(at_line), reason(std::move(message)) {}
  int line;            // 1-based
  std::string reason;  // the message without the template's name and line
};

class Template {
 public:
  // Parses `source`; `name` goes into every error message. Throws
  // TemplateError.
  explicit Template(std::string_view source, std::string name = "template", Limits limits = {});
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the variables of `context` (a JSON object; key order is
  // kept, as tojson shows it) and the globals range, namespace, dict,
  // raise_exception and strftime_now. Throws TemplateError.
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& name() const;

  struct Program;  // the parsed template, defined in jinja.cc

 private:
  std::unique_ptr<const Program> program_;
};

}  // namespace lclm::jinja
