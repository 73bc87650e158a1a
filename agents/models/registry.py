"""The registry's state: agents, capabilities (shared contracts), who offers what, and history."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

CAPABILITY_NAME_RE = r"^[a-z0-9][a-z0-9_.\-]{0,99}$"
capability_name_validator = RegexValidator(
    CAPABILITY_NAME_RE,
    "A capability name is 1-100 characters: lowercase letters, digits, '_', '.', '-', starting with a letter or digit.",
)
unit_interval = [MinValueValidator(0.0), MaxValueValidator(1.0)]


class AgentState(models.TextChoices):
    IDLE = "idle", "idle"
    BUSY = "busy", "busy"
    ERROR = "error", "error"
    DRAINING = "draining", "draining"
    OFFLINE = "offline", "offline"


# Which states an agent may move to with POST /status/ (or a heartbeat's "state").
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    AgentState.IDLE: frozenset({AgentState.BUSY, AgentState.ERROR, AgentState.DRAINING, AgentState.OFFLINE}),
    AgentState.BUSY: frozenset({AgentState.IDLE, AgentState.ERROR, AgentState.DRAINING, AgentState.OFFLINE}),
    AgentState.ERROR: frozenset({AgentState.IDLE, AgentState.DRAINING, AgentState.OFFLINE}),
    # Draining (taking no new calls) ends with /resume/ (idle) or the agent stopping (offline).
    AgentState.DRAINING: frozenset({AgentState.IDLE, AgentState.OFFLINE}),
    AgentState.OFFLINE: frozenset({AgentState.IDLE, AgentState.BUSY}),
}


class Capability(models.Model):
    """A named contract: every agent that offers it takes the same input and gives the same output."""

    name = models.CharField(max_length=100, unique=True, validators=[capability_name_validator])
    description = models.TextField(blank=True, default="")
    input_schema = models.JSONField(default=dict, blank=True)
    output_schema = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "capabilities"

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    # Unique by a named constraint (below), not unique=True: on PostgreSQL that would add a second,
    # varchar_pattern_ops index, which every write of the row must maintain and no query uses.
    agent_id = models.SlugField(max_length=100, db_index=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    state = models.CharField(max_length=16, choices=AgentState.choices, default=AgentState.IDLE)
    tags = models.ManyToManyField(Tag, blank=True, related_name="agents")
    metadata = models.JSONField(default=dict, blank=True)
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True, default="")
    # The Celery node name of the agent's worker (``agent.<agent_id>@host``), for remote control.
    worker_name = models.CharField(max_length=255, blank=True, default="")
    max_concurrency = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    capabilities = models.ManyToManyField(Capability, through="AgentCapability", related_name="agents")

    registered_at = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField()
    state_changed_at = models.DateTimeField()
    unregistered_at = models.DateTimeField(null=True, blank=True)

    health_score = models.FloatField(default=1.0, validators=unit_interval)
    cpu_load = models.FloatField(default=0.0, validators=unit_interval)
    in_flight = models.PositiveIntegerField(default=0)
    calls_completed = models.PositiveBigIntegerField(default=0)
    calls_failed = models.PositiveBigIntegerField(default=0)
    avg_response_time_ms = models.FloatField(null=True, blank=True)

    # sha256 of the agent's token; the token itself is shown once, at registration.
    token_hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-health_score", "cpu_load", "agent_id"]
        indexes = [
            # Discovery: registered agents in the seed's order (health desc, load asc).
            models.Index(
                models.F("health_score").desc(),
                "cpu_load",
                "agent_id",
                name="agent_order_idx",
                condition=Q(unregistered_at__isnull=True),
            ),
            # The stale sweep: registered agents by heartbeat age. No column the sweep writes (state,
            # state_changed_at, in_flight) is in an index key or predicate, so on PostgreSQL taking an
            # agent offline is a HOT update (migration 0002 leaves room for it on the pages).
            models.Index(
                fields=["last_heartbeat_at"],
                name="agent_heartbeat_idx",
                condition=Q(unregistered_at__isnull=True),
            ),
            # The purge: only unregistered agents, so sweeps and heartbeats of live ones never touch it.
            models.Index(
                fields=["unregistered_at"], name="agent_unregistered_idx", condition=Q(unregistered_at__isnull=False)
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["agent_id"], name="agent_agent_id_unique"),
            models.UniqueConstraint(fields=["token_hash"], name="agent_token_hash_unique"),
            models.CheckConstraint(condition=Q(health_score__gte=0) & Q(health_score__lte=1), name="agent_health_0_1"),
            models.CheckConstraint(condition=Q(cpu_load__gte=0) & Q(cpu_load__lte=1), name="agent_cpu_load_0_1"),
            models.CheckConstraint(condition=Q(state__in=AgentState.values), name="agent_state_valid"),
        ]

    def __str__(self) -> str:
        return self.agent_id

    @property
    def is_registered(self) -> bool:
        return self.unregistered_at is None

    @property
    def is_live(self) -> bool:
        return self.unregistered_at is None and self.state != AgentState.OFFLINE

    @property
    def is_available(self) -> bool:
        return (
            self.is_live
            and self.state not in (AgentState.DRAINING, AgentState.ERROR)
            and self.in_flight < self.max_concurrency
        )

    def can_move_to(self, state: str) -> bool:
        return state == self.state or state in ALLOWED_TRANSITIONS[self.state]


class AgentCapability(models.Model):
    """An agent offers a capability at a cost (the seed's ``AgentCapability.cost``)."""

    # No single-column indexes: the unique (agent, capability) and agentcapability_cap_idx cover both.
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="offers", db_index=False)
    capability = models.ForeignKey(Capability, on_delete=models.CASCADE, related_name="offers", db_index=False)
    cost = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "capability"], name="agentcapability_unique"),
            models.CheckConstraint(condition=Q(cost__gte=0), name="agentcapability_cost_gte_0"),
        ]
        indexes = [models.Index(fields=["capability", "agent"], name="agentcapability_cap_idx")]

    def __str__(self) -> str:
        return f"{self.agent_id} offers {self.capability_id} at {self.cost}"


