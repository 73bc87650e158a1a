"""Checking a workflow definition: pure functions over plain data, no database.

``check_tasks`` returns every problem it finds, keyed by the task it belongs
to, so the API can answer one 400 that names each task and what is wrong.
Everything here is linear in tasks + edges (+ references), so a 10,000-task
definition is checked in well under a second.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workflows.expressions import ExpressionError, Reference, parse_condition, references_in

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
AGGREGATIONS = ("average", "min", "max", "sum", "list", "majority")
# a task's fields, in the order the API shows them (and the stored rows keep them)
TASK_FIELD_ORDER = (
    "key",
    "name",
    "description",
    "capability",
    "input",
    "depends_on",
    "timeout",
    "retries",
    "priority",
    "condition",
    "required_agents",
    "aggregation",
)
TASK_FIELDS = frozenset(TASK_FIELD_ORDER)


@dataclass
class TaskSpec:
    """One task as the engine uses it, after checking."""

    key: str
    capability: str
    name: str = ""
    description: str = ""
    input: Any = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    timeout: float = 300.0
    retries: int = 0
    priority: int = 5
    condition: str = ""
    required_agents: int | None = None
    aggregation: str = ""
    # what the checks found out, for the engine
    references: list[str] = field(default_factory=list)  # keys of the tasks its input and condition read


class Problems:
    """Problems found, per task key (or ``tasks`` for the list as a whole)."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[str]] = defaultdict(list)

    def add(self, task: str, message: str) -> None:
        if message not in self.by_task[task]:
            self.by_task[task].append(message)

    def __bool__(self) -> bool:
        return bool(self.by_task)

    def as_dict(self) -> dict[str, list[str]]:
        return dict(self.by_task)


def _label(raw: Any, index: int) -> str:
    key = raw.get("key") if isinstance(raw, dict) else None
    return key if isinstance(key, str) and key else f"#{index + 1}"


def _number(
    raw: dict, name: str, default: Any, *, kind: type, low: float, high: float | None, label: str, problems: Problems
):
    value = raw.get(name, default)
    if value is None and default is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not float(value).is_integer())
    ):
        problems.add(label, f"{name} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
        return default
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        problems.add(label, f"{name} must be {bounds}, got {value!r}")
        return default
    return kind(value)


def parse_tasks(raw_tasks: Any, problems: Problems) -> list[TaskSpec]:
    """Field-level checks of each task; structure (edges, cycles) is ``check_graph``'s."""
    if not isinstance(raw_tasks, list) or not raw_tasks:
        problems.add("tasks", "a workflow needs a non-empty list of tasks")
        return []
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_tasks):
        label = _label(raw, index)
        if not isinstance(raw, dict):
            problems.add(label, "a task must be an object")
            continue
        unknown = sorted(set(raw) - TASK_FIELDS)
        if unknown:
            problems.add(label, f"unknown field(s) {', '.join(unknown)}; a task has {', '.join(sorted(TASK_FIELDS))}")
        key = raw.get("key")
        if not isinstance(key, str) or not KEY_RE.match(key):
            problems.add(label, f"key {key!r} must be 1-100 letters, digits, '_' or '-'")
            continue
        if key in seen:
            problems.add(key, f"duplicate key '{key}': each task needs its own key")
            continue
        seen.add(key)
        capability = raw.get("capability")
        if not isinstance(capability, str) or not capability:
            problems.add(key, "capability is required (the name of a registered capability)")
            capability = ""
        depends_on = raw.get("depends_on", [])
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            problems.add(key, "depends_on must be a list of task keys")
            depends_on = []
        elif len(set(depends_on)) != len(depends_on):
            problems.add(key, "depends_on lists a task twice")
            depends_on = list(dict.fromkeys(depends_on))
        condition = _optional_text(raw, "condition", key, problems)
        aggregation = raw.get("aggregation", "")
        if not isinstance(aggregation, str):  # null or an object is no aggregation, not the default one
            problems.add(key, f"aggregation must be one of {', '.join(AGGREGATIONS)} (a string)")
            aggregation = ""
        spec = TaskSpec(
            key=key,
            capability=capability,
            name=_optional_text(raw, "name", key, problems),
            description=_optional_text(raw, "description", key, problems),
            input=raw.get("input", {}),
            depends_on=depends_on,
            timeout=_number(raw, "timeout", 300.0, kind=float, low=0.1, high=86400, label=key, problems=problems),
            retries=_number(raw, "retries", 0, kind=int, low=0, high=100, label=key, problems=problems),
            priority=_number(raw, "priority", 5, kind=int, low=0, high=9, label=key, problems=problems),
            condition=condition,
            required_agents=_number(
                raw, "required_agents", None, kind=int, low=1, high=1000, label=key, problems=problems
            ),
            aggregation=aggregation,
        )
        if spec.input is None:
            spec.input = {}
        if aggregation and aggregation not in AGGREGATIONS:
            problems.add(key, f"aggregation '{aggregation}' is not one of {', '.join(AGGREGATIONS)}")
        if spec.required_agents and not spec.aggregation:
            spec.aggregation = "list"
        if spec.aggregation and not spec.required_agents:
            problems.add(key, "aggregation applies only with required_agents")
        specs.append(spec)
    return specs


