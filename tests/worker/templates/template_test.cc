// The template engine on its own: parsing and rendering of text, output
// tags, whitespace control, expressions, loops, conditionals, assignments,
// filters, tests and methods, and the errors for malformed templates and
// for what it does not implement. Expected outputs are Jinja2's (with
// trim_blocks and lstrip_blocks, as transformers renders chat templates).
#include "worker/templates/template.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace lathe {
namespace {

using nlohmann::json;

std::string Render(const std::string& source,
                   const json& variables = json::object()) {
  auto t = Template::Parse(source);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return "";
  auto r = (*t)->Render(variables);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : "";
}

// The parse error of `source` (OK when it parses).
absl::Status ParseError(const std::string& source) {
  return Template::Parse(source).status();
}

// The render error of `source`, which must parse.
absl::Status RenderError(const std::string& source,
                         const json& variables = json::object()) {
  auto t = Template::Parse(source);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return t.status();
  return (*t)->Render(variables).status();
}

const json kTwoTurns = json::parse(R"([
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi"},
  {"role": "assistant", "content": "Hello!"},
  {"role": "user", "content": "Capital of France?"},
  {"role": "assistant", "content": "Paris"}])");

TEST(TemplateTest, TextOutputAndComments) {
  EXPECT_EQ(Render(""), "");
  EXPECT_EQ(Render("plain { text } with {braces}"),
            "plain { text } with {braces}");
  EXPECT_EQ(Render("Hello {{ name }}!{# not shown #}", {{"name", "Ann"}}),
            "Hello Ann!");
  // Undefined variables print as nothing, as Jinja's default Undefined.
  EXPECT_EQ(Render("[{{ missing }}]"), "[]");
  // A closer inside a string literal does not end the tag.
  EXPECT_EQ(Render("{{ '}}' }}"), "}}");
}

TEST(TemplateTest, BlockWhitespaceRules) {
  // trim_blocks drops the newline after a block tag, lstrip_blocks the
  // indentation before one; output tags keep theirs.
  const std::string source =
      "{% for m in messages %}\n"
      "  {% if m.role == 'user' %}\n"
      "U{{ loop.index }}: {{ m.content | trim }}\n"
      "  {% else %}\n"
      "A: {{ m['content'] ~ '!' if not loop.first else 'x' }}\n"
      "  {% endif %}\n"
      "{% endfor %}\n"
      "{% if add_generation_prompt %}A:{% endif %}";
  const json msgs = json::parse(
      R"([{"role": "user", "content": " hi "},
          {"role": "assistant", "content": "yo"}])");
  EXPECT_EQ(
      Render(source, {{"messages", msgs}, {"add_generation_prompt", true}}),
      "U1: hi\nA: yo!\nA:");
  EXPECT_EQ(
      Render(source, {{"messages", msgs}, {"add_generation_prompt", false}}),
      "U1: hi\nA: yo!\n");
  // "-" strips all whitespace on its side; "+" keeps the indentation that
  // lstrip_blocks would remove.
  EXPECT_EQ(Render("a \n {{- 'b' -}} \n c"), "abc");
  EXPECT_EQ(Render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(Render("x\n  {# c #}\ny"), "x\ny");
}

