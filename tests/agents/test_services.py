"""Registry services against the real database: sweeps, purges and races."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import override_settings
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentEvent, Capability, Invocation
from agents.services import CapabilitySpec, registry
from tests.factories import AgentFactory


def run_together(*calls):
    """Run the calls in threads released at the same instant; return their results (or raise the first error)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def make_stale(n: int, prefix: str = "stale") -> None:
    old = timezone.now() - timedelta(hours=1)
    Agent.objects.bulk_create(
        [
            Agent(
                agent_id=f"{prefix}-{i}",
                name=f"{prefix} {i}",
                registered_at=old,
                last_heartbeat_at=old,
                state_changed_at=old,
                token_hash=f"{prefix}-{i}".ljust(64, "x"),
                state="busy" if i % 2 else "idle",
            )
            for i in range(n)
        ]
    )


@pytest.mark.django_db
def test_sweep_takes_only_stale_registered_live_agents_offline_with_one_event_each():
    make_stale(7)
    AgentFactory(agent_id="fresh")
    AgentFactory(agent_id="already-off", state="offline", stale=True)
    AgentFactory(agent_id="unregistered", stale=True, unregistered_at=timezone.now())
    assert services.sweep_stale_agents(batch_size=3) == 7
    assert set(Agent.objects.filter(state="offline").values_list("agent_id", flat=True)) == {
        *(f"stale-{i}" for i in range(7)),
        "already-off",
    }
    assert not AgentEvent.objects.filter(agent__agent_id__in=["unregistered", "already-off"]).exists()
    assert Agent.objects.get(agent_id="fresh").state == "idle"
    events = AgentEvent.objects.filter(kind="went_offline")
    assert events.count() == 7
    e = events.get(agent__agent_id="stale-1")
    assert (e.from_state, e.to_state) == ("busy", "offline")
    assert e.details["reason"] == "no heartbeat" and e.details["stale_timeout_seconds"] == 60.0
    assert services.sweep_stale_agents() == 0  # nothing left: idempotent


@pytest.mark.django_db
def test_sweep_in_batches_among_fresh_and_offline_agents_takes_each_stale_one_once():
    for i in range(10):  # primary keys interleave: each batch starts past the last agent of the one before
        make_stale(1, prefix=f"stale{i}")
        AgentFactory(agent_id=f"fresh-{i}")
        AgentFactory(agent_id=f"off-{i}", state="offline", stale=True)
    assert services.sweep_stale_agents(batch_size=4) == 10
    assert AgentEvent.objects.filter(kind="went_offline").count() == 10
    assert set(Agent.objects.exclude(state="offline").values_list("agent_id", flat=True)) == {
        f"fresh-{i}" for i in range(10)
    }


@pytest.mark.django_db
def test_deleting_an_agent_deletes_its_history():
    agent = AgentFactory(agent_id="short-lived")
    AgentEvent.objects.create(agent=agent, kind="registered", at=timezone.now())
    agent.delete()  # no foreign key in the database (it cost the sweep a lookup per event): Django cascades
    assert not AgentEvent.objects.exists()


@pytest.mark.django_db
def test_agent_pages_leave_room_for_the_sweep_to_update_in_place():
    if connection.vendor != "postgresql":
        pytest.skip("fillfactor is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [Agent._meta.db_table])
        assert cursor.fetchone()[0] == ["fillfactor=60"]


@pytest.mark.django_db
def test_events_are_listed_newest_first_and_the_sweep_writes_no_index_on_kind():
    agent = AgentFactory(agent_id="historied")
    base = timezone.now() - timedelta(days=3)
    for day in range(3):
        AgentEvent.objects.create(agent=agent, kind="went_offline", at=base + timedelta(days=day))
    assert [e.at for e in AgentEvent.objects.all()] == [base + timedelta(days=d) for d in (2, 1, 0)]
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AgentEvent._meta.db_table).values()
    indexed = {c["columns"][0] for c in constraints if c["index"] and c["columns"]}
    assert {"agent_id", "at"} <= indexed and "kind" not in indexed  # each index slows the sweep's insert


