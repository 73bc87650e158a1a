"""Invocations: create, dispatch, claim, record, retry, cancel, time out and re-queue.

The database is the truth; the broker only carries wake-ups to workers.
Delivery is at-least-once (acks_late, reject_on_worker_lost, and the
platform re-publishes from the database); the *recorded* outcome is
exactly-once because of the claim:

- ``claim`` moves a call ``queued -> running`` with a conditional UPDATE that
  also bumps ``attempt`` (the claim token). A duplicate or late message finds
  the call no longer queued and does nothing.
- ``record_success`` / ``record_failure`` write only where ``status='running'
  AND attempt=<the claimer's attempt>``; an attempt that was timed out or
  re-queued meanwhile records nothing.

Locks: ``record_failure``, ``cancel`` and the sweeps lock Invocation rows
(``select_for_update``); none of them also locks an Agent row, except that the
registry's stale sweep, holding its batch of Agent rows, re-queues their
running invocations (Agent rows first, then Invocation rows).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import random
import secrets
import traceback as tb
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.dispatch import Signal
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from agents import dispatch, sql
from agents.models import (
    Agent,
    AgentCapability,
    AgentState,
    Capability,
    Invocation,
    InvocationAttempt,
    InvocationStatus,
)
from agents.models.invocation import FINISHED
from masplatform import notify, prepared, rows
from masplatform.db.sqlite3 import base as sqlite_db
from masplatform.exceptions import Conflict, InvalidInput, NotFound, Unavailable

logger = logging.getLogger("agents")

# Sent when an invocation has finished (succeeded, failed, timed out or cancelled). Arguments:
# invocation_id, status, requested_by (who asked for the call: a receiver can skip calls that are
# not its own without a query). For calls whose requested_by starts with a prefix registered with
# ``record_in_transaction`` (the workflow engine's "workflow:"), it is sent inside the transaction
# that records the outcome, so that the receiver's writes commit with it or not at all. Other calls'
# successes may be recorded in a transaction of their own (one statement on PostgreSQL, two between
# BEGIN IMMEDIATE and COMMIT on SQLite): the signal then follows the commit.
invocation_finished = Signal()

_transactional_requesters: tuple[str, ...] = ()


def record_in_transaction(prefix: str) -> None:
    """Record the outcomes of calls whose ``requested_by`` starts with ``prefix`` in a transaction that
    the receivers of ``invocation_finished`` join (an app calls this from its ``AppConfig.ready``)."""
    global _transactional_requesters
    if prefix not in _transactional_requesters:
        _transactional_requesters = (*_transactional_requesters, prefix)


def _recorded_in_transaction(requested_by: str | None) -> bool:
    return requested_by is None or requested_by.startswith(_transactional_requesters)


Outcome = InvocationAttempt.Outcome
QUEUED, RUNNING = InvocationStatus.QUEUED, InvocationStatus.RUNNING


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    return validator_for(schema, default=Draft202012Validator)(schema)


def schema_validator(schema: Any) -> Any:
    """The compiled JSON Schema validator of ``schema``, cached per process by the schema's content."""
    return _validator(json.dumps(schema, sort_keys=True))


def schema_errors(schema: Any, instance: Any, limit: int = 5) -> list[str]:
    """'path: message' for each way ``instance`` fails ``schema`` (at most ``limit``).

    The compiled validator is cached per process, keyed by the schema's content
    (so a changed schema gets a new validator, never a stale one).
    """
    if schema == {} or schema is True:  # the empty schema accepts everything
        return []
    validator = schema_validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors[:limit]:
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        out.append(f"{path}: {error.message}")
    return out


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def invoke(
    *,
    capability: str,
    input: dict[str, Any],
    requested_by: str,
    priority: int = 5,
    timeout: float | None = None,
    max_retries: int = 0,
    agent: str | None = None,
    idempotency_key: str | None = None,
    invocation_id: uuid.UUID | None = None,
    waited_on: bool = False,
    durable: bool = True,
) -> tuple[Invocation, bool]:
    """Queue a call of ``capability``; returns (invocation, created).

    ``invocation_id``: the new call's id, chosen by the caller (a waiter subscribes to its channel
    before the call exists: ``notify.subscribed``); by default a new UUID. ``waited_on``: the caller
    will wait for the outcome on that channel, so recording it publishes a wake-up there (without it,
    only a later ``watch`` asks for one). ``durable=False`` (PostgreSQL, outside a transaction): the
    INSERT commits without waiting for the disk, and the caller must not report the call to anyone
    before it has finished or ``make_durable`` has returned (``invoke_and_wait`` does that).

    Validates ``input`` against the capability's input schema (InvalidInput,
    nothing created). With an ``idempotency_key``, the same requester sending
    the same body again gets the first invocation back (created=False); a
    different body under the same key is a Conflict. The message is published
    after the transaction commits.
    """
    # the common call (no pinned agent) is checked against this process's cached contract, and its
    # INSERT writes nothing if that contract is no longer the current one (then checked again, below)
    cap, version = _checked_capability(capability, input, cached=not agent)
    problems = _option_problems(priority, max_retries, timeout)
    if problems:
        raise InvalidInput(problems)
    timeout = settings.MASP_INVOCATION_TIMEOUT if timeout is None else float(timeout)
    pinned = None
    if agent:
        pinned = Agent.objects.filter(agent_id=agent, unregistered_at__isnull=True).first()
        if pinned is None:
            raise InvalidInput({"agent": [f"no registered agent '{agent}'"]})
        if not pinned.offers.filter(capability=cap).exists():
            raise InvalidInput({"agent": [f"agent '{agent}' does not offer '{capability}'"]})
    body = {
        "capability": capability,
        "input": input,
        "priority": priority,
        "timeout": timeout,
        "max_retries": max_retries,
        "agent": agent,
    }
    digest = request_hash(body)
    if idempotency_key:
        existing = _by_key(requested_by, idempotency_key, digest)
        if existing:
            return _on_disk(existing), False
    now = timezone.now()
    invocation = Invocation(
        id=invocation_id or uuid.uuid4(),
        capability=cap,
        input=input,
        priority=priority,
        timeout=timeout,
        max_retries=max_retries,
        pinned_agent=pinned,
        idempotency_key=idempotency_key or None,
        request_hash=digest,
        requested_by=requested_by,
        created_at=now,
        queued_at=now,
        dispatched_at=now,
        waited_on=waited_on or None,
    )
    # not waiting for the disk is for a transaction of invoke's own only: never the caller's
    durable = durable or not _autocommitting(transaction.get_connection())
    try:
        # One INSERT, its own transaction unless the caller has one. With an idempotency key it runs in a
        # savepoint, so that a twin's IntegrityError leaves the caller's transaction usable.
        with transaction.atomic() if idempotency_key else contextlib.nullcontext():
            while not _insert(invocation, capability_version=version, durable=durable):
                # the capability changed (or went) since it was checked: check against the current one
                _forget_capability(capability)
                invocation.capability, version = _checked_capability(capability, input, cached=False)
            # published when the INSERT commits: at once, or with the caller's transaction
            _dispatch_on_commit(invocation, invocation.capability.name, pinned.agent_id if pinned else None)
    except IntegrityError:
        if not idempotency_key:
            raise
        existing = _by_key(requested_by, idempotency_key, digest)  # a concurrent twin won the race
        if existing is None:
            raise
        return _on_disk(existing), False
    logger.info(
        "event=invocation_queued invocation=%s capability=%s priority=%d requested_by=%s",
        invocation.pk,
        capability,
        priority,
        requested_by,
    )
    return invocation, True


