"""python manage.py fleet status|drain|resume|shutdown [AGENT_ID ...]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from agents import selectors
from agents.models import Agent, Capability
from agents.services import fleet
from masplatform.exceptions import ServiceError
from masplatform.tables import table


class Command(BaseCommand):
    help = "The agent worker fleet from a shell: status, or drain / resume / shutdown agents (by agent_id)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "drain", "resume", "shutdown"])
        parser.add_argument("agent_ids", nargs="*", help="agents to act on (status: all when none given)")

    def handle(self, *args, action: str, agent_ids: list[str], **options):
        if action == "status":
            return self.status(agent_ids)
        if not agent_ids:
            raise CommandError(f"name the agents to {action}: manage.py fleet {action} AGENT_ID [AGENT_ID ...]")
        operation = {"drain": fleet.drain, "resume": fleet.resume, "shutdown": fleet.shutdown}[action]
        failed = False
        for agent_id in agent_ids:
            try:
                result = operation(agent_id=agent_id)
            except ServiceError as exc:
                self.stderr.write(f"{agent_id}: {exc.detail}")
                failed = True
                continue
            ack = "acknowledged" if result.acknowledged else "NOT acknowledged (is the worker running?)"
            self.stdout.write(f"{agent_id}: {action} -> {result.state}; worker {result.worker} {ack}")
        if failed:
            raise CommandError(f"{action} failed for some agents")

    def status(self, agent_ids: list[str]) -> None:
        agents = Agent.objects.filter(unregistered_at__isnull=True).order_by("agent_id")
        if agent_ids:
            agents = agents.filter(agent_id__in=agent_ids)
            missing = set(agent_ids) - set(agents.values_list("agent_id", flat=True))
            if missing:
                raise CommandError(f"no registered agent: {', '.join(sorted(missing))}")
        now = timezone.now()
        rows = [
            (
                a.agent_id,
                a.state,
                f"{a.in_flight}/{a.max_concurrency}",
                f"{a.cpu_load:.2f}",
                f"{(now - a.last_heartbeat_at).total_seconds():.0f}s",
                a.calls_completed,
                a.calls_failed,
                a.worker_name or "-",
            )
            for a in agents
        ]
        self.table(["agent", "state", "in flight", "cpu", "heartbeat", "done", "failed", "worker"], rows)
        self.stdout.write("")
        caps = []
        for capability in Capability.objects.order_by("name"):
            s = selectors.capability_fleet_stats(capability)
            caps.append(
                (
                    capability.name,
                    s["queue_depth"],
                    s["queued"],
                    s["in_flight"],
                    s["live_agents"],
                    s["success_rate"],
                    s["p50_ms"],
                    s["p95_ms"],
                )
            )
        self.table(
            ["capability", "queue depth", "queued", "in flight", "live agents", "success 1h", "p50 ms", "p95 ms"], caps
        )

    def table(self, headers: list[str], rows: list[tuple]) -> None:
        self.stdout.write(table(headers, rows))
