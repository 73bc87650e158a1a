"""Rate limits on the logins: ``POST /api/auth/token/``, the admin login and the browsable API's login.

Two limits apply together, per client address (``MASP_LOGIN_RATE_PER_IP``) and per username
(``MASP_LOGIN_RATE_PER_USERNAME``); the username one also holds when an attacker spreads over many
addresses. Every attempt counts, successful or not, and all three login pages share the same counters,
so moving from one to another gains nothing. The counters live in the ``throttle`` cache, a database
table shared by every web process and machine (docs/operations.md says why); nothing else is throttled.

A throttled request gets 429 with ``Retry-After``: DRF's answer on the API, a small page in the admin.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from masplatform.rates import parse_rate

THROTTLE_CACHE = "throttle"


class LoginThrottle(SimpleRateThrottle):
    """A sliding window of attempts per key, read from the settings at each request (so tests can override
    them). Works on a DRF request and on a plain Django one (the admin's login view)."""

    setting = ""

    def __init__(self) -> None:
        self.cache = caches[THROTTLE_CACHE]
        self.rate = getattr(settings, self.setting)
        parsed = parse_rate(self.rate)
        self.num_requests, self.duration = parsed if parsed else (None, None)
        if parsed is None:
            self.rate = None

    def ident_of(self, request: Request | HttpRequest) -> str | None:
        raise NotImplementedError

    def get_cache_key(self, request: Request | HttpRequest, view: Any) -> str | None:
        ident = self.ident_of(request)
        if not ident:
            return None
        digest = hashlib.sha256(ident.encode()).hexdigest()[:40]  # any length or character is a safe key
        return self.cache_format % {"scope": self.scope, "ident": digest}

    def wait(self) -> float:
        """Seconds until one more attempt is allowed: until the oldest of the last ``num_requests`` attempts
        leaves the window (at least 1 s, so that ``Retry-After`` is never 0)."""
        history = sorted(self.history, reverse=True)[: self.num_requests]
        oldest = history[-1] if history else self.now
        return max(1.0, math.ceil(oldest + self.duration - self.now))


class LoginRateByAddress(LoginThrottle):
    scope = "login_address"
    setting = "MASP_LOGIN_RATE_PER_IP"

    def ident_of(self, request: Request | HttpRequest) -> str | None:
        return self.get_ident(request)  # REMOTE_ADDR, or X-Forwarded-For past MASP_NUM_PROXIES proxies


class LoginRateByUsername(LoginThrottle):
    scope = "login_username"
    setting = "MASP_LOGIN_RATE_PER_USERNAME"

    def ident_of(self, request: Request | HttpRequest) -> str | None:
        data = request.data if isinstance(request, Request) else request.POST
        username = data.get("username") if isinstance(data, Mapping) else None
        # Django's default user model matches usernames exactly; folding case only makes the limit stricter
        return username.strip().casefold() if isinstance(username, str) and username.strip() else None


LOGIN_THROTTLES = [LoginRateByAddress, LoginRateByUsername]


def login_wait(request: Request | HttpRequest) -> float | None:
    """Count one login attempt against every limit; the seconds to wait if any is exceeded, else None.

    Every limit is checked (and counts the attempt) even when an earlier one refuses it."""
    waits = []
    for throttle in (cls() for cls in LOGIN_THROTTLES):
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait())
    return max(waits) if waits else None


def throttled_login(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a Django login view: a POST past a limit gets a 429 page with ``Retry-After``, not the view."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            wait = login_wait(request)
            if wait is not None:
                response = TemplateResponse(
                    request,
                    "masplatform/login_throttled.html",
                    {**admin.site.each_context(request), "title": "Too many login attempts", "retry_after": int(wait)},
                    status=429,
                )
                response["Retry-After"] = str(int(wait))
                return response
        return view(request, *args, **kwargs)

    return wrapped
