"""python manage.py run_agent <dotted.module> [--agent-id ID] [--concurrency N] [-- celery worker options]"""

from __future__ import annotations

import importlib
import os
import socket

from celery import signals
from django.core.management.base import BaseCommand, CommandError

from agents import dispatch, runtime, services
from agents.models import AgentState
from agents.sdk import AgentDefinition
from masplatform import sqlite
from masplatform.celery import app
from masplatform.exceptions import ServiceError


def load_definition(module_path: str) -> AgentDefinition:
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise CommandError(f"cannot import '{module_path}': {exc}") from None
    found = [v for v in vars(module).values() if isinstance(v, AgentDefinition)]
    if len(found) != 1:
        raise CommandError(f"'{module_path}' must define exactly one AgentDefinition (found {len(found)})")
    return found[0]


# `celery worker` options that run_agent sets itself: the agent's queues and worker name route its calls,
# and its pool size is the concurrency the registry records and the heartbeat's "busy" is measured against.
_OWN_OPTIONS = {
    "-c": "--concurrency",
    "--concurrency": "--concurrency",
    "-P": "--pool",
    "--pool": "--pool",
    "-l": "--loglevel",
    "--loglevel": "--loglevel",
}
_REFUSED_OPTIONS = {
    "-Q": "the queues are the agent's capabilities' and its own",
    "--queues": "the queues are the agent's capabilities' and its own",
    "-X": "the queues are the agent's capabilities' and its own",
    "--exclude-queues": "the queues are the agent's capabilities' and its own",
    "-n": "the worker name is agent.<agent_id>@<host>",
    "--hostname": "the worker name is agent.<agent_id>@<host>",
    "--autoscale": "the registry records a fixed concurrency; use --concurrency",
}


