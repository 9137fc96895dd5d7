#!/usr/bin/env python3
"""The reference for lclm's Jinja renderer: renders templates with Python's
jinja2 in the environment Hugging Face's apply_chat_template builds
(transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks, loopcontrols and the {% generation %} tag; tojson
as json.dumps with ensure_ascii off; raise_exception; strftime_now.

    render_template.py CASES.json OUT.json

CASES is a JSON array. A case is either
  {"template": SOURCE, "context": {...}}            rendered with those variables, or
  {"config": PATH, "messages": [...], "tools": [...] or null,
   "add_generation_prompt": bool, "kwargs": {...}}   apply_chat_template's variables
                                                       for the tokenizer_config.json at PATH.
OUT gets one object per case: {"output": TEXT} or {"error": MESSAGE}.
Exit 77 when jinja2 is not installed (the tests then skip).
"""
import json
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("render_template.py: python3-jinja2 is not installed", file=sys.stderr)
    sys.exit(77)

SPECIAL_TOKENS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                  "mask_token", "additional_special_tokens"]


class AssistantTracker(Extension):
    # Hugging Face's {% generation %}: the body rendered as a call block.
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def token_content(token):
    return token["content"] if isinstance(token, dict) else token


def chat_variables(case):
    """The template and variables of apply_chat_template(messages, tools=...,
    add_generation_prompt=..., **kwargs) for a tokenizer_config.json."""
    with open(case["config"], encoding="utf-8") as f:
        config = json.load(f)
    template = config.get("chat_template")
    tools = case.get("tools")
    if isinstance(template, list):
        named = {t["name"]: t["template"] for t in template}
        if tools is not None and "tool_use" in named:
            template = named["tool_use"]
        elif "default" in named:
            template = named["default"]
        else:
            raise ValueError("no default template")
    variables = {}
    for key in SPECIAL_TOKENS:
        value = config.get(key)
        if not value:  # the tokenizer's special_tokens_map holds only tokens that are set
            continue
        if key == "additional_special_tokens":
            value = [token_content(t) for t in value]
        else:
            value = token_content(value)
        variables[key] = value
    variables.update(messages=case["messages"], tools=tools, documents=None,
                     add_generation_prompt=case.get("add_generation_prompt", False))
    variables.update(case.get("kwargs") or {})
    return template, variables


def main():
    env = environment()
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    for case in cases:
        try:
            if "config" in case:
                source, variables = chat_variables(case)
            else:
                source, variables = case["template"], case.get("context", {})
            results.append({"output": env.from_string(source).render(**variables)})
        except Exception as e:  # every failure is a result the renderer must match
            results.append({"error": f"{type(e).__name__}: {e}"})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
