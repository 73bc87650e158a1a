"""The fast paths of an invocation (one-statement claim, lean record, cached validators, derived
counters) keep every guarantee of the slow ones. Real database, no workers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from agents import selectors, services
from agents.models import Invocation, InvocationAttempt
from agents.services import invocations as inv
from masplatform.exceptions import InvalidInput, Unavailable
from tests.factories import AgentFactory, CapabilityFactory

pytestmark = pytest.mark.django_db
OUT = {"type": "object", "properties": {"sum": {"type": "number"}}, "required": ["sum"]}


@pytest.fixture
def calc():
    return CapabilityFactory(name="calculation", input_schema={"type": "object"}, output_schema=OUT)


def invoke(**kwargs) -> Invocation:
    return services.invoke(capability="calculation", input={"a": 1}, requested_by="user:x", **kwargs)[0]


def test_the_fast_claim_is_supported_on_both_stacks():
    assert inv._fast_claim_supported()


def test_the_claim_returns_the_row_as_stored_and_opens_one_attempt(calc, django_assert_num_queries):
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    queued = invoke(timeout=7, priority=8)
    claimed = services.claim(str(queued.pk), agent=agent, timeout=999)  # a wrong hint: the row's timeout counts
    assert claimed is not None and claimed.attempt == 1
    stored = Invocation.objects.get(pk=queued.pk)
    got = claimed.invocation
    read_by_the_worker = [f.attname for f in inv._CLAIMED_FIELDS]
    with django_assert_num_queries(0):  # what the runtime reads came with the claim
        values = [getattr(got, name) for name in read_by_the_worker] + [got.capability.name]
    assert values == [getattr(stored, name) for name in read_by_the_worker] + ["calculation"]
    assert got.get_deferred_fields() == {f.attname for f in Invocation._meta.concrete_fields} - set(read_by_the_worker)
    for field in Invocation._meta.concrete_fields:  # the rest is read on first access
        assert getattr(got, field.attname) == getattr(stored, field.attname), field.name
    assert (stored.status, stored.agent_id, stored.priority, got.capability.name) == (
        "running",
        agent.pk,
        8,
        "calculation",
    )
    expected_deadline = stored.started_at + timedelta(seconds=7 + 10.0)
    assert abs((stored.deadline_at - expected_deadline).total_seconds()) < 0.01
    attempt = InvocationAttempt.objects.get(invocation=queued)
    assert (attempt.number, attempt.agent_id, attempt.outcome, attempt.started_at) == (
        1,
        agent.pk,
        "running",
        stored.started_at,
    )


def test_the_claim_refuses_pinned_elsewhere_cancelled_and_duplicates(calc):
    a = AgentFactory(agent_id="a", offers={"calculation": 1})
    b = AgentFactory(agent_id="b", offers={"calculation": 1})
    pinned = invoke(agent="a")
    assert services.claim(str(pinned.pk), agent=b) is None
    assert services.claim(str(pinned.pk), agent=a).attempt == 1
    assert services.claim(str(pinned.pk), agent=a) is None  # a duplicate delivery
    cancelled = invoke()
    Invocation.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    assert services.claim(str(cancelled.pk), agent=a) is None
    assert InvocationAttempt.objects.count() == 1
    assert Invocation.objects.get(pk=cancelled.pk).status == "queued"


def test_a_message_ahead_of_its_backoff_is_sent_again_and_claims_nothing(calc):
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    call = invoke()
    before = timezone.now() - timedelta(minutes=1)
    Invocation.objects.filter(pk=call.pk).update(
        not_before=timezone.now() + timedelta(seconds=30), dispatched_at=before
    )
    assert services.claim(str(call.pk), agent=agent) is None
    call.refresh_from_db()
    assert call.status == "queued" and call.attempt == 0 and call.dispatched_at > before
    # within the tolerance (clock skew) it is claimed
    Invocation.objects.filter(pk=call.pk).update(not_before=timezone.now() + timedelta(seconds=0.2))
    assert services.claim(str(call.pk), agent=agent).attempt == 1
    assert Invocation.objects.get(pk=call.pk).not_before is None


def test_a_changed_capability_contract_reaches_the_claim(calc):
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    first = services.claim(str(invoke().pk), agent=agent)
    assert services.check_output(first.invocation.capability, {"sum": 1}) == []
    services.update_capability(name="calculation", output_schema={"type": "object", "required": ["total"]})
    second = services.claim(str(invoke().pk), agent=agent)
    assert services.check_output(second.invocation.capability, {"sum": 1}) == ["/: 'total' is a required property"]


def test_validators_are_cached_by_schema_content():
    one = {"type": "object", "required": ["x"]}
    assert inv.schema_errors(one, {}) == ["/: 'x' is a required property"]
    assert inv.schema_errors({"type": "object", "required": ["y"]}, {}) == ["/: 'y' is a required property"]
    assert inv.schema_errors({}, 5) == [] and inv.schema_errors(True, None) == []
    assert inv.schema_errors({"type": "string"}, 5) == ["/: 5 is not of type 'string'"]


def test_success_is_recorded_once_and_a_cancel_while_running_wins(calc):
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    call = invoke()
    claimed = services.claim(str(call.pk), agent=agent)
    Invocation.objects.filter(pk=call.pk).update(cancel_requested=True)
    assert services.record_success(call.pk, attempt=claimed.attempt, output={"sum": 2}) is True
    call.refresh_from_db()
    assert call.status == "cancelled" and call.output is None
    assert InvocationAttempt.objects.get(invocation=call).outcome == "cancelled"
    assert services.record_success(call.pk, attempt=claimed.attempt, output={"sum": 2}) is False

    other = invoke()
    claimed = services.claim(str(other.pk), agent=agent)
    # without started_at (not from the runtime) the attempt's start is read back for the duration
    assert services.record_success(other.pk, attempt=claimed.attempt, output={"sum": 3}) is True
    attempt = InvocationAttempt.objects.get(invocation=other)
    assert attempt.outcome == "succeeded" and attempt.duration_ms is not None and attempt.finished_at is not None
    other.refresh_from_db()
    assert (other.status, other.output, other.progress, other.error_type) == ("succeeded", {"sum": 3}, 1.0, "")


@pytest.mark.django_db(transaction=True)
def test_invocation_finished_is_sent_inside_the_recording_transaction(calc, broker_url):
    seen = []

    def receiver(sender, invocation_id, status, **kwargs):
        seen.append((str(invocation_id), status, transaction.get_connection().in_atomic_block))

    services.invocation_finished.connect(receiver)
    try:
        agent = AgentFactory(agent_id="a", offers={"calculation": 1})
        ok, cancelled = invoke(), invoke()
        claimed = services.claim(str(ok.pk), agent=agent)
        services.record_success(ok.pk, attempt=claimed.attempt, output={"sum": 1}, started_at=timezone.now())
        claimed = services.claim(str(cancelled.pk), agent=agent)
        services.cancel(cancelled.pk)
        services.record_success(cancelled.pk, attempt=claimed.attempt, output={"sum": 1})
    finally:
        services.invocation_finished.disconnect(receiver)
    assert seen == [(str(ok.pk), "succeeded", True), (str(cancelled.pk), "cancelled", True)]


def test_agent_counters_come_from_attempts_in_the_api_and_follow_in_the_columns(calc, user_client):
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    AgentFactory(agent_id="idle")
    for output in ({"sum": 1}, {"sum": 2}):
        call = invoke()
        claimed = services.claim(str(call.pk), agent=agent)
        services.record_success(call.pk, attempt=claimed.attempt, output=output)
    failing = invoke()
    claimed = services.claim(str(failing.pk), agent=agent)
    services.record_failure(failing.pk, attempt=claimed.attempt, error_type="ValueError", error_message="no")
    durations = list(InvocationAttempt.objects.filter(outcome="succeeded").values_list("duration_ms", flat=True))

    detail = user_client.get("/api/agents/a/").json()
    assert (detail["calls_completed"], detail["calls_failed"]) == (2, 1)
    assert detail["avg_response_time_ms"] == pytest.approx(sum(durations) / 2)
    listed = {a["agent_id"]: a for a in user_client.get("/api/agents/").json()["results"]}
    assert (listed["a"]["calls_completed"], listed["idle"]["calls_completed"]) == (2, 0)
    assert listed["idle"]["avg_response_time_ms"] is None

    services.sync_agent_counters(agent.pk)  # what the worker's heartbeat does
    agent.refresh_from_db()
    assert (agent.calls_completed, agent.calls_failed) == (2, 1)
    assert agent.avg_response_time_ms == pytest.approx(sum(durations) / 2)
    assert selectors.call_counters([agent.pk])[agent.pk].completed == 2


def test_invoke_many_queues_all_or_nothing(calc):
    AgentFactory(agent_id="a", offers={"calculation": 1})
    AgentFactory(agent_id="other", offers={"something_else": 1})
    calls = [
        {"capability": "calculation", "input": {"i": 0}},
        {"capability": "calculation", "input": {"i": 1}, "priority": 9, "timeout": 7, "max_retries": 2, "agent": "a"},
    ]
    made = services.invoke_many(calls, requested_by="user:x")
    assert [i.input for i in made] == [{"i": 0}, {"i": 1}]
    stored = {i.pk: i for i in Invocation.objects.all()}
    assert set(stored) == {i.pk for i in made}
    second = stored[made[1].pk]
    assert (second.status, second.priority, second.timeout, second.max_retries, second.pinned_agent.agent_id) == (
        "queued",
        9,
        7.0,
        2,
        "a",
    )
    assert second.requested_by == "user:x" and second.request_hash and second.dispatched_at is not None
    # each is an ordinary invocation: claimed (by the pinned agent only) and recorded as usual
    assert services.claim(str(second.pk), agent=AgentFactory(agent_id="b", offers={"calculation": 1})) is None

    bad = [
        {"capability": "calculation", "input": {"i": 2}},
        {"capability": "nothing", "input": {}},
        {"capability": "calculation", "input": {}, "priority": 10},
        {"capability": "calculation", "input": {}, "agent": "other"},
        {"capability": "calculation", "input": {}, "agent": "ghost"},
        {"capability": "calculation", "input": [], "idempotency_key": "k"},
        "not a call",
    ]
    with pytest.raises(InvalidInput) as error:
        services.invoke_many(bad, requested_by="user:x")
    detail = str(error.value.detail)
    for words in (
        "call 1: unknown capability 'nothing'",
        "call 2: priority must be 0-9, got 10",
        "call 3: agent 'other' does not offer 'calculation'",
        "call 4: no registered agent 'ghost'",
        "call 5: unknown field(s) idempotency_key",
        "call 6: must be an object",
    ):
        assert words in detail, detail
    assert "call 0" not in detail
    assert Invocation.objects.count() == 2  # nothing of the bad batch
    assert services.invoke_many([], requested_by="user:x") == []


def test_invoke_many_checks_each_input_against_the_schema():
    CapabilityFactory(name="typed", input_schema={"type": "object", "required": ["x"]})
    with pytest.raises(InvalidInput) as error:
        services.invoke_many(
            [{"capability": "typed", "input": {"x": 1}}, {"capability": "typed", "input": {}}], requested_by="u"
        )
    assert "call 1: input does not match the input schema of 'typed': /: 'x' is a required property" in str(
        error.value.detail
    )
    assert not Invocation.objects.exists()


def test_invoke_writes_the_same_row_as_the_orm_would(calc):
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    made = invoke(priority=2, timeout=3.5, max_retries=1, agent="a", idempotency_key="k")
    stored = Invocation.objects.get(pk=made.pk)
    for field in Invocation._meta.concrete_fields:
        assert getattr(made, field.attname) == getattr(stored, field.attname), field.name
    assert stored.pinned_agent_id == agent.pk and stored.output is None and stored.progress is None
    assert Invocation.objects.filter(pk=made.pk, output__isnull=True, input__a=1, error_type="").exists()
    assert not made._state.adding
    made.priority = 3
    made.save(update_fields=["priority"])  # an UPDATE of the existing row, not a second INSERT
    assert Invocation.objects.get().priority == 3


def test_the_insert_sends_each_value_as_the_orm_would(calc):
    from django.db import connection

    from masplatform import rows

    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    now = timezone.now()
    every_field_set = Invocation(
        capability=calc, input={"a": [1, "x"]}, output={"sum": 1.5}, status="running", priority=9, timeout=2,
        max_retries=3, attempt=2, failed_attempts=1, agent=agent, pinned_agent=agent, idempotency_key="k",
        request_hash="h", requested_by="user:x", error_type="E", error_message="m", error_traceback="t",
        progress=0.5, progress_message="half", cancel_requested=True, created_at=now, queued_at=now,
        dispatched_at=now, not_before=now, started_at=now, deadline_at=now, finished_at=now,
    )  # fmt: skip
    fields = Invocation._meta.concrete_fields
    orm = [f.get_db_prep_save(getattr(every_field_set, f.attname), connection) for f in fields]
    fast = rows.db_values(Invocation, fields, every_field_set, connection)
    for field, expected, value in zip(fields, orm, fast, strict=True):
        assert type(value) is type(expected) and str(value) == str(expected), field.name
    assert (
        rows.db_values(Invocation, fields, Invocation(), connection)[fields.index(Invocation._meta.get_field("output"))]
        is None
    )


def test_invoke_takes_the_id_its_caller_chose(calc):
    import uuid

    chosen = uuid.uuid4()
    made = invoke(invocation_id=chosen)
    assert made.pk == chosen and Invocation.objects.get(pk=chosen).input == {"a": 1}


def test_invoke_checks_input_against_a_contract_changed_since_it_was_cached(calc):
    invoke()  # this process now knows the capability's version
    services.update_capability(
        name="calculation", input_schema={"type": "object", "required": ["b"]}, output_schema=OUT
    )
    # the cached version no longer matches: the INSERT writes nothing and the call is checked again
    with pytest.raises(InvalidInput) as error:
        invoke()
    assert "'b' is a required property" in str(error.value.detail)
    assert Invocation.objects.count() == 1
    fresh = services.invoke(capability="calculation", input={"b": 2}, requested_by="user:x")[0]
    assert Invocation.objects.get(pk=fresh.pk).input == {"b": 2}


def test_invoke_of_a_capability_deleted_since_it_was_cached_is_refused(calc):
    invoke()
    Invocation.objects.all().delete()
    services.delete_capability(name="calculation")
    with pytest.raises(InvalidInput) as error:
        invoke()
    assert "unknown capability 'calculation'" in str(error.value.detail)
    assert not Invocation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_workflow_call_is_recorded_in_the_transaction_its_receivers_join(calc, broker_url):
    from workflows.services import REQUESTER_PREFIX

    seen = []

    def receiver(sender, invocation_id, status, requested_by, **kwargs):
        connection = transaction.get_connection()
        visible = Invocation.objects.filter(pk=invocation_id, status=status).exists()
        seen.append((requested_by, connection.in_atomic_block, visible))

    services.invocation_finished.connect(receiver)
    try:
        agent = AgentFactory(agent_id="a", offers={"calculation": 1})
        for requester in (f"{REQUESTER_PREFIX}00000000-0000-0000-0000-000000000001", "user:x"):
            call = services.invoke(capability="calculation", input={"a": 1}, requested_by=requester)[0]
            claimed = services.claim(str(call.pk), agent=agent)
            recorded = services.record_success(
                call.pk,
                attempt=claimed.attempt,
                output={"sum": 1},
                started_at=claimed.invocation.started_at,
                requested_by=claimed.invocation.requested_by,
            )
            assert recorded and Invocation.objects.get(pk=call.pk).status == "succeeded"
    finally:
        services.invocation_finished.disconnect(receiver)
    workflow_call, plain_call = seen
    # a workflow's receiver writes in the recording transaction; a plain call's success may be one
    # self-committing statement (PostgreSQL), which the signal follows; either way it is sent once
    assert workflow_call[1:] == (True, True)
    assert plain_call[0] == "user:x" and plain_call[2] is True


@pytest.mark.django_db(transaction=True)
def test_the_claim_commits_by_itself_and_leaves_the_connection_durable(calc, broker_url):
    from django.db import connection

    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    call = invoke()
    claimed = services.claim(str(call.pk), agent=agent)
    assert claimed is not None and not connection.in_atomic_block
    # committed: another connection sees it running
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute(f"SELECT status FROM {Invocation._meta.db_table} WHERE id = %s", [call.pk.hex])
            assert cursor.fetchone()[0] == "running"
    finally:
        other.close()
    if connection.vendor == "postgresql":
        # the claim's commit does not wait for the disk, but nothing after it inherits that
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"


@pytest.mark.django_db(transaction=True)
def test_postgresql_prepares_the_statements_of_every_call_once_per_connection(calc, broker_url):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    for n in range(3):
        call = invoke()
        claimed = services.claim(str(call.pk), agent=agent)  # outside an atomic block: its own transaction
        assert services.record_success(call.pk, attempt=claimed.attempt, output={"sum": n}) is True
        call.refresh_from_db()
        assert (call.status, call.output, call.input, call.attempt) == ("succeeded", {"sum": n}, {"a": 1}, 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        prepared = [(" ".join(row[0].split()), row[1], row[2]) for row in cursor.fetchall()]
    assert sum(s.startswith('INSERT INTO "agents_invocation"') for s, _, _ in prepared) == 1  # invoke
    assert sum("set_config('synchronous_commit'" in s for s, _, _ in prepared) == 1  # the claim
    assert sum(s.startswith("WITH recorded AS") for s, _, _ in prepared) == 1  # the outcome
    # each ran on its generic plan (the status a parameter: never through an index on the status)
    assert all(generic >= 3 and custom == 0 for _, generic, custom in prepared), prepared


@pytest.mark.django_db(transaction=True)
def test_the_generic_plans_find_a_call_by_its_key_among_many_queued_and_running(calc, broker_url):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    services.invoke_many([{"capability": "calculation", "input": {"a": i}} for i in range(300)], requested_by="u:x")
    with connection.cursor() as cursor:  # the planner's view of a new table: no statistics (as before autovacuum)
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
        cursor.execute(
            "PREPARE probe(uuid, text) AS UPDATE agents_invocation SET progress = 0 WHERE id = $1 AND status = $2"
        )
        cursor.execute("EXPLAIN EXECUTE probe('00000000-0000-0000-0000-000000000000', 'queued')")
        plan = " ".join(row[0] for row in cursor.fetchall())
        cursor.execute("DEALLOCATE probe")
    assert "agents_invocation_pkey" in plan and "invocation_queued_idx" not in plan, plan
    call = Invocation.objects.filter(status="queued").order_by("created_at").last()
    claimed = services.claim(str(call.pk), agent=agent)
    assert services.record_success(call.pk, attempt=claimed.attempt, output={"sum": 1}) is True


@pytest.mark.django_db(transaction=True)
def test_without_prepared_statements_calls_run_the_same(calc, broker_url, settings):
    from django.db import connection

    settings.MASP_DB_PREPARED_STATEMENTS = False
    connection.close()  # a new session: none prepared by an earlier test on this connection
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})
    call = invoke()
    claimed = services.claim(str(call.pk), agent=agent)
    assert services.record_success(call.pk, attempt=claimed.attempt, output={"sum": 1}) is True
    call.refresh_from_db()
    assert (call.status, call.output) == ("succeeded", {"sum": 1})
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_an_over_long_value_in_the_prepared_insert_is_refused_not_cut(calc):
    from django.db import DataError, connection

    key = "k" * 201  # the column holds 200
    try:
        call = invoke(idempotency_key=key)
    except DataError:  # PostgreSQL, as an ORM insert would
        assert connection.vendor == "postgresql" and not Invocation.objects.exists()
    else:  # SQLite does not enforce lengths: the whole value is kept
        assert connection.vendor == "sqlite" and Invocation.objects.get(pk=call.pk).idempotency_key == key


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_call_with_the_claim_and_the_outcome_alone(broker_url):
    """No deferred column is read on the way (each would be a SELECT per call)."""
    from django.db import connection

    from agents import runtime
    from tests.sample_agents import agent as definition

    worker_agent = AgentFactory(agent_id="sample", offers={"echo": 1})
    runtime.configure(definition, worker_agent, worker_name="w@test", concurrency=1)
    try:
        warm = services.invoke(capability="echo", input={"n": 0}, requested_by="user:x")[0]
        assert runtime.execute(str(warm.pk), timeout=warm.timeout) == "succeeded"  # caches the capability
        call = services.invoke(capability="echo", input={"n": 1}, requested_by="user:x")[0]
        statements: list[str] = []

        def record(execute, sql, params, many, context):
            statements.append(" ".join(sql.split()))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            assert runtime.execute(str(call.pk), timeout=call.timeout) == "succeeded"
    finally:
        runtime._current = None
    assert Invocation.objects.get(pk=call.pk).output == {"echo": {"n": 1}, "agent_id": "sample", "attempt": 1}
    assert not [s for s in statements if s.upper().startswith("SELECT")], statements
    # SQLite: BEGIN, UPDATE, INSERT, COMMIT; BEGIN, 2 UPDATEs, the counter's upsert, COMMIT (each its
    # own transaction)
    expected = 2 if connection.vendor == "postgresql" else 9
    assert len(statements) == expected, statements
    if connection.vendor == "sqlite":
        assert [statements[i] for i in (0, 3, 4, 8)] == ["BEGIN IMMEDIATE", "COMMIT"] * 2, statements


@pytest.mark.django_db(transaction=True)
def test_a_connection_left_inside_a_statement_by_the_soft_time_limit_is_replaced(calc):
    """The soft time limit's signal can interrupt psycopg while it waits on the server: the query sent,
    its result unread. The runtime drops such a connection before recording the timeout."""
    from django.db import ProgrammingError, connection

    from agents import runtime

    if connection.vendor != "postgresql":
        # SQLite finishes a statement first; the signal can land between a BEGIN and its block instead
        connection.ensure_connection()
        assert runtime.drop_interrupted_connection() is False  # an idle connection is kept
        connection.connection.execute("BEGIN IMMEDIATE")  # left open: Django believes it is in autocommit
        assert runtime.drop_interrupted_connection() is True
        assert connection.connection is None  # closed: the transaction rolled back, the write lock released
        call = invoke()  # the next statement runs on a new connection, in autocommit
        assert Invocation.objects.filter(pk=call.pk).exists()
        return
    connection.ensure_connection()
    assert runtime.drop_interrupted_connection() is False  # an idle connection is kept
    pid = connection.connection.info.backend_pid
    connection.connection.pgconn.send_query(b"SELECT pg_sleep(30)")  # sent; its result never read
    with pytest.raises(ProgrammingError, match="autocommit"):
        connection.set_autocommit(False)  # what recording the timeout did, and failed on
    assert runtime.drop_interrupted_connection() is True
    with transaction.atomic():
        assert Invocation.objects.count() == 0  # on a new connection
        with connection.cursor() as cursor:  # and the interrupted statement no longer runs on the server
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'", [pid])
            assert cursor.fetchone()[0] == 0


def test_a_capabilitys_calls_are_listed_through_an_index(calc):
    """The API's and the admin's capability filter (newest first) must not read the whole table."""
    from django.db import connection

    for _ in range(3):
        invoke()
    query = Invocation.objects.filter(capability=calc).order_by("-created_at")[:50]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: show what serves it at scale
        plan = query.explain()
    assert "invocation_capability_idx" in plan, plan


@pytest.mark.parametrize(
    ("option", "value"),
    [("priority", 5.5), ("priority", True), ("priority", 10), ("max_retries", -1), ("max_retries", 1.5),
     ("timeout", 0.05), ("timeout", "30")],
)  # fmt: skip
def test_invoke_refuses_an_option_of_the_wrong_type_or_range_and_creates_nothing(calc, option, value):
    with pytest.raises(InvalidInput) as refused:
        invoke(**{option: value})
    assert option in refused.value.detail and repr(value) in refused.value.detail[option][0]
    assert not Invocation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_outcome_wakes_its_channel_only_when_a_request_waits_for_it(calc, broker_url):
    """Recording an outcome publishes a wake-up only for a call a request waits on (``waited_on``):
    a call invoked to be waited for, or one a waiter asked about with ``watch`` (GET ?wait=)."""
    from masplatform import notify

    agent = AgentFactory(agent_id="a", offers={"calculation": 1})

    def succeed(call):
        claimed = services.claim(str(call.pk), agent=agent)
        # with started_at and requested_by, as the runtime records it: the one-statement path
        services.record_success(
            call.pk, attempt=claimed.attempt, output={"sum": 1}, started_at=timezone.now(), requested_by="user:x"
        )

    unwatched = invoke()
    with notify.subscribed(f"invocation:{unwatched.pk}") as waiter:
        succeed(unwatched)
        assert waiter.wait(0.5, lambda: False) is False  # no wake-up: nobody asked for one
    assert Invocation.objects.get(pk=unwatched.pk).status == "succeeded"

    waited = invoke(waited_on=True)  # POST ?wait=: subscribed before the call exists
    with notify.subscribed(f"invocation:{waited.pk}") as waiter:
        succeed(waited)
        assert waiter.wait(10, lambda: False) is True

    watched = invoke()  # GET ?wait=: subscribe, then watch
    with notify.subscribed(f"invocation:{watched.pk}") as waiter:
        assert services.watch(watched.pk) is True
        succeed(watched)
        assert waiter.wait(10, lambda: False) is True

    failing, cancelled = invoke(), invoke()
    for call, finish in (
        (failing, lambda c: services.record_failure(
            c.pk, attempt=services.claim(str(c.pk), agent=agent).attempt, error_type="E", error_message="m"
        )),
        (cancelled, lambda c: services.cancel(c.pk)),
    ):  # fmt: skip
        with notify.subscribed(f"invocation:{call.pk}") as waiter:
            assert services.watch(call.pk) is True
            finish(call)
            assert waiter.wait(10, lambda: False) is True
    assert [Invocation.objects.get(pk=c.pk).status for c in (failing, cancelled)] == ["failed", "cancelled"]
    # a finished call (or none) is not watched: the waiter reads it at once
    assert services.watch(watched.pk) is False
    assert services.watch("00000000-0000-0000-0000-000000000000") is False


@pytest.mark.django_db(transaction=True)
def test_a_calls_message_names_it_in_its_task_id_and_arguments(calc, broker_url, monkeypatch):
    """What Celery's worker log and ``celery inspect`` show of a call's message: its id in the task id,
    and its arguments as given (``argsrepr``), without Celery's saferepr of them."""
    import json

    import celery.app.amqp
    import redis

    from agents import dispatch

    if not dispatch.broker_is_redis():
        pytest.skip("reads the message off a Redis list")
    client = redis.Redis.from_url(broker_url.replace("redis+socket://", "unix://"))

    def no_saferepr(*args, **kwargs):
        raise AssertionError("Celery's saferepr ran on a call's arguments")

    monkeypatch.setattr(celery.app.amqp, "saferepr", no_saferepr)
    call = invoke(priority=7)
    key = f"cap.calculation:{dispatch.broker_priority(7)}" if dispatch.broker_priority(7) else "cap.calculation"
    message = json.loads(client.lindex(key, 0))
    headers = message["headers"]
    assert headers["task"] == dispatch.INVOKE_TASK
    assert headers["id"].startswith(f"{call.pk}.") and len(headers["id"]) == len(str(call.pk)) + 9
    assert (headers["argsrepr"], headers["kwargsrepr"]) == (repr((str(call.pk),)), "{}")
    assert headers["timelimit"] == [call.timeout + 10.0, call.timeout]


