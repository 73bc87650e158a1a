"""make demo: start the platform on this machine and run the seed's scenarios through its API."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from demo import invocation_scenario, messaging_scenario, registry_scenario, workflow_scenario
from demo.client import Api
from masplatform import embedded_broker
from masplatform.env import env_bool
from masplatform.procs import Child, ProcessGroup, beat_args, web_args, worker_args

HEARTBEAT_INTERVAL = 2.0
STALE_TIMEOUT = 6.0
SWEEP_TASK = "agents.tasks.sweep_stale_agents"


def demo_admin_refusal(database: dict, var_dir: Path) -> str | None:
    """Why the demo may not create its ``admin`` superuser on ``database``; None on the embedded default."""
    name = str(database.get("NAME") or "")
    if database.get("ENGINE", "").endswith("sqlite3") and name and Path(name).resolve().is_relative_to(var_dir):
        return None
    where = f"{database.get('ENGINE', '?').rsplit('.', 1)[-1]} database {name or '?'}"
    if database.get("HOST"):
        where += f" on {database['HOST']}"
    return (
        f"Refused to create the demo's superuser 'admin' (password from MASP_DEMO_PASSWORD, default 'admin') on the"
        f" {where}: it is not the embedded default (SQLite under {var_dir}), and a login everybody knows must not"
        " appear on a real database by accident. To create it anyway, run the demo with --create-demo-admin"
        " (make demo ARGS=--create-demo-admin) or set MASP_DEMO_ADMIN=1; or create a superuser named 'admin'"
        " yourself (manage.py createsuperuser) and set MASP_DEMO_PASSWORD to its password."
    )


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise CommandError("no free TCP port on 127.0.0.1")


class Command(BaseCommand):
    help = "Run the platform (web, worker, beat) and the seed's scenarios end to end, then print where to look."

    def add_arguments(self, parser):
        parser.add_argument("--serve", action="store_true", help="keep serving after the scenarios until Ctrl-C")
        parser.add_argument("--port", type=int, default=int(os.environ.get("MASP_DEMO_PORT", "8000")))
        parser.add_argument(
            "--create-demo-admin",
            action="store_true",
            default=env_bool("MASP_DEMO_ADMIN", False),
            help="create the superuser 'admin' even on a database that is not the embedded default (MASP_DEMO_ADMIN=1)",
        )

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def handle(self, *args, serve: bool, port: int, **options):
        started_broker = False
        restore = None
        group = None
        self.say("masplatform demo")
        try:
            if settings.CELERY_BROKER_URL == settings.EMBEDDED_BROKER_URL:
                started_broker = embedded_broker.ensure_running(settings.VAR_DIR)
            password = os.environ.get("MASP_DEMO_PASSWORD", "admin")
            login = self.ensure_admin(password, create_anywhere=options["create_demo_admin"])
            port = free_port(port)
            base = f"http://127.0.0.1:{port}"
            log_dir = settings.VAR_DIR / "demo"
            group = ProcessGroup(
                log_dir=log_dir,
                env={
                    "MASP_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
                    "MASP_STALE_TIMEOUT": str(STALE_TIMEOUT),
                    "MASP_DEBUG": os.environ.get("MASP_DEBUG", "1"),
                },
            )
            restore = self.tune_sweep(every=1)
            self.say(
                f"  database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
                f" {settings.DATABASES['default']['NAME']}"
            )
            self.say(f"  broker   {settings.CELERY_BROKER_URL}")
            self.say(f"  starting web ({base}), a Celery worker and beat; logs in {log_dir}/")
            web = group.start("web", web_args(f"127.0.0.1:{port}"))
            worker = group.start("worker", worker_args(name="demo"))
            beat = group.start("beat", beat_args(log_dir / "beat.pid"))
            self.wait_for_web(base, web, group)
            group.wait_for_log(worker, " ready.")
            group.wait_for_log(beat, "beat: Starting")
            self.say("  all three are up")
            token = Api(base).post("/api/auth/token/", {"username": login, "password": password})["token"]
            api = Api(base, f"Token {token}")
            registry_scenario.run(api, self.say, stale_timeout=STALE_TIMEOUT)
            self.say("\n== Starting the seed's agents as Celery workers (manage.py run_agent)")
            running: dict[str, Child] = {}  # agent id -> its worker process
            specs: dict[str, tuple[str, dict[str, str]]] = {}  # agent id -> (module, environment)

            def launch(agent_id: str, module: str, env: dict[str, str] | None = None) -> Child:
                specs[agent_id] = (module, env or {})
                running[agent_id] = self.start_agent(group, agent_id, module, env=env)
                return running[agent_id]

            def kill(agent_id: str) -> None:
                child = running.pop(agent_id)
                child.signal(signal.SIGKILL, group=True)
                group.forget(child)

            def restart(agent_id: str) -> Child:
                return launch(agent_id, *specs[agent_id])

            def restart_and_wait(agent_id: str) -> None:
                restart(agent_id).wait_for_log(" ready.", timeout=90)

            share_delay = {"MASP_EXAMPLE_DELAY": str(workflow_scenario.SHARE_SECONDS)}
            agents = [launch(agent_id, module) for agent_id, module in invocation_scenario.REAL_AGENTS]
            coordination = [
                launch(agent_id, "agents.examples.computation_worker", share_delay)
                for agent_id in workflow_scenario.COORDINATION_WORKERS
            ]
            for agent in [*agents, *coordination]:
                agent.wait_for_log(" ready.", timeout=90)
            self.say(
                f"  {len(agents) + len(coordination)} agent workers ready: "
                + ", ".join(agent_id for agent_id, _ in invocation_scenario.REAL_AGENTS)
                + ", "
                + ", ".join(workflow_scenario.COORDINATION_WORKERS)
            )
            invocation_scenario.run(api, self.say)

            complex_id = workflow_scenario.run_complex(api, self.say, base)
            # Exercise 2's agents start while the coordination mostly waits (for shares, for the stale
            # sweep); not during the complex workflow, whose critical path their start-up would distort
            bus_agents = [launch(agent_id, module, env) for agent_id, module, env in messaging_scenario.agents()]
            coordination_id = workflow_scenario.run_coordination(api, self.say, base, kill, restart)
            self.say("\n== Exercise 2's agents for the message bus (manage.py run_agent, started during 10)")
            for agent in bus_agents:
                agent.wait_for_log(" ready.", timeout=90)
            self.say(
                f"  {len(bus_agents)} agent workers ready: "
                + ", ".join(
                    f"{agent_id} ({env['MASP_SUBSCRIBER_TOPICS']})" if "MASP_SUBSCRIBER_TOPICS" in env else agent_id
                    for agent_id, _, env in messaging_scenario.agents()
                )
            )
            messaging_scenario.run(api, self.say, base, kill, restart_and_wait)
            self.say(
                "\n== Where to look"
                + ("" if serve else " (while the platform runs: make run, or make demo ARGS=--serve)")
            )
            self.say(f"  admin     {base}/admin/   (login: {login} / {password})")
            self.say(f"  API docs  {base}/api/docs/   (schema: {base}/api/schema/)")
            self.say(f"  agents    {base}/admin/agents/agent/   events: {base}/admin/agents/agentevent/")
            self.say(f"  invocations {base}/admin/agents/invocation/   API: {base}/api/invocations/")
            self.say(f"  workflows {base}/admin/workflows/workflow/   executions: {base}/admin/workflows/execution/")
            self.say(f"  the complex workflow's run      {base}/admin/workflows/execution/{complex_id}/change/")
            self.say(f"  the coordination workflow's run {base}/admin/workflows/execution/{coordination_id}/change/")
            self.say(
                f"  messages  {base}/admin/messaging/message/   subscriptions: {base}/admin/messaging/subscription/"
            )
            self.say(f"  bus metrics {base}/api/messaging/stats/   routing rules: {base}/admin/messaging/routingrule/")
            self.say(f"  logs      {log_dir}/ (web.log, worker.log, beat.log, agent-<id>.log)")
            if serve:
                self.say(
                    f"\nServing until Ctrl-C: the web server, the worker, beat and {len(group.children) - 3} agent"
                    " workers go on (the agents heartbeating); Ctrl-C stops them all."
                )
                group.supervise()
        finally:
            if group:
                group.stop_all()
            if restore:
                restore()
            if started_broker:
                embedded_broker.stop(settings.VAR_DIR)
        # The last line says what is left running: nothing this command started.
        broker = " and the embedded broker" if started_broker else ""
        self.say(
            f"\nDone: stopped the {group.stopped if group else 0} processes it started{broker}; nothing of the demo is left running."
            + ("" if serve else " `make demo ARGS=--serve` keeps it serving; `make run` runs the platform.")
        )

    def start_agent(
        self, group: ProcessGroup, agent_id: str, module: str, *, env: dict[str, str] | None = None
    ) -> Child:
        # threads: one process's handlers share its memory (the subscribers count what they received)
        args = [sys.executable, "manage.py", "run_agent", module, "--agent-id", agent_id]
        args += ["--concurrency", "2", "--pool", "threads"]
        return group.start(f"agent-{agent_id}", args, env=env)

    def ensure_admin(self, password: str, *, create_anywhere: bool = False) -> str:
        """The demo's login: the superuser ``admin``, created if missing, but only on the embedded default
        database (SQLite under var/) unless ``create_anywhere``; a known login elsewhere is an open door."""
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None:
            refusal = None if create_anywhere else demo_admin_refusal(connection.settings_dict, settings.VAR_DIR)
            if refusal:
                raise CommandError(refusal)
            User.objects.create_superuser("admin", "admin@localhost", password)
            self.say("  created superuser admin (demo only; change the password for anything else)")
        elif not user.check_password(password):
            raise CommandError("user 'admin' exists with another password; set MASP_DEMO_PASSWORD to it")
        return "admin"

    def tune_sweep(self, *, every: int):
        """Sweep every second for the demo; returns a function that puts the operator's schedule back."""
        task = PeriodicTask.objects.filter(task=SWEEP_TASK).select_related("interval").first()
        if task is None:
            raise CommandError("the stale-agent sweep is not scheduled; run `python manage.py migrate`")
        previous = task.interval
        task.interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
        task.save()

        def restore() -> None:
            task.interval = previous
            task.save()

        return restore

    def wait_for_web(self, base: str, web, group: ProcessGroup, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not web.alive():
                raise CommandError(f"the web server exited; see {web.log_path}:\n{web.log_text()[-2000:]}")
            try:
                # one request at a time: the first schema takes seconds to build, and concurrent first
                # builds race inside drf-spectacular (a 500: 'NoneType' object has no attribute 'startswith')
                with urllib.request.urlopen(
                    f"{base}/api/schema/", timeout=max(1, deadline - time.monotonic())
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise CommandError(f"the web server did not answer within {timeout}s; see {web.log_path}")
