"""An agent for the workflow tests (run with ``run_agent tests.workflow_agents``)."""

from __future__ import annotations

import time
from pathlib import Path

from agents.sdk import AgentDefinition

agent = AgentDefinition("wf_sample", name="Workflow test agent", tags=("test",))
ANY = {"type": "object"}


@agent.capability("step", input_schema=ANY, output_schema=ANY)
def step(data, ctx):
    """Sleeps ``sleep`` seconds (honouring cancel), appends a line to ``path`` if given, fails on ``fail``,
    and passes ``context_updates`` on. ``value`` comes back doubled."""
    started = time.time()
    if data.get("path"):
        with open(data["path"], "a") as f:
            f.write(f"{data.get('name', '')} {ctx.agent_id} {ctx.invocation_id} {ctx.attempt}\n")
    if data.get("marker"):
        Path(data["marker"]).write_text(ctx.agent_id)
    deadline = time.monotonic() + data.get("sleep", 0)
    while time.monotonic() < deadline:
        ctx.raise_if_cancelled()
        time.sleep(0.05)
    if data.get("fail") is True or (isinstance(data.get("fail"), int) and ctx.attempt <= data["fail"]):
        raise RuntimeError(f"{data.get('name', 'step')} failed on attempt {ctx.attempt}")
    output = {"name": data.get("name"), "agent_id": ctx.agent_id, "started": started, "finished": time.time()}
    if isinstance(data.get("value"), (int, float)):
        output["value"] = data["value"] * 2
    if data.get("context_updates"):
        output["context_updates"] = data["context_updates"]
    return output


@agent.capability("share", input_schema=ANY, output_schema=ANY)
def share(data, ctx):
    """A share of a scatter task: ``score`` = the number at the end of the agent id x ``factor``."""
    if data.get("marker_dir"):
        Path(data["marker_dir"], ctx.agent_id).write_text(ctx.invocation_id)
    deadline = time.monotonic() + data.get("sleep", 0)
    while time.monotonic() < deadline:
        ctx.raise_if_cancelled()
        time.sleep(0.05)
    return {"score": int(ctx.agent_id.rsplit("-", 1)[-1]) * data.get("factor", 1), "agent_id": ctx.agent_id}
