"""The workflow engine: definitions, executions, and the event-driven scheduler.

There is no loop that looks for ready tasks. Work moves on three events:

- ``execute``: the execution and its task runs are created and the tasks
  with no dependencies start;
- an invocation of a task finishes (``agents.services.invocation_finished``,
  sent inside the transaction that records the outcome): that same transaction
  locks the execution row, records the task, merges its ``context_updates``,
  decrements the ``waiting_on`` counter of each dependent (O(out-edges)), and
  starts those that reach zero, highest priority first, up to
  ``max_parallel_tasks``;
- an agent goes offline or becomes available (registry signals): the shares
  of scatter tasks pinned to a dead agent move to a live one, and scatter
  tasks waiting for enough agents start.

The execution row lock serialises every scheduling step of one execution, so
a task whose dependencies finish at the same instant on different workers is
started exactly once. Calls are cancelled only after the transaction that
decided it commits (never while holding the execution lock), so the engine
and a worker recording an outcome never wait on each other's locks.

The beat sweep (``sweep``) ends executions past their global timeout, and is
the safety net for the two things an event can miss when a process dies
between a commit and its follow-up: cancelling the calls of a finished
execution, and re-pinning shares of scatter tasks.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentState, Capability, Invocation, InvocationStatus
from agents.services.invocations import dispatch_again, schema_validator
from masplatform import rows
from masplatform.exceptions import Conflict, InvalidInput, NotFound
from workflows import dag
from workflows.aggregation import aggregate
from workflows.bulk import insert_rows
from workflows.expressions import Scope, parse_condition, resolve
from workflows.models import (
    EXECUTION_ACTIVE,
    Execution,
    ExecutionStatus,
    FailureStrategy,
    TaskCall,
    TaskRun,
    TaskStatus,
    Workflow,
    WorkflowTask,
)

logger = logging.getLogger("workflows")

WORKFLOW_FIELDS = ("name", "description", "global_timeout", "max_parallel_tasks", "failure_strategy", "metadata")


# -- definitions ------------------------------------------------------------------------------------


def _errors_for(capability: Capability):
    return schema_validator(capability.input_schema).iter_errors


def check_definition(data: dict[str, Any]) -> tuple[dict[str, Any], list[dag.TaskSpec], dict[str, Capability]]:
    """Everything about a definition that can be wrong, in one InvalidInput naming each task.

    Returns (workflow fields, task specs in definition order, capabilities by name).
    """
    if not isinstance(data, dict):
        raise InvalidInput({"non_field_errors": ["a workflow definition is a JSON object"]})
    errors: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        errors["name"] = ["a name of 1-200 characters is required"]
    else:
        fields["name"] = name.strip()
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        errors["description"] = ["must be a string"]
    fields["description"] = description or ""
    for field, default, low, high, kind in (
        ("global_timeout", 3600.0, 1, 10_000_000, float),
        ("max_parallel_tasks", 10, 1, 100_000, int),
    ):
        value = data.get(field, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
            or (kind is int and not float(value).is_integer())
        ):
            what = "a whole number" if kind is int else "a number"
            errors[field] = [f"must be {what} from {low} to {high:,}, got {value!r}"]
        else:
            fields[field] = kind(value)
    strategy = data.get("failure_strategy", FailureStrategy.STOP)
    if strategy not in FailureStrategy.values:
        errors["failure_strategy"] = [f"'{strategy}' is not one of {', '.join(FailureStrategy.values)}"]
    fields["failure_strategy"] = strategy
    metadata = data.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        errors["metadata"] = ["must be an object"]
    fields["metadata"] = metadata
    unknown = sorted(set(data) - {*WORKFLOW_FIELDS, "tasks"})
    if unknown:
        errors["non_field_errors"] = [f"unknown field(s): {', '.join(unknown)}"]

    problems = dag.Problems()
    specs = dag.parse_tasks(data.get("tasks"), problems)
    dag.check_graph(specs, problems)
    wanted = {s.capability for s in specs if s.capability}
    capabilities = {c.name: c for c in Capability.objects.filter(name__in=wanted)}
    for spec in specs:
        capability = capabilities.get(spec.capability)
        if spec.capability and capability is None:
            problems.add(spec.key, f"unknown capability '{spec.capability}'")
        elif capability is not None:
            dag.check_input(spec, _errors_for(capability), problems)
    if problems:
        errors["tasks"] = problems.as_dict()
    if errors:
        raise InvalidInput(errors)
    return fields, specs, capabilities


TASK_COLUMNS = ("workflow", "position", *dag.TASK_FIELD_ORDER, "reads", "dependents")  # as _store_tasks writes


def _store_tasks(workflow: Workflow, specs: list[dag.TaskSpec], capabilities: dict[str, Capability]) -> None:
    dependents: dict[str, list[str]] = {s.key: [] for s in specs}
    for spec in specs:
        for dep in spec.depends_on:
            dependents[dep].append(spec.key)
    insert_rows(
        WorkflowTask,
        TASK_COLUMNS,
        (
            (
                workflow.pk,
                i,
                s.key,
                s.name,
                s.description,
                capabilities[s.capability].pk,
                s.input,
                s.depends_on,
                s.timeout,
                s.retries,
                s.priority,
                s.condition,
                s.required_agents,
                s.aggregation,
                s.references,
                dependents[s.key],
            )
            for i, s in enumerate(specs)
        ),
    )


def create_workflow(data: dict[str, Any], *, created_by: str = "") -> Workflow:
    """Check ``data`` and store it as a new definition (InvalidInput naming each problem)."""
    fields, specs, capabilities = check_definition(data)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(**fields, created_by=created_by)
            _store_tasks(workflow, specs, capabilities)
    except IntegrityError:
        raise InvalidInput({"name": [f"a workflow named '{fields['name']}' exists; choose another name"]}) from None
    logger.info("event=workflow_created workflow=%s tasks=%d", workflow.pk, len(specs))
    return workflow


def update_workflow(workflow_id: int, data: dict[str, Any]) -> Workflow:
    """Replace a definition. Executions already started keep the copy they made."""
    fields, specs, capabilities = check_definition(data)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).first()
            if workflow is None:
                raise NotFound(f"No workflow {workflow_id}.")
            for field, value in fields.items():
                setattr(workflow, field, value)
            workflow.version += 1
            workflow.save()
            workflow.tasks.all().delete()
            _store_tasks(workflow, specs, capabilities)
    except IntegrityError:
        raise InvalidInput({"name": [f"a workflow named '{fields['name']}' exists; choose another name"]}) from None
    return workflow


def delete_workflow(workflow_id: int) -> None:
    """Delete a definition; its executions stay (they hold their own copy)."""
    deleted, _ = Workflow.objects.filter(pk=workflow_id).delete()
    if not deleted:
        raise NotFound(f"No workflow {workflow_id}.")


DEFINITION_TASK_FIELDS = dag.TASK_FIELD_ORDER


def _task_values(workflow: Workflow) -> list[tuple]:
    """The stored tasks as tuples of DEFINITION_TASK_FIELDS (the capability by name)."""
    columns = [f if f != "capability" else "capability__name" for f in DEFINITION_TASK_FIELDS]
    return list(WorkflowTask.objects.filter(workflow=workflow).order_by("position").values_list(*columns))


def definition_of(workflow: Workflow) -> dict[str, Any]:
    """The definition as the API shows it."""
    rows = _task_values(workflow)
    return {
        "name": workflow.name,
        "description": workflow.description,
        "global_timeout": workflow.global_timeout,
        "max_parallel_tasks": workflow.max_parallel_tasks,
        "failure_strategy": workflow.failure_strategy,
        "metadata": workflow.metadata,
        "tasks": [dict(zip(DEFINITION_TASK_FIELDS, row, strict=True)) for row in rows],
    }


# -- starting an execution --------------------------------------------------------------------------


def execute(workflow_id: int, *, context: dict[str, Any] | None = None, requested_by: str = "") -> Execution:
    """Start an execution of a definition: copy it, create its task runs, start the roots.

    The definition was checked when it was saved (with what each task reads and which tasks
    depend on it), so copying it is one INSERT ... SELECT in the database. A capability cannot
    be deleted while a workflow uses it; a changed input schema is checked when a task's call
    is made (the task fails with the schema error).
    """
    if context is not None and not isinstance(context, dict):
        raise InvalidInput({"context": ["must be an object"]})
    now = timezone.now()
    with transaction.atomic():  # the workflow's row lock keeps an edit out while its tasks are copied
        workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).first()
        if workflow is None:
            raise NotFound(f"No workflow {workflow_id}.")
        total = workflow.tasks.count()
        definition = {field: getattr(workflow, field) for field in WORKFLOW_FIELDS}
        execution = Execution.objects.create(
            workflow=workflow,
            workflow_name=workflow.name,
            workflow_version=workflow.version,
            definition={**definition, "version": workflow.version},
            status=ExecutionStatus.RUNNING,
            context=context or {},
            failure_strategy=workflow.failure_strategy,
            max_parallel_tasks=workflow.max_parallel_tasks,
            global_timeout=workflow.global_timeout,
            tasks_total=total,
            requested_by=requested_by,
            started_at=now,
            deadline_at=now + timedelta(seconds=workflow.global_timeout),
        )
        _copy_tasks(workflow, execution)
        roots = list(execution.task_runs.filter(waiting_on=0, status=TaskStatus.PENDING))
        engine = _Engine(execution, now)
        engine.became_ready(roots)
        engine.fill_slots()
        engine.finish_if_done()  # every task may have been skipped already
        engine.save()
    logger.info("event=execution_started execution=%s workflow=%s tasks=%d", execution.pk, workflow.pk, total)
    return execution


def _copy_tasks(workflow: Workflow, execution: Execution) -> None:
    """The definition's tasks become the execution's task runs, copied inside the database."""
    runs, tasks, caps = TaskRun._meta.db_table, WorkflowTask._meta.db_table, Capability._meta.db_table
    length = "jsonb_array_length" if connection.vendor == "postgresql" else "json_array_length"
    execution_id = execution.pk if connection.vendor == "postgresql" else execution.pk.hex
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {runs} (execution_id, position, key, name, capability, input, condition, priority, "
            "timeout, retries, required_agents, aggregation, depends_on, dependents, reads, waiting_on, status, "
            "error, skip_reason, attempts) "
            f"SELECT %s, t.position, t.key, t.name, c.name, t.input, t.condition, t.priority, t.timeout, t.retries, "
            f"t.required_agents, t.aggregation, t.depends_on, t.dependents, t.reads, {length}(t.depends_on), "
            f"%s, '', '', 0 FROM {tasks} t JOIN {caps} c ON c.id = t.capability_id WHERE t.workflow_id = %s",
            [execution_id, TaskStatus.PENDING, workflow.pk],
        )


# -- the engine -------------------------------------------------------------------------------------


class _Engine:
    """One scheduling step of one execution, with its row locked (or just created) by the caller."""

    def __init__(self, execution: Execution, now: datetime):
        self.execution = execution
        self.now = now
        self.to_cancel: list[Any] = []  # invocation ids, cancelled after commit
        self.filling = False
        # tasks that became ready in this step and are not stored as ready yet: when nothing else is
        # ready, they start straight from here (no write of "ready" and read back)
        self.fresh: dict[str, TaskRun] = {}
        self.skipped: set[str] = set()  # keys skipped in this step (stale copies must not start)
        self.known: dict[str, dict[str, Any]] = {}  # status and output of tasks finished in this step

    # counters ---------------------------------------------------------------------------------------
    def _count(self, status: str, n: int = 1) -> None:
        field = {
            TaskStatus.SUCCEEDED: "tasks_succeeded",
            TaskStatus.FAILED: "tasks_failed",
            TaskStatus.SKIPPED: "tasks_skipped",
            TaskStatus.CANCELLED: "tasks_cancelled",
            TaskStatus.RUNNING: "tasks_running",
        }[status]
        setattr(self.execution, field, getattr(self.execution, field) + n)

    def save(self) -> None:
        e = self.execution
        e.save(
            update_fields=[
                "status",
                "context",
                "tasks_running",
                "tasks_ready",
                "tasks_succeeded",
                "tasks_failed",
                "tasks_skipped",
                "tasks_cancelled",
                "error",
                "finished_at",
            ]
        )
        if self.to_cancel:
            ids = list(self.to_cancel)
            transaction.on_commit(lambda: cancel_calls(ids))
            self.to_cancel = []

    # readiness --------------------------------------------------------------------------------------
    def scope_for(self, run: TaskRun) -> Scope:
        """What ``run``'s references read: the context, and the upstream tasks it names (those
        finished in this step are known already; the others are read in one query)."""
        tasks: dict[str, dict[str, Any]] = {}
        missing = []
        for key in run.reads:
            if key in self.known:
                tasks[key] = self.known[key]
            else:
                missing.append(key)
        if missing:
            for key, status, output in TaskRun.objects.filter(execution=self.execution, key__in=missing).values_list(
                "key", "status", "output"
            ):
                tasks[key] = {"status": status, "output": output}
        return Scope(self.execution.context, tasks)

    def became_ready(self, runs: Iterable[TaskRun]) -> None:
        """``runs`` have no unfinished dependency left: skip them (condition false) or make them ready."""
        worklist = deque(runs)
        while worklist:
            run = worklist.popleft()
            if run.condition:
                try:
                    holds = parse_condition(run.condition).evaluate(self.scope_for(run))
                except Exception as exc:  # defensive: a condition that was valid when checked
                    holds = False
                    run.error = f"condition could not be evaluated: {exc}"
                if not holds:
                    self.known[run.key] = {"status": TaskStatus.SKIPPED, "output": None}
                    run.status = TaskStatus.SKIPPED
                    run.skip_reason = f"condition is false: {run.condition}"
                    run.finished_at = self.now
                    run.save(update_fields=["status", "skip_reason", "finished_at", "error"])
                    self._count(TaskStatus.SKIPPED)
                    worklist.extend(self.release_dependents(run))
                    continue
            run.status = TaskStatus.READY
            run.ready_at = self.now
            self.fresh[run.key] = run

    def release_dependents(self, run: TaskRun, *, saving: Iterable[str] = ()) -> list[TaskRun]:
        """``run`` finished (and did not fail under ``continue``): decrement its dependents' counters;
        returns those that reached zero. One ``UPDATE ... RETURNING`` where the database has it; on
        PostgreSQL the same statement also saves ``run``'s fields named in ``saving`` (a data-modifying
        WITH), which the caller would otherwise save first."""
        saving = list(saving)
        if not run.dependents:
            if saving:
                run.save(update_fields=saving)
            return []
        if _update_returning():
            qn = connection.ops.quote_name
            table = qn(TaskRun._meta.db_table)
            keys = ", ".join(["%s"] * len(run.dependents))
            sql = (
                f"UPDATE {table} SET waiting_on = waiting_on - 1 "
                f"WHERE execution_id = %s AND status = %s AND key IN ({keys}) RETURNING *"
            )
            params = [
                self.execution.pk.hex if connection.vendor == "sqlite" else self.execution.pk,
                TaskStatus.PENDING,
                *run.dependents,
            ]
            if saving and connection.vendor == "postgresql":
                fields = [TaskRun._meta.get_field(name) for name in saving]
                sql = (
                    f"WITH saved AS (UPDATE {table} SET {', '.join(f'{qn(f.column)} = %s' for f in fields)}"
                    f" WHERE id = %s) {sql}"
                )
                params = [*(f.get_db_prep_save(getattr(run, f.attname), connection) for f in fields), run.pk, *params]
            elif saving:
                run.save(update_fields=saving)
            released = TaskRun.objects.raw(sql, params)
            return sorted((r for r in released if r.waiting_on == 0), key=lambda r: r.position)
        if saving:
            run.save(update_fields=saving)
        waiting = TaskRun.objects.filter(execution=self.execution, key__in=run.dependents, status=TaskStatus.PENDING)
        waiting.update(waiting_on=F("waiting_on") - 1)
        return list(waiting.filter(waiting_on=0))

    def skip_downstream(self, run: TaskRun) -> None:
        """Under ``continue``: every task downstream of failed ``run`` is skipped (transitively)."""
        todo = deque([run])
        while todo:
            current = todo.popleft()
            if not current.dependents:
                continue
            below = list(
                TaskRun.objects.filter(
                    execution=self.execution,
                    key__in=current.dependents,
                    status__in=[TaskStatus.PENDING, TaskStatus.READY],
                )
            )
            for child in below:
                self.fresh.pop(child.key, None)
                self.skipped.add(child.key)
                if child.status == TaskStatus.READY:
                    self.execution.tasks_ready -= 1
                child.status = TaskStatus.SKIPPED
                child.skip_reason = f"upstream task '{run.key}' failed"
                child.finished_at = self.now
                child.save(update_fields=["status", "skip_reason", "finished_at"])
                self._count(TaskStatus.SKIPPED)
                todo.append(child)

    # dispatch ---------------------------------------------------------------------------------------
    def fill_slots(self) -> None:
        """Start ready tasks, highest priority first, while fewer than max_parallel_tasks run."""
        if self.filling:  # a task that failed to start under ``continue`` asks again: the loop below goes on
            return
        self.filling = True
        try:
            e = self.execution
            if e.tasks_ready == 0:
                self._start_fresh()
            self._store_fresh()
            if e.tasks_ready > 0:
                self._start_stored()
        finally:
            self.filling = False

    def _can_start(self) -> bool:
        return self.execution.status == ExecutionStatus.RUNNING and (
            self.execution.tasks_running < self.execution.max_parallel_tasks
        )

    def _start_fresh(self) -> None:
        """Nothing else is ready: start this step's newly ready tasks in priority order."""
        queue = sorted(self.fresh.values(), key=lambda r: (-r.priority, r.position))
        while queue and self._can_start():
            e = self.execution
            chunk, queue = (
                queue[: e.max_parallel_tasks - e.tasks_running],
                queue[e.max_parallel_tasks - e.tasks_running :],
            )
            chunk = [r for r in chunk if r.key in self.fresh]  # not skipped meanwhile
            plain = [r for r in chunk if not r.required_agents]
            if len(plain) > 1:
                for run in plain:
                    self.fresh.pop(run.key, None)
                self.start_batch(plain)
                chunk = [r for r in chunk if r.required_agents]
            for run in chunk:
                if not self._can_start():
                    return
                if run.key not in self.fresh:  # skipped meanwhile (a failed start under ``continue``)
                    continue
                self.fresh.pop(run.key, None)
                if not self.start(run):  # a scatter task waiting for agents: stored as ready
                    TaskRun.objects.filter(pk=run.pk).update(status=TaskStatus.READY, ready_at=run.ready_at)
                    self.execution.tasks_ready += 1

    def _store_fresh(self) -> None:
        if self.fresh:
            TaskRun.objects.filter(pk__in=[r.pk for r in self.fresh.values()]).update(
                status=TaskStatus.READY, ready_at=self.now
            )
            self.execution.tasks_ready += len(self.fresh)
            self.fresh.clear()

    def _start_stored(self) -> None:
        e = self.execution
        ready = TaskRun.objects.filter(execution=e, status=TaskStatus.READY).order_by("-priority", "position")
        waiting = 0  # ready tasks passed over (scatter tasks without enough agents); they stay first
        while self._can_start():
            wanted = e.max_parallel_tasks - e.tasks_running + 10
            batch = [r for r in ready[waiting : waiting + wanted] if r.key not in self.skipped]
            plain = [r for r in batch[: e.max_parallel_tasks - e.tasks_running] if not r.required_agents]
            if len(plain) > 1:
                e.tasks_ready -= len(plain)
                self.start_batch(plain)
                continue  # read again: those left the ready set
            for run in batch:
                if not self._can_start():
                    return
                if run.key in self.skipped:
                    continue
                e.tasks_ready -= 1  # before start(): a failed start may end the execution (ready = 0)
                if not self.start(run):
                    e.tasks_ready += 1
                    waiting += 1
            if len(batch) < wanted:
                return

    def start_batch(self, runs: list[TaskRun]) -> None:
        """Start several single-call tasks with one insert of their calls (a fan-out)."""
        e = self.execution
        prepared = []
        for run in runs:
            if e.status != ExecutionStatus.RUNNING:
                return
            if run.key in self.skipped:
                continue
            try:
                run.resolved_input = resolve(run.input, self.scope_for(run))
            except Exception as exc:
                self.task_failed(run, f"its input could not be resolved: {exc}")
                continue
            prepared.append(run)
        if not prepared or e.status != ExecutionStatus.RUNNING:
            return
        calls = [
            {
                "capability": run.capability,
                "input": run.resolved_input,
                "priority": run.priority,
                "timeout": run.timeout,
                "max_retries": run.retries if e.failure_strategy == FailureStrategy.RETRY else 0,
            }
            for run in prepared
        ]
        try:
            invocations = []
            with transaction.atomic():
                for at in range(0, len(calls), agent_services.invocations.MAX_BATCH):
                    part = calls[at : at + agent_services.invocations.MAX_BATCH]
                    invocations += agent_services.invoke_many(part, requested_by=f"{REQUESTER_PREFIX}{e.pk}")
        except InvalidInput:  # one at a time, so each task that cannot start says why
            for run in prepared:
                if self.execution.status != ExecutionStatus.RUNNING:
                    return
                self.start(run)
            return
        TaskCall.objects.bulk_create(
            [TaskCall(invocation=inv, task_run=run, share=0) for inv, run in zip(invocations, prepared, strict=True)]
        )
        for run in prepared:
            run.status = TaskStatus.RUNNING
            run.started_at = self.now
            run.attempts += 1
        TaskRun.objects.bulk_update(prepared, ["status", "started_at", "attempts", "resolved_input"], batch_size=500)
        self._count(TaskStatus.RUNNING, len(prepared))
        logger.info("event=tasks_started execution=%s tasks=%d", e.pk, len(prepared))

    def start(self, run: TaskRun) -> bool:
        """Start ``run``'s call(s). False if it must wait (not enough agents); a bad input fails it."""
        e = self.execution
        if e.status != ExecutionStatus.RUNNING:
            return True  # ended by an earlier failure in this step: end() cancelled this task
        try:
            run.resolved_input = resolve(run.input, self.scope_for(run))
        except Exception as exc:
            self.task_failed(run, f"its input could not be resolved: {exc}")
            return True
        agents: list[Agent] = []
        if run.required_agents:
            agents = pick_agents(run.capability, run.required_agents)
            if len(agents) < run.required_agents:
                return False
        requested_by = f"{REQUESTER_PREFIX}{e.pk}"
        max_retries = run.retries if e.failure_strategy == FailureStrategy.RETRY else 0
        try:
            # invoke() checks before it writes; only several shares need a savepoint to undo the first ones
            with transaction.atomic() if len(agents) > 1 else nullcontext():
                for share, agent in enumerate(agents or [None]):
                    invocation, _ = agent_services.invoke(
                        capability=run.capability,
                        input=run.resolved_input,
                        requested_by=requested_by,
                        priority=run.priority,
                        timeout=run.timeout,
                        max_retries=max_retries,
                        agent=agent.agent_id if agent else None,
                    )
                    TaskCall.objects.create(invocation=invocation, task_run=run, share=share)
        except InvalidInput as exc:
            self.task_failed(run, f"could not be started: {_flatten(exc.detail)}")
            return True
        run.status = TaskStatus.RUNNING
        run.started_at = self.now
        run.attempts += 1
        run.save(update_fields=["status", "started_at", "attempts", "resolved_input"])
        self._count(TaskStatus.RUNNING)
        logger.info("event=task_started execution=%s task=%s shares=%d", e.pk, run.key, len(agents) or 1)
        return True

    # outcomes ---------------------------------------------------------------------------------------
    def task_succeeded(self, run: TaskRun, output: Any, agent_id: int | None) -> None:
        self.known[run.key] = {"status": TaskStatus.SUCCEEDED, "output": output}
        run.status = TaskStatus.SUCCEEDED
        run.output = output
        run.agent_id = agent_id
        run.finished_at = self.now
        saving = ["status", "output", "agent", "finished_at", "attempts", "started_at"]
        self._count(TaskStatus.RUNNING, -1)
        self._count(TaskStatus.SUCCEEDED)
        if self.execution.status not in EXECUTION_ACTIVE:
            run.save(update_fields=saving)
            return
        updates = output.get("context_updates") if isinstance(output, dict) else None
        if isinstance(updates, dict):
            self.execution.context = {**self.execution.context, **updates}
        self.became_ready(self.release_dependents(run, saving=saving))  # saves run with the release
        self.fill_slots()
        self.finish_if_done()

    def task_failed(self, run: TaskRun, error: str, *, cancelled: bool = False) -> None:
        e = self.execution
        was_running = run.status == TaskStatus.RUNNING
        run.status = TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED
        run.error = error
        run.finished_at = self.now
        run.save(update_fields=["status", "error", "finished_at", "agent", "attempts", "resolved_input", "started_at"])
        if was_running:
            self._count(TaskStatus.RUNNING, -1)
        self._count(run.status)
        if run.required_agents:  # the other shares of a failed scatter task are not needed any more
            self.to_cancel.extend(
                Invocation.objects.filter(
                    workflow_call__task_run=run, status__in=[InvocationStatus.QUEUED, InvocationStatus.RUNNING]
                ).values_list("pk", flat=True)
            )
        if e.status not in EXECUTION_ACTIVE:
            return
        logger.info("event=task_failed execution=%s task=%s error=%s", e.pk, run.key, error)
        if e.failure_strategy == FailureStrategy.CONTINUE:
            self.skip_downstream(run)
            self.fill_slots()
            self.finish_if_done()
        else:
            self.end(ExecutionStatus.FAILED, f"task '{run.key}' {'was cancelled' if cancelled else 'failed'}: {error}")

    def finish_if_done(self) -> None:
        e = self.execution
        if e.status in EXECUTION_ACTIVE and e.tasks_finished >= e.tasks_total:
            if e.tasks_failed or e.tasks_cancelled:
                failed = list(
                    TaskRun.objects.filter(execution=e, status__in=[TaskStatus.FAILED, TaskStatus.CANCELLED])
                    .order_by("position")
                    .values_list("key", flat=True)[:10]
                )
                self.end(ExecutionStatus.FAILED, f"{len(failed)} task(s) failed: {', '.join(failed)}")
            else:
                self.end(ExecutionStatus.SUCCEEDED, "")

    def end(self, status: str, error: str) -> None:
        """Finish the execution: what has not started is cancelled, what runs is asked to stop."""
        e = self.execution
        e.status = status
        e.error = error
        e.finished_at = self.now
        self.fresh.clear()
        not_started = TaskRun.objects.filter(execution=e, status__in=[TaskStatus.PENDING, TaskStatus.READY])
        self._count(TaskStatus.CANCELLED, not_started.update(status=TaskStatus.CANCELLED, finished_at=self.now))
        e.tasks_ready = 0
        self.to_cancel.extend(
            Invocation.objects.filter(
                workflow_call__task_run__execution=e,
                status__in=[InvocationStatus.QUEUED, InvocationStatus.RUNNING],
            ).values_list("pk", flat=True)
        )
        logger.info("event=execution_%s execution=%s error=%s", status, e.pk, error)


