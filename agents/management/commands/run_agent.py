"""python manage.py run_agent <dotted.module> [--agent-id ID] [--concurrency N] [-- celery worker options]"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from typing import Any

from celery import signals
from django.core.management.base import BaseCommand, CommandError, CommandParser

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
_QUEUES = "the queues are the agent's capabilities' and its own"
_REFUSED_OPTIONS = {
    "-Q": _QUEUES,
    "--queues": _QUEUES,
    "-X": _QUEUES,
    "--exclude-queues": _QUEUES,
    "-n": "the worker name is agent.<agent_id>@<host>",
    "--hostname": "the worker name is agent.<agent_id>@<host>",
    "--autoscale": "the registry records a fixed concurrency; use --concurrency",
    "-D": "the worker runs in run_agent's process, which registered the agent and heartbeats for it",
    "--detach": "the worker runs in run_agent's process, which registered the agent and heartbeats for it",
    "--pool-start-method": "the pool processes are forked from run_agent's process, where the agent is set up",
    "--purge": "it would empty capability queues that other agents share",
    "--discard": "it would empty capability queues that other agents share",
}
# `celery worker`'s one-letter options: without a value, and with one (which may follow in the same
# argument, "-c8", after flags, "-Ec8", as click parses them)
_SHORT_FLAGS = frozenset("DEB")
_SHORT_WITH_VALUE = frozenset("nSlOcPQXIsf")


def split_worker_args(worker_args: list[str]) -> tuple[dict[str, str], list[str]]:
    """The options of ``worker_args`` that run_agent owns (as ``{"--concurrency": "8"}``: ``-c 8``,
    ``-c8``, ``-Ec8``, ``--concurrency=8`` alike) and the rest, passed on to ``celery worker``. Options
    that would take the agent's routing or set-up out of run_agent's hands are a ``CommandError``."""
    own: dict[str, str] = {}
    rest: list[str] = []
    args = iter(worker_args)

    def value_of(name: str, value: str | None) -> str:
        if value is None:
            value = next(args, None)
            if value is None:
                raise CommandError(f"{name} needs a value")
        return value

    def taken(name: str, value: str | None) -> bool:
        """Whether run_agent takes option ``name`` (refusing the refused ones)."""
        if name in _REFUSED_OPTIONS:
            raise CommandError(f"run_agent does not run a worker with {name}: {_REFUSED_OPTIONS[name]}")
        if name not in _OWN_OPTIONS:
            return False
        own[_OWN_OPTIONS[name]] = value_of(name, value)
        return True

    for arg in args:
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if not taken(name, value if has_value else None):
                rest.append(arg)
            continue
        if not arg.startswith("-") or len(arg) < 2:
            rest.append(arg)
            continue
        for i, letter in enumerate(arg[1:], start=1):  # flags, then at most one option with its value
            name = f"-{letter}"
            if letter in _SHORT_FLAGS:
                if not taken(name, None):
                    rest.append(name)
            elif letter in _SHORT_WITH_VALUE:
                value = arg[i + 1 :] or None
                if not taken(name, value):
                    rest += [name, value_of(name, value)]
                break
            else:  # not one of celery worker's: as it is, for Celery to judge
                rest.append(f"-{arg[i:]}")
                break
    return own, rest


def _concurrency(value: str) -> int:
    from celery.utils.sysinfo import available_cpu_count, is_auto_concurrency

    if is_auto_concurrency(value):  # as celery worker -c auto: one process per CPU available
        return available_cpu_count()
    try:
        return int(value)
    except ValueError:
        raise CommandError(f"--concurrency must be a number or 'auto', not '{value}'") from None


class Command(BaseCommand):
    help = (
        "Run one agent: a Celery worker that registers the agent, consumes cap.<name> for each of its "
        "capabilities and agent.<agent_id>, heartbeats, and goes offline on SIGTERM after finishing "
        "the calls in flight. Options after -- go to `celery worker` (e.g. -- -P threads)."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse_args = parser.parse_args

        def parse_with_dashes(args: Any = None, namespace: Any = None) -> Any:
            # argparse refuses `--` once options came before it (the positional worker_args was already
            # filled, empty): what follows `--` is set aside here, before the rest is parsed
            args = list(sys.argv[1:] if args is None else args)
            after: list[str] = []
            if "--" in args:
                cut = args.index("--")
                args, after = args[:cut], args[cut + 1 :]
            parsed = parse_args(args, namespace)
            parsed.worker_args = [*parsed.worker_args, *after]
            return parsed

        parser.parse_args = parse_with_dashes
        return parser

    def add_arguments(self, parser):
        parser.add_argument("module", help="dotted path of a module defining one AgentDefinition")
        parser.add_argument("--agent-id", help="run under this agent_id instead of the module's")
        parser.add_argument(
            "--concurrency", default="1", help="calls run at once (worker processes or threads); 'auto': one per CPU"
        )
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
        concurrency: str | int,
        pool: str,
        loglevel: str,
        worker_args: list[str],
        **options,
    ):
        # `celery worker`'s own spellings after -- (-c 8, -P threads, -l DEBUG) count as run_agent's options
        own, worker_args = split_worker_args(worker_args)
        concurrency = _concurrency(str(own.get("--concurrency", concurrency)))
        pool = own.get("--pool", pool)
        loglevel = own.get("--loglevel", loglevel)
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        if pool == "solo" and concurrency != 1:
            raise CommandError(
                f"the solo pool runs one call at a time: --concurrency {concurrency} needs prefork or threads"
            )
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
