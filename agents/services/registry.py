"""The registry's state changes. The only code that writes agents, capabilities and events.

Guarantees, per function, are in the docstrings. Locks: each service locks
at most one Agent row (``select_for_update(no_key=True)``: FOR NO KEY UPDATE on
PostgreSQL, which does not block the foreign-key checks of a worker writing a
call that names the agent, so a sweep and a recording worker never deadlock);
``update_capability`` and
``delete_capability`` lock one Capability row and no agent. Capabilities
created during a registration are arbitrated by their unique name, not by a
lock. The stale sweep's UPDATE locks the batch of agent rows it changes (on
PostgreSQL in ctid order, waiting for a row another transaction holds, then
re-checking it), and the purge locks the batch it deletes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.dispatch import Signal
from django.utils import timezone

from agents.models import (
    ALLOWED_TRANSITIONS,
    CAPABILITY_NAME_RE,
    Agent,
    AgentCapability,
    AgentEvent,
    AgentEventKind,
    AgentState,
    Capability,
    Tag,
)
from agents.schemas import schema_differences, schema_error
from agents.services.invocations import requeue_running_on
from masplatform.exceptions import Conflict, InvalidInput, NotFound

logger = logging.getLogger("agents")

# Sent after the transaction that made the change commits (receivers run their own transactions):
# agents_offline(agent_pks=[...]) when agents go offline (stale sweep, unregister, state offline);
# agent_available(agent_pk=...) when an agent registers, revives or becomes idle/busy again.
agents_offline = Signal()
agent_available = Signal()


def _announce_offline(agent_pks: list[int]) -> None:
    if agent_pks:
        transaction.on_commit(lambda: agents_offline.send(sender=Agent, agent_pks=list(agent_pks)))


def _announce_available(agent_pk: int) -> None:
    transaction.on_commit(lambda: agent_available.send(sender=Agent, agent_pk=agent_pk))


AGENT_ID_RE = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CapabilitySpec:
    name: str
    description: str = ""
    # None: adopt the existing contract of this capability (or {} for a new one).
    input_schema: dict[str, Any] | bool | None = None
    output_schema: dict[str, Any] | bool | None = None
    cost: float = 1.0


@dataclass(frozen=True)
class Registration:
    agent: Agent
    token: str
    created: bool


@dataclass(frozen=True)
class HeartbeatResult:
    agent_id: str
    state: str
    revived: bool
    next_heartbeat_due: datetime
    heartbeat_interval: float


def _check_capability_specs(specs: list[CapabilitySpec]) -> None:
    errors: dict[str, str] = {}
    seen: set[str] = set()
    for spec in specs:
        if not re.match(CAPABILITY_NAME_RE, spec.name):
            errors[spec.name] = "not a valid name (lowercase letters, digits, '_', '.', '-'; at most 100)"
        if spec.name in seen:
            errors[spec.name] = "declared twice"
        seen.add(spec.name)
        for which in ("input_schema", "output_schema"):
            schema = getattr(spec, which)
            problem = None if schema is None else schema_error(schema)
            if problem:
                errors[spec.name] = f"{which}: {problem}"
        if spec.cost < 0:
            errors[spec.name] = f"cost must be >= 0, got {spec.cost}"
    if errors:
        raise InvalidInput({"capabilities": [f"capability '{n}': {m}" for n, m in errors.items()]})


def _contract_conflict(existing: Capability, spec: CapabilitySpec) -> str | None:
    diffs = []
    for which in ("input_schema", "output_schema"):
        old, new = getattr(existing, which), getattr(spec, which)
        if new is not None and old != new:  # an omitted schema adopts the existing contract
            diffs.append(f"{which} differs ({'; '.join(schema_differences(old, new))})")
    if not diffs:
        return None
    return (
        f"capability '{existing.name}' already exists with another contract: {', '.join(diffs)}. "
        f"Every agent that offers a capability shares its contract; staff change it at /api/capabilities/{existing.name}/."
    )


def _capabilities_for(specs: list[CapabilitySpec]) -> dict[str, Capability]:
    """Fetch or create the capabilities named by ``specs``; Conflict if a contract differs."""
    found = {c.name: c for c in Capability.objects.filter(name__in=[s.name for s in specs])}
    for spec in sorted(specs, key=lambda s: s.name):
        if spec.name not in found:
            try:
                with transaction.atomic():
                    found[spec.name] = Capability.objects.create(
                        name=spec.name,
                        description=spec.description,
                        input_schema=spec.input_schema or {},
                        output_schema=spec.output_schema or {},
                    )
                continue
            except IntegrityError:  # created by a concurrent registration
                found[spec.name] = Capability.objects.get(name=spec.name)
        problem = _contract_conflict(found[spec.name], spec)
        if problem:
            raise Conflict(problem)
    return found


def tags_named(names: Iterable[str]) -> list[Tag]:
    names = sorted(set(names))
    if not names:
        return []
    Tag.objects.bulk_create([Tag(name=n) for n in names], ignore_conflicts=True)
    return list(Tag.objects.filter(name__in=names))


def register_agent(
    *,
    agent_id: str,
    name: str,
    description: str = "",
    capabilities: list[CapabilitySpec] | None = None,
    tags: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
    max_concurrency: int = 1,
    host: str = "",
    pid: int | None = None,
    version: str = "",
    worker_name: str = "",
) -> Registration:
    """Register ``agent_id``, or re-register it (replacing capabilities, tags and metadata).

    One transaction: a bad or conflicting capability leaves nothing behind.
    Every call issues a new token and stores only its hash, so the token of
    an earlier registration stops working. Returns the token once.
    """
    if not AGENT_ID_RE.match(agent_id or ""):
        raise InvalidInput({"agent_id": [f"'{agent_id}' is not a slug (letters, digits, '_' and '-')"]})
    specs = list(capabilities or [])
    _check_capability_specs(specs)
    token = new_token()
    now = timezone.now()
    with transaction.atomic():
        agent, created = _lock_or_create_agent(agent_id, now=now, token_hash=hash_token(token))
        previous_state = "" if created else agent.state
        agent.name = name
        agent.description = description
        agent.metadata = metadata or {}
        agent.max_concurrency = max_concurrency
        agent.host = host
        agent.pid = pid
        agent.version = version
        agent.worker_name = worker_name
        agent.state = AgentState.IDLE
        agent.state_changed_at = now
        agent.last_heartbeat_at = now
        agent.unregistered_at = None
        agent.in_flight = 0
        agent.token_hash = hash_token(token)
        agent.save()
        if not created:
            # A new registration is a new incarnation (run_agent registers once per process): calls the
            # previous one was running will never be recorded by it, so they go back on the queue now
            # rather than at their deadline.
            requeue_running_on([agent.pk], now=now)
        found = _capabilities_for(specs)
        AgentCapability.objects.filter(agent=agent).delete()
        AgentCapability.objects.bulk_create(
            [AgentCapability(agent=agent, capability=found[s.name], cost=s.cost) for s in specs]
        )
        agent.tags.set(tags_named(tags))
        AgentEvent.objects.create(
            agent=agent,
            kind=AgentEventKind.REGISTERED if created else AgentEventKind.REREGISTERED,
            at=now,
            from_state=previous_state,
            to_state=AgentState.IDLE,
            details={"capabilities": sorted(s.name for s in specs), "host": host, "pid": pid, "version": version},
        )
        _announce_available(agent.pk)
    logger.info("event=agent_registered agent_id=%s created=%s capabilities=%d", agent_id, created, len(specs))
    return Registration(agent=agent, token=token, created=created)


def _lock_or_create_agent(agent_id: str, *, now: datetime, token_hash: str) -> tuple[Agent, bool]:
    """The locked row of ``agent_id``, created if missing. Two first registrations at once: one creates."""
    agent = Agent.objects.select_for_update(no_key=True).filter(agent_id=agent_id).first()
    if agent is not None:
        return agent, False
    try:
        with transaction.atomic():
            agent = Agent.objects.create(
                agent_id=agent_id,
                name=agent_id,
                registered_at=now,
                last_heartbeat_at=now,
                state_changed_at=now,
                token_hash=token_hash,
            )
        return agent, True
    except IntegrityError:  # a concurrent registration inserted it first; it has committed by now
        return Agent.objects.select_for_update(no_key=True).get(agent_id=agent_id), False


def _locked_registered_agent(agent_id: str) -> Agent:
    agent = Agent.objects.select_for_update(no_key=True).filter(agent_id=agent_id).first()
    if agent is None:
        raise NotFound(f"No agent '{agent_id}'.")
    if agent.unregistered_at is not None:
        raise Conflict(
            f"Agent '{agent_id}' is unregistered (since {agent.unregistered_at.isoformat()}); register it again."
        )
    return agent


def _record_state_change(agent: Agent, *, to_state: str, kind: str, now: datetime, details: dict[str, Any]) -> None:
    AgentEvent.objects.create(
        agent=agent, kind=kind, at=now, from_state=agent.state, to_state=to_state, details=details
    )
    agent.state = to_state
    agent.state_changed_at = now


def heartbeat(
    *,
    agent_id: str,
    cpu_load: float | None = None,
    health_score: float | None = None,
    in_flight: int | None = None,
    state: str | None = None,
) -> HeartbeatResult:
    """Record that ``agent_id`` is alive, with the load figures it reports.

    The common case (a live agent, no state given) is one conditional UPDATE.
    A heartbeat from an agent the sweep took offline revives it (event
    ``revived``). A ``state`` that the current state may not move to is a
    Conflict naming the current state.
    """
    _check_figures(cpu_load=cpu_load, health_score=health_score, in_flight=in_flight, state=state)
    now = timezone.now()
    interval = settings.MASP_HEARTBEAT_INTERVAL
    figures: dict[str, Any] = {"last_heartbeat_at": now}
    if cpu_load is not None:
        figures["cpu_load"] = cpu_load
    if health_score is not None:
        figures["health_score"] = health_score
    if in_flight is not None:
        figures["in_flight"] = in_flight
    if state is None:
        updated = (
            Agent.objects.filter(agent_id=agent_id, unregistered_at__isnull=True)
            .exclude(state=AgentState.OFFLINE)
            .update(**figures)
        )
        if updated:
            return HeartbeatResult(
                agent_id, _current_state(agent_id), False, now + timedelta(seconds=interval), interval
            )
    with transaction.atomic():
        agent = _locked_registered_agent(agent_id)
        was_offline = agent.state == AgentState.OFFLINE
        target = state or (AgentState.IDLE if was_offline else agent.state)
        if agent.state == AgentState.DRAINING and target in (AgentState.IDLE, AgentState.BUSY):
            target = AgentState.DRAINING  # only /resume/ ends draining; the runtime's idle/busy does not
        revived = was_offline and target != AgentState.OFFLINE
        if not agent.can_move_to(target):
            raise Conflict(_transition_refusal(agent, target))
        if revived:
            _record_state_change(
                agent,
                to_state=target,
                kind=AgentEventKind.REVIVED,
                now=now,
                details={"offline_since": agent.state_changed_at.isoformat()},
            )
        elif target != agent.state:
            logger.info(
                "event=agent_state_changed agent_id=%s from=%s state=%s via=heartbeat", agent_id, agent.state, target
            )
            _record_state_change(
                agent, to_state=target, kind=AgentEventKind.STATE_CHANGED, now=now, details={"via": "heartbeat"}
            )
        for field, value in figures.items():
            setattr(agent, field, value)
        agent.save(update_fields=[*figures, "state", "state_changed_at"])
        if revived:
            _announce_available(agent.pk)
    if revived:
        logger.info("event=agent_revived agent_id=%s state=%s", agent_id, target)
    return HeartbeatResult(agent_id, target, revived, now + timedelta(seconds=interval), interval)


def _current_state(agent_id: str) -> str:
    return Agent.objects.filter(agent_id=agent_id).values_list("state", flat=True).first() or ""


def _check_figures(
    *, cpu_load: float | None, health_score: float | None, in_flight: int | None, state: str | None
) -> None:
    errors: dict[str, list[str]] = {}
    for field, value in (("cpu_load", cpu_load), ("health_score", health_score)):
        if value is not None and not 0.0 <= value <= 1.0:
            errors[field] = [f"must be between 0 and 1, got {value}"]
    if in_flight is not None and in_flight < 0:
        errors["in_flight"] = [f"must be >= 0, got {in_flight}"]
    if state is not None and state not in AgentState.values:
        errors["state"] = [f"'{state}' is not a state; use one of {', '.join(AgentState.values)}"]
    if errors:
        raise InvalidInput(errors)


def _transition_refusal(agent: Agent, target: str) -> str:
    allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[agent.state]))
    return f"Agent '{agent.agent_id}' is {agent.state}; it cannot move to {target} (from {agent.state} it may move to: {allowed})."


def change_state(*, agent_id: str, state: str, reason: str = "", resume: bool = False) -> Agent:
    """Move ``agent_id`` to ``state``. Same state: no change. A move not allowed: Conflict (409).

    A draining agent leaves draining only for offline, or through ``fleet.resume``
    (``resume=True``), which also restarts its worker's consumers.
    """
    _check_figures(cpu_load=None, health_score=None, in_flight=None, state=state)
    now = timezone.now()
    with transaction.atomic():
        agent = _locked_registered_agent(agent_id)
        if agent.state == state:
            return agent
        if not agent.can_move_to(state):
            raise Conflict(_transition_refusal(agent, state))
        if agent.state == AgentState.DRAINING and state != AgentState.OFFLINE and not resume:
            raise Conflict(
                f"Agent '{agent_id}' is draining; POST /api/agents/{agent_id}/resume/ ends it "
                "(and makes its worker take calls again)."
            )
        _record_state_change(
            agent,
            to_state=state,
            kind=AgentEventKind.STATE_CHANGED,
            now=now,
            details={"reason": reason} if reason else {},
        )
        agent.save(update_fields=["state", "state_changed_at"])
        if state == AgentState.OFFLINE:
            _announce_offline([agent.pk])
        elif state in (AgentState.IDLE, AgentState.BUSY):
            _announce_available(agent.pk)
    logger.info("event=agent_state_changed agent_id=%s state=%s", agent_id, state)
    return agent


def unregister_agent(*, agent_id: str, reason: str = "") -> Agent:
    """Take ``agent_id`` out of discovery. Its row and history stay (until the purge sweep)."""
    now = timezone.now()
    with transaction.atomic():
        agent = _locked_registered_agent(agent_id)
        AgentEvent.objects.create(
            agent=agent,
            kind=AgentEventKind.UNREGISTERED,
            at=now,
            from_state=agent.state,
            to_state=AgentState.OFFLINE,
            details={"reason": reason} if reason else {},
        )
        agent.state = AgentState.OFFLINE
        agent.state_changed_at = now
        agent.unregistered_at = now
        agent.in_flight = 0
        agent.save(update_fields=["state", "state_changed_at", "unregistered_at", "in_flight"])
        _announce_offline([agent.pk])
    logger.info("event=agent_unregistered agent_id=%s", agent_id)
    return agent


def sweep_stale_agents(*, timeout: float | None = None, batch_size: int | None = None) -> int:
    """Mark every registered agent with no heartbeat for ``timeout`` seconds offline. Returns how many.

    Set-based, in batches of ``batch_size`` in primary-key order, each starting
    past the last agent of the one before: on PostgreSQL one statement per batch
    (a CTE: SELECT, UPDATE by ctid, INSERT of the events); elsewhere a SELECT of
    ids, one INSERT ... SELECT of events and one UPDATE. The running invocations
    of those agents are re-queued for other agents in the same transaction. The
    agents are announced (``agents_offline``) once, after the last batch. Safe to
    run twice at once: on PostgreSQL the UPDATE re-checks a row changed since the
    batch read it (see ``_sweep_batch_postgresql``), SQLite's write lock
    serialises the sweeps, so every agent gets one ``went_offline`` event. The
    batches commit without waiting for the disk unless they re-queued calls.
    """
    timeout = settings.MASP_STALE_TIMEOUT if timeout is None else timeout
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    now = timezone.now()
    cutoff = now - timedelta(seconds=timeout)
    details = json.dumps({"reason": "no heartbeat", "stale_timeout_seconds": timeout, "cutoff": cutoff.isoformat()})
    sweep_batch = _sweep_batch_postgresql if connection.vendor == "postgresql" else _sweep_batch_portable
    swept: list[int] = []
    after = 0  # the last primary key read: a sweep reads each agent once, not once per batch
    while True:
        with transaction.atomic():
            read, last, ids = sweep_batch(cutoff=cutoff, after=after, now=now, batch_size=batch_size, details=details)
            if ids and requeue_running_on(ids, now=now) and connection.vendor == "postgresql":
                # re-queued calls may have been given their final outcome (AgentLost): durable, as every outcome
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit = on")
        swept += ids
        if read < batch_size:
            break
        after = last
    # Announced once, after the last batch, not once per batch: the receivers (re-pinning the
    # scatter shares of these agents) then query once per sweep. Agents of a batch committed
    # before a crash are not announced; the workflows' beat sweep re-pins what was missed.
    _announce_offline(swept)
    if swept:
        logger.info("event=stale_sweep agents_offline=%d timeout=%s", len(swept), timeout)
    return len(swept)


def _sweep_batch_portable(
    *, cutoff: datetime, after: int, now: datetime, batch_size: int, details: str
) -> tuple[int, int, list[int]]:
    """(agents read, the last one's id, the ids taken offline, ascending)."""
    stale = Agent.objects.filter(unregistered_at__isnull=True, last_heartbeat_at__lt=cutoff, pk__gt=after).exclude(
        state=AgentState.OFFLINE
    )
    ids = list(
        stale.order_by("pk").select_for_update(skip_locked=True, no_key=True).values_list("pk", flat=True)[:batch_size]
    )
    if ids:
        _insert_offline_events(ids, now=now, details=details)
        Agent.objects.filter(pk__in=ids).update(state=AgentState.OFFLINE, state_changed_at=now, in_flight=0)
    return len(ids), ids[-1] if ids else after, ids


def _sweep_batch_postgresql(
    *, cutoff: datetime, after: int, now: datetime, batch_size: int, details: str
) -> tuple[int, int, list[int]]:
    """One round trip per batch: find, update and record in a single statement.

    Returns (agents read, the last one's id, the ids taken offline, ascending). The stale rows are
    read without a row lock (a lock writes a WAL record per row); the UPDATE finds them by their
    ``ctid`` (a TID scan: no index probe; joined to the CTE it was planned as a hash join over the
    whole table) and repeats the staleness test. A row that another transaction changed after this
    statement began (a heartbeat, a concurrent sweep) makes the UPDATE wait for that transaction,
    then re-evaluate its conditions on the row's newest version (READ COMMITTED's EvalPlanQual):
    an agent that beat or was already taken offline no longer matches and is left alone, with no
    event. The staleness test is in the UPDATE itself because PostgreSQL re-checks a TID
    condition on a newer version only since the minor releases of late 2025. So each agent gets
    exactly one event. Its ``from_state`` is the state this statement read, which differs from the
    replaced one only if another transaction changed the state (not the heartbeat) meanwhile.
    Rows are locked in ctid order, the same in two concurrent sweeps, which therefore wait for
    each other rather than deadlock. The UPDATE writes no indexed column (see agent_heartbeat_idx),
    so on a page with room (fillfactor 60, migration 0002) it is a HOT update, which adds no
    index entry.

    The batch commits with ``synchronous_commit = off`` (set for this transaction only; the caller
    sets it back on when the batch re-queued calls): a batch lost to a database crash leaves its
    agents stale, and the next sweep marks them again.
    """
    qn = connection.ops.quote_name
    agents, events = qn(Agent._meta.db_table), qn(AgentEvent._meta.db_table)
    sql = f"""
        WITH stale AS (
            SELECT ctid, id, state FROM {agents}
            WHERE unregistered_at IS NULL AND last_heartbeat_at < %s AND id > %s AND state <> %s
            ORDER BY id LIMIT %s
        ), moved AS (
            UPDATE {agents} SET state = %s, state_changed_at = %s, in_flight = 0
            WHERE ctid = ANY(ARRAY(SELECT ctid FROM stale))
                AND unregistered_at IS NULL AND last_heartbeat_at < %s AND state <> %s
            RETURNING id
        ), recorded AS (
            INSERT INTO {events} (agent_id, kind, at, from_state, to_state, details)
            SELECT id, %s, %s, stale.state, %s, %s::jsonb FROM stale JOIN moved USING (id)
        )
        SELECT (SELECT count(*) FROM stale), (SELECT max(id) FROM stale), (SELECT array_agg(id ORDER BY id) FROM moved)
    """
    offline = AgentState.OFFLINE.value
    params = [cutoff, after, offline, batch_size, offline, now, cutoff, offline]
    params += [AgentEventKind.WENT_OFFLINE.value, now, offline, details]
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL synchronous_commit = off; {sql}", params)
        cursor.nextset()
        read, last, ids = cursor.fetchone()
        return read, last or after, ids or []


def _insert_offline_events(ids: list[int], *, now: datetime, details: str) -> None:
    """One INSERT ... SELECT: a went_offline event per agent, carrying its state before."""
    events, agents = AgentEvent._meta.db_table, Agent._meta.db_table
    qn = connection.ops.quote_name
    json_param = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    placeholders = ", ".join(["%s"] * len(ids))
    sql = (
        f"INSERT INTO {qn(events)} ({qn('agent_id')}, {qn('kind')}, {qn('at')}, {qn('from_state')}, "
        f"{qn('to_state')}, {qn('details')}) "
        f"SELECT {qn('id')}, %s, %s, {qn('state')}, %s, {json_param} FROM {qn(agents)} "
        f"WHERE {qn('id')} IN ({placeholders})"
    )
    field = AgentEvent._meta.get_field("at")
    params = [
        AgentEventKind.WENT_OFFLINE.value,
        field.get_db_prep_value(now, connection),
        AgentState.OFFLINE.value,
        details,
        *ids,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def create_capability(
    *, name: str, description: str = "", input_schema: Any = None, output_schema: Any = None
) -> Capability:
    """Create a capability contract (staff). Conflict if the name is taken."""
    _check_contract(name, input_schema, output_schema)
    try:
        with transaction.atomic():
            return Capability.objects.create(
                name=name, description=description, input_schema=input_schema or {}, output_schema=output_schema or {}
            )
    except IntegrityError:
        raise Conflict(f"capability '{name}' already exists; change it with PUT /api/capabilities/{name}/.") from None


def update_capability(
    *, name: str, description: str | None = None, input_schema: Any = None, output_schema: Any = None
) -> Capability:
    """Change a capability's contract (staff). Every agent that offers it now offers the new one."""
    _check_contract(name, input_schema, output_schema)
    with transaction.atomic():
        capability = Capability.objects.select_for_update().filter(name=name).first()
        if capability is None:
            raise NotFound(f"No capability '{name}'.")
        changed = {}
        if description is not None:
            changed["description"] = description
        if input_schema is not None:
            changed["input_schema"] = input_schema
        if output_schema is not None:
            changed["output_schema"] = output_schema
        for field, value in changed.items():
            setattr(capability, field, value)
        capability.save()
    logger.info("event=capability_changed capability=%s fields=%s", name, ",".join(changed) or "-")
    return capability


def delete_capability(*, name: str) -> None:
    """Delete a capability that no registered agent offers; Conflict naming the offerers otherwise."""
    with transaction.atomic():
        capability = Capability.objects.select_for_update().filter(name=name).first()
        if capability is None:
            raise NotFound(f"No capability '{name}'.")
        offerers = list(
            capability.offers.filter(agent__unregistered_at__isnull=True).values_list("agent__agent_id", flat=True)[:5]
        )
        if offerers:
            raise Conflict(
                f"capability '{name}' is offered by registered agents ({', '.join(offerers)}); unregister them first."
            )
        try:
            capability.delete()
        except ProtectedError as exc:
            kinds = sorted({str(type(o)._meta.verbose_name_plural) for o in exc.protected_objects})
            raise Conflict(
                f"capability '{name}' is used by existing {' and '.join(kinds)}; it stays while they refer to it."
            ) from None


def _check_contract(name: str, input_schema: Any, output_schema: Any) -> None:
    errors = {}
    for which, schema in (("input_schema", input_schema), ("output_schema", output_schema)):
        if schema is not None:
            problem = schema_error(schema)
            if problem:
                errors[which] = [f"capability '{name}': {problem}"]
    if errors:
        raise InvalidInput(errors)