@pytest.mark.django_db(transaction=True)
def test_a_waited_call_commits_without_waiting_and_is_on_disk_before_it_is_named(calc, broker_url):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("commits that do not wait for the disk are PostgreSQL's")
    # no worker: the wait ends first, and the answer names a queued call
    call, created = services.invoke_and_wait(0.01, capability="calculation", input={"a": 1}, requested_by="user:x")
    assert created and Invocation.objects.get(pk=call.pk).status == "queued"
    connection.close()  # a new connection: its prepared statements are only the INSERT below
    invoke(durable=False)
    with connection.cursor() as cursor:
        # the INSERT alone committed without waiting; nothing after it inherits that
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        inserts = [s for (s,) in cursor.fetchall() if s.startswith('INSERT INTO "agents_invocation"')]
    assert len(inserts) == 1 and "set_config('synchronous_commit', 'off', true)" in inserts[0]
    # make_durable returns once the write-ahead log is on disk past the INSERT. Without it the log
    # reaches the disk within the WAL writer's cycle (200 ms by default): some of these 20 would not be.
    for _ in range(20):
        pk = invoke(durable=False).pk
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            logged_to = cursor.fetchone()[0]
            services.make_durable(pk)
            cursor.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", [logged_to])
            assert cursor.fetchone()[0] is True