@lru_cache(maxsize=1)
def _update_returning() -> bool:
    """PostgreSQL, and SQLite from 3.35, return the rows an UPDATE changed."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return False


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(v) for v in detail)
    return str(detail)


def cancel_calls(invocation_ids: Iterable[Any]) -> None:
    """Cancel the calls of a finished execution, each in its own transaction (after the decision commits)."""
    for invocation_id in invocation_ids:
        try:
            agent_services.cancel(invocation_id)
        except (Conflict, NotFound):
            pass  # finished meanwhile


def _locked_execution(execution_id: Any) -> Execution:
    execution = Execution.objects.select_for_update().defer("definition").filter(pk=execution_id).first()
    if execution is None:
        raise NotFound(f"No execution '{execution_id}'.")
    return execution


REQUESTER_PREFIX = "workflow:"
SHARE_FIELDS = ("pk", "status", "output", "agent_id", "attempt", "error_type", "error_message", "timeout", "started_at")


def execution_of_requester(requested_by: str | None) -> uuid.UUID | None:
    """The execution id in ``workflow:<id>`` (how the engine signs the calls it makes), else None."""
    if not requested_by or not requested_by.startswith(REQUESTER_PREFIX):
        return None
    try:
        return uuid.UUID(requested_by[len(REQUESTER_PREFIX) :])
    except ValueError:
        return None


def on_invocation_finished(invocation_id: Any, status: str, *, execution_id: Any = None) -> None:
    """Receiver of ``invocation_finished``, inside the transaction that recorded the outcome."""
    outcome = {f"call_{field}": F(f"calls__invocation__{field}") for field in SHARE_FIELDS}
    if execution_id is not None:
        # One query locks the execution and reads the task run with its call's outcome. A
        # single-call task's running row changes only through this very call, so what the query
        # read is current; a scatter task's row is read again under the lock (its other shares
        # may have changed it meanwhile).
        run = _locked_run_of_call(invocation_id, execution_id)
        if run is None:
            return  # "workflow:<id>" written by someone else: not one of its calls
        execution = run.execution
        if run.required_agents:
            run = TaskRun.objects.get(pk=run.pk)
    else:  # the sender did not say who asked: find the execution through the call, then the run
        execution = (
            Execution.objects.select_for_update(of=("self",))
            .defer("definition")
            .filter(task_runs__calls__invocation_id=invocation_id)
            .first()
        )
        if execution is None:
            return
        run = (
            TaskRun.objects.filter(calls__invocation_id=invocation_id, execution=execution).annotate(**outcome).first()
        )
        if run is None:
            return
    engine = _Engine(execution, timezone.now())
    if run.status != TaskStatus.RUNNING:
        return  # already decided (a share failed first, or the execution ended it)
    if run.required_agents:
        shares = list(
            Invocation.objects.filter(workflow_call__task_run=run)
            .order_by("workflow_call__share")
            .values(*SHARE_FIELDS)
        )
    else:
        shares = [{field: getattr(run, f"call_{field}") for field in SHARE_FIELDS}]
    began = [s["started_at"] for s in shares if s["started_at"]]
    if began and all(s["attempt"] == 1 for s in shares):
        # it waited in the queue from dispatch to its claim: it ran from then on (with retries,
        # the task's time stays from its dispatch, which covers every attempt and backoff)
        run.started_at = max(run.started_at or began[0], min(began))
    run.attempts = max((s["attempt"] for s in shares), default=run.attempts)
    this = next((s for s in shares if str(s["pk"]) == str(invocation_id)), None)
    if this is None:
        return
    if status == InvocationStatus.SUCCEEDED:
        if not run.required_agents:
            engine.task_succeeded(run, this["output"], this["agent_id"])
        elif all(s["status"] == InvocationStatus.SUCCEEDED for s in shares):
            run.agent_id = None
            engine.task_succeeded(run, aggregate(run.aggregation or "list", [s["output"] for s in shares]), None)
    else:
        run.agent_id = this["agent_id"]
        if status == InvocationStatus.TIMED_OUT:
            error = f"timed out after {this['timeout']:g} s"
        elif status == InvocationStatus.CANCELLED:
            error = "its call was cancelled"
        else:
            error = f"{this['error_type']}: {this['error_message']}".strip(": ")
        if run.required_agents:
            error = f"share {shares.index(this) + 1} of {len(shares)}: {error}"
        engine.task_failed(run, error, cancelled=status == InvocationStatus.CANCELLED)
    engine.save()


_RUN_FIELDS = tuple(TaskRun._meta.concrete_fields)
_EXECUTION_FIELDS = tuple(f for f in Execution._meta.concrete_fields if f.name != "definition")
_SHARE_FIELDS = tuple(
    Invocation._meta.pk if name == "pk" else Invocation._meta.get_field(name) for name in SHARE_FIELDS
)


@lru_cache(maxsize=2)
def _locked_run_sql(vendor: str) -> str:
    qn = connection.ops.quote_name
    lock = " FOR UPDATE OF e" if connection.features.has_select_for_update_of else ""
    return (
        f"SELECT {rows.columns(TaskRun, _RUN_FIELDS, connection, 'r')},"
        f" {rows.columns(Invocation, _SHARE_FIELDS, connection, 'i')},"
        f" {rows.columns(Execution, _EXECUTION_FIELDS, connection, 'e')}"
        f" FROM {qn(TaskRun._meta.db_table)} r"
        f" JOIN {qn(TaskCall._meta.db_table)} c ON c.task_run_id = r.id"
        f" JOIN {qn(Execution._meta.db_table)} e ON e.id = r.execution_id"
        f" JOIN {qn(Invocation._meta.db_table)} i ON i.id = c.invocation_id"
        f" WHERE c.invocation_id = %s AND r.execution_id = %s{lock}"
    )


def _locked_run_of_call(invocation_id: Any, execution_id: Any) -> TaskRun | None:
    """The task run of call ``invocation_id`` in ``execution_id``, with its execution locked (and
    loaded, without its definition) and the call's outcome as ``call_<field>`` attributes; None if
    the call is not one of that execution's. One statement, written once (the ORM would build this
    query again for every finished call)."""
    params = [
        Invocation._meta.pk.get_db_prep_value(invocation_id, connection),
        Execution._meta.pk.get_db_prep_value(execution_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_locked_run_sql(connection.vendor), params)
        row = cursor.fetchone()
    if row is None:
        return None
    n_run, n_share = len(_RUN_FIELDS), len(_SHARE_FIELDS)
    run = rows.instance(TaskRun, _RUN_FIELDS, row[:n_run], connection)
    share = rows.convert(Invocation, _SHARE_FIELDS, row[n_run : n_run + n_share], connection)
    for name, value in zip(SHARE_FIELDS, share, strict=True):
        setattr(run, f"call_{name}", value)
    run.execution = rows.instance(Execution, _EXECUTION_FIELDS, row[n_run + n_share :], connection)
    return run


def fail_execution_of(invocation_id: Any, error: str) -> None:
    """End the execution a call belongs to as failed (after its engine step failed)."""
    found = TaskCall.objects.filter(invocation_id=invocation_id).values_list("task_run_id", "task_run__execution_id")
    row = found.first()
    if row is None:
        return
    with transaction.atomic():
        execution = _locked_execution(row[1])
        engine = _Engine(execution, timezone.now())
        run = TaskRun.objects.get(pk=row[0])
        if run.status == TaskStatus.RUNNING:  # its outcome was recorded; the engine could not act on it
            run.status = TaskStatus.FAILED
            run.error = error[:2000]
            run.finished_at = engine.now
            run.save(update_fields=["status", "error", "finished_at"])
            engine._count(TaskStatus.RUNNING, -1)
            engine._count(TaskStatus.FAILED)
        if not execution.is_finished:
            engine.end(ExecutionStatus.FAILED, error[:2000])
        engine.save()


# -- operator actions -------------------------------------------------------------------------------


def cancel_execution(execution_id: Any, *, reason: str = "cancelled by request") -> Execution:
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution.is_finished:
            raise Conflict(
                f"Execution {execution_id} is already {execution.status}; only an active one can be cancelled."
            )
        engine = _Engine(execution, timezone.now())
        engine.end(ExecutionStatus.CANCELLED, reason)
        engine.save()
    return execution


def pause_execution(execution_id: Any) -> Execution:
    """Nothing new starts; running calls finish (and their dependents become ready, not started)."""
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution.status != ExecutionStatus.RUNNING:
            raise Conflict(f"Execution {execution_id} is {execution.status}; only a running one can be paused.")
        execution.status = ExecutionStatus.PAUSED
        execution.save(update_fields=["status"])
    logger.info("event=execution_paused execution=%s", execution_id)
    return execution


def resume_execution(execution_id: Any) -> Execution:
    with transaction.atomic():
        execution = _locked_execution(execution_id)
        if execution.status != ExecutionStatus.PAUSED:
            raise Conflict(f"Execution {execution_id} is {execution.status}; only a paused one can be resumed.")
        execution.status = ExecutionStatus.RUNNING
        engine = _Engine(execution, timezone.now())
        engine.fill_slots()
        engine.finish_if_done()
        engine.save()
    logger.info("event=execution_resumed execution=%s", execution_id)
    return execution


# -- agents coming and going ------------------------------------------------------------------------


def pick_agents(capability: str, n: int, *, exclude: Iterable[int] = ()) -> list[Agent]:
    """Up to ``n`` distinct live worker agents offering ``capability``, least loaded first."""
    return list(
        Agent.objects.filter(
            offers__capability__name=capability,
            unregistered_at__isnull=True,
            state__in=[AgentState.IDLE, AgentState.BUSY],
        )
        .exclude(worker_name="")
        .exclude(pk__in=list(exclude))
        .order_by("in_flight", "cpu_load", "agent_id")[:n]
    )


def repin_orphaned_shares(agent_pks: Iterable[int] | None = None) -> int:
    """Move unfinished shares of scatter tasks pinned to dead agents to other live agents.

    ``agent_pks``: only shares pinned to these (the agents that just went
    offline); None: every share pinned to an agent that is not live.
    """
    dead = Q(pinned_agent__unregistered_at__isnull=False) | Q(pinned_agent__state=AgentState.OFFLINE)
    shares = Invocation.objects.filter(
        workflow_call__isnull=False, status=InvocationStatus.QUEUED, pinned_agent__isnull=False
    ).filter(dead)
    shares = shares.select_related("capability", "workflow_call", "pinned_agent")
    if agent_pks is not None:
        # Filtered here, not in SQL: pinned queued shares are few, while a mass expiry announces
        # thousands of agents per batch (an IN list of 5000 ids cost ~0.1 s per stale-sweep batch).
        wanted = set(agent_pks)
        shares = [i for i in shares if i.pinned_agent_id in wanted]
    moved = 0
    for invocation in shares:
        with transaction.atomic():
            # lock every share of the task (in primary-key order), so two re-pins at once cannot
            # pick the same agent, then re-check this share under the lock
            siblings = list(
                Invocation.objects.select_for_update(of=("self",))
                .filter(workflow_call__task_run_id=invocation.workflow_call.task_run_id)
                .order_by("pk")
            )
            locked = next((i for i in siblings if i.pk == invocation.pk), None)
            if locked is None or locked.status != InvocationStatus.QUEUED:
                continue
            if locked.pinned_agent_id != invocation.pinned_agent_id:
                continue  # moved meanwhile
            used = {i.pinned_agent_id for i in siblings if i.pinned_agent_id} | {
                i.agent_id for i in siblings if i.agent_id
            }
            spare = pick_agents(invocation.capability.name, 1, exclude=used)
            if not spare:
                continue
            previous = invocation.pinned_agent.agent_id if invocation.pinned_agent else None
            locked.pinned_agent = spare[0]
            locked.save(update_fields=["pinned_agent"])
            dispatch_again(locked)
        moved += 1
        logger.info(
            "event=share_moved invocation=%s from_agent=%s to_agent=%s", invocation.pk, previous, spare[0].agent_id
        )
    return moved


def start_waiting_scatter_tasks(capabilities: Iterable[str] | None = None) -> int:
    """Try again to start ready scatter tasks that were waiting for enough live agents."""
    waiting = TaskRun.objects.filter(
        status=TaskStatus.READY, required_agents__isnull=False, execution__status=ExecutionStatus.RUNNING
    )
    if capabilities is not None:
        waiting = waiting.filter(capability__in=list(capabilities))
    started = 0
    for execution_id in set(waiting.values_list("execution_id", flat=True)):
        with transaction.atomic():
            execution = _locked_execution(execution_id)
            engine = _Engine(execution, timezone.now())
            before = execution.tasks_running
            engine.fill_slots()
            engine.finish_if_done()
            engine.save()
            started += execution.tasks_running - before
    return started


def on_agents_offline(agent_pks: list[int]) -> None:
    repin_orphaned_shares(agent_pks)


def on_agent_available(agent_pk: int) -> None:
    offers = list(Capability.objects.filter(offers__agent_id=agent_pk).values_list("name", flat=True))
    if not offers:
        return
    repin_orphaned_shares()
    start_waiting_scatter_tasks(offers)


# -- the beat sweep ---------------------------------------------------------------------------------


def sweep(*, now: datetime | None = None) -> dict[str, int]:
    """End executions past their global timeout; cancel leftover calls of finished executions;
    re-pin orphaned shares. Safe to run twice at once (each execution is decided under its lock)."""
    now = now or timezone.now()
    timed_out = 0
    for execution_id in Execution.objects.filter(status__in=EXECUTION_ACTIVE, deadline_at__lt=now).values_list(
        "pk", flat=True
    )[:500]:
        with transaction.atomic():
            execution = _locked_execution(execution_id)
            if execution.is_finished or execution.deadline_at >= now:
                continue
            engine = _Engine(execution, now)
            engine.end(
                ExecutionStatus.TIMED_OUT, f"the workflow's global timeout of {execution.global_timeout:g} s passed"
            )
            engine.save()
            timed_out += 1
    leftovers = list(
        Invocation.objects.filter(
            status__in=[InvocationStatus.QUEUED, InvocationStatus.RUNNING],
            cancel_requested=False,
            workflow_call__task_run__execution__status__in=[
                ExecutionStatus.SUCCEEDED,
                ExecutionStatus.FAILED,
                ExecutionStatus.CANCELLED,
                ExecutionStatus.TIMED_OUT,
            ],
        ).values_list("pk", flat=True)[:1000]
    )
    cancel_calls(leftovers)
    moved = repin_orphaned_shares()
    started = start_waiting_scatter_tasks()
    if timed_out or leftovers or moved or started:
        logger.info(
            "event=workflow_sweep timed_out=%d calls_cancelled=%d shares_moved=%d scatter_started=%d",
            timed_out,
            len(leftovers),
            moved,
            started,
        )
    return {
        "timed_out": timed_out,
        "calls_cancelled": len(leftovers),
        "shares_moved": moved,
        "scatter_started": started,
    }


# -- reading ----------------------------------------------------------------------------------------


def waiting_reason(run: TaskRun, execution: Execution) -> str | None:
    """Why a task has not started or finished yet, in an operator's words."""
    if run.status == TaskStatus.PENDING:
        return f"waiting for {run.waiting_on} of its dependencies ({', '.join(run.depends_on)})"
    if run.status == TaskStatus.READY:
        if execution.status == ExecutionStatus.PAUSED:
            return "the execution is paused"
        if run.required_agents:
            live = len(pick_agents(run.capability, run.required_agents))
            if live < run.required_agents:
                return (
                    f"needs {run.required_agents} distinct live agents offering '{run.capability}'; "
                    f"{live} {'is' if live == 1 else 'are'} live"
                )
        if execution.tasks_running >= execution.max_parallel_tasks:
            return f"waiting for a free slot: {execution.tasks_running} of max {execution.max_parallel_tasks} tasks run"
        return "about to start"
    if run.status == TaskStatus.RUNNING:
        reasons = []
        for call in run.calls.select_related("invocation__capability", "invocation__pinned_agent"):
            reason = agent_services.waiting_reason(call.invocation)
            if reason:
                reasons.append(reason if not run.required_agents else f"share {call.share + 1}: {reason}")
        return "; ".join(reasons) or None
    return None