# The most calls one invoke_many() takes.
MAX_BATCH = 1000
_CALL_KEYS = frozenset({"capability", "input", "priority", "timeout", "max_retries", "agent"})


def invoke_many(calls: Iterable[Mapping[str, Any]], *, requested_by: str) -> list[Invocation]:
    """Queue many calls at once: all or none, in one transaction; returns them in the order given.

    Each call is a mapping with ``invoke``'s arguments ``capability``, ``input`` and optionally
    ``priority``, ``timeout``, ``max_retries`` and ``agent`` (no ``idempotency_key``: the batch is
    the unit a client retries). Every call is checked as ``invoke`` checks it; any problem is an
    InvalidInput naming the call's index, and nothing is created. The calls are inserted with one
    statement per batch and their messages published after the commit through one broker
    connection. Each call is then an ordinary invocation (claim, retries, cancel, ``?wait=``).
    """
    calls = list(calls)
    if not calls:
        return []
    if len(calls) > MAX_BATCH:
        raise InvalidInput({"calls": [f"at most {MAX_BATCH} calls at once, got {len(calls)}"]})
    names = {c.get("capability") for c in calls if isinstance(c, Mapping)}
    caps = {c.name: c for c in Capability.objects.filter(name__in=[n for n in names if isinstance(n, str)])}
    agent_ids = {c.get("agent") for c in calls if isinstance(c, Mapping) and c.get("agent")}
    agents = {
        a.agent_id: a
        for a in Agent.objects.filter(agent_id__in=[a for a in agent_ids if isinstance(a, str)], unregistered_at=None)
    }
    offered = set(
        AgentCapability.objects.filter(agent__in=agents.values(), capability__in=caps.values()).values_list(
            "agent_id", "capability_id"
        )
    )
    now = timezone.now()
    errors: list[str] = []
    rows: list[tuple[Invocation, str | None]] = []
    for index, call in enumerate(calls):
        problem = _check_call(call, caps, agents, offered)
        if problem:
            errors.append(f"call {index}: {problem}")
            continue
        cap, pinned = caps[call["capability"]], agents.get(call.get("agent") or "")
        priority, max_retries = call.get("priority", 5), call.get("max_retries", 0)
        timeout = call.get("timeout")
        timeout = settings.MASP_INVOCATION_TIMEOUT if timeout is None else float(timeout)
        body = {
            "capability": cap.name,
            "input": call["input"],
            "priority": priority,
            "timeout": timeout,
            "max_retries": max_retries,
            "agent": call.get("agent") or None,
        }
        invocation = Invocation(
            capability=cap,
            input=call["input"],
            priority=priority,
            timeout=timeout,
            max_retries=max_retries,
            pinned_agent=pinned,
            request_hash=request_hash(body),
            requested_by=requested_by,
            created_at=now,
            queued_at=now,
            dispatched_at=now,
        )
        rows.append((invocation, pinned.agent_id if pinned else None))
    if errors:
        raise InvalidInput({"calls": errors[:20]})
    invocations = [invocation for invocation, _ in rows]
    with transaction.atomic():
        Invocation.objects.bulk_create(invocations)
        messages = [_message(invocation, invocation.capability.name, pinned) for invocation, pinned in rows]
        transaction.on_commit(lambda: _publish_all(messages))
    for invocation in invocations:
        logger.debug("event=invocation_queued invocation=%s capability=%s", invocation.pk, invocation.capability.name)
    logger.info(
        "event=invocations_queued count=%d capabilities=%s requested_by=%s",
        len(invocations),
        ",".join(sorted({i.capability.name for i in invocations})),
        requested_by,
    )
    return invocations


def _option_problems(priority: Any, max_retries: Any, timeout: Any) -> dict[str, list[str]]:
    """What is wrong with a call's priority, max_retries and timeout (the INSERT sends them as given)."""
    problems = {}
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= dispatch.MAX_PRIORITY:
        problems["priority"] = [f"must be 0-9, got {priority!r}"]
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 32767:
        problems["max_retries"] = [f"must be 0-32767, got {max_retries!r}"]
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0.1):
        problems["timeout"] = [f"must be at least 0.1 seconds, got {timeout!r}"]
    return problems


def _check_call(
    call: Any, caps: dict[str, Capability], agents: dict[str, Agent], offered: set[tuple[int, int]]
) -> str | None:
    """What is wrong with one call of ``invoke_many`` (None: nothing)."""
    if not isinstance(call, Mapping):
        return "must be an object with 'capability' and 'input'"
    unknown = sorted(set(call) - _CALL_KEYS)
    if unknown:
        return f"unknown field(s) {', '.join(map(str, unknown))}"
    name = call.get("capability")
    cap = caps.get(name) if isinstance(name, str) else None
    if cap is None:
        return f"unknown capability '{name}'"
    if not isinstance(call.get("input"), dict):
        return "'input' must be an object"
    problems = schema_errors(cap.input_schema, call["input"])
    if problems:
        return f"input does not match the input schema of '{name}': {'; '.join(problems)}"
    problems = _option_problems(call.get("priority", 5), call.get("max_retries", 0), call.get("timeout"))
    if problems:
        return "; ".join(f"{field} {message[0]}" for field, message in problems.items())
    agent_id = call.get("agent")
    if agent_id:
        pinned = agents.get(agent_id) if isinstance(agent_id, str) else None
        if pinned is None:
            return f"no registered agent '{agent_id}'"
        if (pinned.pk, cap.pk) not in offered:
            return f"agent '{agent_id}' does not offer '{name}'"
    return None


def _by_key(requested_by: str, key: str, digest: str) -> Invocation | None:
    existing = Invocation.objects.filter(requested_by=requested_by, idempotency_key=key).first()
    if existing is not None and existing.request_hash != digest:
        raise Conflict(
            f"idempotency key '{key}' was used for invocation {existing.pk} with a different request; "
            "use a new key for a new request."
        )
    return existing


