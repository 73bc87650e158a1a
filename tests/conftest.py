from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests import stack
from tests.factories import AgentFactory, token_for


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"masplatform stack: {stack.stack()} (database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]},"
        f" broker {settings.CELERY_BROKER_URL})"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = stack.unreachable_servers()
    if not missing:
        return
    why = f"{stack.stack()} stack: cannot reach {', '.join(missing)}"
    if stack.services_required():
        pytest.exit(f"{why}, and MASP_REQUIRE_SERVICES=1 forbids skipping.", returncode=1)
    marker = pytest.mark.skip(reason=why)
    for item in items:
        item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def _no_embedded_broker_left_running():
    """Whatever started the test run's embedded broker (Celery does so on first use), stop it at the end."""
    yield
    from masplatform import embedded_broker

    embedded_broker.stop(settings.VAR_DIR)


@pytest.fixture(scope="session")
def broker_url(django_db_setup) -> str:
    """The run's broker, up and empty; cleaned up at the end of the session."""
    from masplatform import embedded_broker

    url = settings.CELERY_BROKER_URL
    if url == settings.EMBEDDED_BROKER_URL:
        embedded_broker.ensure_running(settings.VAR_DIR)
    flush_broker(url)
    yield url
    flush_broker(url)
    if url == settings.EMBEDDED_BROKER_URL:
        embedded_broker.stop(settings.VAR_DIR)


def flush_broker(url: str) -> None:
    if url.startswith(("redis://", "redis+socket://")):
        import redis

        redis.Redis.from_url(url.replace("redis+socket://", "unix://")).flushdb()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True)


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("reader", password="reader-pass-123")


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def user_client(plain_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(plain_user)
    return client


@pytest.fixture
def agent_client():
    """agent_client(agent) → an APIClient that sends that agent's token."""

    def make(agent) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Agent {token_for(agent.agent_id)}")
        return client

    return make


@pytest.fixture
def agent_factory():
    return AgentFactory


@pytest.fixture
def processes(broker_url, tmp_path):
    from tests.processes import Processes

    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
