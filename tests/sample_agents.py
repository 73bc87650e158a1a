"""Agents for the tests (run with run_agent tests.sample_agents)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from agents.sdk import AgentDefinition

agent = AgentDefinition("sample", name="Sample agent", tags=("test",))
ANY = {"type": "object"}


@agent.capability("echo", input_schema=ANY, output_schema=ANY)
def echo(data, ctx):
    return {"echo": data, "agent_id": ctx.agent_id, "attempt": ctx.attempt}


@agent.capability("record", input_schema={"type": "object", "required": ["path"]}, output_schema=ANY)
def record(data, ctx):
    """Appends one line per run to data['path'], so a test can count how often the function ran."""
    with open(data["path"], "a") as f:
        f.write(f"{ctx.invocation_id} {ctx.agent_id} {ctx.attempt}\n")
    time.sleep(data.get("sleep", 0))
    return {"ran_on": ctx.agent_id}


@agent.capability(
    "slow", input_schema={"type": "object", "properties": {"seconds": {"type": "number"}}}, output_schema=ANY
)
def slow(data, ctx):
    """Sleeps in small steps, reporting progress and stopping when cancelled."""
    started = time.monotonic()
    marker = data.get("started_marker")
    if marker:
        Path(marker).write_text(ctx.agent_id)
    while time.monotonic() - started < data.get("seconds", 1):
        ctx.raise_if_cancelled()
        ctx.report_progress(min(1.0, (time.monotonic() - started) / data.get("seconds", 1)), "sleeping")
        time.sleep(0.05)
    return {"slept": data.get("seconds", 1), "agent_id": ctx.agent_id}


@agent.capability("flaky", input_schema={"type": "object", "required": ["fail_times"]}, output_schema=ANY)
def flaky(data, ctx):
    if ctx.attempt <= data["fail_times"]:
        raise ValueError(f"failure number {ctx.attempt}")
    return {"succeeded_on_attempt": ctx.attempt}


@agent.capability("bad_output", input_schema=ANY, output_schema={"type": "object", "required": ["answer"]})
def bad_output(data, ctx):
    return {"not_the_answer": 42}


@agent.capability("stubborn", input_schema=ANY, output_schema=ANY)
def stubborn(data, ctx):
    """Ignores the soft time limit, so only the hard one stops it. Writes its process id to
    ``data["pid_file"]``, if given, so a test can tell that process was killed."""
    if data.get("pid_file"):
        Path(data["pid_file"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            pass
    return {}


@agent.capability("context", input_schema=ANY, output_schema=ANY)
def context(data, ctx):
    """What the function sees of its call's deadline."""
    return {"deadline": ctx.deadline.isoformat(), "remaining": ctx.remaining}


@agent.capability("burn", input_schema={"type": "object", "required": ["seconds"]}, output_schema=ANY)
def burn(data, ctx):
    """Keeps a CPU busy for ``seconds`` (the heartbeat's CPU load should show it)."""
    marker = data.get("started_marker")
    if marker:
        Path(marker).write_text(ctx.agent_id)
    end, spins = time.monotonic() + data["seconds"], 0
    while time.monotonic() < end:
        spins += 1
    return {"spins": spins}


@agent.capability("crash", input_schema=ANY, output_schema=ANY)
def crash(data, ctx):
    os._exit(1)