def _message(
    invocation: Invocation, capability: str, pinned_agent_id: str | None, countdown: float = 0
) -> tuple[tuple[str], dict[str, Any]]:
    """The args and publish options of ``invocation``'s message (its queue, priority and time limits).
    The Celery task id is the invocation's id and a suffix of its own (``<invocation id>.<8 hex>``):
    Celery's lines in a worker's log ("received", "succeeded in"), ``celery inspect active`` and task
    events name the call, and each message of it (a re-send, a retry) is still a task of its own to
    Celery (its worker state and ``revoke`` are by task id)."""
    queue_name = (
        dispatch.agent_queue_name(pinned_agent_id) if pinned_agent_id else dispatch.capability_queue_name(capability)
    )
    args = (str(invocation.pk),)
    options: dict[str, Any] = {
        "task_id": f"{invocation.pk}.{secrets.token_hex(4)}",
        # what the worker's log and ``celery inspect`` show of the arguments, given: Celery's own saferepr of
        # them was a tenth of a publish's CPU
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "queue": dispatch.queue(queue_name),
        "priority": dispatch.broker_priority(invocation.priority),
        "soft_time_limit": invocation.timeout,
        "time_limit": invocation.timeout + settings.MASP_HARD_TIMEOUT_GRACE,
        "declare": dispatch.publish_declares(),
    }
    if countdown > 0:
        options["countdown"] = countdown
    return args, options


def _dispatch_on_commit(
    invocation: Invocation, capability: str, pinned_agent_id: str | None, countdown: float = 0
) -> None:
    args, options = _message(invocation, capability, pinned_agent_id, countdown)

    def publish() -> None:
        from agents.tasks import run_invocation

        run_invocation.apply_async(args, **options)

    transaction.on_commit(publish)


def _publish_all(messages: list[tuple[tuple[str], dict[str, Any]]]) -> None:
    """Publish many messages through one producer (one broker connection). A message that is not
    published leaves its call queued in the database; ``redispatch_waiting`` sends it later."""
    from agents.tasks import run_invocation
    from masplatform.celery import app

    with app.producer_or_acquire() as producer:
        for args, options in messages:
            run_invocation.apply_async(args, producer=producer, **options)


def dispatch_again(invocation: Invocation, countdown: float = 0) -> None:
    """Publish a new message for a queued invocation (after this transaction commits)."""
    Invocation.objects.filter(pk=invocation.pk).update(dispatched_at=timezone.now())
    pinned = invocation.pinned_agent.agent_id if invocation.pinned_agent_id else None
    _dispatch_on_commit(invocation, invocation.capability.name, pinned, countdown)


@dataclass(frozen=True)
class Claim:
    invocation: Invocation
    attempt: int


def claim(invocation_id: str, *, agent: Agent, timeout: float | None = None) -> Claim | None:
    """Take a queued invocation for ``agent``: ``queued -> running``, bumping the attempt.

    Returns None, doing nothing, when the call is no longer queued (a
    duplicate or late message), was cancelled, is in its retry backoff, or is
    pinned to another agent.

    ``timeout`` is the call's timeout as the worker's message carries it (its
    soft time limit), a hint that saves a statement on SQLite; the deadline is
    always computed from the row's own timeout.

    The common case is one conditional ``UPDATE ... RETURNING`` (the
    compare-and-swap, with the cancel, pinned-agent and backoff checks in its
    WHERE) and the attempt's INSERT, in one transaction (one statement on
    PostgreSQL). When it matches nothing, the slower path below tells a
    duplicate from a message that arrived ahead of its backoff. The claimed
    invocation carries the columns the worker reads (``_CLAIMED_FIELDS``); the
    others are deferred, read from the database on first access.
    """
    if _fast_claim_supported():
        claimed = _claim_fast(invocation_id, agent, timeout)
        if claimed is not None:
            return claimed
    return _claim_slow(invocation_id, agent)


def _claim_slow(invocation_id: str, agent: Agent) -> Claim | None:
    now = timezone.now()
    invocation = (
        Invocation.objects.select_related("capability")
        .filter(pk=invocation_id, status=QUEUED, cancel_requested=False)
        .filter(Q(pinned_agent__isnull=True) | Q(pinned_agent=agent))
        .first()
    )
    if invocation is None:
        return None
    early = (invocation.not_before - now).total_seconds() if invocation.not_before else 0
    if early > EARLY_TOLERANCE:  # a message ahead of its backoff (clock skew, a duplicate): send it again for later
        with transaction.atomic():
            dispatch_again(invocation, countdown=early)
        return None
    previous = invocation.attempt
    claimed = {
        "status": RUNNING,
        "attempt": previous + 1,
        "agent": agent,
        "started_at": now,
        "deadline_at": now + timedelta(seconds=invocation.timeout + settings.MASP_HARD_TIMEOUT_GRACE),
        "not_before": None,
        "progress": None,
        "progress_message": "",
    }
    with transaction.atomic():
        # the compare-and-swap: only one claimer moves it from this attempt to the next
        if not Invocation.objects.filter(pk=invocation_id, status=QUEUED, attempt=previous).update(**claimed):
            return None
        InvocationAttempt.objects.create(invocation_id=invocation_id, number=previous + 1, agent=agent, started_at=now)
    for field, value in claimed.items():
        setattr(invocation, field, value)
    _log_claimed(invocation_id, previous + 1, agent)
    return Claim(invocation, previous + 1)


# A message may arrive this much ahead of the call's not_before (clock skew) and still be claimed.
EARLY_TOLERANCE = 0.5

# Every column of a call, in order, as invoke's INSERT writes them.
_CLAIM_FIELDS = tuple(Invocation._meta.concrete_fields)
# The columns the fast claim returns: what the worker reads of the call it runs. The others are deferred
# (read from the database if something asks for them): converting all 28 columns of each claimed row was
# 8 % of a pool process's CPU on SQLite.
_CLAIMED_FIELDS = tuple(
    Invocation._meta.get_field(name)
    for name in (
        "id", "capability", "input", "status", "priority", "timeout", "max_retries", "attempt", "agent",
        "requested_by", "started_at", "deadline_at",
    )
)  # fmt: skip
_ATTEMPT_OUTCOME = InvocationAttempt._meta.get_field("outcome")
_TIMEOUT, _DEADLINE, _ATTEMPT = (
    _CLAIMED_FIELDS.index(Invocation._meta.get_field(name)) for name in ("timeout", "deadline_at", "attempt")
)


def _autocommitting(connection: Any) -> bool:
    """Whether a statement on ``connection`` commits by itself (no caller's transaction is open): only
    then may it choose how its own commit waits for the disk."""
    return not connection.in_atomic_block and connection.get_autocommit()


def _fast_claim_supported() -> bool:
    """``UPDATE ... RETURNING``: PostgreSQL, and SQLite from 3.35 (as Django's INSERT ... RETURNING)."""
    connection = transaction.get_connection()
    return connection.vendor in ("postgresql", "sqlite") and connection.features.can_return_columns_from_insert


