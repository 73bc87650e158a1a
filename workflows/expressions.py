"""References and conditions: the two small languages of a workflow definition.

Both are parsed into our own small trees and evaluated by walking them; no
``eval`` or ``exec`` ever runs. Python's ``ast`` module is used as the
tokenizer and parser only: any node outside the few listed here is refused
with a message that names it.

A **reference** reads a value from the execution's context or from an
upstream task::

    context.region                    a key of the context
    context.batch.ids[0]              nested keys and list indexes
    context["key with spaces"]        any key, quoted
    tasks.ingest.output.record_count  a field of the output of task "ingest"
    tasks.ingest.output               the whole output
    tasks.ingest.status               "succeeded", "skipped", ...

In a task's input a reference is written ``"${...}"``. A string that is
exactly one reference takes the referenced value with its JSON type; a
reference inside a longer string is formatted into it. A path that does not
exist (a missing key, the output of a skipped task) reads as ``null``.

A **condition** is an expression over references and literals::

    tasks.ingest.output.record_count > 100 and context.mode != "dry-run"
    context.region in ["eu", "us"] or not tasks.check.output.valid

Operators: ``== != < <= > >= in``, ``not in``, ``and``, ``or``, ``not``, and
parentheses. Literals: numbers, strings, ``true``/``false``/``null`` (the
Python spellings too), and lists. A comparison between values that cannot
be ordered (a number and null) is false.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION_LENGTH = 2000
REFERENCE_RE = re.compile(r"\$\{([^{}]*)\}")
ROOTS = ("context", "tasks")
TASK_FIELDS = ("output", "status")


class ExpressionError(ValueError):
    """A reference or condition that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Reference:
    """``context`` + keys, or ``tasks`` + task key + ``output``/``status`` + keys."""

    root: str
    task: str | None
    field: str | None
    keys: tuple[str | int, ...]

    def __str__(self) -> str:
        head = "context" if self.root == "context" else f"tasks.{self.task}.{self.field}"
        return head + "".join(
            f"[{k!r}]" if not isinstance(k, str) or not k.isidentifier() else f".{k}" for k in self.keys
        )


class Scope:
    """What references read: the context and the tasks' statuses and outputs."""

    def __init__(self, context: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]):
        self.context = context
        self.tasks = tasks

    def read(self, ref: Reference) -> Any:
        if ref.root == "context":
            value: Any = self.context
        else:
            task = self.tasks.get(ref.task or "")
            value = None if task is None else task.get(ref.field or "")
        for key in ref.keys:
            if isinstance(value, Mapping) and isinstance(key, str):
                value = value.get(key)
            elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
                value = value[key]
            else:
                return None
        return value


def _parse(text: str, what: str) -> ast.expr:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"the {what} is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"the {what} is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"the {what} '{text}' does not parse: {exc.msg} at column {exc.offset}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"the {what} '{text}' does not parse") from None


def _path(node: ast.expr, text: str) -> Reference:
    keys: list[str | int] = []
    while True:
        if isinstance(node, ast.Attribute):
            keys.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            index = node.slice
            negative = isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub)
            if negative and isinstance(index.operand, ast.Constant) and type(index.operand.value) is int:
                keys.append(-index.operand.value)
            elif isinstance(index, ast.Constant) and type(index.value) in (str, int):
                keys.append(index.value)
            else:
                raise ExpressionError(f"in '{text}': an index must be a quoted key or a whole number")
            node = node.value
        elif isinstance(node, ast.Name):
            keys.append(node.id)
            break
        else:
            raise ExpressionError(f"'{text}' is not a reference (context.<key>... or tasks.<task>.output...)")
    keys.reverse()
    root = keys[0]
    if root == "context":
        return Reference("context", None, None, tuple(keys[1:]))
    if root == "tasks":
        if len(keys) < 3 or not isinstance(keys[1], str) or keys[2] not in TASK_FIELDS:
            raise ExpressionError(f"'{text}': write tasks.<task key>.output[...] or tasks.<task key>.status")
        if keys[2] == "status" and len(keys) > 3:
            raise ExpressionError(f"'{text}': a task's status has no fields")
        return Reference("tasks", keys[1], keys[2], tuple(keys[3:]))
    raise ExpressionError(f"'{text}' starts with '{root}'; a reference starts with 'context' or 'tasks'")


def parse_reference(text: str) -> Reference:
    """``"tasks.ingest.output.count"`` -> Reference; ExpressionError if it is not one."""
    return _path(_parse(text, "reference"), text.strip())


# -- references inside a task's input -------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where a reference sits in an input: its JSON path, and whether it is the whole string."""

    path: tuple[str | int, ...]
    reference: Reference
    whole: bool


