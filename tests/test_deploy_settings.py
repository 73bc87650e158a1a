"""Production settings: with the variables docs/operations.md lists, `check --deploy` is clean; without
them it warns; and the variables do what they say on a real request. Each run is a fresh process, since
settings are read from the environment once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

# The exact set documented in docs/operations.md, "Production settings".
PRODUCTION = {
    "MASP_DEBUG": "0",
    "MASP_SECRET_KEY": "k3Yq8v-Zr1mW0pXn7sLt4bHc9dJf2gQe6uAi5oNy8TkR1wEz3VxM",
    "MASP_ALLOWED_HOSTS": "masp.example.com",
    "MASP_CSRF_TRUSTED_ORIGINS": "https://masp.example.com",
    "MASP_SECURE_SSL_REDIRECT": "1",
    "MASP_SECURE_HSTS_SECONDS": "31536000",
    "MASP_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "MASP_SECURE_HSTS_PRELOAD": "1",
    "MASP_SECURE_COOKIES": "1",
    "MASP_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}
SECURE_VARIABLES = [name for name in PRODUCTION if name.startswith("MASP_SECURE_")]


def manage(tmp_path: Path, variables: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``manage.py <args>`` with only ``variables`` set among MASP_* (plus this run's database and broker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASP_")}
    for name in ("MASP_DATABASE_URL", "MASP_BROKER_URL"):  # the services stack's servers, if that is the stack
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(MASP_DOTENV="0", MASP_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="masplatform.settings")
    env.update(variables)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def warnings_of(result: subprocess.CompletedProcess) -> set[str]:
    text = result.stdout + result.stderr
    return {word.strip("():") for word in text.split() if word.startswith("(") and ".W" in word}


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    result = manage(tmp_path, PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert warnings_of(result) == set() and "WARNING" not in result.stderr


def test_check_deploy_warns_a_production_that_leaves_the_secure_settings_off(tmp_path):
    forgetful = {k: v for k, v in PRODUCTION.items() if k not in SECURE_VARIABLES}
    result = manage(tmp_path, forgetful, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert warnings_of(result) == {"security.W004", "security.W008", "security.W012", "security.W016"}
    # HSTS on, but neither subdomains nor preload: Django's own warnings say so
    result = manage(tmp_path, {**forgetful, "MASP_SECURE_HSTS_SECONDS": "3600"}, "check", "--deploy")
    assert {"security.W005", "security.W021"} <= warnings_of(result) and "security.W004" not in warnings_of(result)


PROBE = """
import json
from django.conf import settings as s
from django.test import Client
c = Client(HTTP_HOST="masp.example.com")
plain = c.get("/admin/login/")
proxied = c.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
print(json.dumps({
    "settings": [s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD,
                 s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER],
    "plain": [plain.status_code, plain.get("Location")],
    "proxied": [proxied.status_code, proxied.get("Strict-Transport-Security")],
    "csrf_cookie_secure": bool(proxied.cookies["csrftoken"]["secure"]) if "csrftoken" in proxied.cookies else None,
}))
"""


def probe(tmp_path: Path, variables: dict[str, str]) -> dict:
    result = manage(tmp_path, variables, "shell", "-c", PROBE)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_behind_the_tls_proxy_plain_http_is_redirected_and_https_gets_hsts_and_secure_cookies(tmp_path):
    seen = probe(tmp_path, PRODUCTION)
    assert seen["settings"] == [True, 31536000, True, True, True, True, ["HTTP_X_FORWARDED_PROTO", "https"]]
    assert seen["plain"] == [301, "https://masp.example.com/admin/login/"]
    assert seen["proxied"] == [200, "max-age=31536000; includeSubDomains; preload"]
    assert seen["csrf_cookie_secure"] is True


def test_the_defaults_serve_plain_http_on_127_0_0_1_and_a_proxy_header_value_can_be_named(tmp_path):
    seen = probe(tmp_path, {"MASP_DEBUG": "1", "MASP_ALLOWED_HOSTS": "masp.example.com"})
    assert seen["settings"] == [False, 0, False, False, False, False, None]
    assert seen["plain"] == [200, None] and seen["proxied"] == [200, None]
    assert seen["csrf_cookie_secure"] is False
    seen = probe(tmp_path, {**PRODUCTION, "MASP_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Ssl=on"})
    assert seen["settings"][-1] == ["HTTP_X_FORWARDED_SSL", "on"]
    assert seen["plain"][0] == 301 and seen["proxied"][0] == 301  # X-Forwarded-Proto is not the header named now
