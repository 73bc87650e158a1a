"""Project-wide behaviour: JSON errors under /api/, settings from the environment."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from django.conf import settings

from masplatform.env import env_bool, env_float, env_list

pytestmark = pytest.mark.django_db


def test_unknown_api_url_is_json_404(staff_client):
    response = staff_client.get("/api/nothing-here/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "/api/nothing-here/" in response.json()["detail"]


def test_method_not_allowed_is_json(staff_client):
    response = staff_client.put("/api/agents/stats/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["detail"]


def test_an_unexpected_error_is_json_500_without_a_trace(staff_client, monkeypatch):
    from agents import selectors

    def explode():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "registry_stats", explode)
    staff_client.raise_request_exception = False
    response = staff_client.get("/api/agents/stats/")
    assert response.status_code == 500
    body = response.json()
    assert body["error_id"] and "secret internals" not in response.content.decode()


def test_env_helpers_parse_and_refuse_nonsense(monkeypatch):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_FLOAT", "2.5")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_bool("X_BOOL") is True
    assert env_float("X_FLOAT", 1.0) == 2.5
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ValueError, match="X_BOOL"):
        env_bool("X_BOOL")


def _settings_in_subprocess(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='masplatform.settings'; django.setup(); "
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    clean["MASP_DOTENV"] = "0"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=60,
    )


def test_without_a_secret_key_production_settings_refuse_to_start(tmp_path):
    result = _settings_in_subprocess({"MASP_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "MASP_SECRET_KEY" in result.stderr


def test_defaults_are_sqlite_and_the_embedded_broker_and_urls_switch_them(tmp_path):
    result = _settings_in_subprocess({"MASP_VAR_DIR": str(tmp_path), "MASP_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["masplatform.db.sqlite3", f"redis+socket://{tmp_path}/broker/redis.sock"]
    result = _settings_in_subprocess(
        {
            "MASP_VAR_DIR": str(tmp_path),
            "MASP_SECRET_KEY": "k" * 50,
            "MASP_DATABASE_URL": "postgres://u@db:5432/masp",
            "MASP_BROKER_URL": "amqp://guest:guest@mq:5672//",
        }
    )
    assert result.stdout.split() == ["django.db.backends.postgresql", "amqp://guest:guest@mq:5672//"]


def test_celery_takes_the_django_celery_settings_once_as_a_plain_dict():
    from django.conf import settings

    from masplatform import broker
    from masplatform.celery import app
    from masplatform.celery_config import CONFIG

    # the embedded broker's URL names the platform's transport (masplatform/broker.py); a redis:// one keeps its URL
    url = broker.celery_options(settings.CELERY_BROKER_URL).get("broker_url", settings.CELERY_BROKER_URL)
    assert isinstance(CONFIG, dict) and CONFIG["broker_url"] == url == app.conf.broker_url
    assert url.endswith(settings.CELERY_BROKER_URL.split("://", 1)[1])
    assert app.conf.task_acks_late is True and app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["priority_steps"] == list(range(10))
    assert app.conf.beat_scheduler == settings.CELERY_BEAT_SCHEDULER
    # the name Celery's Django fix-up reads: workers keep their database connection across tasks
    assert app.conf.get("CELERY_DB_REUSE_MAX") == settings.CELERY_DB_REUSE_MAX == 1000


def test_postgresql_generic_plans_are_a_startup_option_that_can_be_turned_off(tmp_path):
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='masplatform.settings'; django.setup(); "
        "from django.conf import settings as s; print(repr(s.DATABASES['default'].get('OPTIONS', {})))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    base = {**clean, "MASP_DOTENV": "0", "MASP_DEBUG": "1", "MASP_VAR_DIR": str(tmp_path)}
    base["MASP_DATABASE_URL"] = "postgres://u@db:5432/masp?options=-c%20statement_timeout%3D5000"

    def options(**env: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, cwd=settings.BASE_DIR
        )
        assert result.returncode == 0, result.stderr
        return ast.literal_eval(result.stdout)

    on = options()
    assert on["prepare_threshold"] == 0
    assert on["options"] == "-c statement_timeout=5000 -c plan_cache_mode=force_generic_plan"  # the URL's kept
    off = options(MASP_DB_GENERIC_PLANS="0")  # behind a pooler that refuses the startup parameter
    assert off["prepare_threshold"] == 0 and off["options"] == "-c statement_timeout=5000"
    assert options(MASP_DB_PREPARED_STATEMENTS="0") == {"options": "-c statement_timeout=5000"}
