"""The agent runtime inside a Celery worker: which agent this process is, running one invocation,
and the heartbeat thread. ``manage.py run_agent`` sets it up; the Celery task calls ``execute``."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from agents.models import Agent, AgentState, Invocation, InvocationStatus
from agents.sdk import AgentDefinition, CallContext, Cancelled
from masplatform import sqlite

logger = logging.getLogger("agents.runtime")


class CallLogger(logging.LoggerAdapter):
    """Prefixes each line with the ids that let an operator follow one invocation."""

    def process(self, msg, kwargs):
        extra = self.extra
        return f"invocation={extra['invocation']} attempt={extra['attempt']} agent_id={extra['agent_id']} {msg}", kwargs


@dataclass
class Runtime:
    definition: AgentDefinition
    agent_pk: int
    worker_name: str
    concurrency: int
    # when this process set up its agent: what the agent had taken before then was a previous run's
    started_at: datetime = field(default_factory=timezone.now)

    @functools.cached_property
    def agent(self) -> Agent:
        """This process's agent, as the claim needs it (its key and id), built once."""
        return Agent(pk=self.agent_pk, agent_id=self.definition.agent_id)


_current: Runtime | None = None


def configure(definition: AgentDefinition, agent: Agent, *, worker_name: str, concurrency: int) -> Runtime:
    global _current
    _current = Runtime(definition, agent.pk, worker_name, concurrency)
    return _current


def current() -> Runtime | None:
    return _current


# Check the database connection (health, CONN_MAX_AGE) before a call only when it has been idle this
# long, or has seen an error, or is past its age: under load a SELECT 1 per call costs a round trip.
IDLE_CHECK_AFTER = 1.0
_last_call_at = 0.0


def check_connection() -> None:
    """Before a task of this agent: drop the thread's database connection if it is broken, past its age,
    or has been idle (then Django opens a new one)."""
    idle = time.monotonic() - _last_call_at > IDLE_CHECK_AFTER
    expired = connection.close_at is not None and time.monotonic() >= connection.close_at
    if idle or expired or connection.errors_occurred:
        close_old_connections()  # drops a broken connection or one past MASP_DB_CONN_MAX_AGE


def note_activity() -> None:
    """A task of this agent (a call or a message) just used the connection: it is not idle."""
    global _last_call_at
    _last_call_at = time.monotonic()


def execute(invocation_id: str, *, timeout: float | None = None) -> str:
    """Claim and run one invocation on this process's agent; returns what happened (for the log).

    ``timeout``: the call's timeout as its message carries it (a hint for the claim).
    """
    global _last_call_at
    from agents import services

    runtime = _current
    if runtime is None:
        logger.error(
            "event=invocation_without_agent invocation=%s: this worker was not started by run_agent", invocation_id
        )
        return "no agent"
    check_connection()
    agent = runtime.agent
    try:
        try:
            claimed = services.claim(invocation_id, agent=agent, timeout=timeout)
        except DatabaseError:
            if connection.in_atomic_block:
                raise
            # a connection that broke while busy (not checked before this call): check it and try once more;
            # if the claim committed before the error, this agent already holds the call
            close_old_connections()
            claimed = services.claim_of(invocation_id, agent=agent) or services.claim(
                invocation_id, agent=agent, timeout=timeout
            )
    except SoftTimeLimitExceeded:
        # The time limit counts from the task's start, so a very short timeout can expire
        # while the claim itself runs (a cold connection on a loaded host). Record it if the
        # claim committed; if it did not, the call is still queued and will be sent again.
        drop_interrupted_connection()
        claimed = services.claim_of(invocation_id, agent=agent)
        if claimed is None:
            return "not claimed"
        _timed_out(claimed.invocation, claimed.attempt)
        return "timed out"
    finally:
        _last_call_at = time.monotonic()
    if claimed is None:
        return "not claimed"
    try:
        return _run(runtime, agent, claimed.invocation, claimed.attempt)
    except SoftTimeLimitExceeded:
        # raised outside the function (checking or recording its output): the recording
        # transaction rolled back, so the attempt still holds the call
        _timed_out(claimed.invocation, claimed.attempt)
        return "timed out"
    finally:
        _last_call_at = time.monotonic()


def drop_interrupted_connection() -> bool:
    """Close this thread's database connection if a time-limit exception left it inside a statement.

    The soft time limit is a signal, and psycopg checks for signals while it waits on the server: the
    exception can leave the connection with a query sent and its result unread, where every later
    statement fails ("can't change 'autocommit' now"). The statement is cancelled on the server and the
    connection closed; the next statement opens a new one.
    On SQLite, which runs a statement to its end before Python sees the signal, the signal can land
    between a ``BEGIN`` and the block that commits or rolls it back (``write_transaction``'s, or
    ``atomic()``'s own): the transaction stays open, holding the write lock, while Django believes the
    connection is in autocommit. Such a connection is closed too (SQLite rolls the transaction back).
    Returns whether it closed it."""
    raw = connection.connection
    if raw is None or connection.in_atomic_block:
        return False
    if connection.vendor == "sqlite":
        if not raw.in_transaction:
            return False
        logger.warning("event=connection_dropped reason=interrupted_transaction")
        connection.close()
        return True
    if connection.vendor != "postgresql":
        return False
    from psycopg.pq import TransactionStatus

    if raw.info.transaction_status == TransactionStatus.IDLE:
        return False
    logger.warning("event=connection_dropped reason=interrupted_statement status=%s", raw.info.transaction_status.name)
    try:  # closing alone leaves the statement running on the server (an interrupted claim could still commit)
        raw.cancel_safe(timeout=2)
    except Exception:
        pass
    connection.close()
    return True


