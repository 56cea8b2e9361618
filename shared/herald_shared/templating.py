"""Personalisation: the one template language of campaign content (subject, preheader, bodies), sandboxed.

Campaigns checks what a customer saves or submits (`check`) and screens what its code could write for any
member (`every_branch`, `constant_texts`: readings for screening only, never sent); delivery compiles it once per
campaign (`compile_template`) and renders it per recipient (`Template.render`). The language is a small subset of
Jinja2, enforced on the parsed template before anything is compiled, so a template is safe whoever wrote it:

- `{{ first_name }}`, `{{ city | default("Riga") }}`, string and number constants, `~` (concatenation);
- `{% if %}` / `{% elif %}` / `{% else %}`, comparisons (`==`, `!=`, `<`, `>`, `in` ...), `and`/`or`/`not`,
  `x if cond else y`, tests (`is defined`, `is none`, `is number`, `is string` ...);
- `{% set name = expression %}`;
- the filters in `FILTERS`. `default` (alias `d`) treats an empty string like a missing value: a
  subscriber without a first name has `first_name == ""`.

Everything else is refused with its line: loops, macros, includes, blocks, attribute access (`x.y`),
subscripts, function calls, arithmetic, the other filters. Rendering is sandboxed (Jinja2's
`SandboxedEnvironment`, with no globals), HTML values are escaped (`html=True`), and every render is bounded:
characters output, characters computed by filters and `~`, and time (`RenderError`). Templates of text and
merge tags alone (`{{ field }}`, `{{ field | default("x") }}`: most) are rendered without Jinja2's runtime,
to the same result at a tenth of the cost: delivery renders every message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

import markupsafe
from jinja2 import Environment, Undefined, nodes
from jinja2 import filters as jinja_filters
from jinja2 import tests as jinja_tests
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateSyntaxError
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import pass_eval_context

STANDARD_FIELDS: frozenset[str] = frozenset({"email", "first_name", "last_name", "unsubscribe_url"})
# Names a template may never use, even where a custom field has them: Jinja2's own special names and
# default globals, and the globals of web frameworks that sandbox-escape payloads reach for.
RESERVED_NAMES: frozenset[str] = frozenset({
    "self", "loop", "super", "caller", "varargs", "kwargs", "context", "environment",
    "range", "lipsum", "dict", "cycler", "joiner", "namespace",
    "config", "request", "session", "g", "url_for", "get_flashed_messages"})
TESTS: frozenset[str] = frozenset({"defined", "undefined", "none", "number", "string", "boolean", "integer",
                                   "float", "true", "false", "lower", "upper"})
FILTERS: frozenset[str] = frozenset({"default", "d", "upper", "lower", "title", "capitalize", "trim", "escape",
                                     "e", "truncate", "round", "int", "float", "string", "length"})
MAX_OUTPUT_CHARS = 2_000_000
MAX_SECONDS = 0.2
# Larger templates are refused (about 2,500 merge tags): compiling one of this size takes ~0.5 s.
MAX_TOKENS = 10_000
# Deeper templates are refused: the walk below, Jinja2's compiler and Python's own are recursive.
MAX_DEPTH = 50
_NEWLINES = re.compile(r"\r\n|\r")
_ARITHMETIC: dict[type[nodes.Node], str] = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.Div: "/",
                                             nodes.FloorDiv: "//", nodes.Mod: "%", nodes.Pow: "**"}
_REFUSED: dict[type[nodes.Node], str] = {
    nodes.For: "{% for %} loops are", nodes.Macro: "macros are", nodes.CallBlock: "{% call %} blocks are",
    nodes.Include: "{% include %} is", nodes.Import: "{% import %} is", nodes.FromImport: "{% from ... import %} is",
    nodes.Extends: "{% extends %} is", nodes.Block: "{% block %} is", nodes.FilterBlock: "{% filter %} blocks are",
    nodes.With: "{% with %} blocks are", nodes.AssignBlock: "{% set %}...{% endset %} blocks are",
    nodes.ScopedEvalContextModifier: "{% autoescape %} blocks are", nodes.EvalContextModifier: "{% autoescape %} is",
    nodes.Getattr: "attribute access (x.y) is", nodes.Getitem: "subscripts (x[...]) are",
    nodes.Slice: "slices (x[a:b]) are", nodes.Call: "function calls are", nodes.Dict: "dict literals are",
    nodes.NSRef: "namespace assignment (x.y = ...) is", nodes.Break: "{% break %} is",
    nodes.Continue: "{% continue %} is",
}


class TemplateProblem(Exception):
    """A template refused when it is saved or submitted: where it is, on which line, and why."""

    def __init__(self, where: str, line: int | None, reason: str) -> None:
        self.where = where
        self.line = line
        self.reason = reason
        super().__init__(f"{where} line {line}: {reason}" if line is not None else f"{where}: {reason}")


class RenderError(Exception):
    """One render failed or hit a limit (characters output or computed, time); other renders are unaffected."""


@dataclass
class _Budget:
    max_chars: int
    deadline: float  # time.perf_counter()
    max_seconds: float
    started_cpu: float  # time.thread_time() at the start
    computed: int = 0

    def check_time(self) -> None:
        # Wall time first (cheap); a render preempted by the OS is not blamed: its own CPU time must be over too.
        if time.perf_counter() > self.deadline and time.thread_time() - self.started_cpu > self.max_seconds:
            raise RenderError(f"the render took longer than {self.max_seconds:g} s")

    def count(self, value: object) -> None:
        if isinstance(value, str):
            self.computed += len(value)
            if self.computed > self.max_chars:
                raise RenderError(f"the template computed more than {self.max_chars:,} characters")
        self.check_time()


# The limits of the render under way. Rendering is synchronous, so the filters of one render read the budget
# of that render; outside a render (nothing should call them there) nothing is counted.
_BUDGET: ContextVar[_Budget | None] = ContextVar("herald_template_budget", default=None)


def _bounded(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose results count against the render's budget (its Jinja2 pass-argument marker is kept)."""

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.check_time()
        result = function(*args, **kwargs)
        if budget is not None:
            budget.count(result)
        return result

    return bounded


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """`default`: a missing (undefined), None or empty-string value gives the default; with `boolean=True`
    any false value does (Jinja2's own `default` keeps "")."""
    if isinstance(value, Undefined) or value is None or (isinstance(value, str) and value == "") or (
            boolean and not value):
        return default_value
    return value


