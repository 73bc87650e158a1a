"""The workflow admin: definitions with their DAG, executions with status colours, timeline, progress
and the operator actions, all through the real services and database."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.workflows.helpers import calls, capability, fresh, play, run_task, worker_agent, workflow
from workflows import services
from workflows.models import Execution, Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent():
    capability("echo")
    capability("vote")
    return worker_agent("worker-1", "echo", "vote")


def diamond(name: str = "diamond", **fields):
    return workflow(
        [
            {"key": "fetch", "capability": "echo"},
            {"key": "left", "capability": "echo", "depends_on": ["fetch"]},
            {"key": "right", "capability": "vote", "depends_on": ["fetch"]},
            {"key": "join", "capability": "echo", "depends_on": ["left", "right"]},
        ],
        name=name,
        **fields,
    )


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def execution_url(execution: Execution) -> str:
    return reverse("admin:workflows_execution_change", args=[execution.pk])


def test_workflow_list_shows_counts_without_n_plus_1(admin_client, agent, django_assert_max_num_queries):
    for i in range(25):
        wf = diamond(f"wf-{i}", max_parallel_tasks=3, failure_strategy="continue")
        if i % 5 == 0:
            services.execute(wf.pk)
            services.execute(wf.pk)
    with django_assert_max_num_queries(8):
        html = page(admin_client, reverse("admin:workflows_workflow_changelist"))
    assert "wf-0" in html and "wf-24" in html
    row = re.search(r"wf-0</a></th>(.*?)</tr>", html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[0] == "4"  # tasks
    assert cells[1].startswith("continue") and cells[2] == "3" and cells[3] == "1"  # strategy, max parallel, version
    assert ">2</a>" in cells[4] and "workflow__id__exact=" in cells[4]  # executions, linked to their list


def test_execution_list_shows_badges_and_progress_without_n_plus_1(admin_client, agent, django_assert_max_num_queries):
    wf = diamond()
    executions = [services.execute(wf.pk, requested_by=f"user:u{i}") for i in range(30)]
    run_task(executions[0], "fetch", agent)
    services.cancel_execution(executions[1].pk)
    with django_assert_max_num_queries(10):
        html = page(admin_client, reverse("admin:workflows_execution_changelist"))
    assert 'class="wf-badge st-running"' in html and 'class="wf-badge st-cancelled"' in html
    assert 'class="wf-progress"' in html and "1/4 (25.0%)" in html and "user:u7" in html
    assert "workflows/admin.css" in html  # styled by the shipped file, no CDN
    assert "cdn" not in html.lower()
    filtered = page(admin_client, reverse("admin:workflows_execution_changelist") + "?status__exact=cancelled")
    assert str(executions[1].pk)[:8] in filtered and str(executions[2].pk)[:8] not in filtered


def test_definition_page_draws_every_task_and_lists_them_read_only(admin_client, agent):
    wf = diamond()
    html = page(admin_client, reverse("admin:workflows_workflow_change", args=[wf.pk]))
    svg = re.search(r"<svg class=\"wf-dag.*?</svg>", html, re.S).group(0)
    for key in ("fetch", "left", "right", "join"):
        assert f">{key}</text>" in svg
    assert svg.count('class="edge') == 4 and "st-none" in svg
    assert f"PUT /api/workflows/{wf.pk}/" in html  # where tasks are edited
    assert reverse("admin:workflows_workflow_execute", args=[wf.pk]) in html
    assert "add another" not in html.lower() and 'name="tasks-TOTAL_FORMS"' not in html


def test_execute_button_starts_an_execution_and_opens_it(admin_client, agent):
    wf = diamond()
    response = admin_client.post(reverse("admin:workflows_workflow_execute", args=[wf.pk]))
    execution = Execution.objects.get(workflow=wf)
    assert response.status_code == 302 and response.url == execution_url(execution)
    assert execution.status == "running" and execution.context == {} and execution.requested_by == "user:admin"
    assert admin_client.get(reverse("admin:workflows_workflow_execute", args=[wf.pk])).status_code == 405


def test_execute_action_links_each_new_execution(admin_client, agent):
    first, second = diamond("one"), diamond("two")
    response = admin_client.post(
        reverse("admin:workflows_workflow_changelist"),
        {"action": "execute_selected", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert Execution.objects.count() == 2 and "Started 2 execution(s)." in html
    for execution in Execution.objects.all():
        assert execution_url(execution) in html


def test_editing_a_definition_goes_through_the_service_and_keeps_its_tasks(admin_client, agent):
    wf = diamond()
    url = reverse("admin:workflows_workflow_change", args=[wf.pk])
    form = {
        "name": "diamond",
        "description": "now described",
        "global_timeout": "600",
        "max_parallel_tasks": "2",
        "failure_strategy": "retry",
    }
    assert admin_client.post(url, form).status_code == 302
    wf = Workflow.objects.get(pk=wf.pk)
    assert (wf.description, wf.max_parallel_tasks, wf.failure_strategy, wf.version) == ("now described", 2, "retry", 2)
    assert list(wf.tasks.values_list("key", flat=True)) == ["fetch", "left", "right", "join"]
    refused = admin_client.post(url, {**form, "max_parallel_tasks": "0", "description": "never"})
    assert refused.status_code == 200 and "errornote" in refused.content.decode()
    assert Workflow.objects.get(pk=wf.pk).description == "now described"
    assert admin_client.get(reverse("admin:workflows_workflow_add")).status_code == 403


def test_execution_page_colours_the_graph_and_shows_timeline_progress_and_agents(
    admin_client, agent, django_assert_max_num_queries
):
    execution = services.execute(diamond().pk, context={"region": "eu", "n": 3})
    run_task(execution, "fetch", agent, {"ok": True})
    run_task(execution, "left", agent, error="disk full")  # stop strategy: fails the execution...
    execution = fresh(execution)
    assert execution.status == "failed"
    with django_assert_max_num_queries(15):
        html = page(admin_client, execution_url(execution))
    svg = re.search(r"<svg class=\"wf-dag.*?</svg>", html, re.S).group(0)
    assert 'class="node st-succeeded' in svg and 'class="node st-failed' in svg
    assert 'class="node st-running' in svg or 'class="node st-cancelled' in svg  # 'right' was started, then stopped
    assert 'class="node st-cancelled' in svg  # 'join' never started
    assert "workflows/admin.css" in html and ".st-succeeded" in open_static("workflows/admin.css")
    # the timeline: one bar per started task, labelled with its agent
    timeline = re.search(r'id="wf-timeline">(.*?)</fieldset>', html, re.S).group(1)
    assert timeline.count('class="bar st-') == 3 and "worker-1 ·" in timeline
    assert 'class="bar st-succeeded' in timeline and 'class="bar st-failed' in timeline
    assert "1 task(s) have not started" in timeline
    # progress, summary, context and the task table
    assert 'class="wf-progress wide"' in html and "3/4 (75.0%)" in html
    summary = re.search(r'id="wf-summary">(.*?)</fieldset>', html, re.S).group(1)
    assert "fetch → left" in summary and "slowest task" in summary
    assert "&quot;region&quot;: &quot;eu&quot;" in html
    tasks = re.search(r'id="wf-tasks">(.*?)</fieldset>', html, re.S).group(1)
    assert "RuntimeError: disk full" in tasks and "worker-1" in tasks


def test_scatter_tasks_show_the_agent_of_each_share(admin_client, agent):
    other = worker_agent("worker-2", "vote")
    wf = workflow([{"key": "poll", "capability": "vote", "required_agents": 2, "aggregation": "list"}], name="scatter")
    execution = services.execute(wf.pk)
    shares = calls(execution, "poll")
    by_pk = {a.pk: a for a in (agent, other)}
    play(shares[0], by_pk[shares[0].pinned_agent_id], {"v": 1})
    html = page(admin_client, execution_url(execution))
    timeline = re.search(r'id="wf-timeline">(.*?)</fieldset>', html, re.S).group(1)
    assert by_pk[shares[0].pinned_agent_id].agent_id in timeline and "so far" in timeline
    play(shares[1], by_pk[shares[1].pinned_agent_id], {"v": 2})
    assert fresh(execution).status == "succeeded"
    timeline = re.search(r'id="wf-timeline">(.*?)</fieldset>', page(admin_client, execution_url(execution)), re.S)
    assert "worker-1" in timeline.group(1) and "worker-2" in timeline.group(1)


def test_actions_pause_resume_and_cancel_through_the_services(admin_client, agent):
    wf = diamond()
    a, b = services.execute(wf.pk), services.execute(wf.pk)
    url = reverse("admin:workflows_execution_changelist")

    def act(action: str, *executions: Execution) -> str:
        response = admin_client.post(
            url, {"action": action, "_selected_action": [str(e.pk) for e in executions]}, follow=True
        )
        return response.content.decode()

    assert "Paused 2 execution(s)." in act("pause_selected", a, b)
    assert (fresh(a).status, fresh(b).status) == ("paused", "paused")
    assert "Resumed 1 execution(s)." in act("resume_selected", a)
    assert fresh(a).status == "running"
    html = act("cancel_selected", b)
    assert "Cancelled 1 execution(s)." in html and fresh(b).status == "cancelled"
    assert fresh(b).error == "cancelled in the admin by user:admin"
    # refusals are reported with the current state, as the API's 409 does
    html = act("resume_selected", a, b)
    assert "only a paused one can be resumed" in html and "is cancelled" in html
    assert (fresh(a).status, fresh(b).status) == ("running", "cancelled")


def test_buttons_on_the_execution_page_match_its_state(admin_client, agent):
    execution = services.execute(diamond().pk)
    html = page(admin_client, execution_url(execution))
    pause, resume, cancel = (
        reverse(f"admin:workflows_execution_{v}", args=[execution.pk]) for v in ("pause", "resume", "cancel")
    )
    assert pause in html and cancel in html and resume not in html
    response = admin_client.post(pause)
    assert response.status_code == 302 and response.url == execution_url(execution)
    assert fresh(execution).status == "paused"
    html = page(admin_client, execution_url(execution))
    assert resume in html and pause not in html
    admin_client.post(cancel)
    html = page(admin_client, execution_url(execution))
    assert fresh(execution).status == "cancelled" and cancel not in html and resume not in html
    response = admin_client.post(cancel, follow=True)  # refused: already finished
    assert "already cancelled" in response.content.decode()


def test_the_page_refreshes_itself_only_while_the_execution_is_active(admin_client, agent):
    execution = services.execute(diamond().pk)
    html = page(admin_client, execution_url(execution))
    assert 'id="wf-live"' in html and "workflows/live.js" in html and 'http-equiv="refresh"' in html
    services.pause_execution(execution.pk)
    assert 'id="wf-live"' in page(admin_client, execution_url(execution))  # paused is still active
    services.cancel_execution(execution.pk)
    html = page(admin_client, execution_url(execution))
    assert 'id="wf-live"' not in html and "live.js" not in html and 'http-equiv="refresh"' not in html


def test_text_from_users_is_escaped_everywhere(admin_client, agent):
    evil = "<script>alert(1)</script>"
    wf = workflow(
        [
            {"key": "fetch", "capability": "echo", "name": evil},
            {"key": "next", "capability": "echo", "depends_on": ["fetch"]},
        ],
        name=f"wf {evil}",
        description=evil,
    )
    execution = services.execute(wf.pk, context={"note": evil}, requested_by=evil)
    for url in (
        reverse("admin:workflows_workflow_changelist"),
        reverse("admin:workflows_workflow_change", args=[wf.pk]),
        reverse("admin:workflows_execution_changelist"),
        execution_url(execution),
    ):
        html = page(admin_client, url)
        assert evil not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url


def test_executions_are_read_only(admin_client, agent):
    execution = services.execute(diamond().pk)
    assert admin_client.get(reverse("admin:workflows_execution_add")).status_code == 403
    assert admin_client.get(reverse("admin:workflows_execution_delete", args=[execution.pk])).status_code == 403
    html = page(admin_client, execution_url(execution))
    assert 'name="_save"' not in html
    response = admin_client.post(execution_url(execution), {"status": "succeeded"})
    assert response.status_code == 403 and fresh(execution).status == "running"


def test_a_staff_user_without_permissions_cannot_operate(client, staff_user, agent):
    execution = services.execute(diamond().pk)
    client.force_login(staff_user)
    response = client.post(reverse("admin:workflows_execution_cancel", args=[execution.pk]))
    assert response.status_code in (302, 403) and fresh(execution).status == "running"


def open_static(name: str) -> str:
    from django.contrib.staticfiles import finders

    with open(finders.find(name), encoding="utf-8") as fh:
        return fh.read()


def test_a_big_execution_page_stays_within_a_bounded_number_of_queries(
    admin_client, agent, django_assert_max_num_queries
):
    tasks = [{"key": f"root-{i}", "capability": "echo"} for i in range(15)]
    tasks += [{"key": f"next-{i}", "capability": "echo", "depends_on": [f"root-{i % 15}"]} for i in range(60)]
    execution = services.execute(workflow(tasks, name="wide", max_parallel_tasks=15).pk)
    play(calls(execution, "root-0")[0], agent, {})  # claimed and done; 14 calls stay queued
    # ~10 for the page, ~6 for each of the first COSTLY_REASONS_LIMIT queued calls' waiting reasons
    with django_assert_max_num_queries(70):
        html = page(admin_client, execution_url(execution))
    assert html.count('class="node st-') == 75 + 7  # every task, plus the legend's swatches
    assert "not computed: too many active tasks" in html
    assert "waiting for 1 of its dependencies (root-3)" in html