def find_cycle(nodes: Iterable[str], edges: Mapping[str, list[str]]) -> list[str]:
    """One cycle among ``nodes`` (following ``edges``: node -> its dependencies), as a closed path."""
    state: dict[str, int] = {}
    for start in nodes:
        if state.get(start):
            continue
        stack = [(start, iter(edges.get(start, ())))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if state.get(child) == 1:
                    return path[path.index(child) :] + [child]
                if not state.get(child) and child in edges:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(edges.get(child, ()))))
                    break
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return []


def topological_order(specs: list[TaskSpec]) -> tuple[list[str], list[str]]:
    """(order, leftover): Kahn's algorithm; ``leftover`` is non-empty when there is a cycle."""
    waiting = {s.key: len(s.depends_on) for s in specs}
    dependents: dict[str, list[str]] = defaultdict(list)
    for spec in specs:
        for dep in spec.depends_on:
            dependents[dep].append(spec.key)
    ready = deque(key for key, count in waiting.items() if count == 0)
    order = []
    while ready:
        key = ready.popleft()
        order.append(key)
        for child in dependents[key]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    placed = set(order)
    return order, [s.key for s in specs if s.key not in placed]


class Ancestry:
    """Answers "is U upstream of T?" with a memoised walk up the dependencies."""

    def __init__(self, depends_on: Mapping[str, list[str]]):
        self.depends_on = depends_on
        self.memo: dict[str, set[str]] = {}

    def upstream(self, task: str, candidate: str) -> bool:
        if candidate in self.depends_on.get(task, ()):
            return True
        return candidate in self.ancestors(task)

    def ancestors(self, task: str) -> set[str]:
        if task in self.memo:
            return self.memo[task]
        found: set[str] = set()
        todo = list(self.depends_on.get(task, ()))
        while todo:
            node = todo.pop()
            if node in found:
                continue
            found.add(node)
            if node in self.memo:
                found |= self.memo[node]
            else:
                todo.extend(self.depends_on.get(node, ()))
        self.memo[task] = found
        return found


def check_graph(specs: list[TaskSpec], problems: Problems) -> list[str]:
    """Edges, cycles, conditions and references. Returns the keys in a topological order."""
    keys = {s.key for s in specs}
    edges = {s.key: s.depends_on for s in specs}
    for spec in specs:
        for dep in spec.depends_on:
            if dep == spec.key:
                problems.add(spec.key, "depends on itself")
            elif dep not in keys:
                problems.add(spec.key, f"depends_on '{dep}', which is not a task of this workflow")
    order, leftover = topological_order(specs)
    if leftover:
        cycle = find_cycle(leftover, {k: [d for d in edges[k] if d in keys] for k in leftover})
        if cycle:
            text = " -> ".join(cycle)
            for key in dict.fromkeys(cycle):
                problems.add(key, f"is on a dependency cycle: {text}")
    ancestry = Ancestry(edges)
    for spec in specs:
        refs: list[Reference] = []
        if spec.condition:
            try:
                refs.extend(parse_condition(spec.condition).references)
            except ExpressionError as exc:
                problems.add(spec.key, f"condition: {exc}")
        try:
            refs.extend(p.reference for p in references_in(spec.input))
        except ExpressionError as exc:
            problems.add(spec.key, str(exc))
        read = []
        for ref in refs:
            if ref.root != "tasks":
                continue
            if ref.task not in keys:
                problems.add(spec.key, f"reads {ref}, but there is no task '{ref.task}'")
            elif ref.task == spec.key or (not leftover and not ancestry.upstream(spec.key, ref.task)):
                problems.add(
                    spec.key, f"reads {ref}, but '{ref.task}' is not upstream of '{spec.key}' (add it to depends_on)"
                )
            else:
                read.append(ref.task)
        spec.references = list(dict.fromkeys(read))
    return order


def check_input(spec: TaskSpec, errors_for: Callable[[Any], Iterable[Any]], problems: Problems) -> None:
    """Check ``spec.input`` against its capability's schema; a ``${...}`` stands for any value.

    ``errors_for(instance)`` yields jsonschema ``ValidationError`` objects. An
    error at or under a place that a whole-string reference fills is not
    counted: its value is only known when the task runs (and is checked then).
    """
    try:
        holes = [p.path for p in references_in(spec.input) if p.whole]
    except ExpressionError:
        return  # already reported by check_graph
    for error in errors_for(spec.input):
        where = tuple(error.absolute_path)
        if any(where[: len(hole)] == hole for hole in holes):
            continue
        place = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where)
        problems.add(spec.key, f"{place}: {error.message} (capability '{spec.capability}' input schema)")


def critical_path(
    depends_on: Mapping[str, list[str]], duration: Mapping[str, float], order: Iterable[str]
) -> tuple[list[str], float]:
    """The longest chain of durations through the DAG (keys in ``order`` are topologically sorted)."""
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for key in order:
        parents = depends_on.get(key, ())
        parent = max(parents, key=lambda p: best.get(p, 0.0), default=None)
        best[key] = duration.get(key, 0.0) + (best.get(parent, 0.0) if parent else 0.0)
        via[key] = parent
    if not best:
        return [], 0.0
    end = max(best, key=lambda k: best[k])
    path = []
    node: str | None = end
    while node is not None:
        path.append(node)
        node = via.get(node)
    return list(reversed(path)), best[end]


def _optional_text(raw: dict, field: str, key: str, problems: Problems) -> str:
    """A task's optional text: missing or null is empty; anything but a string is a problem."""
    value = raw.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(key, f"{field} must be a string")
        return ""
    return value