@pytest.mark.django_db
def test_sweep_respects_the_timeout():
    AgentFactory(agent_id="quiet", last_heartbeat_at=timezone.now() - timedelta(seconds=45))
    assert services.sweep_stale_agents() == 0
    with override_settings(MASP_STALE_TIMEOUT=30):
        assert services.sweep_stale_agents() == 1


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_mark_each_agent_offline_once():
    make_stale(400)
    counts = run_together(
        lambda: services.sweep_stale_agents(batch_size=25), lambda: services.sweep_stale_agents(batch_size=25)
    )
    assert sum(counts) == 400
    assert AgentEvent.objects.filter(kind="went_offline").count() == 400
    assert Agent.objects.exclude(state="offline").count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_committed_while_a_batch_waits_keeps_its_agent_and_the_sweep_goes_on():
    make_stale(30, prefix="batch")
    racer = Agent.objects.get(agent_id="batch-3")  # in the first batch of 10
    locked, release = threading.Event(), threading.Event()

    def heartbeat_in_flight():
        try:
            with transaction.atomic():
                Agent.objects.filter(pk=racer.pk).update(last_heartbeat_at=timezone.now())
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    beat = threading.Thread(target=heartbeat_in_flight)
    beat.start()
    assert locked.wait(10)
    swept: list[int] = []

    def sweep():
        try:
            swept.append(services.sweep_stale_agents(batch_size=10))
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    time.sleep(0.5)  # the sweep is waiting for the heartbeat's row (PostgreSQL) or write lock (SQLite)
    release.set()
    sweeper.join(30)
    beat.join(10)
    assert swept == [29]  # the batch that lost one agent to the heartbeat did not end the sweep
    assert Agent.objects.get(pk=racer.pk).state != "offline"
    assert not AgentEvent.objects.filter(agent=racer).exists()
    assert Agent.objects.filter(agent_id__startswith="batch-", state="offline").count() == 29