def split_worker_args(worker_args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The options of ``worker_args`` that run_agent owns (as ``{"--concurrency": "8"}``: ``-c 8``,
    ``-c8``, ``--concurrency=8`` alike) and the rest, passed on to ``celery worker``. Options that would
    take the agent's routing out of run_agent's hands are a ``CommandError``."""
    own: dict[str, str] = {}
    rest: list[str] = []
    args = iter(worker_args)
    for arg in args:
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[:2] in _OWN_OPTIONS | _REFUSED_OPTIONS:
            name, value = arg[:2], arg[2:]
        if name in _REFUSED_OPTIONS:
            raise CommandError(f"run_agent sets {name} itself: {_REFUSED_OPTIONS[name]}")
        if name not in _OWN_OPTIONS:
            rest.append(arg)
            continue
        if value is None:
            value = next(args, None)
            if value is None:
                raise CommandError(f"{name} needs a value")
        own[_OWN_OPTIONS[name]] = value
    return own, rest


class Command(BaseCommand):
    help = (
        "Run one agent: a Celery worker that registers the agent, consumes cap.<name> for each of its "
        "capabilities and agent.<agent_id>, heartbeats, and goes offline on SIGTERM after finishing "
        "the calls in flight. Options after -- go to `celery worker` (e.g. -- -P threads)."
    )

    def add_arguments(self, parser):
        parser.add_argument("module", help="dotted path of a module defining one AgentDefinition")
        parser.add_argument("--agent-id", help="run under this agent_id instead of the module's")
        parser.add_argument("--concurrency", type=int, default=1, help="calls run at once (worker processes)")
        parser.add_argument(
            "--pool", default="prefork", help="Celery pool: prefork (default; time limits work), threads or solo"
        )
        parser.add_argument("--loglevel", default="INFO")
        parser.add_argument("worker_args", nargs="*", help="more `celery worker` options, after --")

    def handle(
        self,
        *args,
        module: str,
        agent_id: str | None,
        concurrency: int,
        pool: str,
        loglevel: str,
        worker_args: list[str],
        **options,
    ):
        # `celery worker`'s own spellings after -- (-c 8, -P threads, -l DEBUG) count as run_agent's options
        own, worker_args = split_worker_args(worker_args)
        if "--concurrency" in own:
            try:
                concurrency = int(own["--concurrency"])
            except ValueError:
                raise CommandError(f"--concurrency must be a number, not '{own['--concurrency']}'") from None
        pool = own.get("--pool", pool)
        loglevel = own.get("--loglevel", loglevel)
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        definition = load_definition(module)
        if agent_id:
            definition = definition.with_id(agent_id)
        host = socket.gethostname()
        worker_name = f"agent.{definition.agent_id}@{host}"
        try:
            registration = services.register_agent(
                agent_id=definition.agent_id,
                name=definition.name or definition.agent_id,
                description=definition.description,
                tags=definition.tags,
                metadata=definition.metadata,
                max_concurrency=concurrency,
                host=host,
                pid=os.getpid(),
                version=definition.version,
                worker_name=worker_name,
                capabilities=[
                    services.CapabilitySpec(
                        name=c.name,
                        description=c.description,
                        input_schema=c.input_schema,
                        output_schema=c.output_schema,
                        cost=c.cost,
                    )
                    for c in definition.capabilities.values()
                ],
            )
        except ServiceError as exc:
            raise CommandError(f"registration of '{definition.agent_id}' refused: {exc.detail}") from None
        state = runtime.configure(definition, registration.agent, worker_name=worker_name, concurrency=concurrency)
        queues = [dispatch.capability_queue_name(name) for name in definition.capabilities]
        queues.append(dispatch.agent_queue_name(definition.agent_id))
        app.conf.task_queues = [dispatch.queue(name) for name in queues]
        # Celery's Django fix-up closes every database connection before and after each task unless
        # DB_REUSE_MAX is set: a new PostgreSQL connection per call (2-4 ms). Reuse it instead; the
        # runtime checks it (CONN_MAX_AGE, health check) before each call.
        app.conf["CELERY_DB_REUSE_MAX"] = 1000
        # Only invocations run here, and the runtime checks its connection before each call: the per-task
        # receivers of Celery's Django fix-up (close the connections every 2 * DB_REUSE_MAX tasks, close
        # the caches) and of masplatform.celery (which skips invocations) would only cost each call two
        # signal dispatches. Without receivers, Celery sends neither signal.
        signals.worker_init.connect(_without_per_task_receivers, weak=False)
        heartbeat = runtime.Heartbeat(state)
        checkpointer: list[sqlite.Checkpointer | None] = [None]

        @signals.worker_ready.connect(weak=False)
        def start_heartbeat(**kwargs):
            heartbeat.start()
            checkpointer[0] = sqlite.start_checkpointer()

        @signals.worker_shutdown.connect(weak=False)
        def go_offline(**kwargs):
            heartbeat.stop()
            if checkpointer[0] is not None:
                checkpointer[0].stop()
            try:
                services.change_state(agent_id=definition.agent_id, state=AgentState.OFFLINE, reason="worker stopped")
            except ServiceError as exc:
                self.stderr.write(f"could not mark '{definition.agent_id}' offline: {exc.detail}")

        self.stdout.write(
            f"agent {definition.agent_id}: {len(definition.capabilities)} capabilities; queues {', '.join(queues)}"
        )
        app.worker_main(
            [
                "worker",
                "-n",
                worker_name,
                "-Q",
                ",".join(queues),
                "-c",
                str(concurrency),
                "-P",
                pool,
                "-l",
                loglevel,
                "--without-mingle",
                "--without-gossip",
                *worker_args,
            ]
        )


def _without_per_task_receivers(**kwargs) -> None:
    from masplatform.celery import _check_database_connection

    signals.task_prerun.disconnect(_check_database_connection)
    for fixup in app._fixups or ():
        worker_fixup = getattr(fixup, "_worker_fixup", None)  # installed by the fix-up's own worker_init receiver
        if worker_fixup is not None:
            signals.task_prerun.disconnect(worker_fixup.on_task_prerun)
            signals.task_postrun.disconnect(worker_fixup.on_task_postrun)
