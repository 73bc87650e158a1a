"""Reads of the registry used by the API, the admin, the SDK and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Avg, Count, F, Min, Prefetch, Q, QuerySet, Sum
from django.utils import timezone

from agents.models import Agent, AgentCapability, AgentState, Capability, Tag

# Health bands of the stats (the seed's healthy / degraded / unhealthy), on the 0-1 health score.
HEALTHY = 0.8
DEGRADED = 0.5
LIVE = Q(unregistered_at__isnull=True) & ~Q(state=AgentState.OFFLINE)
# Live, neither draining nor in error, and below its max concurrency: an agent that would take a new call.
AVAILABLE = LIVE & ~Q(state__in=[AgentState.DRAINING, AgentState.ERROR]) & Q(in_flight__lt=F("max_concurrency"))


def agent_for_token(token_hash: str) -> Agent | None:
    """The agent whose current token has this hash, unregistered or not (the caller refuses an unregistered
    one, and can say why); None for a token that is unknown or was replaced by a later registration."""
    return Agent.objects.filter(token_hash=token_hash).only("id", "agent_id", "unregistered_at").first()


def discover_agents(
    *,
    queryset: QuerySet[Agent] | None = None,
    capabilities: Iterable[str] = (),
    tag: str | None = None,
    state: str | None = None,
    min_health: float | None = None,
    max_cpu_load: float | None = None,
    available: bool | None = None,
    include_unregistered: bool = False,
) -> QuerySet[Agent]:
    """Agents matching every criterion, best first (health descending, then load ascending).

    ``capabilities``: the agent must offer all of them. ``available``: not
    offline and below its max concurrency. Unregistered agents only with
    ``include_unregistered``.
    """
    qs = Agent.objects.all() if queryset is None else queryset
    if not include_unregistered:
        qs = qs.filter(unregistered_at__isnull=True)
    for name in dict.fromkeys(capabilities or ()):
        # pk IN (offers of the capability): both databases start from the offers index
        qs = qs.filter(pk__in=AgentCapability.objects.filter(capability__name=name).values("agent_id"))
    if tag:
        qs = qs.filter(tags__name=tag)
    if state:
        qs = qs.filter(state=state)
    if min_health is not None:
        qs = qs.filter(health_score__gte=min_health)
    if max_cpu_load is not None:
        qs = qs.filter(cpu_load__lte=max_cpu_load)
    if available is True:
        qs = qs.filter(AVAILABLE)
    elif available is False:
        qs = qs.exclude(AVAILABLE)
    return qs.order_by("-health_score", "cpu_load", "agent_id")


def with_details(qs: QuerySet[Agent]) -> QuerySet[Agent]:
    """Prefetch what the API and admin show of each agent: two queries per page, no N+1.

    Into plain lists (``tag_list``, ``offer_list``; read them with ``tags_of`` and
    ``offers_of``) and only the columns shown: a page of 50 agents then builds a
    few hundred small objects instead of full Capability rows with their schemas.
    """
    return qs.prefetch_related(
        Prefetch("tags", queryset=Tag.objects.only("id", "name"), to_attr="tag_list"),
        Prefetch(
            "offers",
            queryset=AgentCapability.objects.select_related("capability").only(
                "id", "agent_id", "cost", "capability__id", "capability__name"
            ),
            to_attr="offer_list",
        ),
    )


def tags_of(agent: Agent) -> list[str]:
    tags = getattr(agent, "tag_list", None)
    return sorted(t.name for t in (agent.tags.all() if tags is None else tags))


def offers_of(agent: Agent) -> list[AgentCapability]:
    offers = getattr(agent, "offer_list", None)
    if offers is None:
        offers = list(agent.offers.select_related("capability"))
    return sorted(offers, key=lambda o: o.capability.name)


@dataclass(frozen=True)
class CallCounters:
    """What an agent has done: the totals its recorded outcomes added (``AgentCallCounter``)."""

    completed: int = 0
    failed: int = 0  # attempts that failed or timed out (a cancelled or lost attempt is neither)
    avg_response_time_ms: float | None = None  # mean duration of the completed ones


def call_counters(agent_pks: Iterable[int]) -> dict[int, CallCounters]:
    """``CallCounters`` of each agent (one grouped query over at most ``agents.sql.COUNTER_SHARDS`` rows
    per agent; agents without outcomes get zeros).

    The recording transaction of each outcome adds to a shard of the agent's counters (never to the
    agent's row, on which every worker process of the agent would wait), so the totals cost the same
    with millions of past attempts, and purging attempts (``agents.services.retention``) leaves them.
    The agent's worker copies them into the ``Agent`` columns with each heartbeat
    (``services.sync_agent_counters``) for the admin.
    """
    from agents.models import AgentCallCounter

    pks = list(dict.fromkeys(agent_pks))
    counters = dict.fromkeys(pks, CallCounters())
    if not pks:
        return counters
    rows = (
        AgentCallCounter.objects.filter(agent_id__in=pks)
        .values("agent_id")
        .annotate(
            completed=Sum("completed"),
            failed=Sum("failed"),
            ms=Sum("response_ms_total"),
            timed=Sum("response_count"),
        )
        .order_by()
    )
    for row in rows:
        avg = row["ms"] / row["timed"] if row["timed"] else None
        counters[row["agent_id"]] = CallCounters(int(row["completed"]), int(row["failed"]), avg)
    return counters


def capabilities_with_stats(queryset: QuerySet[Capability] | None = None) -> QuerySet[Capability]:
    """Capabilities annotated with ``live_agents`` and ``lowest_cost`` among live agents."""
    qs = Capability.objects.all() if queryset is None else queryset
    live_offer = Q(offers__agent__unregistered_at__isnull=True) & ~Q(offers__agent__state=AgentState.OFFLINE)
    return qs.annotate(
        live_agents=Count("offers", filter=live_offer),
        lowest_cost=Min("offers__cost", filter=live_offer),
    ).order_by("name")


def registry_stats() -> dict[str, Any]:
    """The seed's registry stats: totals by state, live agents per capability and tag and by health band
    (healthy >= 0.8 > degraded >= 0.5 > unhealthy), averages of live agents, and how many live
    agents heartbeated in the last minute."""
    registered = Agent.objects.filter(unregistered_at__isnull=True)
    by_state = dict.fromkeys(AgentState.values, 0)
    by_state.update(dict(registered.values_list("state").annotate(n=Count("id")).order_by()))
    live = registered.exclude(state=AgentState.OFFLINE)
    averages = live.aggregate(avg_health=Avg("health_score"), avg_cpu_load=Avg("cpu_load"))
    per_capability = dict(capabilities_with_stats().filter(live_agents__gt=0).values_list("name", "live_agents"))
    per_tag = dict(Tag.objects.filter(agents__in=live).values_list("name").annotate(n=Count("agents")).order_by("name"))
    bands = live.aggregate(
        healthy=Count("id", filter=Q(health_score__gte=HEALTHY)),
        degraded=Count("id", filter=Q(health_score__gte=DEGRADED, health_score__lt=HEALTHY)),
        unhealthy=Count("id", filter=Q(health_score__lt=DEGRADED)),
    )
    minute_ago = timezone.now() - timedelta(minutes=1)
    return {
        "total_agents": sum(by_state.values()),
        "by_state": by_state,
        "live_agents": sum(n for s, n in by_state.items() if s != AgentState.OFFLINE),
        "unregistered_agents": Agent.objects.filter(unregistered_at__isnull=False).count(),
        "capabilities": Capability.objects.count(),
        "live_agents_per_capability": per_capability,
        "live_agents_per_tag": per_tag,
        "live_agents_by_health": bands,
        "average_health": averages["avg_health"],
        "average_cpu_load": averages["avg_cpu_load"],
        "agents_seen_last_minute": live.filter(last_heartbeat_at__gte=minute_ago).count(),
    }


def queue_depth(queue_name: str) -> int | None:
    """Messages waiting in a broker queue (None if the broker cannot be asked)."""
    from amqp.exceptions import ChannelError

    from masplatform.celery import app

    try:
        with app.connection_for_read() as conn:
            return conn.default_channel.queue_declare(queue=queue_name, passive=True).message_count
    except ChannelError as exc:
        # 404: never declared, or on Redis simply empty (an empty list does not exist): nothing waits.
        # py-amqp's reply_code is the number, kombu's virtual transports (Redis, ours) pass the string.
        return 0 if str(getattr(exc, "reply_code", "")) == "404" else None
    except Exception:  # a broker hiccup: unknown, not an error
        return None


def capability_fleet_stats(capability: Capability, *, window: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """Queue depth, calls in flight, live agents, success rate and p50/p95 duration over ``window``."""
    from agents.dispatch import capability_queue_name
    from agents.models import Invocation, InvocationStatus

    since = timezone.now() - window
    finished = Invocation.objects.filter(capability=capability, finished_at__gte=since).exclude(
        status=InvocationStatus.CANCELLED
    )
    outcomes = dict(finished.values_list("status").annotate(n=Count("id")).order_by())
    done = sum(outcomes.values())
    durations = sorted(
        (f - s).total_seconds() * 1000
        for s, f in finished.filter(status=InvocationStatus.SUCCEEDED, started_at__isnull=False).values_list(
            "started_at", "finished_at"
        )[:20000]
    )

    def pct(p: float) -> float | None:
        return round(durations[min(len(durations) - 1, int(p * len(durations)))], 2) if durations else None

    live = Agent.objects.filter(LIVE, offers__capability=capability)
    return {
        "queue": capability_queue_name(capability.name),
        "queue_depth": queue_depth(capability_queue_name(capability.name)),
        "queued": Invocation.objects.filter(capability=capability, status=InvocationStatus.QUEUED).count(),
        "in_flight": Invocation.objects.filter(capability=capability, status=InvocationStatus.RUNNING).count(),
        "live_agents": live.count(),
        "available_agents": live.filter(AVAILABLE).count(),
        "window_seconds": int(window.total_seconds()),
        "finished": done,
        "succeeded": outcomes.get(InvocationStatus.SUCCEEDED, 0),
        "success_rate": round(outcomes.get(InvocationStatus.SUCCEEDED, 0) / done, 4) if done else None,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
    }
