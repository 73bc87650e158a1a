"""`manage.py demo` creates its `admin`/`admin` login only on the embedded default database (SQLite under
var/), unless asked with --create-demo-admin or MASP_DEMO_ADMIN=1, and says why it refuses."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from django.db import connection

from demo.management.commands.demo import Command, demo_admin_refusal
from masplatform import embedded_broker
from tests import stack

POSTGRES = {"ENGINE": "django.db.backends.postgresql", "NAME": "masp", "HOST": "db.example.com"}


def test_the_embedded_default_database_is_the_only_one_the_demo_login_is_created_on(tmp_path):
    var_dir = tmp_path / "var"
    embedded = {"ENGINE": "masplatform.db.sqlite3", "NAME": str(var_dir / "db.sqlite3")}
    assert demo_admin_refusal(embedded, var_dir) is None
    for other in (POSTGRES, {"ENGINE": "masplatform.db.sqlite3", "NAME": str(tmp_path / "elsewhere.sqlite3")}):
        why = demo_admin_refusal(other, var_dir)
        assert why is not None and why.startswith("Refused to create the demo's superuser 'admin'")
        assert "not the embedded default" in why and "--create-demo-admin" in why and "MASP_DEMO_ADMIN=1" in why
    assert "postgresql database masp on db.example.com" in demo_admin_refusal(POSTGRES, var_dir)


def test_the_flag_defaults_to_the_masp_demo_admin_variable(monkeypatch):
    def parsed(*args: str) -> bool:
        return Command().create_parser("manage.py", "demo").parse_args(list(args)).create_demo_admin

    monkeypatch.delenv("MASP_DEMO_ADMIN", raising=False)
    assert parsed() is False and parsed("--create-demo-admin") is True
    monkeypatch.setenv("MASP_DEMO_ADMIN", "1")
    assert parsed() is True


@pytest.mark.django_db
def test_ensure_admin_on_this_runs_database(capsys):
    """On the embedded stack the test database lives under var/: the login is created. On PostgreSQL it is
    refused, and nothing is created, unless asked explicitly."""
    users = get_user_model().objects
    command = Command()
    if stack.stack() == "embedded":
        assert demo_admin_refusal(connection.settings_dict, settings.VAR_DIR) is None
        assert command.ensure_admin("admin") == "admin"
        assert users.get(username="admin").is_superuser
        assert "created superuser admin" in capsys.readouterr().out
        return
    with pytest.raises(CommandError, match="Refused to create the demo's superuser 'admin'.*--create-demo-admin"):
        command.ensure_admin("admin")
    assert not users.filter(username="admin").exists()
    assert command.ensure_admin("admin", create_anywhere=True) == "admin"
    assert users.get(username="admin").check_password("admin")


def test_the_demo_command_refuses_a_database_outside_var_and_starts_nothing(tmp_path):
    """The real command, on a SQLite file outside its var/ folder: it stops before starting any process."""
    var_dir, db = tmp_path / "var", tmp_path / "elsewhere" / "db.sqlite3"
    db.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    env.update(
        MASP_DEBUG="1",
        MASP_DOTENV="0",
        MASP_VAR_DIR=str(var_dir),
        MASP_DATABASE_URL=f"sqlite:///{db}",
        DJANGO_SETTINGS_MODULE="masplatform.settings",
    )

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert manage("migrate", "-v", "0").returncode == 0
    result = manage("demo", "--port", "0")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Refused to create the demo's superuser 'admin'" in result.stderr
    assert str(db) in result.stderr and "--create-demo-admin" in result.stderr
    assert "starting web" not in result.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM auth_user").fetchone() == (0,)
    assert not embedded_broker.is_running(var_dir)