@functools.cache
def _claim_sql(vendor: str, own_transaction: bool) -> str:
    """The claim's statement for ``vendor``, built once. On PostgreSQL, the claim and its attempt's
    INSERT in one statement; ``own_transaction``: outside an atomic block, committed without waiting."""
    from django.db import connection

    qn = connection.ops.quote_name
    inv, att = qn(Invocation._meta.db_table), qn(InvocationAttempt._meta.db_table)
    cap_table = qn(Capability._meta.db_table)
    columns = rows.columns(Invocation, _CLAIMED_FIELDS, connection, inv)
    where = (
        f"{inv}.id = %s AND {inv}.status = %s AND NOT {inv}.cancel_requested"
        f" AND ({inv}.pinned_agent_id IS NULL OR {inv}.pinned_agent_id = %s)"
        f" AND ({inv}.not_before IS NULL OR {inv}.not_before <= %s)"
    )
    # the capability's updated_at comes back with the row: the per-process capability cache is keyed by it
    cap_version = f"(SELECT c.updated_at FROM {cap_table} c WHERE c.id = {inv}.capability_id)"
    if vendor != "postgresql":
        return (
            f"UPDATE {inv} SET status = %s, attempt = attempt + 1, agent_id = %s, started_at = %s,"
            f" deadline_at = %s, not_before = NULL, progress = NULL, progress_message = ''"
            f" WHERE {where} RETURNING {columns}, {cap_version}"
        )
    sql = (
        f"WITH claimed AS (UPDATE {inv} SET status = %s, attempt = {inv}.attempt + 1, agent_id = %s,"
        f" started_at = %s, deadline_at = %s + ({inv}.timeout + %s) * interval '1 second',"
        f" not_before = NULL, progress = NULL, progress_message = ''"
        f" WHERE {where} RETURNING {columns}, {cap_version}),"
        f" new_attempt AS (INSERT INTO {att} (invocation_id, number, agent_id, outcome, started_at,"
        f" error_type, error_message, error_traceback)"
        f" SELECT id, attempt, %s, {prepared.typed(_ATTEMPT_OUTCOME, connection)}, %s, '', '', '' FROM claimed)"
        f" SELECT claimed.* FROM claimed"
    )
    if own_transaction:
        # Committed without waiting for the disk (set inside the statement, so no extra round trip, and
        # until its commit only). Safe: after a database crash a lost claim leaves the call queued at its
        # previous attempt and its unacknowledged message runs it again (at-least-once, as when a worker
        # dies); a recorded outcome is always durable, and its commit flushes the claim's too.
        sql += " CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS commit_without_waiting"
    return sql


def _claim_fast(invocation_id: str, agent: Agent, timeout: float | None) -> Claim | None:
    connection = transaction.get_connection()
    ops = connection.ops
    now = timezone.now()
    grace = settings.MASP_HARD_TIMEOUT_GRACE
    pk = Invocation._meta.pk.get_db_prep_value(invocation_id, connection)
    at_now = ops.adapt_datetimefield_value(now)
    latest_start = ops.adapt_datetimefield_value(now + timedelta(seconds=EARLY_TOLERANCE))
    where_params = [pk, QUEUED, agent.pk, latest_start]
    if connection.vendor == "postgresql":
        # one statement (its own transaction outside an atomic block): the claim and the attempt's INSERT
        sql = _claim_sql(connection.vendor, _autocommitting(connection))
        params = [RUNNING, agent.pk, at_now, at_now, grace, *where_params, agent.pk, Outcome.RUNNING, at_now]
        with prepared.cursor(connection) as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
    else:
        assumed = settings.MASP_INVOCATION_TIMEOUT if timeout is None else timeout
        deadline = ops.adapt_datetimefield_value(now + timedelta(seconds=assumed + grace))
        sql = _claim_sql(connection.vendor, False)
        inv, att = ops.quote_name(Invocation._meta.db_table), ops.quote_name(InvocationAttempt._meta.db_table)
        with sqlite_db.write_transaction(connection) as cursor:
            cursor.execute(sql, [RUNNING, agent.pk, at_now, deadline, *where_params])
            found = cursor.fetchall()
            if not found:
                return None
            row = list(found[0])
            if row[_TIMEOUT] != assumed:  # the hint was wrong (or absent): the deadline from the row's timeout
                row[_DEADLINE] = ops.adapt_datetimefield_value(now + timedelta(seconds=row[_TIMEOUT] + grace))
                cursor.execute(f"UPDATE {inv} SET deadline_at = %s WHERE id = %s", [row[_DEADLINE], pk])
            cursor.execute(
                f"INSERT INTO {att} (invocation_id, number, agent_id, outcome, started_at,"
                f" error_type, error_message, error_traceback) VALUES (%s, %s, %s, %s, %s, '', '', '')",
                [
                    pk,
                    row[_ATTEMPT],
                    agent.pk,
                    Outcome.RUNNING,
                    at_now,
                ],
            )
    invocation = _invocation_from_row(connection, row[:-1])
    invocation.capability = _capability(invocation.capability_id, row[-1])
    invocation.agent = agent
    _log_claimed(invocation_id, invocation.attempt, agent)
    return Claim(invocation, invocation.attempt)


def _invocation_from_row(connection: Any, row: Any) -> Invocation:
    return rows.instance(Invocation, _CLAIMED_FIELDS, row, connection)


# Per process: capability id -> (its updated_at as the database returned it, the row). Capability
# contracts change rarely; every claim brings the current updated_at back, so a changed one is read again.
_capabilities: dict[int, tuple[Any, Capability]] = {}
# Per process: capability name -> id, for invoke (whose INSERT checks that the version it validated
# against is still the current one).
_capability_ids: dict[str, int] = {}


def _capability_named(name: str, *, cached: bool = False) -> tuple[Capability, Any] | None:
    """The capability called ``name`` and its version (``updated_at``). Read with one light statement
    (the row itself from the per-process cache when that version is cached); with ``cached``, taken from
    the cache without a statement when this process knows the name (the caller checks the version)."""
    if cached and name in _capability_ids:
        hit = _capabilities.get(_capability_ids[name])
        if hit is not None:
            return hit[1], hit[0]
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, updated_at FROM {connection.ops.quote_name(Capability._meta.db_table)} WHERE name = %s", [name]
        )
        row = cursor.fetchone()
    if row is None:
        return None
    if len(_capability_ids) > 1000:
        _capability_ids.clear()
    _capability_ids[name] = row[0]
    return _capability(row[0], row[1]), str(row[1])


def _checked_capability(name: str, input: Any, *, cached: bool) -> tuple[Capability, Any]:
    """The capability ``name`` and its version, ``input`` checked against its input schema (InvalidInput).
    With ``cached``, from this process's cache when it knows the name; a refusal is never based on the
    cache (the contract is read again first)."""
    known = _capability_named(name, cached=cached)
    problems = schema_errors(known[0].input_schema, input) if known is not None else []
    if known is not None and not problems:
        return known
    if cached:
        return _checked_capability(name, input, cached=False)
    if known is None:
        raise InvalidInput({"capability": [f"unknown capability '{name}'"]})
    raise InvalidInput({"input": [f"does not match the input schema of '{name}': {p}" for p in problems]})


