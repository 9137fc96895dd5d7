// The Jinja renderer against Python's jinja2 in Hugging Face's environment:
// every snippet below and every template of tests/runtime/templates over the
// conversations of conversations.json must render the same bytes, or fail
// in both. Then what only lclm defines: error messages and limits.
#include "runtime/jinja.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/jinja_reference.h"

namespace lclm {
namespace {

using nlohmann::ordered_json;
using test::Rendered;

Rendered render_ours(const std::string& source, const ordered_json& context,
                     const jinja::Limits& limits = {}) {
  try {
    return {true, jinja::Template(source, "snippet", limits).render(context)};
  } catch (const jinja::TemplateError& e) {
    return {false, e.what()};
  }
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const ordered_json& snippet_context() {
  static const ordered_json context = ordered_json::parse(R"({
    "s": "Hello, World", "u": "héllo wörld ☃ 😀", "n": 3, "f": 2.5, "neg": -7, "t": true,
    "nul": null, "l": [1, 2, 3], "sl": ["b", "a", "C"], "empty": "", "el": [], "ed": {},
    "ws": "  \n\t pad \n ",
    "d": {"b": 1, "a": [1, {"x": "y"}], "items": 5},
    "msgs": [{"role": "user", "content": "hi"},
             {"role": "assistant", "content": "yo",
              "tool_calls": [{"function": {"name": "f", "arguments": {"k": [1, 2.0, "é"]}}}]},
             {"role": "user", "content": "bye"}]
  })");
  return context;
}

// Each exercises one part of the language; the context above is theirs.
const std::vector<std::string> kSnippets = {
    // Whitespace control: -, +, trim_blocks, lstrip_blocks, comments, raw,
    // the dropped trailing newline, \r\n.
    "a\n{% if t %}\nb\n{% endif %}\nc",
    "  {% if t %}x{% endif %}  \n  {%- if t %}y{% endif -%}  \nz",
    "   {%+ if t %}x{% endif %}\n  {% if t +%}\ny{% endif %}",
    "{{ 'a' }}\n{{ 'b' -}}\n   {{ 'c' }}\n  {{- 'd' }}",
    "x {# comment #}\ny\n  {# c2 #}\nz {#- c3 -#} w\n{#+ c4 +#}\nv",
    "abc\n",
    "abc\n\n",
    "a\r\n{% if t %}\r\nb\r\n{% endif %}\r\nc\rd",
    "{% raw %}{{ x }}{% if %}{% endraw %}|  {% raw -%}  \n {{ y }} {%- endraw %}",
    "{%- for x in l -%}\n  {{ x }}\n{%- endfor %}",
    "   {{ n }}\n   {% if t %}\n   inner\n   {% endif %}\n",
    "\t{% if t %}\n\tx\n\t{% endif %}\n",
    "{% if t %}a{% else %}b{% endif %}\n\nend",
    "\u3000{% if t %}x{% endif %}\u00a0 {%- if t %}y{% endif %}",
    "{% for x in l %}\n  {% if x > 1 %}\n    {{ x }}\n  {% endif %}\n{% endfor %}\n",
    "{{ n }}\n{# c #}{{ n }}\n{%- if t %}\n{% endif %}",
    // Arithmetic and numbers.
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} "
    "{{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 + 1 }} {{ 10 / 4 }} {{ 4 / 2 }} {{ 7.5 // 2 }} "
    "{{ -7.5 % 2 }} {{ t + 1 }} {{ -n }} {{ +f }} {{ 2 ** 3 ** 2 }}",
    "{{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1e3 }} {{ 1.5e-7 }} {{ 0.1 + 0.2 }} {{ 1e16 "
    "}} "
    "{{ 1e15 }} {{ 123456789012345678 }} {{ 3.0 }} {{ 1/3 }} {{ 2.0 ** 0.5 }} {{ -0.0 }} {{ 1e-5 "
    "}} "
    "{{ 0.0001 }} {{ 2.5e300 * 10 }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ 1.0 ~ missing }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} "
    "{{ [1] + [2] }} {{ (1,) + (2,) }} {{ 'a' + 'b' }}",
    // Subscripts, slices, attributes.
    "{{ s[0] }} {{ s[-1] }} {{ s[1:4] }} {{ s[::-1] }} {{ s[::2] }} {{ u[1:3] }} {{ u[::-1] }} "
    "{{ l[-2:] }} {{ l[:-1] }} {{ l[5] }}|{{ l[::-2] }} {{ l[10:] }} {{ u[-1] }} {{ s[2:-2:3] }}",
    "{{ d.b }} {{ d['a'][1].x }} {{ d['items'] }} {{ d.a.1.x }} {{ "
    "msgs[1].tool_calls[0].function.name }} "
    "{{ d.get('b') }} {{ d.get('zz', 'def') }} {{ d.get('zz') }} {{ d.missing }}|{{ nul.attr }}|",
    "{{ d.keys() | list }} {{ d.values() | list | length }} {% for k, v in d.items() %}{{ k }}={{ "
    "v }};"
    "{% endfor %}",
    // Comparisons, logic, inline if.
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 != "
    "2 }} "
    "{{ 'a' in 'cat' }} {{ 2 in l }} {{ 'b' in d }} {{ 'zz' not in d }} {{ none == none }} "
    "{{ t == 1 }} {{ 2 >= 2.0 }} {{ 'é' > 'z' }} {{ x == y }} {{ msgs[0] == msgs[0] }} {{ 'u' in "
    "msgs[0] }}",
    "{{ t and 'yes' }} {{ nul or 'fallback' }} {{ not t }} {{ 0 or '' }}|{{ el or 'empty' }} "
    "{{ not nul and n }} {{ l and l[0] }} {{ not (t and nul) }}",
    "{{ 'a' if t else 'b' }} {{ 'a' if nul }}|{{ 'x' if false else 'y' if t else 'z' }} "
    "{{ ('p' if n > 2 else 'q') ~ '!' }}",
    // Literals and Python's str() of them.
    "{{ [1, 'two', 3.0, none, true] }} {{ {'a': 1, 'b': [2]} }} {{ (1,) }} {{ () }} {{ (1, 'a') }} "
    "{{ 'a' 'b' }} {{ \"q'uote\" }} {{ ['it\\'s', \"say \\\"hi\\\"\", 'both \\' \"'] }} {{ d }} "
    "{{ [u, 'tab\\tnl\\n', '\\x00\\x7f\\u00a0\\u2028\\U0001f600'] }} {{ {'k': none} }} {{ el }} {{ "
    "ed }}",
    "{{ 'tab\\there\\nnew \\u00e9 \\x41 \\\\ \\d \\101 \\'' }}",
    // Tests.
    "{{ x is defined }} {{ n is defined }} {{ nul is none }} {{ n is number }} {{ f is float }} "
    "{{ n is integer }} {{ t is boolean }} {{ t is true }} {{ nul is false }} {{ s is string }} "
    "{{ d is mapping }} {{ l is sequence }} {{ s is iterable }} {{ n is odd }} {{ n is even }} "
    "{{ 9 is divisibleby 3 }} {{ n is eq 3 }} {{ n is gt 2 }} {{ s is lower }} {{ 'AB' is upper }} "
    "{{ x is undefined }} {{ nul is not none }} {{ t is number }} {{ t is integer }} {{ range is "
    "callable }} "
    "{{ n is in l }} {{ t is sameas true }} {{ d is iterable }} {{ n is sequence }} {{ s is "
    "mapping }} "
    "{{ n is ne 4 }} {{ n is le 3 }} {{ n is lt 3 }} {{ n is ge(3) }} {{ x is sequence }} {{ el is "
    "string }}",
    // Filters.
    "{{ ws | trim }}|{{ 'xxhixx' | trim('x') }}|{{ s | length }} {{ u | length }} {{ l | count }} "
    "{{ d | length }} {{ missing | length }} {{ el | length }}",
    "{{ s | lower }} {{ s | upper }} {{ u | upper }} {{ 'hello world-foo (bar x' | title }} "
    "{{ 'hELLO wORLD' | capitalize }} {{ u | title }}",
    "{{ l | first }} {{ l | last }} {{ s | first }} {{ el | first }}|{{ sl | join(', ') }} {{ l | "
    "join }} "
    "{{ msgs | join(',', attribute='role') }} {{ d | first }} {{ d | last }}",
    "{{ x | default('dflt') }} {{ nul | default('dflt') }} {{ empty | default('dflt', true) }} "
    "{{ n | d(5) }} {{ x | default }}|{{ el | default('e', boolean=true) }}",
    "{{ s | replace('o', '0') }} {{ s | replace('l', 'L', 2) }} {{ 'ab' | replace('', '-') }} "
    "{{ n | replace('3', 'three') }}",
    "{{ n | string }} {{ l | string }} {{ '42' | int + 1 }} {{ '3.7' | int }} {{ 'x' | int(7) }} "
    "{{ 3.9 | int }} {{ -3.9 | int }} {{ '0x1A' | int(0, 16) }} {{ ' 12 ' | int }} {{ nul | int }} "
    "{{ t | int }} {{ '1_000' | int }}",
    "{{ '2.5' | float }} {{ 'x' | float }} {{ n | float }} {{ ' 1e3 ' | float }}",
    "{{ s | list }} {{ d | list }} {{ d | items | list }} {{ missing | items | list }} {{ u | list "
    "}}",
    "{{ msgs | selectattr('role', 'equalto', 'user') | list | length }} "
    "{{ msgs | rejectattr('role', 'eq', 'user') | map(attribute='content') | list }} "
    "{{ msgs | map(attribute='role') | join('/') }} {{ l | select('odd') | list }} "
    "{{ l | reject('even') | list }} {{ sl | map('upper') | list }} "
    "{{ msgs | selectattr('tool_calls') | list | length }} "
    "{{ msgs | selectattr('tool_calls', 'defined') | list | length }} "
    "{{ msgs | map(attribute='missing', default='-') | list }} {{ l | select('gt', 1) | list }} "
    "{{ msgs | map(attribute='tool_calls.0.function.name') | list }} {{ l | select | list }}",
    "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(4, true) }}|"
    "{{ 'a\\n\\nb' | indent('> ', blank=true) }}|{{ 'x\\r\\ny\\u2028z' | indent }}",
    "{{ sl | sort }} {{ sl | sort(case_sensitive=true) }} {{ l | sort(reverse=true) }} {{ l | sum "
    "}} "
    "{{ l | max }} {{ sl | min }} {{ [1, 2, 1, 3] | unique | list }} {{ l | reverse | list }} "
    "{{ s | reverse }} {{ d | dictsort }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} "
    "{{ 3.5 | round }} {{ 2.4 | round(0, 'ceil') }} {{ 2.6 | round(1, 'floor') }} "
    "{{ msgs | sort(attribute='content') | map(attribute='content') | list }} "
    "{{ ['B', 'a', 'b'] | unique | list }} {{ msgs | sum(attribute='missing_or', start=0) if false "
    "}}",
    "{{ 'hi' | safe }} {{ '<a href=\"x\">&\\'' | e }} {{ 'a b  c-d' | wordcount }} "
    "[{{ 'x' | center(6) }}] [{{ 'ab' | center(5) }}] {{ l | batch(2) | list }} "
    "{{ l | batch(2, 0) | list }} {{ '%s-%s' | format('a', 2) }}",
    "{{ d | tojson }} {{ d | tojson(indent=2) }} {{ u | tojson }} {{ "
    "'ctl\\u0001\\n\"\\\\/\\x7f\\u2028' | tojson }} "
    "{{ [1.0, 2.5, 1e20, none, true, -0.0] | tojson }} {{ d | tojson(sort_keys=true) }} "
    "{{ d | tojson(separators=(',', ':')) }} {{ el | tojson(indent=4) }} {{ ed | tojson(indent=4) "
    "}} "
    "{{ (1, 2) | tojson }} {{ d | tojson(indent='\\t') }} {{ msgs | tojson(indent=0) }} "
    "{{ msgs[1].tool_calls[0].function.arguments | tojson }} {{ 'x' | tojson }} {{ 7 | tojson }}",
    // String, dict and list methods.
    "{{ s.startswith('Hell') }} {{ s.endswith(('x', 'ld')) }} {{ ws.strip() }}|{{ ws.lstrip() }}|"
    "{{ ws.rstrip() }}|{{ 'xxaxx'.strip('x') }} {{ '--a--'.lstrip('-') }} {{ '--a--'.rstrip('-') "
    "}} "
    "{{ '\\u3000x\\u00a0'.strip() }} {{ 'abcba'.strip('ab') }} {{ u.startswith('hé') }}",
    "{{ 'a,b,,c'.split(',') }} {{ '  a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} "
    "{{ 'a,b,c'.rsplit(',', 1) }} {{ '  a  b c '.rsplit(None, 1) }} {{ 'x'.split('x') }} "
    "{{ s.split('o')[-1] }} {{ ''.split() }} {{ 'a b'.split(maxsplit=0) }} {{ 'a\\u2003b'.split() "
    "}} "
    "{{ '<think>x</think>\\n\\ny'.split('</think>')[0].split('<think>')[-1] }}",
    "{{ s.replace('l', 'L') }} {{ s.replace('l', 'L', 1) }} {{ s.upper() }} {{ s.lower() }} "
    "{{ 'hello world\\'s x2y'.title() }} {{ 'hELLO'.capitalize() }} {{ s.find('o') }} {{ "
    "s.rfind('o') }} "
    "{{ s.count('l') }} {{ u.find('w') }} {{ ', '.join(sl) }} {{ 'a\\nb\\r\\nc\\n'.splitlines() }} "
    "{{ '123'.isdigit() }} {{ ' \\t'.isspace() }} {{ 'ab1'.isalnum() }} {{ 'ab'.isalpha() }} "
    "{{ ''.isdigit() }} {{ s.find('zz') }}",
    "{{ '{} and {}'.format('a', 1) }} {{ '{0}{0}{name}'.format('x', name='y') }} "
    "{{ '%s is %d' % ('n', 3) }} {{ '%s' % 'one' }} {{ '{{}}'.format() }} {{ l.index(2) }} {{ "
    "l.count(1) }}",
    // Statements.
    "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
    "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}"
    "{{ loop.cycle('a', 'b') }}{{ loop.depth }}|{% endfor %}",
    "{% for x in el %}no{% else %}empty{% endfor %} {% for x in l if x > 1 %}{{ x }}{{ loop.length "
    "}}"
    "{{ loop.index }}{% else %}none{% endfor %} {% for x in l if x > 5 %}{{ x }}{% else %}none{% "
    "endfor %} "
    "{% for x in missing %}m{% else %}undefined is empty{% endfor %}",
    "{% for k in d %}{{ k }}{% endfor %} {% for k, v in d | dictsort %}{{ k }}{% endfor %} "
    "{% for c in 'héy' %}[{{ c }}]{% endfor %} {% for a, b in [[1, 2], (3, 4)] %}{{ a }}{{ b }}{% "
    "endfor %} "
    "{% for (a, b) in d.items() %}{{ a }}{% endfor %}",
    "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}"
    "{% endif %}{{ x }}{% endfor %} {% for x in range(3) %}{% for y in range(3) %}{% if y > x %}"
    "{% break %}{% endif %}{{ x }}{{ y }} {% endfor %}{% endfor %}",
    "{% for x in [1, 1, 2, 1] %}{% if loop.changed(x) %}{{ x }}{% endif %}{% endfor %} "
    "{{ range(3) | list }} {{ range(1, 10, 3) | list }} {{ range(5, 0, -2) | list }} {{ range(0) | "
    "list }}",
    "{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }} "
    "{% if t %}{% set z = 5 %}{% endif %}{{ z }} {% for i in [1, 2] %}{% if i == 2 %}{{ y }}{% "
    "endif %}"
    "{% set y = i %}{% endfor %}",
    "{% set ns = namespace(c=0, found=false) %}{% for i in l %}{% set ns.c = ns.c + i %}"
    "{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.c }} {{ ns.found }} "
    "{% set ns2 = namespace() %}{% set ns2.x = 'new' %}{{ ns2.x }} {{ ns2.y is defined }} {{ ns }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set c = (3, 4) %}{{ c }} {% set e = [5] %}{{ e }}",
    "{% set blk %}\n  inner {{ n }}\n{% endset %}[{{ blk }}] {% set messages = msgs[1:] %}{{ "
    "messages | length }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} "
    "{{ greet('Al', punct='?') }} {{ greet(name='Z') }} {{ greet() }}|{% macro rec(k) %}{{ k }}"
    "{% if k > 0 %}{{ rec(k - 1) }}{% endif %}{% endmacro %}{{ rec(3) }} {% macro uses_n() %}{{ n "
    "}}"
    "{% endmacro %}{{ uses_n() }}",
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') "
    "%}bold "
    "{{ n }}{% endcall %} {% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% "
    "endmacro %}"
    "{% call(item) each(l) %}<{{ item }}>{% endcall %}",
    "{% filter upper %}shout {{ s }}{% endfilter %} {% filter trim | upper %}  both  {% endfilter "
    "%}",
    "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a }}",
    "{% for i in range(4) %}{% if i == 0 %}zero{% elif i == 1 %}one{% elif i == 2 %}two{% else "
    "%}many"
    "{% endif %};{% endfor %}",
    "{% generation %}gen {{ n }}\n{% set inner = 1 %}{% endgeneration %}{{ inner }}",
    "[{{ missing }}][{{ d.missing }}][{% for x in missing %}x{% endfor %}][{{ missing | length }}]"
    "[{{ missing is defined }}][{{ d.__class__ }}][{{ msgs[7] }}][{{ 'x' if missing }}]",
    "{{ strftime_now('%Y-%m-%d') | length }} {{ raise_exception is defined }}",
    "{{ {'q': \"it's\", 'n': none, 'u': 'é\\u00a0', 'l': [1.5, true]} }} "
    "{{ dict(a=1, b='x') }} {{ namespace(a=1).a }}",
    // Errors: both must fail.
    "{{ missing.attr }}",
    "{{ missing + 1 }}",
    "{{ raise_exception('Bad role') }}",
    "{{ 1 / 0 }}",
    "{{ 'a' + 1 }}",
    "{% if %}x{% endif %}",
    "{% for x in l %}",
    "{% endfor %}",
    "{{ l | nofilter }}",
    "{{ n is notatest }}",
    "{{ range(200000) | length }}",
    "{% set l2 = [] %}{{ l2.append(1) }}",
    "{{ d.pop('b') }}",
    "{{ 'x' < 1 }}",
    "{% unknowntag %}",
    "{{ x | tojson }}",
    "{{ 'a' ~ }}",
    "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}",
    "{% macro m(a) %}{% endmacro %}{{ m(b=2) }}",
    "{{ nul.attr.more }}",
    "{% for x in 5 %}{% endfor %}",
    "{{ 'a' in 1 }}",
    "{% set x.y = 1 %}",
    "{% break %}",
    "{{ (1 }}",
    "{{ 'unterminated }}",
    "{# never closed",
    "{{ s.split('') }}",
    "{{ l.index(9) }}",
    "{% set a, b = [1] %}",
    "{{ msgs[0].content.missing_method() }}",
    "{{ 1 if }}",
};

TEST(JinjaParity, Snippets) {
  ordered_json cases = ordered_json::array();
  for (const std::string& s : kSnippets) {
    cases.push_back({{"template", s}, {"context", snippet_context()}});
  }
  const auto reference = test::render_reference(cases, "snippets");
  if (!reference) GTEST_SKIP() << "python3-jinja2 is not installed";
  ASSERT_EQ(reference->size(), kSnippets.size());
  for (std::size_t i = 0; i < kSnippets.size(); ++i) {
    test::expect_same(render_ours(kSnippets[i], snippet_context()), (*reference)[i],
                      "snippet " + std::to_string(i) + ": " + kSnippets[i]);
  }
}

TEST(JinjaParity, RaiseExceptionMessage) {
  const Rendered ours = render_ours("line one\n{{ raise_exception('Roles must alternate') }}", {});
  ASSERT_FALSE(ours.ok);
  EXPECT_EQ(ours.text, "snippet, line 2: Roles must alternate");
}

// The conversations of conversations.json, through a template: with and
// without a generation prompt, with tools when the conversation has them.
ordered_json chat_cases(const std::string& source, const ordered_json& extra_context,
                        std::vector<std::string>& names) {
  const ordered_json conversations = ordered_json::parse(
      read(std::filesystem::path(LCLM_SOURCE_DIR) / "tests/runtime/conversations.json"));
  ordered_json cases = ordered_json::array();
  for (const ordered_json& c : conversations) {
    for (const bool generation_prompt : {true, false}) {
      ordered_json context = extra_context;
      context["messages"] = c["messages"];
      context["tools"] = c.contains("tools") ? c["tools"] : ordered_json(nullptr);
      context["documents"] = nullptr;
      context["add_generation_prompt"] = generation_prompt;
      cases.push_back({{"template", source}, {"context", context}});
      names.push_back(c["name"].get<std::string>() +
                      (generation_prompt ? " +generation prompt" : ""));
    }
  }
  return cases;
}

TEST(JinjaParity, OtherFamilies) {
  const std::filesystem::path dir =
      std::filesystem::path(LCLM_SOURCE_DIR) / "tests/runtime/templates";
  std::size_t rendered = 0, failed = 0, templates = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".jinja") continue;
    ++templates;
    const std::string source = read(entry.path());
    std::vector<std::string> names;
    const ordered_json cases = chat_cases(
        source, {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"date_string", "05 Dec 2026"}},
        names);
    const auto reference = test::render_reference(cases, "families");
    if (!reference) GTEST_SKIP() << "python3-jinja2 is not installed";
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const Rendered ours = render_ours(source, cases[i]["context"]);
      test::expect_same(ours, (*reference)[i], entry.path().filename().string() + ", " + names[i]);
      (ours.ok ? rendered : failed) += 1;
    }
  }
  EXPECT_GE(templates, 15u);
  // Most conversations must render: a test where every template refuses
  // every conversation would compare nothing but errors.
  EXPECT_GT(rendered, 4 * failed) << rendered << " rendered, " << failed << " refused";
}

