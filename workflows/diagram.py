"""A picture of a workflow's DAG: layout and an inline SVG, in pure Python (no JavaScript, no CDN).

Layout is the layered (Sugiyama-style) kind, kept simple and about linear:

- a task's layer is the length of the longest dependency chain above it
  (computed in topological order), so every arrow points right;
- within a layer, tasks are ordered by a few barycentre sweeps (each task
  moves towards the mean position of its neighbours in the other layers),
  which removes most crossings at O((tasks + edges) log tasks) per sweep.

Up to ``FULL_LIMIT`` tasks the picture has a box per task (key, capability)
and an arrow per dependency; up to ``DRAW_LIMIT`` it is compact (a small
square per task, its key as a tooltip, no arrows); beyond that only a summary
is drawn. Colours come from CSS classes (``st-<status>``) styled by
``workflows/static/workflows/admin.css``. Every text comes from users and is
escaped.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.utils.html import escape

FULL_LIMIT = 300
DRAW_LIMIT = 5000

BOX_W, BOX_H = 170, 42
GAP_X, GAP_Y = 56, 14
CELL, CELL_GAP, CELL_ROWS = 10, 3, 60  # compact squares; a layer wraps after CELL_ROWS of them
MARGIN = 12
LEGEND_H = 30
LABEL_CHARS = 22

# the task statuses, in the order the legend shows them
STATUSES = ("pending", "ready", "running", "succeeded", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class DiagramTask:
    """What the picture needs of one task (of a definition, or a task run of an execution)."""

    key: str
    capability: str = ""
    depends_on: Sequence[str] = ()
    status: str = ""  # empty for a definition
    name: str = ""


@dataclass
class Layout:
    layers: list[list[str]]
    layer_of: dict[str, int]
    # top-left corner of each task's box (full) or square (compact), legend row excluded
    position: dict[str, tuple[int, int]] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    compact: bool = False


def layering(tasks: Sequence[DiagramTask]) -> tuple[dict[str, int], list[str]]:
    """(layer of each key, keys in topological order). Unknown dependencies are ignored; tasks on a
    cycle (never in a checked definition) go to a last layer rather than failing the page."""
    keys = {t.key for t in tasks}
    deps = {t.key: [d for d in dict.fromkeys(t.depends_on) if d in keys and d != t.key] for t in tasks}
    waiting = {k: len(v) for k, v in deps.items()}
    children: dict[str, list[str]] = defaultdict(list)
    for key, parents in deps.items():
        for parent in parents:
            children[parent].append(key)
    ready = deque(t.key for t in tasks if waiting[t.key] == 0)
    order: list[str] = []
    layer: dict[str, int] = {}
    while ready:
        key = ready.popleft()
        order.append(key)
        layer[key] = max((layer[p] + 1 for p in deps[key]), default=0)
        for child in children[key]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(deps):
        last = max(layer.values(), default=-1) + 1
        for t in tasks:
            if t.key not in layer:
                layer[t.key] = last
                order.append(t.key)
    return layer, order


def _sweep(layers: list[list[str]], neighbours: dict[str, list[str]], indices: Iterable[int]) -> None:
    """Reorder each layer in ``indices`` by the barycentre of its tasks' ``neighbours``' places."""
    place: dict[str, float] = {}
    widest = max(len(layer) for layer in layers)
    for layer in layers:
        offset = (widest - len(layer)) / 2  # layers are drawn centred
        for i, key in enumerate(layer):
            place[key] = offset + i
    for index in indices:
        layer = layers[index]
        offset = (widest - len(layer)) / 2
        scored = []
        for i, key in enumerate(layer):
            around = neighbours.get(key)
            score = sum(place[n] for n in around) / len(around) if around else place[key]
            scored.append((score, i, key))
        scored.sort()
        layer[:] = [key for _, _, key in scored]
        for i, key in enumerate(layer):
            place[key] = offset + i


def layout(tasks: Sequence[DiagramTask], *, full_limit: int = FULL_LIMIT, sweeps: int = 4) -> Layout:
    """Layers and box positions; compact (squares, no ordering sweeps) above ``full_limit`` tasks."""
    layer_of, order = layering(tasks)
    position_in_definition = {t.key: i for i, t in enumerate(tasks)}
    count = max(layer_of.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(count)]
    for key in sorted(order, key=position_in_definition.__getitem__):
        layers[layer_of[key]].append(key)
    result = Layout(layers=layers, layer_of=layer_of, compact=len(tasks) > full_limit)
    if not tasks:
        return result
    if result.compact:
        x = MARGIN
        for layer in layers:
            columns = (len(layer) + CELL_ROWS - 1) // CELL_ROWS
            for i, key in enumerate(layer):
                column, row = divmod(i, CELL_ROWS)
                result.position[key] = (x + column * (CELL + CELL_GAP), MARGIN + row * (CELL + CELL_GAP))
            x += columns * (CELL + CELL_GAP) + 3 * CELL_GAP
        result.width = x - 3 * CELL_GAP + MARGIN
        tallest = min(CELL_ROWS, max(len(layer) for layer in layers))
        result.height = 2 * MARGIN + tallest * (CELL + CELL_GAP) - CELL_GAP
        return result
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        parents[t.key] = [d for d in t.depends_on if d in layer_of and d != t.key]
        for d in parents[t.key]:
            children[d].append(t.key)
    for _ in range(max(1, sweeps // 2)):
        _sweep(layers, parents, range(1, count))  # left to right: follow the dependencies
        _sweep(layers, children, range(count - 2, -1, -1))  # right to left: follow the dependents
    _sweep(layers, parents, range(1, count))
    widest = max(len(layer) for layer in layers)
    for index, layer in enumerate(layers):
        top = (widest - len(layer)) * (BOX_H + GAP_Y) / 2
        for i, key in enumerate(layer):
            result.position[key] = (MARGIN + index * (BOX_W + GAP_X), int(MARGIN + top + i * (BOX_H + GAP_Y)))
    result.width = 2 * MARGIN + count * BOX_W + (count - 1) * GAP_X
    result.height = 2 * MARGIN + widest * BOX_H + (widest - 1) * GAP_Y
    return result


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tooltip(task: DiagramTask) -> str:
    lines = [task.key]
    if task.name:
        lines.append(task.name)
    if task.capability:
        lines.append(f"capability: {task.capability}")
    if task.depends_on:
        lines.append(f"depends on: {', '.join(task.depends_on)}")
    if task.status:
        lines.append(f"status: {task.status}")
    return escape("\n".join(lines))


def _legend(with_status: bool, with_critical: bool, note: str) -> tuple[list[str], int]:
    """SVG elements of the legend row, and its width."""
    parts: list[str] = []
    x = MARGIN
    if with_status:
        for status in STATUSES:
            parts.append(
                f'<g class="node st-{status}"><rect x="{x}" y="9" width="14" height="12" rx="2"/></g>'
                f'<text class="legend" x="{x + 18}" y="19">{status}</text>'
            )
            x += 26 + 7 * len(status)
    if with_critical:
        parts.append(
            f'<g class="node critical"><rect class="plain" x="{x}" y="9" width="14" height="12" rx="2"/></g>'
            f'<text class="legend" x="{x + 18}" y="19">critical path</text>'
        )
        x += 26 + 7 * len("critical path")
    if note:
        parts.append(f'<text class="legend note" x="{x}" y="19">{escape(note)}</text>')
        x += 7 * len(note)
    return parts, x + MARGIN


def render_svg(
    tasks: Sequence[DiagramTask],
    *,
    critical_path: Iterable[str] = (),
    full_limit: int = FULL_LIMIT,
    draw_limit: int = DRAW_LIMIT,
) -> str:
    """The DAG as an inline ``<svg>`` string: boxes coloured by status (when tasks have one),
    arrows from each dependency to its dependent, and a legend."""
    with_status = any(t.status for t in tasks)
    critical = set(critical_path)
    if not tasks:
        return '<p class="wf-dag-empty">No tasks.</p>'
    if len(tasks) > draw_limit:
        return _summary_svg(tasks, with_status)
    shape = layout(tasks, full_limit=full_limit)
    note = (
        f"{len(tasks)} tasks in {len(shape.layers)} layers: compact view, no arrows (hover a square for its task)"
        if shape.compact
        else ""
    )
    legend, legend_width = _legend(with_status, bool(critical) and not shape.compact, note)
    body: list[str] = []
    by_key = {t.key: t for t in tasks}
    if shape.compact:
        for t in tasks:
            x, y = shape.position[t.key]
            body.append(
                f'<g class="node st-{escape(t.status or "none")}"><title>{_tooltip(t)}</title>'
                f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" rx="1"/></g>'
            )
    else:
        for t in tasks:
            x2, y2 = shape.position[t.key]
            for dep in t.depends_on:
                if dep not in shape.position or dep == t.key:
                    continue
                x1, y1 = shape.position[dep]
                x1, y1, y2m = x1 + BOX_W, y1 + BOX_H // 2, y2 + BOX_H // 2
                bend = max(GAP_X // 2, (x2 - x1) // 3)
                hot = " critical" if dep in critical and t.key in critical else ""
                body.append(
                    f'<path class="edge{hot}" d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2m} {x2 - 2},{y2m}" '
                    'marker-end="url(#wf-arrow)"/>'
                )
        for key, (x, y) in shape.position.items():
            t = by_key[key]
            hot = " critical" if key in critical else ""
            body.append(
                f'<g class="node st-{escape(t.status or "none")}{hot}"><title>{_tooltip(t)}</title>'
                f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5"/>'
                f'<text class="key" x="{x + 8}" y="{y + 17}">{escape(_short(t.key))}</text>'
                f'<text class="capability" x="{x + 8}" y="{y + 33}">{escape(_short(t.capability, LABEL_CHARS + 4))}</text>'
                "</g>"
            )
    width = max(shape.width, legend_width)
    height = shape.height + LEGEND_H
    return (
        f'<svg class="wf-dag{" compact" if shape.compact else ""}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="workflow graph of {len(tasks)} tasks">'
        "<defs>"
        '<marker id="wf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker>'
        '<pattern id="wf-stripes" patternUnits="userSpaceOnUse" width="8" height="8" '
        'patternTransform="rotate(45)"><rect width="8" height="8" class="stripe-bg"/>'
        '<rect width="3" height="8" class="stripe"/></pattern>'
        "</defs>"
        f'<g class="legend-row">{"".join(legend)}</g>'
        f'<g transform="translate(0,{LEGEND_H})">{"".join(body)}</g>'
        "</svg>"
    )


def _summary_svg(tasks: Sequence[DiagramTask], with_status: bool) -> str:
    """Too many tasks to draw one by one: a bar per status, and the shape of the graph in words."""
    layer_of, _ = layering(tasks)
    layers = max(layer_of.values(), default=-1) + 1
    sizes: dict[int, int] = defaultdict(int)
    for value in layer_of.values():
        sizes[value] += 1
    widest = max(sizes.values(), default=0)
    lines = [f"{len(tasks)} tasks in {layers} layers (widest: {widest}): too many to draw one by one."]
    bars: list[str] = []
    width = 640
    if with_status:
        counts: dict[str, int] = defaultdict(int)
        for t in tasks:
            counts[t.status] += 1
        x = float(MARGIN)
        for status in STATUSES:
            if counts[status]:
                w = (width - 2 * MARGIN) * counts[status] / len(tasks)
                bars.append(
                    f'<g class="node st-{status}"><title>{status}: {counts[status]}</title>'
                    f'<rect x="{x:.1f}" y="34" width="{w:.1f}" height="16"/></g>'
                )
                x += w
        lines.append(", ".join(f"{s}: {counts[s]}" for s in STATUSES if counts[s]))
    text = "".join(
        f'<text class="legend" x="{MARGIN}" y="{18 + (60 if with_status and i else 0) + 16 * i}">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    height = 110 if with_status else 40
    return (
        f'<svg class="wf-dag summary" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="summary of a workflow of {len(tasks)} tasks">'
        '<defs><pattern id="wf-stripes" patternUnits="userSpaceOnUse" width="8" height="8" '
        'patternTransform="rotate(45)"><rect width="8" height="8" class="stripe-bg"/>'
        '<rect width="3" height="8" class="stripe"/></pattern></defs>'
        f"{text}{''.join(bars)}</svg>"
    )