def _timed_out(invocation: Invocation, attempt: int) -> None:
    from agents import services

    drop_interrupted_connection()
    services.record_failure(
        invocation.pk,
        attempt=attempt,
        error_type="SoftTimeLimitExceeded",
        error_message=f"still running after the {invocation.timeout:g}s time limit",
        timed_out=True,
    )


def _run(runtime: Runtime, agent: Agent, invocation: Invocation, attempt: int) -> str:
    from agents import services

    capability = runtime.definition.capabilities.get(invocation.capability.name)
    if capability is None:
        services.record_failure(
            invocation.pk,
            attempt=attempt,
            error_type="UnknownCapability",
            error_message=f"agent '{agent.agent_id}' has no function for '{invocation.capability.name}'",
        )
        return "failed"
    call_log = CallLogger(
        logging.getLogger(f"agents.calls.{capability.name}"),
        {"invocation": str(invocation.pk), "attempt": attempt, "agent_id": agent.agent_id},
    )
    ctx = CallContext(
        invocation_id=str(invocation.pk),
        attempt=attempt,
        deadline=invocation.started_at + timedelta(seconds=invocation.timeout),
        agent_id=agent.agent_id,
        capability=capability.name,
        logger=call_log,
    )
    try:
        output = capability.function(invocation.input, ctx)
    except SoftTimeLimitExceeded:
        _timed_out(invocation, attempt)
        return "timed out"
    except Cancelled as exc:
        services.record_failure(invocation.pk, attempt=attempt, **services.failure_from_exception(exc))
        return "cancelled"
    except Exception as exc:
        services.record_failure(invocation.pk, attempt=attempt, **services.failure_from_exception(exc))
        return "failed"
    problems = services.check_output(invocation.capability, output)
    if problems:
        services.record_failure(
            invocation.pk,
            attempt=attempt,
            error_type="OutputSchemaError",
            error_message=f"the output of '{capability.name}' does not match its output schema: {'; '.join(problems)}",
        )
        return "failed"
    services.record_success(
        invocation.pk,
        attempt=attempt,
        output=output,
        started_at=invocation.started_at,
        requested_by=invocation.requested_by,
    )
    return "succeeded"


class Heartbeat(threading.Thread):
    """Heartbeats every MASP_HEARTBEAT_INTERVAL with the agent's real in-flight count and CPU load."""

    def __init__(self, runtime: Runtime):
        super().__init__(name="masp-heartbeat", daemon=True)
        self.runtime = runtime
        self.stopping = threading.Event()
        self.sent_state: str | None = None
        try:
            import psutil

            self.process = psutil.Process(os.getpid())
        except Exception:
            self.process = None
        self.last_reading = self.cpu_seconds()

    def cpu_seconds(self) -> tuple[float, float] | None:
        """(CPU seconds used so far by the worker, monotonic time). The main process's own time, its
        children's, and the time of the children it has reaped: a pool process that exits between two
        beats (``--max-tasks-per-child``, a hard time limit) still counts. None if it cannot be read."""
        if self.process is None:
            return None
        try:
            times = self.process.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in self.process.children(recursive=True):
                try:
                    times = child.cpu_times()
                except Exception:  # exited (and reaped) meanwhile: its time is in children_* at the next beat
                    continue
                total += times.user + times.system
        except Exception:
            return None
        return total, time.monotonic()

    def cpu_load(self) -> float:
        """The worker's CPU use since the last beat (main and pool processes), as a share of all CPUs."""
        reading, last = self.cpu_seconds(), self.last_reading
        self.last_reading = reading
        if reading is None or last is None or reading[1] <= last[1]:
            return 0.0
        share = (reading[0] - last[0]) / (reading[1] - last[1]) / (os.cpu_count() or 1)
        return max(0.0, min(1.0, share))

    def beat_once(self) -> None:
        from agents import services

        in_flight = Invocation.objects.filter(agent_id=self.runtime.agent_pk, status=InvocationStatus.RUNNING).count()
        state = AgentState.BUSY if in_flight >= self.runtime.concurrency else AgentState.IDLE
        result = services.heartbeat(
            agent_id=self.runtime.definition.agent_id,
            cpu_load=self.cpu_load(),
            in_flight=in_flight,
            state=state if state != self.sent_state else None,
        )
        self.sent_state = state if result.state in (AgentState.IDLE, AgentState.BUSY) else None
        services.sync_agent_counters(self.runtime.agent_pk)

    def run(self) -> None:
        from masplatform.exceptions import Conflict, NotFound

        while not self.stopping.is_set():
            try:
                with sqlite.fork_guard():  # no pool process is forked while this thread is inside SQLite
                    close_old_connections()
                    self.beat_once()
            except (Conflict, NotFound) as exc:
                # Unregistered (or purged) while running: this worker must stop taking its calls.
                logger.warning(
                    "event=agent_gone agent_id=%s detail=%s action=warm_shutdown",
                    self.runtime.definition.agent_id,
                    exc.detail,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except Exception:
                logger.warning("event=heartbeat_failed agent_id=%s", self.runtime.definition.agent_id, exc_info=True)
            self.stopping.wait(settings.MASP_HEARTBEAT_INTERVAL)

    def stop(self) -> None:
        self.stopping.set()
        try:  # the counters of the calls since the last heartbeat
            from agents import services

            services.sync_agent_counters(self.runtime.agent_pk)
        except Exception:
            logger.warning("event=counter_sync_failed agent_id=%s", self.runtime.definition.agent_id, exc_info=True)
