"""Logins are rate-limited per client address and per username, on the API and in the admin; nothing else is.

The test settings raise the limits so that other tests may sign in freely; these tests set them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from masplatform.rates import parse_rate
from masplatform.throttling import LoginThrottle
from tests.factories import AgentFactory, CapabilityFactory, token_for

pytestmark = pytest.mark.django_db
TOKEN = "/api/auth/token/"
ADMIN = "/admin/login/"
ROOMY = "1000/min"


@pytest.fixture(autouse=True)
def _empty_counters():
    caches["throttle"].clear()


def token_attempt(username: str, password: str = "wrong", address: str = "10.0.0.1", **extra):
    return APIClient().post(
        TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=address, **extra
    )


def admin_attempt(client, username: str, password: str = "wrong", address: str = "10.0.0.1", path: str = ADMIN):
    return client.post(path, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=address)


def assert_throttled_api(response) -> int:
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert "throttled" in response.json()["detail"].lower()
    return retry_after


@override_settings(MASP_LOGIN_RATE_PER_IP="3/min", MASP_LOGIN_RATE_PER_USERNAME=ROOMY)
def test_the_token_endpoint_is_limited_per_client_address():
    for n in range(3):
        assert token_attempt(f"someone-{n}").status_code == 400
    assert_throttled_api(token_attempt("someone-else"))
    assert token_attempt("someone-else", address="10.0.0.2").status_code == 400  # another address is not


@override_settings(MASP_LOGIN_RATE_PER_IP=ROOMY, MASP_LOGIN_RATE_PER_USERNAME="2/min")
def test_the_token_endpoint_is_limited_per_username_whatever_the_address(staff_user):
    assert token_attempt("staff", address="10.0.0.1").status_code == 400
    assert token_attempt("STAFF", address="10.0.0.2").status_code == 400
    # the right password from a third address: refused too, the username has used its attempts
    assert_throttled_api(token_attempt("staff", "staff-pass-123", address="10.0.0.3"))
    assert token_attempt("reader", address="10.0.0.3").status_code == 400  # another username is not


@override_settings(MASP_LOGIN_RATE_PER_IP="2/min", MASP_LOGIN_RATE_PER_USERNAME=ROOMY)
def test_an_attempt_is_allowed_again_once_the_window_has_passed(monkeypatch, staff_user):
    now = [1_000_000.0]
    monkeypatch.setattr(LoginThrottle, "timer", lambda self: now[0])
    token_attempt("a")
    now[0] += 20
    token_attempt("b")
    now[0] += 10
    assert assert_throttled_api(token_attempt("c")) == 30  # the first attempt leaves the window in 30 s
    now[0] += 31
    assert token_attempt("staff", "staff-pass-123").status_code == 200


@override_settings(MASP_LOGIN_RATE_PER_IP="2/min", MASP_LOGIN_RATE_PER_USERNAME=ROOMY)
def test_a_forged_x_forwarded_for_does_not_change_the_address():
    token_attempt("a", HTTP_X_FORWARDED_FOR="1.1.1.1")
    token_attempt("b", HTTP_X_FORWARDED_FOR="2.2.2.2")
    assert_throttled_api(token_attempt("c", HTTP_X_FORWARDED_FOR="3.3.3.3"))


@override_settings(MASP_LOGIN_RATE_PER_IP="2/min", MASP_LOGIN_RATE_PER_USERNAME=ROOMY)
def test_behind_a_proxy_the_address_it_saw_is_the_client():
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}):
        token_attempt("a", address="127.0.0.1", HTTP_X_FORWARDED_FOR="9.9.9.9, 1.1.1.1")
        token_attempt("b", address="127.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1")
        assert_throttled_api(token_attempt("c", address="127.0.0.1", HTTP_X_FORWARDED_FOR="8.8.8.8, 1.1.1.1"))
        assert token_attempt("d", address="127.0.0.1", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 400


@override_settings(MASP_LOGIN_RATE_PER_IP="3/min", MASP_LOGIN_RATE_PER_USERNAME=ROOMY)
def test_the_admin_login_is_limited_per_client_address(client, staff_user):
    assert client.get(ADMIN).status_code == 200  # showing the form is not an attempt
    for n in range(3):
        assert admin_attempt(client, f"someone-{n}").status_code == 200  # the form again, with its error
    response = admin_attempt(client, "staff", "staff-pass-123")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "Too many login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session  # not signed in
    assert admin_attempt(client, "staff", "staff-pass-123", address="10.0.0.2").status_code == 302


@override_settings(MASP_LOGIN_RATE_PER_IP=ROOMY, MASP_LOGIN_RATE_PER_USERNAME="2/min")
def test_the_admin_login_is_limited_per_username(client, staff_user):
    admin_attempt(client, "staff", address="10.0.0.1")
    admin_attempt(client, "staff", address="10.0.0.2")
    response = admin_attempt(client, "staff", "staff-pass-123", address="10.0.0.3")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert admin_attempt(client, "reader", address="10.0.0.3").status_code == 200


@override_settings(MASP_LOGIN_RATE_PER_IP=ROOMY, MASP_LOGIN_RATE_PER_USERNAME="3/min")
def test_the_logins_share_their_counters(client, staff_user):
    token_attempt("staff")
    admin_attempt(client, "staff")
    admin_attempt(client, "staff", path="/api-auth/login/")
    assert_throttled_api(token_attempt("staff", "staff-pass-123"))
    assert admin_attempt(client, "staff", path="/api-auth/login/").status_code == 429
    assert admin_attempt(client, "staff").status_code == 429


@override_settings(MASP_LOGIN_RATE_PER_IP="off", MASP_LOGIN_RATE_PER_USERNAME="off")
def test_off_means_no_limit(staff_user):
    for _ in range(20):
        assert token_attempt("staff").status_code == 400


@override_settings(MASP_LOGIN_RATE_PER_IP="1/min", MASP_LOGIN_RATE_PER_USERNAME="1/min")
def test_heartbeats_and_agents_calls_are_not_throttled(staff_client):
    AgentFactory(agent_id="busy")
    CapabilityFactory(name="spare")
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION=f"Agent {token_for('busy')}")
    for _ in range(15):
        assert agent.post("/api/agents/busy/heartbeat/", {}, format="json", REMOTE_ADDR="10.0.0.1").status_code == 200
        assert agent.post("/api/invocations/", {"capability": "spare", "input": {}}, format="json").status_code == 201
        assert agent.get("/api/capabilities/", REMOTE_ADDR="10.0.0.1").status_code == 200
        assert staff_client.get("/api/agents/", REMOTE_ADDR="10.0.0.1").status_code == 200


@override_settings(MASP_LOGIN_RATE_PER_IP="5/min")
def test_the_counters_are_rows_of_the_database_shared_by_every_web_process():
    assert settings.CACHES["throttle"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
    token_attempt("someone")
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM masp_throttle_cache")
        assert cursor.fetchone()[0] == 2  # one per limit: the address and the username


def test_the_schema_documents_the_429(staff_client):
    schema = staff_client.get("/api/schema/", {"format": "json"}).json()
    assert {"200", "400", "429"} <= set(schema["paths"][TOKEN]["post"]["responses"])


@pytest.mark.parametrize(("rate", "parsed"), [("10/min", (10, 60)), ("3/s", (3, 1)), ("100/hour", (100, 3600))])
def test_rates(rate, parsed):
    assert parse_rate(rate) == parsed
    assert parse_rate("off") is None and parse_rate("") is None


@pytest.mark.parametrize("rate", ["10", "ten/min", "0/min", "10/fortnight", "-1/s"])
def test_a_bad_rate_is_refused_at_start_and_names_the_setting(rate):
    env = {**os.environ, "MASP_LOGIN_RATE_PER_USERNAME": rate, "DJANGO_SETTINGS_MODULE": "masplatform.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert f"MASP_LOGIN_RATE_PER_USERNAME='{rate}': expected <count>/<period>" in done.stderr