def _forget_capability(name: str) -> None:
    _capabilities.pop(_capability_ids.pop(name, None), None)


def _on_disk(invocation: Invocation) -> Invocation:
    """``invocation``, an earlier request's call named again (its idempotency key), once it is on disk:
    that request may have inserted it without waiting for the disk (``invoke_and_wait``) and still be
    waiting. A finished call is: every outcome is committed durably."""
    if not invocation.is_finished:
        make_durable(invocation.pk)
    return invocation


def _insert(invocation: Invocation, *, capability_version: Any, durable: bool = True) -> bool:
    """INSERT ``invocation`` if its capability is still at ``capability_version``; False (nothing written)
    if it changed or was deleted. One plain statement, without building the ORM's query (the model has
    no save hooks, auto_now fields or database-side defaults). ``durable=False``: on PostgreSQL, its
    transaction commits without waiting for the disk (``invoke``'s ``durable``)."""
    connection = transaction.get_connection()
    params = rows.db_values(Invocation, _CLAIM_FIELDS, invocation, connection)
    params += [invocation.capability_id, capability_version]
    with prepared.cursor(connection) as cursor:
        cursor.execute(_insert_sql(connection.vendor, durable or connection.vendor != "postgresql"), params)
        if cursor.rowcount != 1:
            return False
    invocation._state.adding = False
    invocation._state.db = connection.alias
    return True


@functools.cache
def _insert_sql(vendor: str, durable: bool = True) -> str:
    from django.db import connection

    qn = connection.ops.quote_name
    cap = qn(Capability._meta.db_table)
    columns = ", ".join(qn(f.column) for f in _CLAIM_FIELDS)
    values = ", ".join(prepared.typed(f, connection) for f in _CLAIM_FIELDS)  # a SELECT list: typed
    source = cap
    if not durable:  # PostgreSQL: set inside the statement (no extra round trip), until its commit only
        source += " CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS commit_without_waiting"
    return (
        f"INSERT INTO {qn(Invocation._meta.db_table)} ({columns}) SELECT {values}"
        f" FROM {source} WHERE {cap}.id = %s AND {cap}.updated_at = %s"
    )


def _capability(capability_id: int, version: Any) -> Capability:
    # the version as text: SQLite returns updated_at as a datetime from a column and as text from an
    # expression (the claim's), and either compares equal to the stored value when sent back
    version = str(version)
    cached = _capabilities.get(capability_id)
    if cached is not None and cached[0] == version:
        return cached[1]
    capability = Capability.objects.get(pk=capability_id)
    if len(_capabilities) > 1000:
        _capabilities.clear()
    _capabilities[capability_id] = (version, capability)
    return capability


def _log_claimed(invocation_id: Any, attempt: int, agent: Agent) -> None:
    # DEBUG: the worker's log already has Celery's "received" line and the outcome's line of each call
    logger.debug(
        "event=invocation_claimed invocation=%s attempt=%d agent_id=%s", invocation_id, attempt, agent.agent_id
    )


def claim_of(invocation_id: str, *, agent: Agent) -> Claim | None:
    """The claim ``agent`` holds on a running invocation, if any (after a claim was interrupted)."""
    invocation = (
        Invocation.objects.select_related("capability").filter(pk=invocation_id, status=RUNNING, agent=agent).first()
    )
    return None if invocation is None else Claim(invocation, invocation.attempt)


def _finish_attempt(
    invocation_id: Any,
    attempt: int,
    outcome: str,
    now: datetime,
    *,
    error_type: str = "",
    error_message: str = "",
    error_traceback: str = "",
    started_at: datetime | None = None,
) -> float | None:
    started = started_at or (
        InvocationAttempt.objects.filter(invocation_id=invocation_id, number=attempt)
        .values_list("started_at", flat=True)
        .first()
    )
    duration_ms = (now - started).total_seconds() * 1000 if started else None
    InvocationAttempt.objects.filter(invocation_id=invocation_id, number=attempt).update(
        outcome=outcome,
        finished_at=now,
        duration_ms=duration_ms,
        error_type=error_type,
        error_message=error_message,
        error_traceback=error_traceback,
    )
    return duration_ms


def sync_agent_counters(agent_pk: int) -> None:
    """Copy the agent's call counters (``selectors.call_counters``: the sum of its ``AgentCallCounter``
    shards) into its ``Agent`` columns (shown by the admin and ``manage.py fleet``). The agent's worker
    does this with each heartbeat and when it stops; recording an outcome does not touch the agent's row."""
    from agents.selectors import call_counters

    counters = call_counters([agent_pk])[agent_pk]
    Agent.objects.filter(pk=agent_pk).update(
        calls_completed=counters.completed,
        calls_failed=counters.failed,
        avg_response_time_ms=counters.avg_response_time_ms,
    )


def _finished(
    invocation: Invocation | Any, status: str, requested_by: str | None = None, waited_on: bool | None = None
) -> None:
    """Announce a recorded outcome: ``invocation_finished`` now (inside the recording transaction when
    there is one, so that a workflow advances with it; after the commit of a success recorded in a
    transaction of its own), and, after the commit, the wake-up of the requests waiting for it, if a
    request asked for one (``waited_on``, read with the row that recorded the outcome)."""
    if isinstance(invocation, Invocation):
        pk, requested_by, waited_on = invocation.pk, invocation.requested_by, invocation.waited_on
    else:
        pk = invocation
    invocation_finished.send(sender=Invocation, invocation_id=pk, status=status, requested_by=requested_by)
    if waited_on:
        transaction.on_commit(lambda: notify.publish(f"invocation:{pk}", status))


def invoke_and_wait(seconds: float, *, requested_by: str, **call: Any) -> tuple[Invocation, bool]:
    """``invoke`` the call, then wait up to ``seconds`` for it to finish, as ``POST ?wait=`` does;
    returns what ``invoke`` returned (read the call again for its state). A call named by a repeated
    idempotency key is returned at once (``created`` False): the caller waits on it as on any other.

    Subscribed to the call's wake-up before the call exists, so nothing is asked before the wait. The
    INSERT commits without waiting for the disk (``durable=False``), because no answer can name the
    call before it is there: either the call finished, and the commit of its outcome waited for the
    write-ahead log up to itself, which holds the INSERT (the log is written in order); or the wait
    ended first, and ``make_durable`` waits for it. The round trip pays for one flush instead of two.
    (``invoke`` returns a repeated key's call once it is on disk.)
    """
    new_id = uuid.uuid4()
    with notify.subscribed(f"invocation:{new_id}") as waiter:
        invocation, created = invoke(
            requested_by=requested_by, invocation_id=new_id, waited_on=True, durable=False, **call
        )
        if created and not waiter.wait(
            seconds, lambda: Invocation.objects.filter(pk=new_id, status__in=FINISHED).exists()
        ):
            make_durable(invocation.pk)  # unfinished: on disk before it is named
    return invocation, created