@pytest.mark.django_db
def test_a_sweep_announces_the_agents_it_took_offline_once_after_its_last_batch(django_capture_on_commit_callbacks):
    make_stale(30, prefix="announced")
    announced: list[list[int]] = []

    def receiver(sender, agent_pks, **kwargs):
        announced.append(list(agent_pks))

    registry.agents_offline.connect(receiver, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):  # the announcement waits for the commit
            assert services.sweep_stale_agents(batch_size=10) == 30
            assert announced == []
    finally:
        registry.agents_offline.disconnect(receiver)
    assert len(announced) == 1
    assert sorted(announced[0]) == sorted(
        Agent.objects.filter(agent_id__startswith="announced-").values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_a_sweep_batch_that_requeued_calls_commits_durably():
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    cap = Capability.objects.create(name="durable", input_schema={"type": "object"})
    make_stale(2, prefix="lost")
    runner = Agent.objects.get(agent_id="lost-0")
    Invocation.objects.create(
        capability=cap,
        status="running",
        agent=runner,
        attempt=1,
        requested_by="user:x",
        created_at=timezone.now(),
        queued_at=timezone.now(),
        started_at=timezone.now(),
    )
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert services.sweep_stale_agents(batch_size=1) == 2  # one batch re-queues, the other does not
    batches = [s for s in statements if "WITH stale AS" in s]
    assert len(batches) == 3 and all(s.startswith("SET LOCAL synchronous_commit = off") for s in batches)
    assert sum(s == "SET LOCAL synchronous_commit = on" for s in statements) == 1  # the batch of lost-0 only
    assert Invocation.objects.get(agent__isnull=True).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_racing_the_sweep_leaves_the_agent_alive():
    make_stale(1, prefix="racer")
    services.sweep_stale_agents()
    result = services.heartbeat(agent_id="racer-0")
    assert result.revived and Agent.objects.get(agent_id="racer-0").state == "idle"
    assert list(AgentEvent.objects.order_by("id").values_list("kind", flat=True)) == ["went_offline", "revived"]


@pytest.mark.django_db(transaction=True)
def test_two_agents_registering_the_same_new_capability_at_once_share_it():
    spec = CapabilitySpec(name="shared_cap", input_schema={"type": "object"})
    results = run_together(
        lambda: services.register_agent(agent_id="twin-a", name="a", capabilities=[spec]),
        lambda: services.register_agent(agent_id="twin-b", name="b", capabilities=[spec]),
    )
    assert all(r.created for r in results)
    assert Capability.objects.filter(name="shared_cap").count() == 1
    assert Agent.objects.filter(capabilities__name="shared_cap").count() == 2


@pytest.mark.django_db
def test_purge_deletes_long_gone_agents_and_old_events_only():
    long_ago = timezone.now() - timedelta(days=40)
    gone = AgentFactory(agent_id="gone", unregistered_at=long_ago, state="offline", offers={"c": 1}, tag_names=["t"])
    AgentEvent.objects.create(agent=gone, kind="unregistered", at=long_ago)
    AgentFactory(agent_id="off-long", state="offline", state_changed_at=long_ago)
    recent = AgentFactory(agent_id="recent", unregistered_at=timezone.now() - timedelta(days=1), state="offline")
    AgentEvent.objects.create(agent=recent, kind="unregistered", at=timezone.now())
    live = AgentFactory(agent_id="live")
    AgentEvent.objects.create(agent=live, kind="registered", at=long_ago)
    purged = services.purge_history()
    assert purged == {"agents": 2, "events": 1}
    assert set(Agent.objects.values_list("agent_id", flat=True)) == {"recent", "live"}
    assert AgentEvent.objects.filter(agent__agent_id="recent").count() == 1
    assert not AgentEvent.objects.filter(agent__agent_id="live").exists()


@pytest.mark.django_db
def test_periodic_sweeps_exist_after_migrate_and_setup_keeps_operator_changes():
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from agents.schedules import ensure_periodic_tasks

    sweep = PeriodicTask.objects.get(task="agents.tasks.sweep_stale_agents")
    assert sweep.interval.every == 30 and sweep.enabled
    assert PeriodicTask.objects.filter(task="agents.tasks.purge_agent_history").exists()
    sweep.interval = IntervalSchedule.objects.create(every=7, period="seconds")
    sweep.save()
    assert ensure_periodic_tasks() == []
    assert PeriodicTask.objects.get(task="agents.tasks.sweep_stale_agents").interval.every == 7


@pytest.mark.django_db(transaction=True)
def test_two_first_registrations_of_one_agent_id_at_once_both_succeed_and_one_creates():
    results = run_together(
        lambda: services.register_agent(agent_id="same", name="first"),
        lambda: services.register_agent(agent_id="same", name="second"),
    )
    assert sorted(r.created for r in results) == [False, True]
    assert Agent.objects.filter(agent_id="same").count() == 1
    last = Agent.objects.get(agent_id="same")
    assert last.token_hash in {services.hash_token(r.token) for r in results}
    assert sorted(AgentEvent.objects.values_list("kind", flat=True)) == ["registered", "reregistered"]


@pytest.mark.django_db
def test_an_offline_agent_heartbeating_as_offline_is_not_revived():
    agent = AgentFactory(agent_id="stays-off", state="offline", stale=True)
    changed_at = agent.state_changed_at
    result = services.heartbeat(agent_id="stays-off", state="offline", cpu_load=0.1)
    assert (result.revived, result.state) == (False, "offline")
    agent.refresh_from_db()
    assert (agent.state, agent.state_changed_at, agent.cpu_load) == ("offline", changed_at, 0.1)
    assert not AgentEvent.objects.exists()


@pytest.mark.django_db
def test_declaring_a_known_capability_without_schemas_adopts_its_contract():
    services.register_agent(
        agent_id="a1",
        name="a1",
        capabilities=[CapabilitySpec(name="calc", input_schema={"type": "object", "required": ["a"]})],
    )
    services.register_agent(agent_id="a2", name="a2", capabilities=[CapabilitySpec(name="calc", cost=3)])
    assert Capability.objects.get(name="calc").input_schema == {"type": "object", "required": ["a"]}
    assert Agent.objects.filter(capabilities__name="calc").count() == 2