TEST(TemplateTest, Expressions) {
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} "
                   "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2.5 * 2 }} "
                   "{{ 'ab' * 3 }} {{ 'a' ~ 1 ~ none }} {{ [1] + [2] }}"),
            "7 9 3.5 3 -4 -2 5.0 ababab a1None [1, 2]");
  EXPECT_EQ(Render("{{ 1 < 2 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ not [] }} "
                   "{{ none or 'x' }} {{ 0 and 1 }} {{ 2 >= 3 }}"),
            "True True True True x 0 False");
  EXPECT_EQ(Render(R"({{ [1, 'a', none, true] }} {{ {'k': 1} }} {{ "it's" }})"),
            "[1, 'a', None, True] {'k': 1} it's");
  EXPECT_EQ(Render("{{ 'y' if 1 else 'n' }}{{ 'z' if 0 }}"), "y");
  EXPECT_EQ(Render("{{ user.name }} {{ user['tags'][1] }} {{ user.tags[-1] }} "
                   "{{ n + 1 }} {{ f }} {{ flag }}",
                   {{"user", {{"name", "Ann"}, {"tags", {"a", "b"}}}},
                    {"n", 41},
                    {"f", 0.1},
                    {"flag", true}}),
            "Ann b b 42 0.1 True");
  EXPECT_EQ(
      Render("{{ messages[0].tools is defined }} {{ x is not defined }} "
             "{{ none is none }} {{ 'a' in 'cat' }} {{ 3 not in [1, 2] }} "
             "{{ 7 // 2 }} {{ -7 % 3 }} {{ 'a,b'.split(',')[-1] }} "
             "{{ '\\n x \\n'.strip('\\n') }}|{{ messages[1:3]|length }} "
             "{{ true and 'y' or 'n' }} {{ [1, 2]|tojson }}",
             {{"messages", kTwoTurns}}),
      "False True True True True 3 2 b  x |2 y [1, 2]");
  EXPECT_EQ(Render("{%- for m in messages[::-1] -%}{{ m.role[0] }}"
                   "{%- endfor %}",
                   {{"messages", kTwoTurns}}),
            "auaus");
  EXPECT_EQ(Render("{{ 'abcdef'[1:5:2] }} {{ [1, 2, 3][-2:] }} {{ 'ab'[5] }}"),
            "bd [2, 3] ");
}

TEST(TemplateTest, LoopsAndConditionals) {
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index }}/{{ loop.length }}"
                   "{{ ',' if not loop.last }}{% endfor %}",
                   {{"xs", {"a", "b", "c"}}}),
            "1/3,2/3,3/3");
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}"
                   "{{ loop.revindex0 }}{{ loop.first }} {% endfor %}",
                   {{"xs", {1, 2}}}),
            "021True 110False ");
  EXPECT_EQ(Render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}"
                   "{% endfor %}"),
            "24");
  // Dicts iterate over their keys, in order.
  EXPECT_EQ(Render("{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}"), "ab");
  EXPECT_EQ(Render("{% for kv in d.items() %}{{ kv[0] }}={{ kv[1] }} "
                   "{% endfor %}",
                   {{"d", {{"b", 1}, {"a", 2}}}}),
            "a=2 b=1 ");
  // The inner loop's `loop` hides the outer one.
  EXPECT_EQ(Render("{% for a in [1, 2] %}{% for b in [1, 2, 3] %}"
                   "{% endfor %}{{ loop.length }}{% endfor %}"),
            "22");
  EXPECT_EQ(Render("{% for n in [1, 2, 3] %}{% if n == 1 %}one"
                   "{% elif n == 2 %}two{% else %}many{% endif %} "
                   "{% endfor %}"),
            "one two many ");
  EXPECT_EQ(Render("{% generation %}kept{% endgeneration %}"), "kept");
}

TEST(TemplateTest, AssignmentsAndNamespaces) {
  EXPECT_EQ(
      Render("{% set ns = namespace(n=0, last='') %}"
             "{% for m in messages if m.role == 'user' %}"
             "{% set ns.n = ns.n + 1 %}{% set ns.last = m.content %}"
             "{% endfor %}{{ ns.n }}|{{ ns.last }}|{{ messages|length - 1 }}",
             {{"messages", kTwoTurns}}),
      "2|Capital of France?|4");
  // Assignments inside a loop do not leak out of it; namespaces carry them.
  EXPECT_EQ(Render("{% set c = 'out' %}{% for m in messages %}{% set c = "
                   "m.role %}{% endfor %}{{ c }}",
                   {{"messages", kTwoTurns}}),
            "out");
  EXPECT_EQ(Render("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a + ns.b }}"),
            "3");
}

