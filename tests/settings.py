"""Settings for the test suite: the project's settings, with a test var/ folder.

Which stack the suite runs on comes from the environment, as for the
platform itself: nothing set is the embedded default (SQLite + embedded
Redis); ``make test`` runs a second pass with ``MASP_TEST_STACK=services``,
which points at PostgreSQL and Redis (see tests/stack.py).
"""

import os
from pathlib import Path

from tests.stack import configure_environment

configure_environment(Path(__file__).resolve().parent.parent)
os.environ.setdefault("MASP_DEBUG", "1")
# Tests that sign in many times are not throttled; tests/test_throttling.py sets its limits itself.
os.environ.setdefault("MASP_LOGIN_RATE_PER_IP", "100000/min")
os.environ.setdefault("MASP_LOGIN_RATE_PER_USERNAME", "100000/min")

from masplatform.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