@pytest.mark.django_db(transaction=True)
def test_a_call_in_the_callers_transaction_is_never_committed_without_waiting(calc, broker_url):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("commits that do not wait for the disk are PostgreSQL's")
    with transaction.atomic():
        invoke(durable=False)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"


@pytest.mark.django_db(transaction=True)
def test_make_durable_of_a_call_the_database_does_not_have_says_so(calc):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a no-op elsewhere")
    services.make_durable(invoke().pk)  # there: nothing to say
    with pytest.raises(Unavailable, match="lost by the database"):
        services.make_durable("00000000-0000-0000-0000-000000000000")


@pytest.mark.django_db(transaction=True)
def test_invoke_and_wait_puts_on_disk_what_it_names_unless_it_finished(calc, broker_url, monkeypatch):
    made_durable = []
    original = inv.make_durable
    monkeypatch.setattr(inv, "make_durable", lambda pk: (made_durable.append(str(pk)), original(pk))[1])
    # the wait ends first: the queued call is made durable before it is returned
    queued, created = services.invoke_and_wait(0.05, capability="calculation", input={"a": 1}, requested_by="u:x")
    assert created and made_durable == [str(queued.pk)]

    # the call finishes within the wait (an agent's claim and outcome, on another thread and connection):
    # its durable outcome put the INSERT on disk, nothing more is written
    agent = AgentFactory(agent_id="a", offers={"calculation": 1})

    def run_the_next_call() -> None:
        from django.db import connection as own_connection

        try:
            for _ in range(1000):
                waiting = Invocation.objects.filter(status="queued").exclude(pk=queued.pk).first()
                if waiting is not None:
                    claimed = services.claim(str(waiting.pk), agent=agent)
                    services.record_success(waiting.pk, attempt=claimed.attempt, output={"sum": 3})
                    return
                time.sleep(0.01)
        finally:
            own_connection.close()

    agent_thread = threading.Thread(target=run_the_next_call)
    agent_thread.start()
    finished, created = services.invoke_and_wait(10, capability="calculation", input={"a": 2}, requested_by="u:x")
    agent_thread.join()
    assert created and Invocation.objects.get(pk=finished.pk).status == "succeeded"
    assert made_durable == [str(queued.pk)]

    # a repeated idempotency key names an earlier request's call: on disk before invoke returns it, unless
    # it has finished
    made_durable.clear()
    keyed = invoke(idempotency_key="k")
    assert invoke(idempotency_key="k").pk == keyed.pk and made_durable == [str(keyed.pk)]
    Invocation.objects.filter(pk=keyed.pk).update(status="succeeded")
    assert invoke(idempotency_key="k").pk == keyed.pk and made_durable == [str(keyed.pk)]