TEST(TemplateTest, Filters) {
  EXPECT_EQ(Render("{{ 'hello World'|capitalize }}|{{ [3, 1, 2]|first }}"
                   "{{ [3, 1, 2]|last }}|{{ [1, 2, 3]|reverse|join(',') }}|"
                   "{{ 'abc'|reverse }}|{{ x|default('d') }}|{{ x|d }}|"
                   "{{ {'b': 1, 'a': 2}|list|join }}|"
                   "{{ {'a': 1}|items|first|join('=') }}|{{ '  t '|trim }}|"
                   "{{ 'Ab'|upper }}{{ 'Ab'|lower }}|{{ 12|string ~ 'x' }}|"
                   "{{ 'abc'|length }}{{ [1]|count }}"),
            "Hello world|32|3,2,1|cba|d||ab|a=1|t|ABab|12x|31");
  // Python's json.dumps(ensure_ascii=False): ", " and ": " separators.
  EXPECT_EQ(Render(R"({{ {'a': [1, 2.5, none, true, 'x"y', 'é']}|tojson }})"),
            R"({"a": [1, 2.5, null, true, "x\"y", "é"]})");
  EXPECT_EQ(Render("{{ v|tojson }}", {{"v", {{"k", {1, "two"}}}}}),
            R"({"k": [1, "two"]})");
}

TEST(TemplateTest, TestsAndMethods) {
  EXPECT_EQ(Render("{{ 1 is number }}{{ 1.5 is integer }}{{ 'a' is string }}"
                   "{{ {} is mapping }}{{ [] is sequence }}"
                   "{{ true is boolean }}{{ false is false }}{{ 3 is odd }}"
                   "{{ x is undefined }}{{ none is not none }}"),
            "TrueFalseTrueTrueTrueTrueTrueTrueTrueFalse");
  EXPECT_EQ(Render("{{ 'a-b-c'.split('-')|length }} "
                   "{{ ' a  b '.split()|join('|') }} {{ 'xxhixx'.strip('x') }} "
                   "{{ 'xxhi'.lstrip('x') }} {{ 'hixx'.rstrip('x') }} "
                   "{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('x') }} "
                   "{{ 'aXa'.replace('a', 'b') }} {{ 'Ab'.upper() }}"),
            "3 a|b hi hi hi True False bXb AB");
  EXPECT_EQ(Render("{{ d.get('a') }} {{ d.get('z', 'none') }} {{ d.get('z') }} "
                   "{{ d.keys()|join }} {{ d.values()|join }}",
                   {{"d", {{"a", 1}, {"b", 2}}}}),
            "1 none None ab 12");
}

// Messages name the problem without a prefix; callers add their context.
TEST(TemplateTest, MalformedTemplatesAreParseErrors) {
  struct Case {
    const char* source;
    const char* message;
  };
  const Case cases[] = {
      {"{{ 'open }}", "tag opened at byte 0 is not closed"},
      {"ab{% if x ", "tag opened at byte 2 is not closed"},
      {"{% if x %}no end", "if without endif"},
      {"{% if x %}{% else %}", "if without endif"},
      {"{% for x in y %}", "for without endfor"},
      {"{% generation %}", "generation block without endgeneration"},
      {"{% endif %}", "unexpected 'endif'"},
      {"{% if x %}{% endfor %}", "unexpected 'endfor'"},
      {"{% %}", "empty statement tag"},
      {"{{ }}", "expression expected at the end of the tag"},
      {"{{ 1 + }}", "expression expected at the end of the tag"},
      {"{{ x y }}", "unexpected 'y'"},
      {"{{ x @ y }}", "unexpected character '@'"},
      {"{{ f(a=1, 2) }}", "positional argument after keyword"},
      {"{{ [1, 2 }}", "expected ']' but found 'end of tag'"},
      {"{{ x. }}", "expected a name but found 'end of tag'"},
      {"{% for x y %}{% endfor %}", "expected 'in' in for"},
      {"{% set x 1 %}", "expected '=' but found '1'"},
      {"{{ 99999999999999999999 }}", "integer literal out of range"},
  };
  for (const Case& c : cases) {
    const absl::Status s = ParseError(c.source);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_EQ(s.message(), c.message) << c.source;
  }
  const std::string deep =
      "{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}";
  EXPECT_EQ(ParseError(deep).message(), "expression nested too deeply");
  EXPECT_EQ(ParseError(std::string((16 << 20) + 1, 'x')).message(),
            "longer than 16 MiB");
}