def make_durable(invocation_id: Any) -> None:
    """Return once the call's row is on disk, even if its INSERT committed without waiting
    (``invoke(durable=False)``). On PostgreSQL one write of the row, committed as usual: the commit
    waits for the write-ahead log up to itself, and so for everything committed before it. Nothing to
    do elsewhere, nor inside a transaction (its commit is the caller's)."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql" or not _autocommitting(connection):
        return
    if not Invocation.objects.filter(pk=invocation_id).update(waited_on=F("waited_on")):
        # inserted, never on disk, and gone: the database restarted in between (its agent may have run it)
        raise Unavailable(f"invocation '{invocation_id}' was lost by the database (did it restart?); send it again")


def watch(invocation_id: Any) -> bool:
    """Ask for a wake-up (``notify``'s channel ``invocation:<id>``) when the call finishes; False if it
    already has (or does not exist). Subscribe to the channel first: the outcome recorded after this
    returns True is announced there. Outcomes are recorded with a conditional write of the same row, so
    either that write sees this one, or this one sees the call finished."""
    return bool(Invocation.objects.filter(pk=invocation_id, status__in=(QUEUED, RUNNING)).update(waited_on=True))


def record_success(
    invocation_id: Any,
    *,
    attempt: int,
    output: Any,
    started_at: datetime | None = None,
    requested_by: str | None = None,
    agent_pk: int | None = None,
) -> bool:
    """Record the output of ``attempt``; False (nothing written) if that attempt no longer holds the call.

    The output must already be valid against the output schema (``check_output``).
    A call whose cancel was requested while it ran is recorded ``cancelled``.
    In the common case a conditional UPDATE of the call and the UPDATE of its
    attempt, in a transaction of their own when the caller has none and the
    call's requester (``requested_by``, as the worker knows it from its claim)
    needs none (``record_in_transaction``): on PostgreSQL one statement, on
    SQLite two between ``BEGIN IMMEDIATE`` and ``COMMIT`` (``write_transaction``).
    ``started_at`` (also known from the claim) saves reading it back. The
    agent's counters (a shard of ``AgentCallCounter``) are added to in the same
    statement or transaction. ``agent_pk`` is accepted for compatibility and unused.
    """
    now = timezone.now()
    connection = transaction.get_connection()
    if (
        started_at is not None
        and not connection.in_atomic_block
        and _fast_claim_supported()
        and not _recorded_in_transaction(requested_by)
    ):
        duration = (now - started_at).total_seconds() * 1000
        recorded = _record_success_rows(invocation_id, attempt, output, now, duration)
        if recorded is not None:
            # committed: the signal follows
            _finished(invocation_id, InvocationStatus.SUCCEEDED, requested_by, waited_on=recorded[1])
            _log_succeeded(invocation_id, attempt, duration)
            return True
        # nothing written: not this attempt's any more, or its cancel was requested (below, under a lock)
    with transaction.atomic():
        if started_at is None:
            started_at = (
                InvocationAttempt.objects.filter(invocation_id=invocation_id, number=attempt)
                .values_list("started_at", flat=True)
                .first()
            )
        duration = (now - started_at).total_seconds() * 1000 if started_at else None
        recorded = _record_success_rows(invocation_id, attempt, output, now, duration)
        if recorded is None:
            invocation = (
                Invocation.objects.select_for_update().filter(pk=invocation_id, status=RUNNING, attempt=attempt).first()
            )
            if invocation is None:
                return False  # this attempt no longer holds the call
            return _cancel_running(invocation, now)  # its cancel was requested while it ran
        _finished(invocation_id, InvocationStatus.SUCCEEDED, recorded[0], waited_on=recorded[1])
    _log_succeeded(invocation_id, attempt, duration)
    return True


def _log_succeeded(invocation_id: Any, attempt: int, duration: float | None) -> None:
    # DEBUG: in the worker's log Celery's "succeeded in" line already names the call (its task id starts
    # with the invocation's id) with its run time; failures, retries and time-outs are logged at INFO and up
    logger.debug(
        "event=invocation_succeeded invocation=%s attempt=%d duration_ms=%.1f", invocation_id, attempt, duration or 0
    )


def _record_success_rows(
    invocation_id: Any, attempt: int, output: Any, now: datetime, duration: float | None
) -> tuple[str, Any] | None:
    """The call ``running`` with this attempt and no cancel -> ``succeeded``, and its attempt closed.
    Returns who requested the call and whether a request waits for it (``waited_on``), or None if the
    call did not match (nothing written). In the caller's transaction; without one, one statement on
    PostgreSQL, a transaction of its own on SQLite."""
    connection = transaction.get_connection()
    ops, qn = connection.ops, connection.ops.quote_name
    inv, att = qn(Invocation._meta.db_table), qn(InvocationAttempt._meta.db_table)
    pk = Invocation._meta.pk.get_db_prep_value(invocation_id, connection)
    at_now = ops.adapt_datetimefield_value(now)
    output_value = Invocation._meta.get_field("output").get_db_prep_save(output, connection)
    # earlier attempts' errors stay on their attempts; the call itself no longer has one
    update_call = (
        f"UPDATE {inv} SET status = %s, output = %s, finished_at = %s, progress = 1.0,"
        f" error_type = '', error_message = '', error_traceback = ''"
        f" WHERE id = %s AND status = %s AND attempt = %s AND NOT cancel_requested"
    )
    call_params = [InvocationStatus.SUCCEEDED, output_value, at_now, pk, RUNNING, attempt]
    set_attempt = (
        "outcome = %s, finished_at = %s, duration_ms = %s, error_type = '', error_message = '', error_traceback = ''"
    )
    attempt_params = [Outcome.SUCCEEDED, at_now, duration]
    figures = sql.outcome_figures(completed=True, duration_ms=duration)
    # SQLite: the two statements in a transaction of their own when the caller has none
    statements = (
        sqlite_db.write_transaction(connection) if connection.vendor == "sqlite" else prepared.cursor(connection)
    )
    with statements as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                # the attempt by both columns of its unique key, given (a join with ``recorded`` let the
                # planner scan the key's index for number = N alone: one row per earlier call, per call);
                # the agent's counters in the same statement
                f"WITH recorded AS ({update_call} RETURNING requested_by, waited_on, agent_id),"
                f" closed AS (UPDATE {att} SET {set_attempt} WHERE invocation_id = %s AND number = %s"
                f" AND EXISTS (SELECT FROM recorded)),"
                f" counted AS ({sql.count_outcome_sql(connection, from_cte='recorded')})"
                f" SELECT requested_by, waited_on FROM recorded",
                [*call_params, *attempt_params, pk, attempt, sql.counter_shard(), *figures],
            )
            row = cursor.fetchone()
            return None if row is None else (row[0], row[1])
        if _fast_claim_supported():  # UPDATE ... RETURNING (SQLite 3.35+)
            cursor.execute(f"{update_call} RETURNING requested_by, waited_on, agent_id", call_params)
            row = cursor.fetchone()
        else:
            cursor.execute(update_call, call_params)
            row = None
            if cursor.rowcount == 1:
                cursor.execute(f"SELECT requested_by, waited_on, agent_id FROM {inv} WHERE id = %s", [pk])
                row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute(
            f"UPDATE {att} SET {set_attempt} WHERE invocation_id = %s AND number = %s", [*attempt_params, pk, attempt]
        )
        sql.count_outcome(row[2], completed=True, duration_ms=duration, cursor=cursor, connection=connection)
        return row[0], row[1]


def check_output(capability: Capability, output: Any) -> list[str]:
    return schema_errors(capability.output_schema, output)


def backoff_seconds(failures: int) -> float:
    """Exponential backoff with equal jitter: half of base * 2^(n-1) (capped), plus up to that half again."""
    ceiling = min(settings.MASP_RETRY_BACKOFF_MAX, settings.MASP_RETRY_BACKOFF * 2 ** max(0, failures - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def record_failure(
    invocation_id: Any,
    *,
    attempt: int,
    error_type: str,
    error_message: str,
    error_traceback: str = "",
    timed_out: bool = False,
) -> bool:
    """Record that ``attempt`` failed (or timed out); retry with backoff while retries remain.

    False (nothing written) if that attempt no longer holds the call.
    """
    now = timezone.now()
    with transaction.atomic():
        invocation = (
            Invocation.objects.select_for_update(of=("self",))
            .select_related("capability", "pinned_agent")
            .filter(pk=invocation_id, status=RUNNING, attempt=attempt)
            .first()
        )
        if invocation is None:
            return False
        if invocation.cancel_requested:
            return _cancel_running(invocation, now)
        _fail_attempt(
            invocation,
            now,
            error_type=error_type,
            error_message=error_message,
            error_traceback=error_traceback,
            timed_out=timed_out,
        )
    return True


def _fail_attempt(
    invocation: Invocation, now: datetime, *, error_type: str, error_message: str, error_traceback: str, timed_out: bool
) -> None:
    """With the invocation row locked: close the attempt, then re-queue with backoff or finish it."""
    outcome = Outcome.TIMED_OUT if timed_out else Outcome.FAILED
    _finish_attempt(
        invocation.pk,
        invocation.attempt,
        outcome,
        now,
        error_type=error_type,
        error_message=error_message,
        error_traceback=error_traceback,
    )
    sql.count_outcome(invocation.agent_id, completed=False, duration_ms=None)
    invocation.failed_attempts += 1
    invocation.error_type, invocation.error_message = error_type, error_message
    invocation.error_traceback = error_traceback
    fields = ["failed_attempts", "error_type", "error_message", "error_traceback", "status"]
    if invocation.failed_attempts <= invocation.max_retries:
        delay = backoff_seconds(invocation.failed_attempts)
        invocation.status = QUEUED
        invocation.agent = None
        invocation.queued_at = now
        invocation.not_before = now + timedelta(seconds=delay)
        invocation.save(update_fields=[*fields, "agent", "queued_at", "not_before"])
        dispatch_again(invocation, countdown=delay)
        logger.info(
            "event=invocation_retry invocation=%s failures=%d backoff=%.2f error=%s",
            invocation.pk,
            invocation.failed_attempts,
            delay,
            error_type,
        )
        return
    invocation.status = InvocationStatus.TIMED_OUT if timed_out else InvocationStatus.FAILED
    invocation.finished_at = now
    invocation.save(update_fields=[*fields, "finished_at"])
    _finished(invocation, invocation.status)
    logger.info(
        "event=invocation_%s invocation=%s attempts=%d error=%s",
        invocation.status,
        invocation.pk,
        invocation.attempt,
        error_type,
    )


def _cancel_running(invocation: Invocation, now: datetime) -> bool:
    invocation.status = InvocationStatus.CANCELLED
    invocation.finished_at = now
    invocation.save(update_fields=["status", "finished_at"])
    _finish_attempt(invocation.pk, invocation.attempt, Outcome.CANCELLED, now)
    _finished(invocation, invocation.status)
    logger.info("event=invocation_cancelled invocation=%s while=running", invocation.pk)
    return True


def failure_from_exception(exc: BaseException) -> dict[str, str]:
    return {
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:5000],
        "error_traceback": "".join(tb.format_exception(exc))[-20000:],
    }


def cancel(invocation_id: Any) -> Invocation:
    """Cancel a call: a queued one at once (it will never run), a running one when its function
    stops (it sees ``context.cancelled``). A finished one is a Conflict naming its status."""
    now = timezone.now()
    with transaction.atomic():
        invocation = Invocation.objects.select_for_update().filter(pk=invocation_id).first()
        if invocation is None:
            raise NotFound(f"No invocation '{invocation_id}'.")
        if invocation.status in FINISHED:
            raise Conflict(f"Invocation {invocation.pk} is already {invocation.status}; it cannot be cancelled.")
        invocation.cancel_requested = True
        fields = ["cancel_requested"]
        if invocation.status == QUEUED:
            invocation.status = InvocationStatus.CANCELLED
            invocation.finished_at = now
            fields += ["status", "finished_at"]
        invocation.save(update_fields=fields)
        if "status" in fields:  # it never ran: finished now
            _finished(invocation, invocation.status)
    logger.info("event=invocation_cancel_requested invocation=%s status=%s", invocation_id, invocation.status)
    return invocation


def retry(invocation_id: Any) -> Invocation:
    """Run a finished, unsuccessful call again (a new attempt, same id). Conflict unless failed,
    timed out or cancelled."""
    now = timezone.now()
    with transaction.atomic():
        invocation = (
            Invocation.objects.select_for_update(of=("self",))
            .select_related("capability", "pinned_agent")
            .filter(pk=invocation_id)
            .first()
        )
        if invocation is None:
            raise NotFound(f"No invocation '{invocation_id}'.")
        if invocation.status not in (InvocationStatus.FAILED, InvocationStatus.TIMED_OUT, InvocationStatus.CANCELLED):
            raise Conflict(
                f"Invocation {invocation.pk} is {invocation.status}; only a failed, timed out or "
                "cancelled invocation can be retried."
            )
        invocation.status = QUEUED
        invocation.cancel_requested = False
        invocation.finished_at = None
        invocation.agent = None
        invocation.queued_at = now
        invocation.not_before = None
        invocation.failed_attempts = 0
        invocation.save(
            update_fields=[
                "status",
                "cancel_requested",
                "finished_at",
                "agent",
                "queued_at",
                "not_before",
                "failed_attempts",
            ]
        )
        dispatch_again(invocation)
    logger.info("event=invocation_retried invocation=%s", invocation_id)
    return invocation


def report_progress(invocation_id: Any, *, attempt: int, fraction: float | None, message: str = "") -> bool:
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise InvalidInput({"progress": [f"must be between 0 and 1, got {fraction}"]})
    return bool(
        Invocation.objects.filter(pk=invocation_id, status=RUNNING, attempt=attempt).update(
            progress=fraction, progress_message=message[:500]
        )
    )


def cancel_requested(invocation_id: Any, *, attempt: int) -> bool:
    """True when the call was cancelled, or this attempt no longer holds it."""
    return not Invocation.objects.filter(
        pk=invocation_id, status=RUNNING, attempt=attempt, cancel_requested=False
    ).exists()


def sweep_deadlines(*, batch_size: int | None = None) -> int:
    """Time out running calls past their deadline (their worker hung or vanished): retry or finish them."""
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    now = timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            batch = list(
                Invocation.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("capability", "pinned_agent")
                .filter(status=RUNNING, deadline_at__lt=now)
                .order_by("deadline_at")[:batch_size]
            )
            for invocation in batch:
                if invocation.cancel_requested:
                    _cancel_running(invocation, now)
                    continue
                _fail_attempt(
                    invocation,
                    now,
                    error_type="TimeoutError",
                    error_message=f"no outcome within {invocation.timeout:g}s (+ grace); the worker "
                    "hung, was killed or vanished",
                    error_traceback="",
                    timed_out=True,
                )
        total += len(batch)
        if len(batch) < batch_size:
            break
    if total:
        logger.info("event=deadline_sweep timed_out=%d", total)
    return total


def redispatch_waiting(*, older_than: float | None = None, batch_size: int | None = None) -> int:
    """Publish again the queued calls whose message was published more than ``older_than`` seconds ago.

    A message can be lost outside the platform's reach (a publish that failed
    after the commit, a broker that lost its data, a delayed retry held by a
    worker that was killed). The database still says ``queued``, so the call
    is sent again; if the first message does arrive after all, the claim makes
    the second a no-op. A call that simply waits behind busy agents gets one
    extra message per period, which its claim also absorbs.
    """
    older_than = settings.MASP_REDISPATCH_AFTER if older_than is None else older_than
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than)
    with transaction.atomic():
        batch = list(
            Invocation.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("capability", "pinned_agent")
            .filter(status=QUEUED, dispatched_at__lt=cutoff)
            .filter(Q(not_before__isnull=True) | Q(not_before__lt=cutoff))
            .order_by("dispatched_at")[:batch_size]
        )
        for invocation in batch:
            dispatch_again(invocation)
    if batch:
        logger.info("event=invocations_redispatched count=%d older_than=%s", len(batch), older_than)
    return len(batch)


def requeue_running_on(agent_ids: list[int], *, now: datetime) -> int:
    """Put the running calls of agents that went offline back on the queue, for another agent.

    Called inside the stale sweep's transaction, which holds those Agent rows.
    The lost attempt is recorded as ``lost`` and does not count against max_retries; after
    MASP_MAX_LOST_ATTEMPTS lost attempts the call fails (``AgentLost``) instead of taking more agents down.
    """
    running = Invocation.objects.filter(status=RUNNING)
    if not running.exists():  # the common case, answered by the partial index of running calls
        return 0
    batch = list(
        running.select_for_update(of=("self",))
        .select_related("capability", "pinned_agent")
        .filter(agent_id__in=agent_ids)
    )
    for invocation in batch:
        _finish_attempt(
            invocation.pk,
            invocation.attempt,
            Outcome.LOST,
            now,
            error_message="the agent went offline (no heartbeat); re-queued",
        )
        lost = InvocationAttempt.objects.filter(invocation=invocation, outcome=Outcome.LOST).count()
        if lost >= settings.MASP_MAX_LOST_ATTEMPTS:  # it takes its agents down with it: stop passing it on
            invocation.status = InvocationStatus.FAILED
            invocation.finished_at = now
            invocation.error_type = "AgentLost"
            invocation.error_message = f"its agent went offline while running it {lost} times; not re-queued again"
            invocation.save(update_fields=["status", "finished_at", "error_type", "error_message"])
            _finished(invocation, invocation.status)
            continue
        if invocation.cancel_requested:
            invocation.status = InvocationStatus.CANCELLED
            invocation.finished_at = now
            invocation.save(update_fields=["status", "finished_at"])
            _finished(invocation, invocation.status)
            continue
        invocation.status = QUEUED
        invocation.agent = None
        invocation.queued_at = now
        invocation.save(update_fields=["status", "agent", "queued_at"])
        dispatch_again(invocation)
    if batch:
        logger.info("event=invocations_requeued count=%d agents=%d", len(batch), len(agent_ids))
    return len(batch)


def waiting_reason(invocation: Invocation) -> str | None:
    """Why a queued invocation waits, in an operator's words (None unless queued)."""
    if invocation.status != QUEUED:
        return None
    now = timezone.now()
    if invocation.not_before and invocation.not_before > now:
        seconds = (invocation.not_before - now).total_seconds()
        return f"retry {invocation.failed_attempts} of {invocation.max_retries} starts in {seconds:.1f} s (backoff)"
    if invocation.pinned_agent_id:
        pinned = invocation.pinned_agent
        if pinned.unregistered_at or pinned.state == AgentState.OFFLINE:
            return f"the pinned agent '{pinned.agent_id}' is offline"
        if pinned.state == AgentState.DRAINING:
            return f"the pinned agent '{pinned.agent_id}' is draining (taking no new calls)"
        return f"waiting for the pinned agent '{pinned.agent_id}' to take it"
    live = Agent.objects.filter(offers__capability_id=invocation.capability_id, unregistered_at__isnull=True).exclude(
        state=AgentState.OFFLINE
    )
    n_live = live.count()
    if n_live == 0:
        return f"no live agent offers '{invocation.capability.name}'"
    taking = live.exclude(state=AgentState.DRAINING)
    if not taking.exists():
        return f"all {n_live} agents that offer '{invocation.capability.name}' are draining"
    taking = taking.exclude(worker_name="")
    if not taking.exists():
        return (
            f"the {n_live} live agent(s) that offer '{invocation.capability.name}' run no worker "
            "(registered over the API, not with run_agent)"
        )
    ahead = (
        Invocation.objects.filter(capability_id=invocation.capability_id, status=QUEUED)
        .filter(
            Q(priority__gt=invocation.priority) | Q(priority=invocation.priority, queued_at__lt=invocation.queued_at)
        )
        .count()
    )
    free = taking.filter(in_flight__lt=F("max_concurrency")).count()
    if free == 0:
        return (
            f"all {taking.count()} agents that offer '{invocation.capability.name}' are busy "
            f"and {ahead} call(s) are ahead of it"
        )
    return f"{ahead} call(s) ahead of it; {free} agent(s) with free capacity should take it shortly"
