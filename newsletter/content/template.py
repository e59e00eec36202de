"""What a lesson body may say in Jinja: `{{ name }}` of the documented variables and nothing
else, checked on the parsed template before any of it runs, then rendered in a sandbox.

Lesson files may come from writers who are not the server's administrators, so a body is
treated as untrusted: a call, an attribute, a filter or a tag could reach Python's internals
(`{{ lipsum.__globals__ }}`), and none of them has a use here anyway, since the personal
values are placeholders when the body is rendered: a filter or test on them would act on
the placeholder, not on the subscriber's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from newsletter.errors import ContentError, Problem

_TAGS: dict[type[nodes.Node], str] = {
    nodes.For: "for",
    nodes.If: "if",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.FilterBlock: "filter",
    nodes.With: "with",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}


def _sandbox() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    # Nothing beyond the variables passed in: no range, lipsum, cycler, joiner, namespace
    # or dict, and no filters or tests, even though the check below already refuses them.
    env.globals.clear()
    env.filters.clear()
    env.tests.clear()
    return env


_SANDBOX = _sandbox()


def compile_body(path: Path, body: str, first_line: int, names: frozenset[str]) -> Template:
    """The body as a template that can only print `names`; ContentError naming file and
    line of everything else (unknown names, calls, attributes, filters, tags)."""
    try:
        tree = _SANDBOX.parse(body)
    except TemplateSyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise ContentError([Problem(path, line, f"template error: {exc.message}")]) from None
    problems = [
        Problem(path, first_line + lineno - 1, message)
        for lineno, message in _refusals(tree, names)
    ]
    if problems:
        raise ContentError(problems)
    return _SANDBOX.from_string(tree)


def _refusals(tree: nodes.Template, names: frozenset[str]) -> Iterator[tuple[int, str]]:
    for node in tree.body:
        if isinstance(node, nodes.Output):
            for item in node.nodes:
                if isinstance(item, nodes.TemplateData):
                    continue
                if isinstance(item, nodes.Name) and item.ctx == "load":
                    if item.name not in names:
                        known = ", ".join(sorted(names))
                        yield item.lineno, f"unknown variable '{item.name}' (known: {known})"
                    continue
                found = ", ".join(dict.fromkeys(_describe(item, names)))
                yield item.lineno, f"{{{{ }}}} may hold only a variable name; found {found}"
        else:
            tag = _TAGS.get(type(node), type(node).__name__.lower())
            yield (
                node.lineno,
                (f"the {{% {tag} %}} tag is not allowed in a lesson; only {{{{ variable }}}} is"),
            )


def _describe(expression: nodes.Node, names: frozenset[str]) -> Iterator[str]:
    """What an expression holds, outermost first, for the writer to find it in the line."""
    for node in [expression, *expression.find_all(nodes.Expr)]:
        match node:
            case nodes.Name() if node.name not in names:
                yield f"the name '{node.name}'"
            case nodes.Getattr():
                yield f"the attribute '.{node.attr}'"
            case nodes.Getitem():
                yield "an item lookup '[...]'"
            case nodes.Call():
                yield "a call '(...)'"
            case nodes.Filter():
                yield f"the filter '|{node.name}'"
            case nodes.Test():
                yield f"the test 'is {node.name}'"
            case nodes.Const() if node is expression:
                yield f"the literal {node.value!r}"
            case _ if node is expression:
                yield "an expression"