def progress(execution: Execution) -> dict[str, Any]:
    e = execution
    finished = e.tasks_finished
    return {
        "total": e.tasks_total,
        "pending": e.tasks_total - finished - e.tasks_running,
        "running": e.tasks_running,
        "succeeded": e.tasks_succeeded,
        "failed": e.tasks_failed,
        "skipped": e.tasks_skipped,
        "cancelled": e.tasks_cancelled,
        "percent": round(100.0 * finished / e.tasks_total, 1) if e.tasks_total else 100.0,
    }


def summary(execution: Execution, runs: list[TaskRun]) -> dict[str, Any]:
    """Duration, critical path (the chain of tasks that took longest) and the slowest task."""
    end = execution.finished_at or timezone.now()
    durations = {r.key: r.duration_seconds or 0.0 for r in runs}
    path, length = dag.critical_path(
        {r.key: r.depends_on for r in runs}, durations, [r.key for r in _topological(runs)]
    )
    slowest = max(runs, key=lambda r: r.duration_seconds or 0.0, default=None)
    return {
        "duration_seconds": round((end - execution.started_at).total_seconds(), 3) if execution.started_at else None,
        "critical_path": path,
        "critical_path_seconds": round(length, 3),
        "slowest_task": (
            {"key": slowest.key, "seconds": round(slowest.duration_seconds, 3)}
            if slowest is not None and slowest.duration_seconds is not None
            else None
        ),
    }


def _topological(runs: list[TaskRun]) -> list[TaskRun]:
    by_key = {r.key: r for r in runs}
    specs = [dag.TaskSpec(key=r.key, capability=r.capability, depends_on=r.depends_on) for r in runs]
    order, _ = dag.topological_order(specs)
    return [by_key[k] for k in order]


__all__ = [
    "cancel_execution",
    "check_definition",
    "create_workflow",
    "delete_workflow",
    "execute",
    "on_invocation_finished",
    "pause_execution",
    "resume_execution",
    "sweep",
]