// ---- what lclm defines itself: messages and limits ------------------------

std::string error_of(const std::string& source,
                     const ordered_json& context = ordered_json::object(),
                     const jinja::Limits& limits = {}) {
  try {
    jinja::Template(source, "t.jinja", limits).render(context);
  } catch (const jinja::TemplateError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Jinja, ErrorsNameTheTemplateAndLine) {
  EXPECT_EQ(error_of("a\nb\n{% if x %}\n{{ y.z }}\n{% endif %}", {{"x", true}}),
            "t.jinja, line 4: 'y' is undefined");
  EXPECT_EQ(error_of("{{ m.content.strip() }}", {{"m", ordered_json::object()}}),
            "t.jinja, line 1: 'dict object' has no attribute 'content'");
  EXPECT_EQ(error_of("ok\n\n{% frobnicate %}"),
            "t.jinja, line 3: Encountered unknown tag 'frobnicate'.");
  EXPECT_EQ(
      error_of("{% for x in y %}\n\n"),
      "t.jinja, line 2: unexpected end of template; jinja was looking for 'endfor' or 'else'");
  EXPECT_EQ(error_of("\n{{ 1 +* 2 }}"), "t.jinja, line 2: unexpected '*'");
  EXPECT_EQ(error_of("{{ x | bogus }}"), "t.jinja, line 1: No filter named 'bogus'.");
  EXPECT_EQ(error_of("{% include 'other.jinja' %}"),
            "t.jinja, line 1: the tag 'include' is not supported in a chat template (no other "
            "templates)");
}

TEST(Jinja, TemplateErrorCarriesLineAndReason) {
  try {
    jinja::Template("\n\n{{ raise_exception('no system role') }}", "x").render({});
    FAIL() << "no error";
  } catch (const jinja::TemplateError& e) {
    EXPECT_EQ(e.line, 3);
    EXPECT_EQ(e.reason, "no system role");
  }
}

TEST(Jinja, StepLimitStopsEndlessWork) {
  jinja::Limits limits;
  limits.max_steps = 100000;
  const std::string nested =
      "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
  EXPECT_NE(error_of(nested, {}, limits).find("ran more than 100000 steps"), std::string::npos);
}

TEST(Jinja, OutputLimitStopsGrowth) {
  jinja::Limits limits;
  limits.max_output_bytes = 1000;
  EXPECT_NE(
      error_of("{% for i in range(600) %}xx{% endfor %}", {}, limits).find("output is longer"),
      std::string::npos);
  EXPECT_NE(error_of("{% set s = 'x' * 5000 %}", {}, limits).find("grew past"), std::string::npos);
  EXPECT_NE(error_of("{{ ('ab' * 400) * 400 }}", {}, limits).find("grew past"), std::string::npos);
  EXPECT_NE(error_of("{{ 'x' | replace('x', 'yyyy') * 300 }}", {}, limits).find("grew past"),
            std::string::npos);
}

TEST(Jinja, DepthLimitStopsRecursion) {
  EXPECT_NE(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("nest deeper"),
            std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
                .find("nests expressions or blocks deeper"),
            std::string::npos);
  std::string ifs;
  for (int i = 0; i < 1000; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of(ifs).find("nests expressions or blocks deeper"), std::string::npos);
}

TEST(Jinja, RendersWithoutTheReference) {
  // The basics hold even where python3-jinja2 is missing and the parity
  // tests skip.
  const ordered_json context = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  EXPECT_EQ(
      jinja::Template("{% for m in messages %}\n  {{- m.role }}: {{ m.content }}\n{% endfor %}")
          .render(context),
      "user: hi\n");
  EXPECT_EQ(jinja::Template("{{ x | tojson }}").render({{"x", {{"b", 1}, {"a", "é"}}}}),
            "{\"b\": 1, \"a\": \"é\"}");
  EXPECT_EQ(jinja::Template("{{ 'a😀b'[::-1] }}|{{ 'a😀b' | length }}").render({}), "b😀a|3");
}

}  // namespace
}  // namespace lclm
