"""POST/GET /api/invocations/ without workers: validation, idempotency, waiting reasons, who may do what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents import selectors, services
from agents.models import Invocation, InvocationAttempt
from tests.factories import AgentFactory, CapabilityFactory, token_for

pytestmark = pytest.mark.django_db
CALC_IN = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}


@pytest.fixture
def calc():
    return CapabilityFactory(name="calculation", input_schema=CALC_IN)


def test_invoke_queues_a_call_and_says_why_it_waits(staff_client, calc):
    response = staff_client.post(
        "/api/invocations/", {"capability": "calculation", "input": {"a": 1, "b": 2}}, format="json"
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "queued" and data["priority"] == 5 and data["requested_by"] == "user:staff"
    assert data["waiting_reason"] == "no live agent offers 'calculation'"
    assert Invocation.objects.get(pk=data["id"]).input == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"capability": "nothing", "input": {}}, "capability", "unknown capability 'nothing'"),
        ({"capability": "calculation", "input": {"a": 1}}, "input", "/: 'b' is a required property"),
        ({"capability": "calculation", "input": {"a": "x", "b": 2}}, "input", "/a: 'x' is not of type 'number'"),
        (
            {"capability": "calculation", "input": {"a": 1, "b": 2}, "priority": 10},
            "priority",
            "less than or equal to 9",
        ),
        ({"capability": "calculation", "input": {"a": 1, "b": 2}, "timeout": 0}, "timeout", "greater than or equal"),
        ({"capability": "calculation", "input": {"a": 1, "b": 2}, "agent": "ghost"}, "agent", "no registered agent"),
        ({"input": {}}, "capability", "required"),
    ],
)
def test_bad_invocations_are_400_and_create_nothing(staff_client, calc, body, field, words):
    response = staff_client.post("/api/invocations/", body, format="json")
    assert response.status_code == 400, response.content
    assert words in str(response.json()[field])
    assert not Invocation.objects.exists()


def test_pinning_to_an_agent_that_does_not_offer_the_capability_is_400(staff_client, calc):
    AgentFactory(agent_id="other", offers={"something_else": 1})
    response = staff_client.post(
        "/api/invocations/", {"capability": "calculation", "input": {"a": 1, "b": 2}, "agent": "other"}, format="json"
    )
    assert response.status_code == 400 and "does not offer" in str(response.json()["agent"])


def test_idempotency_key_returns_the_first_call_or_409_for_another_body(staff_client, calc):
    body = {"capability": "calculation", "input": {"a": 1, "b": 2}, "idempotency_key": "k-1"}
    first = staff_client.post("/api/invocations/", body, format="json")
    again = staff_client.post("/api/invocations/", body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = staff_client.post("/api/invocations/", {**body, "input": {"a": 5, "b": 2}}, format="json")
    assert other.status_code == 409 and "k-1" in other.json()["detail"]
    assert Invocation.objects.count() == 1


@pytest.mark.parametrize("wait", ["abc", "31", "-1"])
def test_wait_must_be_0_to_30_seconds(staff_client, calc, wait):
    response = staff_client.post(
        f"/api/invocations/?wait={wait}", {"capability": "calculation", "input": {"a": 1, "b": 2}}, format="json"
    )
    assert response.status_code == 400 and "wait" in response.json()
    assert not Invocation.objects.exists()


def test_wait_answers_after_the_timeout_when_nothing_runs(staff_client, calc, broker_url):
    response = staff_client.post(
        "/api/invocations/?wait=0.3", {"capability": "calculation", "input": {"a": 1, "b": 2}}, format="json"
    )
    assert response.status_code == 201 and response.json()["status"] == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_waiting_post_with_a_repeated_idempotency_key_answers_with_the_first_call(staff_client, calc, broker_url):
    body = {"capability": "calculation", "input": {"a": 1, "b": 2}, "idempotency_key": "k-w"}
    first = staff_client.post("/api/invocations/?wait=0.2", body, format="json")
    again = staff_client.post("/api/invocations/?wait=0.2", body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "queued"
    assert Invocation.objects.count() == 1


def test_waiting_reasons(staff_client, calc):
    agent = AgentFactory(
        agent_id="calc-1", offers={"calculation": 1}, in_flight=1, max_concurrency=1, worker_name="agent.calc-1@host"
    )
    first, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    second, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    reason = staff_client.get(f"/api/invocations/{second.pk}/").json()["waiting_reason"]
    assert reason == "all 1 agents that offer 'calculation' are busy and 1 call(s) are ahead of it"
    pinned, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x", agent="calc-1")
    agent.state = "offline"
    agent.save()
    assert (
        staff_client.get(f"/api/invocations/{pinned.pk}/").json()["waiting_reason"]
        == "the pinned agent 'calc-1' is offline"
    )


def test_a_call_offered_only_by_agents_without_a_worker_says_so(staff_client, calc):
    AgentFactory(agent_id="http-only", offers={"calculation": 1})
    invocation, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    assert "run no worker" in staff_client.get(f"/api/invocations/{invocation.pk}/").json()["waiting_reason"]


def test_cancel_a_queued_call_at_once_and_a_finished_one_is_409(staff_client, calc):
    invocation, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    response = staff_client.post(f"/api/invocations/{invocation.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = staff_client.post(f"/api/invocations/{invocation.pk}/cancel/")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert not InvocationAttempt.objects.exists()
    agent = AgentFactory(agent_id="late", offers={"calculation": 1})
    assert services.claim(str(invocation.pk), agent=agent) is None  # its message, if it comes, runs nothing


def test_claim_is_a_compare_and_swap_and_only_the_holder_records(calc):
    a = AgentFactory(agent_id="a", offers={"calculation": 1})
    b = AgentFactory(agent_id="b", offers={"calculation": 1})
    invocation, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    first = services.claim(str(invocation.pk), agent=a)
    assert first is not None and first.attempt == 1
    assert services.claim(str(invocation.pk), agent=b) is None  # the duplicate delivery does nothing
    assert services.record_success(invocation.pk, attempt=2, output={}) is False  # not the holder
    assert services.record_success(invocation.pk, attempt=1, output={"sum": 3}) is True
    assert services.record_success(invocation.pk, attempt=1, output={"sum": 4}) is False  # recorded once
    invocation.refresh_from_db()
    assert (invocation.status, invocation.output, invocation.agent_id) == ("succeeded", {"sum": 3}, a.pk)
    counters = selectors.call_counters([a.pk])[a.pk]
    assert counters.completed == 1 and counters.failed == 0 and counters.avg_response_time_ms is not None


def test_retry_of_a_failed_call(staff_client, calc):
    a = AgentFactory(agent_id="a", offers={"calculation": 1})
    invocation, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    claimed = services.claim(str(invocation.pk), agent=a)
    services.record_failure(
        invocation.pk,
        attempt=claimed.attempt,
        error_type="ValueError",
        error_message="no",
        error_traceback="Traceback ...",
    )
    data = staff_client.get(f"/api/invocations/{invocation.pk}/").json()
    assert data["status"] == "failed" and data["error"]["traceback"] == "Traceback ..."
    assert data["attempts"][0]["outcome"] == "failed" and data["attempts"][0]["error_message"] == "no"
    response = staff_client.post(f"/api/invocations/{invocation.pk}/retry/")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert staff_client.post(f"/api/invocations/{invocation.pk}/retry/").status_code == 409


def test_list_filters(staff_client, calc):
    for i in range(3):
        services.invoke(capability="calculation", input={"a": i, "b": 2}, requested_by="user:x")
    CapabilityFactory(name="other")
    services.invoke(capability="other", input={}, requested_by="agent:z")
    assert staff_client.get("/api/invocations/?capability=calculation").json()["count"] == 3
    assert staff_client.get("/api/invocations/?requested_by=agent:z").json()["count"] == 1
    assert staff_client.get("/api/invocations/?status=queued&status=running").json()["count"] == 4
    assert staff_client.get("/api/invocations/?status=exploded").status_code == 400
    runner = AgentFactory(agent_id="runner", offers={"calculation": 1})
    ran = Invocation.objects.filter(capability__name="calculation").first()
    services.claim(str(ran.pk), agent=runner)
    assert [i["id"] for i in staff_client.get("/api/invocations/?agent=runner").json()["results"]] == [str(ran.pk)]
    assert staff_client.get("/api/invocations/?agent=nobody").json()["count"] == 0
    Invocation.objects.exclude(pk=ran.pk).update(created_at=timezone.now() - timedelta(days=2))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert [i["id"] for i in staff_client.get("/api/invocations/", {"since": since}).json()["results"]] == [str(ran.pk)]
    assert staff_client.get("/api/invocations/?since=yesterday").status_code == 400


def test_a_traceback_is_for_staff_only(user_client, calc):
    a = AgentFactory(agent_id="a", offers={"calculation": 1})
    # user_client is "reader", who sees only the calls it asked for
    invocation, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:reader")
    claimed = services.claim(str(invocation.pk), agent=a)
    services.record_failure(
        invocation.pk,
        attempt=claimed.attempt,
        error_type="KeyError",
        error_message="k",
        error_traceback="secret frames",
    )
    error = user_client.get(f"/api/invocations/{invocation.pk}/").json()["error"]
    assert error == {"type": "KeyError", "message": "k"}


def test_what_an_agent_token_may_do_with_invocations(calc):
    AgentFactory(agent_id="client-a")
    AgentFactory(agent_id="client-b")
    a, b = APIClient(), APIClient()
    a.credentials(HTTP_AUTHORIZATION=f"Agent {token_for('client-a')}")
    b.credentials(HTTP_AUTHORIZATION=f"Agent {token_for('client-b')}")
    body = {"capability": "calculation", "input": {"a": 1, "b": 2}, "requested_by": "user:staff"}
    created = a.post("/api/invocations/", body, format="json")
    assert created.status_code == 201 and created.json()["requested_by"] == "agent:client-a"
    pk = created.json()["id"]
    assert a.get(f"/api/invocations/{pk}/").status_code == 200
    assert b.get(f"/api/invocations/{pk}/").status_code == 404  # another agent's call is not there for it
    assert b.post(f"/api/invocations/{pk}/cancel/").status_code == 404
    assert [i["id"] for i in b.get("/api/invocations/").json()["results"]] == []
    assert a.post(f"/api/invocations/{pk}/retry/").status_code == 403
    assert a.post("/api/agents/client-b/drain/").status_code == 403
    assert a.post(f"/api/invocations/{pk}/cancel/").json()["status"] == "cancelled"


def test_anonymous_and_read_only_users(user_client, calc):
    assert APIClient().get("/api/invocations/").status_code == 401
    response = user_client.post(
        "/api/invocations/", {"capability": "calculation", "input": {"a": 1, "b": 2}}, format="json"
    )
    assert response.status_code == 403


def test_capability_detail_has_fleet_figures(user_client, calc):
    AgentFactory(agent_id="c1", offers={"calculation": 1})
    services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    fleet = user_client.get("/api/capabilities/calculation/").json()["fleet"]
    assert fleet["queue"] == "cap.calculation" and fleet["queued"] == 1 and fleet["live_agents"] == 1
    assert fleet["success_rate"] is None and fleet["in_flight"] == 0


def test_a_draining_agent_leaves_draining_only_by_resume_or_offline(staff_client):
    AgentFactory(agent_id="d-1", state="draining")
    response = staff_client.post("/api/agents/d-1/status/", {"state": "idle"}, format="json")
    assert response.status_code == 409 and "/resume/" in response.json()["detail"]
    assert staff_client.post("/api/agents/d-1/status/", {"state": "offline"}, format="json").status_code == 200


def test_lost_calls_are_re_queued_a_bounded_number_of_times(calc, settings):
    from django.utils import timezone

    settings.MASP_MAX_LOST_ATTEMPTS = 2
    invocation, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    for n in range(2):
        agent = AgentFactory(agent_id=f"doomed-{n}", offers={"calculation": 1})
        assert services.claim(str(invocation.pk), agent=agent) is not None
        services.requeue_running_on([agent.pk], now=timezone.now())
    invocation.refresh_from_db()
    assert invocation.status == "failed" and invocation.error_type == "AgentLost"
    assert list(invocation.attempts.values_list("outcome", flat=True)) == ["lost", "lost"]


def test_queued_calls_whose_message_is_old_are_sent_again(calc):
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(minutes=10)
    waiting, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    backoff, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    fresh, _ = services.invoke(capability="calculation", input={"a": 1, "b": 2}, requested_by="user:x")
    Invocation.objects.filter(pk__in=[waiting.pk, backoff.pk]).update(dispatched_at=old)
    Invocation.objects.filter(pk=backoff.pk).update(not_before=timezone.now() + timedelta(minutes=1))
    assert services.redispatch_waiting() == 1
    waiting.refresh_from_db()
    assert waiting.dispatched_at > old
