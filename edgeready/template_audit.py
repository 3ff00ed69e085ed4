"""A static audit of a GGUF chat template (and of its special token ids) before anything is rendered.

llama.cpp renders a model's `tokenizer.chat_template` with Jinja2's ImmutableSandboxedEnvironment. The
sandbox stops attribute escapes at render time, not CPU or memory exhaustion: `range()` there allows 100,000
items, so two nested loops run 10^10 times, and `10 ** (10 ** 10)` is computed in C, where no signal
interrupts it (Jinja even folds constants when it compiles the template, before any render). So the
template is parsed (never compiled or rendered) and its syntax tree walked, in the spirit of ggufdoctor,
c4nary and aisbom-cli:

- attribute access to private or dunder names (`__class__`, `__globals__`, `_private`), also by subscript
  (`x['__class__']`) and through the `attr` filter: how sandbox escapes start; an error;
- `range()` with literal bounds above MAX_RANGE items (an error) or bounds computed at render time (a
  warning: the render's time limit has to catch them);
- loops nested (directly or through macro calls) whose literal range sizes multiply past MAX_LOOP_ITERATIONS;
- macros that call themselves and loop over a range (an error; other recursion warns: real tool-calling
  templates render JSON schemas recursively), and macro call trees above MAX_LOOP_ITERATIONS calls;
- `**` making integers above MAX_BITS (computed in C) and repetition by a literal above MAX_RANGE;
- templates above MAX_TEMPLATE_BYTES, and syntax errors.

A finding of severity "error" refuses the model: the conformance gate fails on it and the device adapter
will not render the template.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

Severity = Literal["info", "warning", "error"]

MAX_TEMPLATE_BYTES = 64 * 1024  # the largest of llama.cpp's 70 sample templates (models/templates) has 17 KB
MAX_RANGE = 10_000  # items of one range(), and the largest literal repeat count
MAX_LOOP_ITERATIONS = 100_000  # product of the literal range sizes of nested loops
MAX_BITS = 1 << 16  # integers computed from literals (`**`, `*`): beyond this they take C-level time and memory
_HUGE = 1 << 62  # stands for a range size too large to compute


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # syntax, template-size, private-attribute, range-bound, range-unbounded, nested-loops, ...
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" line {self.line}" if self.line else ""
        return f"{self.severity} [{self.code}]{where}: {self.message}"


def errors(findings: list[Finding]) -> list[Finding]:
    """The findings that refuse a model."""
    return [f for f in findings if f.severity == "error"]


def audit_chat_template(template: str, vocab_size: int | None = None,
                        special_tokens: Mapping[str, int] | None = None) -> list[Finding]:
    """Findings on `template` (parsed, never rendered) and, when a vocabulary size is given, on the special
    token ids (name -> id, e.g. {"eos": 2}) that fall outside it."""
    findings = audit_token_ids(special_tokens or {}, vocab_size)
    size = len(template.encode("utf-8"))
    if size > MAX_TEMPLATE_BYTES:  # not parsed: a refused template needs nothing more said about it
        return [*findings, Finding("error", "template-size",
                                   f"the template has {size:,} bytes, above the limit of {MAX_TEMPLATE_BYTES:,}")]
    try:
        ast = _ENV.parse(template)
        walks = [_attribute_findings(ast), _range_findings(ast), _operator_findings(ast), _LoopWalk(ast).findings(),
                 _recursion_findings(ast), _expansion_findings(ast)]
        return findings + [f for walk in walks for f in walk]
    except TemplateSyntaxError as exc:
        return [*findings, Finding("error", "syntax", f"not valid Jinja: {exc.message}", exc.lineno)]
    except RecursionError:  # Jinja's own parser and compiler recurse as deep: llama.cpp could not load it either
        return [*findings, Finding("error", "nesting", "the template nests too deeply to parse or audit")]


def audit_token_ids(special_tokens: Mapping[str, int], vocab_size: int | None) -> list[Finding]:
    """An error for each special token id outside 0..vocab_size - 1 (nothing to check without a vocabulary)."""
    if vocab_size is None:
        return []
    return [Finding("error", "token-id", f"{name} token id {tid} is outside the vocabulary of {vocab_size:,} "
                                         f"tokens (0..{vocab_size - 1})")
            for name, tid in special_tokens.items() if not 0 <= tid < vocab_size]


class _GenerationTag(Extension):
    """HuggingFace's `{% generation %}...{% endgeneration %}`, which llama-cpp-python accepts and ignores:
    parsed alike here so a template it renders is not called a syntax error."""

    tags = frozenset({"generation"})

    def parse(self, parser: Parser) -> list[nodes.Node]:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


# The environment llama-cpp-python renders with (sandbox, whitespace control, loop controls), used to parse only.
_ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                     extensions=[_GenerationTag, "jinja2.ext.loopcontrols"])


def _count(n: float) -> str:
    return f"{int(n):,}" if n < 10**15 else "more than 10^15"


def _private(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_")


def _attribute_findings(ast: nodes.Template) -> Iterator[Finding]:
    def found(name: str, how: str, node: nodes.Node) -> Finding:
        kind = "dunder" if name.startswith("__") and name.endswith("__") else "private"
        return Finding("error", "private-attribute", f"{how} reaches the {kind} attribute {name!r} (how sandbox "
                                                     "escapes start; no chat template needs it)", node.lineno)

    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and _private(node.attr):
            yield found(node.attr, "attribute access", node)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and _private(node.arg.value):
            yield found(node.arg.value, "a subscript", node)
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            if not isinstance(arg, nodes.Const):
                yield Finding("warning", "computed-attribute", "the attr filter with a name computed at render time",
                              node.lineno)
            elif _private(arg.value):
                yield found(arg.value, "the attr filter", node)


def _int_value(node: nodes.Node) -> int | float | None:
    """The value of an integer expression made of literals (`-5`, `10 ** 6`, `3 * 4`), math.inf when it would
    have more than MAX_BITS bits (too big to compute safely, even here), None when it is not made of literals."""
    if isinstance(node, nodes.Const):
        return node.value if isinstance(node.value, int) and not isinstance(node.value, bool) else None
    if isinstance(node, nodes.Neg):
        inner = _int_value(node.node)
        return None if inner is None else -inner
    if not isinstance(node, (nodes.Add, nodes.Sub, nodes.Mul, nodes.Pow)):
        return None
    left, right = _int_value(node.left), _int_value(node.right)
    if left is None or right is None:
        return None
    if math.isinf(left) or math.isinf(right):
        return math.inf
    if isinstance(node, nodes.Pow):
        if right < 0:
            return None  # a float
        if max(int(left).bit_length(), 1) * right > MAX_BITS:
            return math.inf
        return int(left) ** int(right)
    return _ARITHMETIC[type(node)](int(left), int(right))


_ARITHMETIC = {nodes.Add: operator.add, nodes.Sub: operator.sub, nodes.Mul: operator.mul}


def _is_range(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range"


def _range_size(call: nodes.Node) -> int | None:
    """Items of a range() call with literal arguments (None when an argument is computed at render time, or
    when `call` is not a range() call)."""
    if not isinstance(call, nodes.Call) or not _is_range(call):
        return None
    args = [_int_value(a) for a in call.args]
    if call.kwargs or call.dyn_args or call.dyn_kwargs or not 1 <= len(args) <= 3 or None in args:
        return None
    if any(math.isinf(a) for a in args):
        return _HUGE
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1)
    if step == 0:
        return 0  # a ValueError at render time, not a loop
    # Arithmetic, not len(range(...)): len overflows past sys.maxsize, and these are the literal's own numbers.
    return int(max(0, (stop - start + step - (1 if step > 0 else -1)) // step))


def _range_findings(ast: nodes.Template) -> Iterator[Finding]:
    for call in ast.find_all(nodes.Call):
        if not _is_range(call):
            continue
        size = _range_size(call)
        if size is None:
            yield Finding("warning", "range-unbounded", "range() with a bound computed at render time: only the "
                                                        "render time limit bounds it", call.lineno)
        elif size > MAX_RANGE:
            yield Finding("error", "range-bound", f"range() of {_count(size)} items, above the limit of {MAX_RANGE:,}",
                          call.lineno)


def _operator_findings(ast: nodes.Template) -> Iterator[Finding]:
    for node in ast.find_all((nodes.Pow, nodes.Mul)):
        if isinstance(node, nodes.Pow):
            value = _int_value(node)
            if value is not None and math.isinf(value):
                yield Finding("error", "power", f"`**` makes an integer of more than {MAX_BITS:,} bits: it is "
                                                "computed in C, where no time limit can stop it", node.lineno)
            elif _int_value(node.right) is None:
                yield Finding("warning", "power", "`**` with an exponent computed at render time", node.lineno)
            continue
        counts = [_int_value(node.left), _int_value(node.right)]
        if None not in counts:
            continue  # arithmetic on literals: Jinja folds it when compiling, and the `**` check bounds its size
        count = next(c for c in counts if c is not None) if counts != [None, None] else None
        if count is not None and count > MAX_RANGE:  # the other side may be a string or list from the data
            yield Finding("error", "repeat", f"multiplication by {_count(count)} (repeating a string or list that "
                                             f"many times), above the limit of {MAX_RANGE:,}", node.lineno)


def _expansion_findings(ast: nodes.Template) -> Iterator[Finding]:
    """Macros calling macros, each call site once per call: m0 calling m1 twice, m1 calling m2 twice... makes
    2^depth calls with neither a loop nor recursion. Counted per macro, memoized (recursion counts once)."""
    macros = {m.name: m for m in ast.find_all(nodes.Macro)}
    calls = {name: [c.node.name for c in m.find_all(nodes.Call)
                    if isinstance(c.node, nodes.Name) and c.node.name in macros] for name, m in macros.items()}
    memo: dict[str, int] = {}

    def expand(name: str, active: frozenset[str]) -> int:
        if name not in memo:
            below = sum(expand(c, active | {name}) for c in calls[name] if c not in active | {name})
            memo[name] = min(1 + below, 10 * MAX_LOOP_ITERATIONS)  # capped: only "above the limit" matters
        return memo[name]

    worst = max(macros, key=lambda name: expand(name, frozenset()), default=None)
    if worst is not None and memo[worst] > MAX_LOOP_ITERATIONS:
        yield Finding("error", "macro-calls", f"one call of macro {worst} makes more than {MAX_LOOP_ITERATIONS:,} "
                                              "macro calls (macros calling macros several times each)",
                      macros[worst].lineno)


class _LoopWalk:
    """Nested loops, through macro calls too: the product of the literal range sizes along each nesting chain,
    reported at the outermost loop of a chain above MAX_LOOP_ITERATIONS. Loops over data (messages, content
    parts) count 1: the caller bounds them. Each macro's depth is computed once, so a template of macros
    calling macros cannot make the audit itself exponential."""

    def __init__(self, ast: nodes.Template) -> None:
        self.ast = ast
        self.macros = {m.name: m for m in ast.find_all(nodes.Macro)}
        # `{% set xs = range(1000) %}` then `{% for x in xs %}`: names bound to a literal range, template-wide.
        self.named = {a.target.name: size for a in ast.find_all(nodes.Assign)
                      if isinstance(a.target, nodes.Name) and (size := _range_size(a.node)) is not None}
        self.memo: dict[str, int] = {}
        self.depths: dict[int, int] = {}
        self.active: set[str] = set()
        self.out: list[Finding] = []

    def findings(self) -> list[Finding]:
        self._report(self.ast, 1)
        return self.out

    def _size(self, loop: nodes.For) -> int:
        it = loop.iter
        if isinstance(it, nodes.Name):
            return self.named.get(it.name, 1)
        return _range_size(it) or 1

    def _depth(self, node: nodes.Node) -> int:
        """The largest product of literal loop sizes along a nesting chain that running `node` goes through
        (memoized: `_report` asks again at every level of a nest)."""
        key = id(node)
        if key not in self.depths:
            self.depths[key] = self._depth_of(node)
        return self.depths[key]

    def _depth_of(self, node: nodes.Node) -> int:
        if isinstance(node, nodes.Macro):
            return 1  # a definition runs nothing; its calls do
        if isinstance(node, nodes.For):
            inner = max((self._depth(c) for c in (*node.body, node.test) if c is not None), default=1)
            outer = max((self._depth(c) for c in (node.iter, *node.else_)), default=1)
            return max(self._size(node) * inner, outer)
        deepest = max((self._depth(c) for c in node.iter_child_nodes()), default=1)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name in self.macros:
            name = node.node.name
            if name not in self.memo and name not in self.active:  # a recursive call counts once
                self.active.add(name)
                self.memo[name] = max((self._depth(c) for c in self.macros[name].body), default=1)
                self.active.discard(name)
            deepest = max(deepest, self.memo.get(name, 1))
        return deepest

    def _report(self, node: nodes.Node, product: int) -> None:
        if isinstance(node, nodes.For):
            size = self._size(node)
            body = max((self._depth(c) for c in (*node.body, node.test) if c is not None), default=1)
            total = product * size * body
            if total > MAX_LOOP_ITERATIONS and total > size:  # nested: a lone range is _range_findings' case
                self.out.append(Finding("error", "nested-loops", f"nested loops run {_count(total)} times, above the "
                                                                 f"limit of {MAX_LOOP_ITERATIONS:,}", node.lineno))
                return  # one finding per chain, at its outermost loop
            for child in (*node.body, *([node.test] if node.test else [])):
                self._report(child, product * size)
            for child in (node.iter, *node.else_):
                self._report(child, product)
            return
        if isinstance(node, nodes.Macro):
            product = 1  # its own loops; the loops around its calls are counted at those loops
        for child in node.iter_child_nodes():
            self._report(child, product)


def _recursion_findings(ast: nodes.Template) -> Iterator[Finding]:
    """Macros that reach themselves through calls. With a loop over a range inside, each level multiplies the
    work: an error. Otherwise a warning: real tool-calling templates render JSON schemas by recursion over the
    data (several call sites, in alternative branches), and Python's recursion limit ends a runaway one."""
    macros = {m.name: m for m in ast.find_all(nodes.Macro)}
    named = {a.target.name for a in ast.find_all(nodes.Assign)
             if isinstance(a.target, nodes.Name) and _is_range(a.node)}
    calls = {name: [c.node.name for c in m.find_all(nodes.Call)
                    if isinstance(c.node, nodes.Name) and c.node.name in macros] for name, m in macros.items()}
    for name, macro in macros.items():
        cycle = _cycle_through(name, calls)
        if not cycle:
            continue
        loops = any(_is_range(f.iter) or (isinstance(f.iter, nodes.Name) and f.iter.name in named)
                    for f in macro.find_all(nodes.For))
        path = " -> ".join([*cycle, name])
        if loops:
            yield Finding("error", "recursion", f"macro {name} calls itself ({path}) and loops over a range",
                          macro.lineno)
        else:
            yield Finding("warning", "recursion", f"macro {name} calls itself ({path})", macro.lineno)


def _cycle_through(start: str, calls: Mapping[str, list[str]]) -> list[str]:
    """The macros on a call path from `start` back to itself (start first), or [] when there is none."""
    todo: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while todo:
        name, path = todo.pop()
        for callee in calls.get(name, []):
            if callee == start:
                return path
            if callee not in seen:
                seen.add(callee)
                todo.append((callee, [*path, callee]))
    return []