def references_in(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[Placement]:
    """Every ``${...}`` in ``value`` (any JSON), in document order. Raises ExpressionError on a bad one."""
    if isinstance(value, str):
        matches = list(REFERENCE_RE.finditer(value))
        whole = len(matches) == 1 and matches[0].span() == (0, len(value))
        for match in matches:
            try:
                yield Placement(path, parse_reference(match.group(1)), whole)
            except ExpressionError as exc:
                raise ExpressionError(f"at {_json_path(path)}: {exc}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from references_in(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from references_in(item, (*path, index))


def resolve(value: Any, scope: Scope) -> Any:
    """``value`` with every ``${...}`` replaced by what it reads in ``scope``."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        matches = list(REFERENCE_RE.finditer(value))
        if len(matches) == 1 and matches[0].span() == (0, len(value)):
            return scope.read(parse_reference(matches[0].group(1)))
        return REFERENCE_RE.sub(lambda m: _as_text(scope.read(parse_reference(m.group(1)))), value)
    if isinstance(value, dict):
        return {key: resolve(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, scope) for item in value]
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, sort_keys=True)
    return str(value)


def _json_path(path: tuple[str | int, ...]) -> str:
    return "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


# -- conditions -------------------------------------------------------------------------------------

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Read:
    reference: Reference


@dataclass(frozen=True)
class Compare:
    left: Any
    ops: tuple[str, ...]
    operands: tuple[Any, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class Condition:
    """A parsed condition; ``references`` lists what it reads (for the upstream check)."""

    text: str
    tree: Any
    references: tuple[Reference, ...]

    def evaluate(self, scope: Scope) -> bool:
        return bool(_evaluate(self.tree, scope))


def parse_condition(text: str) -> Condition:
    """Parse ``text`` into a Condition, or raise ExpressionError naming what is not allowed."""
    refs: list[Reference] = []
    tree = _build(_parse(text, "condition"), text.strip(), refs)
    return Condition(text.strip(), tree, tuple(refs))


def _build(node: ast.expr, text: str, refs: list[Reference]) -> Any:
    if isinstance(node, ast.BoolOp):
        return BoolOp(
            "and" if isinstance(node.op, ast.And) else "or", tuple(_build(v, text, refs) for v in node.values)
        )
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return Not(_build(node.operand, text, refs))
        if isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand, ast.Constant):
            value = node.operand.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return Literal(-value if isinstance(node.op, ast.USub) else value)
        raise ExpressionError(f"in '{text}': only numbers can carry a sign")
    if isinstance(node, ast.Compare):
        ops = []
        for op in node.ops:
            if isinstance(op, ast.In):
                ops.append("in")
            elif isinstance(op, ast.NotIn):
                ops.append("not in")
            elif type(op) in _COMPARE:
                ops.append(type(op).__name__)
            else:
                raise ExpressionError(f"in '{text}': the operator '{type(op).__name__}' is not allowed")
        return Compare(
            _build(node.left, text, refs), tuple(ops), tuple(_build(c, text, refs) for c in node.comparators)
        )
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (bool, int, float, str)):
            return Literal(node.value)
        raise ExpressionError(f"in '{text}': {node.value!r} is not a literal of this syntax")
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_build(item, text, refs) for item in node.elts]
        if all(isinstance(item, Literal) for item in items):
            return Literal([item.value for item in items])
        return ("list", tuple(items))
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return Literal(_NAMES[node.id])
    if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
        ref = _path(node, ast.unparse(node))
        refs.append(ref)
        return Read(ref)
    what = {
        ast.Call: "a function call",
        ast.BinOp: "arithmetic",
        ast.Lambda: "a lambda",
        ast.IfExp: "an if-expression",
        ast.Dict: "a dict literal",
    }.get(type(node), f"'{type(node).__name__}'")
    raise ExpressionError(
        f"in '{text}': {what} is not allowed (use comparisons, and/or/not, in, references and literals)"
    )


def _evaluate(node: Any, scope: Scope) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Read):
        return scope.read(node.reference)
    if isinstance(node, tuple):  # ("list", items)
        return [_evaluate(item, scope) for item in node[1]]
    if isinstance(node, Not):
        return not _evaluate(node.operand, scope)
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_evaluate(v, scope) for v in node.values)
        return any(_evaluate(v, scope) for v in node.values)
    if isinstance(node, Compare):
        left = _evaluate(node.left, scope)
        for op, operand in zip(node.ops, node.operands, strict=True):
            right = _evaluate(operand, scope)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    raise ExpressionError(f"cannot evaluate {node!r}")


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "in":
            return right is not None and left in right
        if op == "not in":
            return right is not None and left not in right
        return bool(_COMPARE[getattr(ast, op)](left, right))
    except TypeError:
        return False