TEST(TemplateTest, UnsupportedConstructsAreNamed) {
  const char* const kCases[][2] = {
      {"{% macro f() %}x{% endmacro %}",
       "the statement 'macro' is not supported"},
      {"{% include 'x' %}", "the statement 'include' is not supported"},
      {"{{ messages | wordcount }}", "the filter 'wordcount' is not supported"},
      // Unknown filters and tests fail even where they would never run.
      {"{% if false %}{{ x | wordcount }}{% endif %}",
       "the filter 'wordcount' is not supported"},
      {"{{ x is divisibleby }}", "the test 'divisibleby' is not supported"},
      {"{{ x is odd(1) }}", "arguments to the test 'odd' are not supported"},
      {"{% for k, v in x %}{% endfor %}",
       "unpacking several loop variables is not supported"},
      {"{% set a, b = x %}", "unpacking in set is not supported"},
      {"{% set x %}y{% endset %}",
       "block set (set ... endset) is not supported"},
      {"{% for x in y recursive %}{% endfor %}",
       "recursive loops are not supported"},
      {"{{ 2 ** 3 }}", "the ** operator is not supported"},
      {"{{ (1, 2) }}", "tuples are not supported"},
  };
  for (const auto& [source, message] : kCases) {
    const absl::Status s = ParseError(source);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << source;
    EXPECT_EQ(s.message(), message) << source;
  }
  // Methods and functions are resolved when called.
  EXPECT_EQ(RenderError("{{ 'a'.zfill(3) }}").message(),
            "the string method 'zfill' is not supported");
  EXPECT_EQ(RenderError("{{ strftime_now('%Y') }}").message(),
            "the function 'strftime_now' is not supported");
}

TEST(TemplateTest, RenderErrors) {
  struct Case {
    const char* source;
    const char* message;
  };
  const Case cases[] = {
      {"{{ raise_exception('roles must alternate') }}", "roles must alternate"},
      {"{{ x.y }}", "'x' is undefined (reading 'y')"},
      {"{{ x[0] }}", "'x' is undefined"},
      {"{{ 1 / 0 }}", "division by zero"},
      {"{{ 1 // 0 }}", "division by zero"},
      {"{{ 1 < 'a' }}", "cannot compare a integer with a string"},
      {"{{ 1 + 'a' }}", "unsupported operand types for +: integer and string"},
      {"{{ -'a' }}", "cannot negate a string"},
      {"{% for c in 'abc' %}{% endfor %}", "cannot loop over a string"},
      {"{% set n = 1 %}{% set n.a = 2 %}",
       "cannot set 'n.a': 'n' is not a namespace"},
      {"{{ [1][::0] }}", "slice step cannot be zero"},
      {"{{ [1]['a'] }}", "index must be an integer, not string"},
      {"{{ 1 | length }}", "length of a integer"},
      {"{{ 1 in 'abc' }}", "'in <string>' needs text on the left"},
      {"{{ {1: 2} }}", "dict keys must be text"},
      {"{{ 'x' * 20000000 }}", "text too long"},
      {"{{ 'a'() }}", "a string cannot be called"},
  };
  for (const Case& c : cases) {
    const absl::Status s = RenderError(c.source);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_EQ(s.message(), c.message) << c.source;
  }
  // The output is capped at 16 MiB.
  EXPECT_EQ(RenderError("{% for x in xs %}{{ s }}{% endfor %}",
                        {{"xs", json::array({1, 2, 3, 4, 5, 6, 7, 8, 9})},
                         {"s", std::string(2 << 20, 'x')}})
                .message(),
            "output exceeds 16 MiB");
  auto t = Template::Parse("x");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->Render(json::array()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TemplateTest, RendersFromSeveralThreadsAtOnce) {
  auto t = Template::Parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}"
      "{% set ns.n = ns.n + 1 %}{{ m.role }}:{{ m.content }};{% endfor %}"
      "{{ ns.n }}");
  ASSERT_TRUE(t.ok()) << t.status();
  const json vars = {{"messages", kTwoTurns}};
  const std::string want =
      "system:Be brief.;user:Hi;assistant:Hello!;user:Capital of France?;"
      "assistant:Paris;5";
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int i = 0; i < 200; ++i) {
        auto r = (*t)->Render(vars);
        if (!r.ok() || *r != want) ++mismatches[k];
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace lathe
