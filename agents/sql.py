"""Hand-written SQL of the agents app, each idea once, behind a plain function.

The call counters (``AgentCallCounter``) are added to with an upsert, which the ORM does not write
(``bulk_create(update_conflicts=True)`` assigns the new values instead of adding them). The same
statement serves PostgreSQL and SQLite (3.24+): ``INSERT ... ON CONFLICT (agent_id, shard) DO UPDATE``.
"""

from __future__ import annotations

import os
from typing import Any

from django.db import connection as default_connection

from agents.models import AgentCallCounter

# Rows per agent: a worker process adds to the shard of its pid, so an agent's processes rarely share one.
COUNTER_SHARDS = 16


def counter_shard() -> int:
    return os.getpid() % COUNTER_SHARDS


def _counter_upsert(connection: Any, source: str) -> str:
    qn = connection.ops.quote_name
    table = qn(AgentCallCounter._meta.db_table)
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _ADDED)
    return (
        f"INSERT INTO {table} (agent_id, shard, {', '.join(_ADDED)}) {source}"
        f" ON CONFLICT (agent_id, shard) DO UPDATE SET {added}"
    )


_ADDED = ("completed", "failed", "response_ms_total", "response_count")


def outcome_figures(*, completed: bool, duration_ms: float | None) -> list[Any]:
    """The values added for one outcome: (completed, failed, response_ms_total, response_count)."""
    if not completed:
        return [0, 1, 0.0, 0]
    return [1, 0, float(duration_ms or 0.0), 0 if duration_ms is None else 1]


def count_outcome_sql(connection: Any = None, *, from_cte: str | None = None) -> str:
    """The upsert adding one outcome's figures to the counter of an agent (params: agent pk, shard, then
    ``outcome_figures``); with ``from_cte``, the agent's pk comes from that CTE's ``agent_id`` (params:
    shard, then the figures) and nothing is written when it returns no row or a NULL agent."""
    connection = connection or default_connection
    if from_cte is None:
        return _counter_upsert(connection, "VALUES (%s, %s, %s, %s, %s, %s)")
    cast = "::double precision" if connection.vendor == "postgresql" else ""
    ints = "::bigint" if connection.vendor == "postgresql" else ""
    return _counter_upsert(
        connection,
        f"SELECT agent_id, %s{ints}, %s{ints}, %s{ints}, %s{cast}, %s{ints} FROM {from_cte} WHERE agent_id IS NOT NULL",
    )


def count_outcome(
    agent_pk: int | None, *, completed: bool, duration_ms: float | None, cursor: Any = None, connection: Any = None
) -> None:
    """Add one recorded outcome to ``agent_pk``'s counters, in the caller's transaction (the one that
    records the outcome, so the totals and the attempts never disagree)."""
    if agent_pk is None:
        return
    params = [agent_pk, counter_shard(), *outcome_figures(completed=completed, duration_ms=duration_ms)]
    if cursor is not None:
        cursor.execute(count_outcome_sql(connection), params)
        return
    with default_connection.cursor() as own:
        own.execute(count_outcome_sql(default_connection), params)
