"""Checking definitions and DAG algorithms: pure, no database."""

from __future__ import annotations

import time

from workflows import dag
from workflows.aggregation import aggregate


def check(tasks):
    problems = dag.Problems()
    specs = dag.parse_tasks(tasks, problems)
    order = dag.check_graph(specs, problems)
    return specs, order, problems.as_dict()


def test_a_valid_diamond_in_topological_order_with_what_each_task_reads():
    specs, order, problems = check(
        [
            {"key": "d", "capability": "c", "depends_on": ["b", "c"], "input": {"x": "${tasks.a.output.v}"}},
            {"key": "b", "capability": "c", "depends_on": ["a"], "condition": "tasks.a.output.ok"},
            {"key": "c", "capability": "c", "depends_on": ["a"]},
            {"key": "a", "capability": "c"},
        ]
    )
    assert problems == {}
    assert order.index("a") < order.index("b") < order.index("d") and order.index("c") < order.index("d")
    reads = {s.key: s.references for s in specs}
    assert reads == {"d": ["a"], "b": ["a"], "c": [], "a": []}  # 'a' is upstream of 'd' through b and c


def test_the_cycle_found_is_a_real_closed_path():
    _, _, problems = check(
        [
            {"key": "a", "capability": "c", "depends_on": ["c"]},
            {"key": "b", "capability": "c", "depends_on": ["a"]},
            {"key": "c", "capability": "c", "depends_on": ["b"]},
            {"key": "x", "capability": "c", "depends_on": ["a"]},  # downstream of the cycle, not on it
        ]
    )
    assert set(problems) == {"a", "b", "c"}
    path = problems["a"][0].split(": ", 1)[1].split(" -> ")
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"}


def test_defaults_and_field_checks():
    specs, _, problems = check([{"key": "a", "capability": "c", "timeout": "soon", "retries": 1.5, "surprise": 1}])
    assert specs[0].timeout == 300.0 and specs[0].priority == 5 and specs[0].aggregation == ""
    assert any("timeout must be a number" in p for p in problems["a"])
    assert any("retries must be a whole number" in p for p in problems["a"])
    assert any("unknown field(s) surprise" in p for p in problems["a"])
    specs, _, problems = check([{"key": "s", "capability": "c", "required_agents": 3}])
    assert problems == {} and specs[0].aggregation == "list"
    _, _, problems = check([{"key": "s", "capability": "c", "aggregation": "sum"}])
    assert problems == {"s": ["aggregation applies only with required_agents"]}


def test_a_10000_task_dag_is_checked_in_linear_time():
    def layered(n):
        width = 100
        tasks = []
        for i in range(n):
            deps = [f"t{i - width}", f"t{i - width - 1}"] if i > width else []
            tasks.append(
                {
                    "key": f"t{i}",
                    "capability": "c",
                    "depends_on": deps,
                    "input": {"v": f"${{tasks.{deps[0]}.output.v}}"} if deps else {},
                }
            )
        return tasks

    timings = {}
    for n in (1000, 10000):
        started = time.perf_counter()
        _, order, problems = check(layered(n))
        timings[n] = time.perf_counter() - started
        assert problems == {} and len(order) == n
    assert timings[10000] < 2.0, timings


def test_critical_path_follows_the_longest_chain():
    depends_on = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    path, length = dag.critical_path(depends_on, {"a": 1, "b": 5, "c": 2, "d": 1}, ["a", "b", "c", "d"])
    assert path == ["a", "b", "d"] and length == 7


def test_aggregations():
    outputs = [{"score": 1, "label": "x", "ok": True}, {"score": 2.0, "label": "y"}, {"score": 6, "label": "x"}]
    assert aggregate("average", outputs) == {"score": 3.0, "gathered": 3}
    assert aggregate("min", outputs)["score"] == 1 and aggregate("max", outputs)["score"] == 6
    assert aggregate("sum", outputs)["score"] == 9.0
    assert aggregate("list", outputs) == {"results": outputs}
    votes = [{"v": "x"}, {"v": "y"}, {"v": "x"}]
    assert aggregate("majority", votes) == {"value": {"v": "x"}, "votes": 2, "of": 3}
    assert aggregate("majority", [{"v": 1}, {"v": 2}]) == {"value": {"v": 1}, "votes": 1, "of": 2}  # tie: first
