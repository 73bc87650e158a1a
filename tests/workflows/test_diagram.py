"""The DAG picture: layers follow dependencies, boxes never overlap, text is escaped, big graphs stay fast."""

from __future__ import annotations

import random
import re
import time

from workflows import diagram
from workflows.diagram import DiagramTask


def T(key: str, *deps: str, status: str = "", capability: str = "echo") -> DiagramTask:
    return DiagramTask(key=key, capability=capability, depends_on=list(deps), status=status)


DIAMOND = [T("a"), T("b", "a"), T("c", "a"), T("d", "b", "c"), T("e")]


def random_dag(n: int, seed: int = 7, fan_in: int = 3) -> list[DiagramTask]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        deps = sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(0, fan_in))}) if i else []
        tasks.append(T(f"t{i}", *deps))
    return tasks


def overlaps(a: tuple[int, int], b: tuple[int, int], w: int, h: int) -> bool:
    return abs(a[0] - b[0]) < w and abs(a[1] - b[1]) < h


def test_layers_follow_the_longest_dependency_chain():
    layer_of, order = diagram.layering(DIAMOND)
    assert layer_of == {"a": 0, "e": 0, "b": 1, "c": 1, "d": 2}
    assert order.index("a") < order.index("b") < order.index("d")


def test_every_arrow_points_to_a_later_layer_and_no_boxes_overlap():
    tasks = random_dag(250)
    shape = diagram.layout(tasks)
    assert not shape.compact
    for t in tasks:
        for dep in t.depends_on:
            assert shape.layer_of[dep] < shape.layer_of[t.key]
            assert shape.position[dep][0] < shape.position[t.key][0]
    places = sorted(shape.position.values())
    assert len(set(places)) == len(tasks)
    by_column: dict[int, list[int]] = {}
    for x, y in places:
        by_column.setdefault(x, []).append(y)
    for ys in by_column.values():
        ys.sort()
        assert all(b - a >= diagram.BOX_H for a, b in zip(ys, ys[1:], strict=False))
    assert all(0 <= x <= shape.width - diagram.BOX_W and 0 <= y <= shape.height - diagram.BOX_H for x, y in places)


def test_barycentre_ordering_uncrosses_a_crossed_pair():
    # in definition order, y1 (under x2) would be drawn above y2 (under x1): the two arrows would cross
    tasks = [T("x1"), T("x2"), T("y1", "x2"), T("y2", "x1")]
    shape = diagram.layout(tasks)
    assert shape.position["x1"][1] < shape.position["x2"][1]
    assert shape.position["y2"][1] < shape.position["y1"][1]
    assert diagram.layout(tasks, sweeps=0).layers[1] == ["y2", "y1"]  # even a single sweep does it


def test_a_cycle_or_an_unknown_dependency_does_not_break_the_picture():
    tasks = [T("a", "b"), T("b", "a"), T("c", "nowhere")]
    svg = diagram.render_svg(tasks)
    assert svg.startswith("<svg") and all(f">{k}<" in svg for k in "abc")


def test_statuses_become_css_classes_with_a_legend_and_the_critical_path():
    tasks = [T("a", status="succeeded"), T("b", "a", status="running"), T("c", "a", status="skipped")]
    svg = diagram.render_svg(tasks, critical_path=["a", "b"])
    assert 'class="node st-succeeded critical"' in svg and 'class="node st-running critical"' in svg
    assert 'class="node st-skipped"' in svg
    assert 'class="edge critical"' in svg and "critical path" in svg
    for status in diagram.STATUSES:
        assert f">{status}</text>" in svg  # the legend
    definition = diagram.render_svg([T("a"), T("b", "a")])
    assert "st-none" in definition and ">succeeded<" not in definition


def test_text_from_users_is_escaped():
    svg = diagram.render_svg(
        [DiagramTask(key="<script>alert(1)</script>", capability='x"><b>', name="<img src=x onerror=alert(1)>")]
    )
    assert "<script>" not in svg and "<img" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&lt;img src=x" in svg


def test_long_keys_are_shortened_in_the_box_and_whole_in_the_tooltip():
    key = "k" * 100
    svg = diagram.render_svg([T(key)])
    assert f"<title>{key}" in svg and ("k" * (diagram.LABEL_CHARS - 1) + "…") in svg


def test_big_graphs_are_compact_then_summarised_and_stay_fast():
    big = random_dag(2000)
    started = time.perf_counter()
    svg = diagram.render_svg(big)
    assert time.perf_counter() - started < 2.0
    assert 'class="wf-dag compact"' in svg and "compact view" in svg
    assert "<path" not in re.sub(r"<defs>.*?</defs>", "", svg)  # no arrows
    assert svg.count("<title>") == 2000
    huge = [T(f"t{i}", *([f"t{i - 1}"] if i % 10 else []), status="succeeded") for i in range(12000)]
    started = time.perf_counter()
    summary = diagram.render_svg(huge)
    assert time.perf_counter() - started < 2.0
    assert "12000 tasks in 10 layers" in summary and "succeeded: 12000" in summary


def test_full_layout_of_the_largest_full_picture_is_fast():
    tasks = random_dag(diagram.FULL_LIMIT, fan_in=5)
    started = time.perf_counter()
    svg = diagram.render_svg(tasks)
    assert time.perf_counter() - started < 1.0
    assert svg.count('class="edge') == sum(len(t.depends_on) for t in tasks)


def test_no_tasks():
    assert "No tasks" in diagram.render_svg([])