@pass_eval_context
def _concat(eval_ctx: Any, parts: tuple[Any, ...]) -> str:
    """`a ~ b`, as Jinja2 joins it, after checking the length: a chain of `{% set %}`s could otherwise double
    a string each time."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.check_time()
        size = sum(len(markupsafe.soft_str(part)) for part in parts)
        if budget.computed + size > budget.max_chars:
            raise RenderError(f"the template computed more than {budget.max_chars:,} characters")
    result: str = markup_join(parts) if eval_ctx.autoescape else str_join(parts)
    if budget is not None:
        budget.computed += len(result)
    return result


class _CodeGenerator(CodeGenerator):
    """Jinja2's code generator, with `~` going through `_concat` (bounded) instead of an unchecked join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.herald_concat(context.eval_ctx, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")


@pass_eval_context
def _finalize(eval_ctx: Any, value: Any) -> Any:
    # Present only so that no expression is evaluated at compile time (Jinja2 folds constants unless finalize
    # needs a runtime argument): all evaluation happens inside a render, under its budget.
    return value


class _Environment(SandboxedEnvironment):
    code_generator_class = _CodeGenerator
    herald_concat = staticmethod(_concat)


def _lenient(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that gives back its value where it would fail (`"a" | round`): for screening, which renders arms of
    conditions with values no member taking them may have (its Jinja2 pass-argument marker is kept)."""

    @wraps(function)
    def lenient(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except RenderError:
            raise
        except Exception:
            return next((arg for arg in args if not isinstance(arg, Environment | nodes.EvalContext)), "")

    return lenient


def _environment(html: bool, lenient: bool = False) -> _Environment:
    env = _Environment(autoescape=html, optimized=False, finalize=_finalize, keep_trailing_newline=True,
                       undefined=Undefined)
    env.globals.clear()
    wrap = (lambda function: _lenient(_bounded(function))) if lenient else _bounded
    env.filters = {name: wrap(function) for name, function in (
        ("default", _default), ("d", _default), ("upper", jinja_filters.do_upper),
        ("lower", jinja_filters.do_lower), ("title", jinja_filters.do_title),
        ("capitalize", jinja_filters.do_capitalize), ("trim", jinja_filters.do_trim),
        ("escape", markupsafe.escape), ("e", markupsafe.escape), ("truncate", jinja_filters.do_truncate),
        ("round", jinja_filters.do_round), ("int", jinja_filters.do_int), ("float", jinja_filters.do_float),
        ("string", markupsafe.soft_str), ("length", len))}
    env.tests = {name: function for name, function in jinja_tests.TESTS.items() if name in TESTS}
    return env


_ENVIRONMENTS = {False: _environment(False), True: _environment(True)}
_SCREENING_ENVIRONMENTS = {False: _environment(False, lenient=True), True: _environment(True, lenient=True)}


# Compile-time checks: the allowlist


def _problems(node: nodes.Node, known: frozenset[str] | None, assigned: set[str],
              depth: int = 0) -> Iterator[tuple[int, str]]:
    """(line, reason) of every construct of the template that is not allowed, in document order."""
    line = node.lineno
    if depth > MAX_DEPTH:
        yield line, f"nested too deeply (more than {MAX_DEPTH} levels)"
        return
    if isinstance(node, nodes.Template | nodes.Scope | nodes.Output | nodes.If | nodes.CondExpr | nodes.And | nodes.Or
                  | nodes.Not | nodes.Compare | nodes.Operand | nodes.Concat | nodes.Keyword | nodes.List
                  | nodes.Tuple):
        pass
    elif isinstance(node, nodes.TemplateData | nodes.Const):
        return
    elif isinstance(node, nodes.Assign):
        if not isinstance(node.target, nodes.Name):
            yield line, "{% set %} assigns one name at a time"
            return
        if node.target.name in RESERVED_NAMES:
            yield line, f"'{node.target.name}' is a reserved name"
        yield from _problems(node.node, known, assigned, depth + 1)
        return
    elif isinstance(node, nodes.Name):
        if node.name in RESERVED_NAMES:
            yield line, f"'{node.name}' is a reserved name, not a field"
        elif known is not None and node.name not in known and node.name not in assigned:
            yield line, f"unknown field '{node.name}' (fields: {', '.join(sorted(known))})"
        return
    elif isinstance(node, nodes.Neg | nodes.Pos):
        if not (isinstance(node.node, nodes.Const) and isinstance(node.node.value, int | float)
                and not isinstance(node.node.value, bool)):
            yield line, "arithmetic is not allowed (a sign goes only before a number)"
        return
    elif isinstance(node, nodes.Filter | nodes.Test):
        kind, allowed = ("filter", FILTERS) if isinstance(node, nodes.Filter) else ("test", TESTS)
        if node.name not in allowed:
            yield line, f"the {kind} '{node.name}' is not allowed (allowed: {', '.join(sorted(allowed))})"
        elif node.dyn_args is not None or node.dyn_kwargs is not None:
            yield line, f"*args and **kwargs are not allowed in a {kind}"
        elif node.node is None:
            yield line, "{% filter %} blocks are not allowed"
    elif type(node) in _ARITHMETIC:
        yield line, f"arithmetic ({_ARITHMETIC[type(node)]}) is not allowed"
        return
    else:
        yield line, f"{_REFUSED.get(type(node), type(node).__name__ + ' is')} not allowed"
        return
    for child in node.iter_child_nodes():
        yield from _problems(child, known, assigned, depth + 1)


def _parse(source: str, where: str, env: _Environment, max_tokens: int) -> nodes.Template:
    try:
        tokens = 0
        for line, kind, _ in env.lex(source):  # counted before parsing: compiling costs ~0.2 ms a merge tag
            tokens += kind != "whitespace"
            if tokens > max_tokens:
                raise TemplateProblem(where, line, f"too long: more than {max_tokens:,} tokens (text between "
                                                   "tags, names, operators...)")
        return env.parse(source)
    except TemplateProblem:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateProblem(where, exc.lineno, exc.message or "syntax error") from None
    except RecursionError:
        raise TemplateProblem(where, None, "nested too deeply") from None
    except Exception as exc:  # a number literal too long for Python, for one
        raise TemplateProblem(where, None, f"cannot be read: {exc}") from None


def _refuse(tree: nodes.Template, where: str, known: frozenset[str] | None) -> None:
    assigned: set[str] = set()
    stack: list[nodes.Node] = [tree]
    while stack:  # not recursive: a chain of filters is as deep as it is long
        node = stack.pop()
        if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
            assigned.add(node.target.name)
        stack.extend(node.iter_child_nodes())
    found = list(_problems(tree, known, assigned))
    if found:
        line, reason = min(found, key=lambda problem: problem[0])
        raise TemplateProblem(where, line, reason)


# Text, then the field whose value follows it (None at the end) and the default for a missing or empty one.
Part = tuple[str, str | None, object]
_MISSING = object()


def _merge_tag(node: nodes.Node) -> tuple[str, object] | None:
    """(field, default) of `{{ field }}` or `{{ field | default("constant") }}` (`d` too), else None."""
    if isinstance(node, nodes.Name):
        return node.name, _MISSING
    if (isinstance(node, nodes.Filter) and node.name in ("default", "d") and isinstance(node.node, nodes.Name)
            and len(node.args) == 1 and isinstance(node.args[0], nodes.Const) and not node.kwargs
            and isinstance(node.args[0].value, str | int | float)):
        return node.node.name, node.args[0].value
    return None


def _simple_parts(tree: nodes.Template) -> list[Part] | None:
    """A template of text and merge tags only (most are: `{{ field }}`, `{{ field | default("x") }}`) as
    parts, else None. These are rendered without Jinja2's runtime, a dictionary look-up per merge tag, to
    the same result."""
    parts: list[Part] = []
    text: list[str] = []
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            return None
        for child in statement.nodes:
            if isinstance(child, nodes.TemplateData):
                text.append(child.data)
            elif (tag := _merge_tag(child)) is not None:
                parts.append(("".join(text), *tag))
                text = []
            else:
                return None
    parts.append(("".join(text), None, _MISSING))
    return parts


class Template:
    """A compiled template; `render` makes one recipient's text (or HTML) within the limits."""

    def __init__(self, compiled: Any, parts: list[Part] | None, *, html: bool, max_output_chars: int,
                 max_seconds: float) -> None:
        self._compiled = compiled  # Jinja2's template, unless `parts` says it all
        self._parts = parts
        self._html = html
        # The output whatever the values, when the source is plain text.
        self.static_text = parts[0][0] if parts is not None and len(parts) == 1 else None
        self.max_output_chars = max_output_chars
        self.max_seconds = max_seconds

    def render(self, values: Mapping[str, object]) -> str:
        """The template with these merge values; RenderError when it fails or exceeds a limit."""
        if self._parts is not None:
            return "".join(self._render_parts(self._parts, values))
        return self._render_compiled(values)

    def render_segments(self, values: Mapping[str, object]) -> list[str]:
        """`render`'s text in pieces whose concatenation it is: the template's own text and each merged value
        apart (one piece for a template with logic), for a caller that encodes the template's text once."""
        if self._parts is not None:
            return self._render_parts(self._parts, values)
        return [self._render_compiled(values)]

    def _render_compiled(self, values: Mapping[str, object]) -> str:
        now = time.perf_counter()
        budget = _Budget(self.max_output_chars, now + self.max_seconds, self.max_seconds, time.thread_time())
        token = _BUDGET.set(budget)
        chunks = self._compiled.generate(values)
        try:
            out: list[str] = []
            size = 0
            for chunk in chunks:
                size += len(chunk)
                if size > self.max_output_chars:
                    raise RenderError(f"the output is longer than {self.max_output_chars:,} characters")
                out.append(chunk)
                budget.check_time()
            return "".join(out)
        except RenderError:
            raise
        except Exception as exc:  # a comparison of a number with a text, a bad filter argument...
            raise RenderError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            chunks.close()
            _BUDGET.reset(token)

    def _render_parts(self, parts: list[Part], values: Mapping[str, object]) -> list[str]:
        """What Jinja2 makes of text and merge tags: str(value), escaped in HTML; "" for a missing one, or
        the default for a missing, None or empty one (`_default`)."""
        out: list[str] = []
        size = 0
        try:
            for text, field, default in parts:
                out.append(text)
                size += len(text)
                if field is not None:
                    value = values.get(field, _MISSING)
                    if default is not _MISSING and (value is _MISSING or value is None
                                                    or (isinstance(value, str) and value == "")):
                        value = default
                    if value is not _MISSING:
                        merged = markupsafe.escape(value) if self._html else str(value)
                        out.append(merged)
                        size += len(merged)
                if size > self.max_output_chars:
                    raise RenderError(f"the output is longer than {self.max_output_chars:,} characters")
        except RenderError:
            raise
        except Exception as exc:  # a value whose str() fails
            raise RenderError(f"{type(exc).__name__}: {exc}") from exc
        return out


def compile_template(source: str, *, html: bool = False, where: str = "template",
                     max_output_chars: int = MAX_OUTPUT_CHARS, max_seconds: float = MAX_SECONDS,
                     max_tokens: int = MAX_TOKENS) -> Template:
    """A template compiled for rendering, without checking its field names (delivery renders what campaigns
    checked: an unknown field renders as empty). The allowlist and the sandbox apply all the same: a
    construct that is not allowed, or bad syntax, raises TemplateProblem. `max_tokens` is for a caller that
    adds tags of its own to a checked template (delivery's tracked links)."""
    return _compile(source, html, where, None, max_output_chars, max_seconds, max_tokens)


def check(source: str, fields: Iterable[str], *, where: str, html: bool = False) -> None:
    """Refuse (TemplateProblem, with the first problem's line) a template that does not compile, uses a
    construct that is not allowed, or names a field that is neither standard nor in `fields` (names it sets
    itself with `{% set %}` are fine)."""
    _compile(source, html, where, STANDARD_FIELDS | frozenset(fields), MAX_OUTPUT_CHARS, MAX_SECONDS, MAX_TOKENS)


def _compile(source: str, html: bool, where: str, known: frozenset[str] | None, max_output_chars: int,
             max_seconds: float, max_tokens: int) -> Template:
    def template(compiled: Any, parts: list[Part] | None) -> Template:
        return Template(compiled, parts, html=html, max_output_chars=max_output_chars, max_seconds=max_seconds)

    if not any(opening in source for opening in ("{{", "{%", "{#")):
        # Plain text (most subjects and preheaders): nothing to compile. Line ends as Jinja2 would leave them.
        return template(None, [(_NEWLINES.sub("\n", source), None, _MISSING)])
    env = _ENVIRONMENTS[html]
    tree = _parse(source, where, env, max_tokens)
    _refuse(tree, where, known)
    parts = _simple_parts(tree)
    if parts is not None:
        return template(None, parts)
    try:
        compiled = env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(where, exc.lineno, exc.message or "syntax error") from None
    except (RecursionError, SyntaxError, MemoryError):  # Python's own limits on the code Jinja2 generates
        raise TemplateProblem(where, None, "nested too deeply") from None
    return template(compiled, None)


# Screening: what template code could write for any member, not only for the sample


def every_branch(source: str, values: Mapping[str, object], *, html: bool = False, where: str = "template",
                 max_output_chars: int = 2 * MAX_OUTPUT_CHARS, max_seconds: float = MAX_SECONDS) -> list[str]:
    """The template rendered with `values` with every arm of every condition written out, in order (the `if`
    body, each `elif` body, the `else` body; both `x` and `y` of `x if c else y`, both operands of `and` and
    `or`), then once more for each position of an arm: every condition taking its first arm, its second, its
    third, its last (an `if` without `else` has an empty last arm). No condition is evaluated. What one member
    gets is in one of these or spread over them, except a phrase assembled from arms of different conditions
    at different positions (and arms past the third of a long `elif` chain, written out only in the first
    rendering). Pieces no member gets together may meet here: screening them is for staff review, not a
    refusal. Filters give back their value where they would fail (an arm may hold a value of another kind), and
    conditions' own values (`{{ a == b }}`) are `False`. Nothing for a template without conditions: its
    rendering for `values` is all there is. Refused as `check` refuses (TemplateProblem); a rendering over the
    limits is a RenderError. Each rendering has a render's time limit: screening runs in the request, and a
    template's arms written out take about as long as its rendering does."""
    if not any(opening in source for opening in ("{{", "{%", "{#")):
        return []
    env = _SCREENING_ENVIRONMENTS[html]
    tree = _parse(source, where, env, MAX_TOKENS)
    _refuse(tree, where, None)
    most = _most_arms(tree)
    if not most:
        return []
    picks: list[int | None] = [None, *range(min(most, 3)), *([_LAST_ARM] if most > 3 else [])]
    out: list[str] = []
    for pick in picks:
        written = nodes.Template(_written_out(tree.body, pick), lineno=1)
        written.set_environment(env)
        try:
            compiled = env.from_string(written)
        except (TemplateSyntaxError, RecursionError, SyntaxError, MemoryError) as exc:
            raise TemplateProblem(where, None, f"cannot be read: {exc}") from None
        out.append(Template(compiled, None, html=html, max_output_chars=max_output_chars,
                            max_seconds=max_seconds).render(values))
    return out


def constant_texts(source: str, *, html: bool = False, where: str = "template") -> list[str]:
    """Every text the template's code holds, in document order: each string constant, and each expression of
    constants as it evaluates (`"ca" ~ "sino"`, `"X" | lower`, a `{% set %}` of constants), whether or not any
    member's rendering reaches it. Refused as `check` refuses (TemplateProblem)."""
    if not any(opening in source for opening in ("{{", "{%", "{#")):
        return []
    env = _SCREENING_ENVIRONMENTS[html]
    tree = _parse(source, where, env, MAX_TOKENS)
    _refuse(tree, where, None)
    eval_ctx = nodes.EvalContext(env)
    texts: list[str] = []
    stack: list[tuple[nodes.Node, bool]] = [(tree, False)]
    while stack:  # depth first, children in order; not recursive
        node, in_constant = stack.pop()
        if isinstance(node, nodes.Const):
            if isinstance(node.value, str) and node.value:
                texts.append(node.value)
        elif isinstance(node, nodes.Expr) and not isinstance(node, nodes.TemplateData) and not in_constant:
            try:  # the largest expression of constants only: its parts are the constants within it
                value = node.as_const(eval_ctx)
            except Exception:  # nodes.Impossible: a name, or a filter that fails on these constants
                value = None
            if isinstance(value, str) and value:
                texts.append(str(value))
                in_constant = True
        stack.extend((child, in_constant) for child in reversed(list(node.iter_child_nodes())))
    return texts


_LAST_ARM = -1


def _arms(node: nodes.If) -> list[list[nodes.Node]]:
    """The arms of a condition: its body, each `elif` body, its `else` body (empty when it has none)."""
    return [node.body, *(arm.body for arm in node.elif_), node.else_]


def _most_arms(tree: nodes.Template) -> int:
    """The most arms one condition of the template has (an inline condition, `and` and `or` have two)."""
    most = 0
    for node in tree.find_all((nodes.If, nodes.CondExpr, nodes.And, nodes.Or)):
        most = max(most, len(_arms(node)) if isinstance(node, nodes.If) else 2)
    return most


def _written_out(body: list[nodes.Node], pick: int | None) -> list[nodes.Node]:
    """Statements with each condition replaced by its arms: all of them in order (`pick` None), or the arm at
    position `pick` (the last where it has fewer)."""
    out: list[nodes.Node] = []
    for node in body:
        if isinstance(node, nodes.If):
            arms = _arms(node)
            for arm in arms if pick is None else [arms[pick] if pick < len(arms) else arms[-1]]:
                out.extend(_written_out(arm, pick))
        elif isinstance(node, nodes.Output):
            out.append(nodes.Output([part for child in node.nodes for part in _outputs(child, pick)],
                                    lineno=node.lineno))
        elif isinstance(node, nodes.Assign):
            out.append(nodes.Assign(node.target, _expression(node.node, pick), lineno=node.lineno))
        else:
            out.append(node)
    return out


def _alternatives(node: nodes.CondExpr | nodes.And | nodes.Or) -> tuple[nodes.Expr, nodes.Expr]:
    if isinstance(node, nodes.CondExpr):  # `x if c` without else is undefined, "", when c is false
        return node.expr1, node.expr2 if node.expr2 is not None else nodes.Const("", lineno=node.lineno)
    return node.left, node.right


def _outputs(node: nodes.Node, pick: int | None) -> list[nodes.Node]:
    if pick is None and isinstance(node, nodes.CondExpr | nodes.And | nodes.Or):
        first, second = _alternatives(node)
        return [*_outputs(first, pick), *_outputs(second, pick)]
    return [_expression(node, pick)]


def _expression(node: nodes.Node, pick: int | None) -> nodes.Node:
    """An expression with each choice in it replaced by both alternatives joined (`pick` None) or the one at
    position `pick`; a condition's own value by `False`."""
    if isinstance(node, nodes.CondExpr | nodes.And | nodes.Or):
        first, second = _alternatives(node)
        if pick is None:
            return nodes.Concat([_expression(first, pick), _expression(second, pick)], lineno=node.lineno)
        return _expression(first if pick == 0 else second, pick)
    if isinstance(node, nodes.Compare | nodes.Test | nodes.Not):
        return nodes.Const(False, lineno=node.lineno)
    fields: list[Any] = []
    for name in node.fields:
        value = getattr(node, name)
        if isinstance(value, nodes.Node):
            value = _expression(value, pick)
        elif isinstance(value, list):
            value = [_expression(item, pick) if isinstance(item, nodes.Node) else item for item in value]
        fields.append(value)
    return type(node)(*fields, lineno=node.lineno)


_SAMPLE_TEXT = {"city": "Riga", "country": "Latvia", "company": "Acme", "company_name": "Acme",
                "phone": "+371 2000 0000", "title": "Dr", "language": "en", "plan": "Gold"}
_SAMPLE_KIND: dict[str, object] = {"number": 42, "date": "2026-11-02", "boolean": True}


def sample_values(custom_fields: Mapping[str, str]) -> dict[str, object]:
    """Plausible merge values for a preview or a test send: the standard fields, and each custom field by its
    kind (`text`, `number`, `date`, `boolean`, as the subscriptions contract defines them)."""
    values: dict[str, object] = {"email": "anna.berzina@example.com", "first_name": "Anna",
                                 "last_name": "Bērziņa", "unsubscribe_url": "https://example.com/unsubscribe"}
    for name, kind in custom_fields.items():
        if kind in _SAMPLE_KIND:
            values[name] = _SAMPLE_KIND[kind]
        else:
            values[name] = _SAMPLE_TEXT.get(name, name.replace("_", " ").capitalize())
    return values
