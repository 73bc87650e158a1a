"""Who may do what: staff everything, other users read, agents only what a view allows.

Whose rows a reader sees: staff all; anyone else (a person who is not staff, an agent token) only the
invocations and executions recorded as requested by them (``owner_scope``). The full matrix is in
docs/api.md ("Who may do what").

Agents authenticate as a principal whose ``is_agent`` is true (see
``agents.auth``); this module only looks at that flag, so the project layer
does not import the agents app.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

AGENT_TOKEN_SCOPE = "An agent token may only heartbeat, change the status of, or unregister its own agent."


def is_agent(request: Request) -> bool:
    return bool(getattr(request.user, "is_agent", False))


class IsStaffOrReadOnlyUser(BasePermission):
    """Staff: everything. Other signed-in people: safe methods. Agent tokens: nothing."""

    message = "Only staff may change this; other users may only read."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if is_agent(request):
            if request.method in SAFE_METHODS and getattr(view, "agents_may_read", False):
                return True
            self.message = AGENT_TOKEN_SCOPE
            return False
        return bool(user.is_staff or request.method in SAFE_METHODS)


class IsStaffOrSelfAgent(BasePermission):
    """Staff, or the agent named by the URL acting on itself with its own token. The agent is the URL's
    ``agent_url_kwarg`` when the view names one (a route nested under an agent), else its lookup."""

    message = "Only staff or the agent itself may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if is_agent(request):
            kwarg = (
                getattr(view, "agent_url_kwarg", None) or getattr(view, "lookup_url_kwarg", None) or view.lookup_field
            )
            target = view.kwargs.get(kwarg)
            if user.agent_id == target:
                return True
            self.message = f"This token belongs to agent '{user.agent_id}'; it cannot act on agent '{target}'."
            return False
        return bool(user.is_staff)


class IsSignedIn(BasePermission):
    """Anyone authenticated: staff, another person, or an agent token. The view scopes what each sees."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated)


class IsStaff(BasePermission):
    """Staff only (an operator's action)."""

    message = "Only staff may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and not is_agent(request))


AGENT_CLIENT_SCOPE = "An agent token may create invocations and read or cancel the ones it created; nothing else here."


class IsStaffOrAgentClient(BasePermission):
    """Staff: everything. Other users: read. Agent tokens: the view's ``agent_client_actions`` (their own calls)."""

    message = "Only staff may change this; other users may only read."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if is_agent(request):
            if view.action in getattr(view, "agent_client_actions", ()):
                return True
            self.message = AGENT_CLIENT_SCOPE
            return False
        return bool(user.is_staff or request.method in SAFE_METHODS)


def requester(request: Request) -> str:
    """Who asks, as recorded on what they create: ``user:<username>`` or ``agent:<agent_id>``."""
    if is_agent(request):
        return f"agent:{request.user.agent_id}"
    return f"user:{request.user.get_username()}"


def owner_scope(request: Request) -> str | None:
    """The ``requested_by`` whose rows this request may read, or None for all of them (staff).

    Views that list someone's invocations or executions filter their queryset by it, for the list and
    the detail alike: someone else's row is then a 404, so its id tells nothing.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff and not is_agent(request):
        return None
    if user is None or not user.is_authenticated:
        return "user:"  # no one's rows (only schema generation builds a queryset for an anonymous request)
    return requester(request)
