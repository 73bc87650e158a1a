"""The reference and condition language: pure, no database."""

from __future__ import annotations

import pytest

from workflows.expressions import (
    ExpressionError,
    Scope,
    parse_condition,
    parse_reference,
    references_in,
    resolve,
)

SCOPE = Scope(
    {"region": "eu", "n": 5, "batch": {"ids": [7, 8, 9]}, "odd key": True},
    {
        "ingest": {"status": "succeeded", "output": {"count": 120, "ok": True, "tags": ["a", "b"]}},
        "maybe": {"status": "skipped", "output": None},
    },
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("context.region", "eu"),
        ("context.batch.ids[0]", 7),
        ("context.batch.ids[-1]", 9),
        ('context["odd key"]', True),
        ("tasks.ingest.output.count", 120),
        ("tasks.ingest.output", {"count": 120, "ok": True, "tags": ["a", "b"]}),
        ("tasks.ingest.status", "succeeded"),
        ("tasks.maybe.output.count", None),  # a skipped task's output reads as null
        ("context.missing.deeper", None),
        ("context.batch.ids[10]", None),
    ],
)
def test_references_read_the_context_and_upstream_tasks(text, value):
    assert SCOPE.read(parse_reference(text)) == value


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("region", "starts with 'region'"),
        ("tasks.ingest", "tasks.<task key>.output"),
        ("tasks.ingest.result", "tasks.<task key>.output"),
        ("tasks.ingest.status.x", "a task's status has no fields"),
        ("context.batch[context.n]", "an index must be a quoted key or a whole number"),
        ("context.f()", "is not a reference"),
        ("", "is empty"),
        ("context.", "does not parse"),
    ],
)
def test_bad_references_say_why(text, words):
    with pytest.raises(ExpressionError, match=words):
        parse_reference(text)


def test_resolve_keeps_json_types_for_whole_references_and_formats_embedded_ones():
    template = {
        "count": "${tasks.ingest.output.count}",
        "label": "region=${context.region}, n=${context.n}, ok=${tasks.ingest.output.ok}",
        "list": ["${context.batch.ids}", "plain", 3],
        "skipped": "${tasks.maybe.output.count}",
        "spaces": "${ context.region }",
    }
    assert resolve(template, SCOPE) == {
        "count": 120,
        "label": "region=eu, n=5, ok=true",
        "list": [[7, 8, 9], "plain", 3],
        "skipped": None,
        "spaces": "eu",
    }


def test_references_in_reports_where_each_one_sits():
    found = list(references_in({"a": ["x", "${context.n}"], "b": "n=${tasks.ingest.output.count}"}))
    assert [(p.path, str(p.reference), p.whole) for p in found] == [
        (("a", 1), "context.n", True),
        (("b",), "tasks.ingest.output.count", False),
    ]
    with pytest.raises(ExpressionError, match=r"at input\.a\[0\]"):
        list(references_in({"a": ["${nope.x}"]}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks.ingest.output.count > 100", True),
        ("tasks.ingest.output.count > 100 and context.region == 'us'", False),
        ("tasks.ingest.output.count > 100 and not context.region == 'us'", True),
        ("context.region in ['eu', 'us'] or false", True),
        ('"b" in tasks.ingest.output.tags', True),
        ("'z' not in tasks.ingest.output.tags", True),
        ("1 < context.n < 10", True),
        ("1 < context.n < 3", False),
        ("tasks.maybe.status == 'skipped'", True),
        ("tasks.maybe.output.count > 3", False),  # null > 3 cannot be ordered: false, not an error
        ("tasks.maybe.output.count == null", True),
        ("context.n >= -5 and context.n != None", True),
        ("(context.n == 5 or context.n == 6) and tasks.ingest.output.ok", True),
        ("context.missing in context.also_missing", False),
        ("[context.n, 1] == [5, 1]", True),
    ],
)
def test_conditions_evaluate(text, expected):
    assert parse_condition(text).evaluate(SCOPE) is expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("__import__('os').system('true')", "a function call is not allowed"),
        ("context.n + 1 > 2", "arithmetic is not allowed"),
        ("context.n if true else 1", "an if-expression is not allowed"),
        ("lambda: 1", "a lambda is not allowed"),
        ("{'a': 1}", "a dict literal is not allowed"),
        ("context.n is None", "the operator 'Is' is not allowed"),
        ("-context.n > 1", "only numbers can carry a sign"),
        ("context.n ==", "does not parse"),
        ("x" * 3000, "longer than"),
        ("().__class__", "is not a reference"),
        ("os.environ", "starts with 'os'"),
    ],
)
def test_conditions_refuse_anything_else_and_say_what(text, words):
    with pytest.raises(ExpressionError, match=words):
        parse_condition(text)


def test_a_condition_lists_what_it_reads():
    condition = parse_condition("tasks.a.output.x > 1 and context.y")
    assert [str(r) for r in condition.references] == ["tasks.a.output.x", "context.y"]