class AgentEventKind(models.TextChoices):
    REGISTERED = "registered", "registered"
    REREGISTERED = "reregistered", "re-registered"
    STATE_CHANGED = "state_changed", "state changed"
    WENT_OFFLINE = "went_offline", "went offline (no heartbeat)"
    REVIVED = "revived", "revived by heartbeat"
    UNREGISTERED = "unregistered", "unregistered"


class AgentEvent(models.Model):
    """The registry's history of an agent, as an operator reads it."""

    # Few indexes: the stale sweep inserts one event per agent that went offline, and each B-tree
    # costs it ~0.8 ms per 1000 agents on PostgreSQL (a fifth of the insert). agentevent_agent_at_idx
    # (agent, at) covers lookups by agent; agentevent_at_idx the newest-first list, ``since``, the
    # purge and the kind filter (a walk back along it that skips the other kinds: there are seven).
    # No database constraint: checking it was a third of the stale sweep's time on PostgreSQL (one
    # lookup per event). Every writer of an event holds its agent's row lock, and the agent's rows
    # go only through the purge (events first) or Django's cascade, so no event outlives its agent.
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, related_name="events", db_index=False, db_constraint=False
    )
    kind = models.CharField(max_length=32, choices=AgentEventKind.choices)
    at = models.DateTimeField()
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["agent", "-at"], name="agentevent_agent_at_idx"),
            models.Index(fields=["at"], name="agentevent_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.kind} at {self.at:%Y-%m-%d %H:%M:%S}"


class AgentCallCounter(models.Model):
    """Running totals of an agent's recorded outcomes, kept by the recording transactions (``agents.sql``).

    One row per (agent, shard): each worker process adds to the shard of its pid, so the processes of
    one agent never wait on one row's lock; a read sums at most ``COUNTER_SHARDS`` rows. Purging old
    attempts leaves these totals as they are.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="call_counters", db_index=False)
    shard = models.PositiveSmallIntegerField()
    completed = models.PositiveBigIntegerField(default=0)
    failed = models.PositiveBigIntegerField(default=0)
    # the sum and number of the completed attempts' durations (the mean response time is their quotient)
    response_ms_total = models.FloatField(default=0.0)
    response_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "shard"], name="agentcallcounter_unique")]

    def __str__(self) -> str:
        return f"{self.agent_id}/{self.shard}: {self.completed} completed, {self.failed} failed"
