"""Integration: real `celery worker` and `celery beat` processes on this run's database and broker."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agents import services
from agents.models import Agent, AgentEvent
from agents.tasks import sweep_stale_agents
from tests import stack
from tests.factories import AgentFactory
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
FAST = {"MASP_HEARTBEAT_INTERVAL": "1", "MASP_STALE_TIMEOUT": "3"}


def test_beat_and_worker_take_a_silent_agent_offline_and_a_heartbeat_revives_it(processes):
    sweep = PeriodicTask.objects.get(task="agents.tasks.sweep_stale_agents")
    sweep.interval = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    sweep.save()
    AgentFactory(agent_id="talker")
    AgentFactory(agent_id="silent")
    processes.worker(**FAST)
    processes.beat(**FAST)

    def silent_offline():
        services.heartbeat(agent_id="talker")
        return Agent.objects.get(agent_id="silent").state == "offline"

    wait_until(silent_offline, timeout=45, interval=0.5, message="the sweep to take 'silent' offline")
    assert Agent.objects.get(agent_id="talker").state == "idle"
    assert AgentEvent.objects.filter(agent__agent_id="silent", kind="went_offline").count() == 1
    assert services.heartbeat(agent_id="silent").revived
    assert Agent.objects.get(agent_id="silent").state == "idle"


def test_a_task_published_here_runs_in_a_worker_process(processes):
    AgentFactory(agent_id="old", last_heartbeat_at=timezone.now() - timedelta(hours=2))
    processes.worker()
    sweep_stale_agents.delay()
    wait_until(lambda: Agent.objects.get(agent_id="old").state == "offline", message="the worker's sweep")


@pytest.mark.skipif(stack.stack() != "embedded", reason="the embedded broker is restarted only on the embedded stack")
def test_a_queued_message_survives_a_restart_of_the_embedded_broker(processes):
    from masplatform import embedded_broker

    AgentFactory(agent_id="old", last_heartbeat_at=timezone.now() - timedelta(hours=2))
    sweep_stale_agents.delay()  # no worker yet: the message waits in the broker
    time.sleep(1.2)  # appendfsync everysec
    assert embedded_broker.stop(settings.VAR_DIR)
    assert embedded_broker.ensure_running(settings.VAR_DIR)
    processes.worker()
    wait_until(lambda: Agent.objects.get(agent_id="old").state == "offline", message="the message to survive")


def test_rabbitmq_works_as_the_broker(processes):
    if stack.stack() != "services":
        pytest.skip("RabbitMQ is part of the services pass")
    url = stack.DEFAULT_AMQP
    if not stack.reachable(url):
        if stack.services_required():
            pytest.fail(f"RabbitMQ not reachable at {url} and MASP_REQUIRE_SERVICES=1")
        pytest.skip(f"RabbitMQ not reachable at {url}")
    from kombu import Connection, Queue

    queue = f"masp-test-{uuid.uuid4().hex[:8]}"
    AgentFactory(agent_id="old", last_heartbeat_at=timezone.now() - timedelta(hours=2))
    processes.worker(queues=queue, MASP_BROKER_URL=url)
    with Connection(url) as conn:
        try:
            sweep_stale_agents.apply_async(queue=queue, connection=conn)
            wait_until(lambda: Agent.objects.get(agent_id="old").state == "offline", message="the amqp worker")
        finally:
            Queue(queue).bind(conn).delete()
