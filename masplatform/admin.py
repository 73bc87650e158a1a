"""Admin pieces shared by the apps: operator actions that check a Django permission.

Every admin action or button that changes state names the permission it needs
(``@admin.action(permissions=[...])``): Django then leaves it out of the
changelist for a user without it, and ``PermissionCheckedActions`` answers a
hand-made POST of such an action with 403 instead of ignoring it. Pages whose
rows change only through services (agents, invocations, executions) keep their
edit form closed (``has_change_permission`` is False) and check the model's
*change* permission for their operator actions through ``permissions=["operate"]``.

The periodic tasks' admin of django-celery-beat has actions (enable, disable,
toggle, run now) that check nothing; it is registered again here with each
of them needing the *change* permission on periodic tasks.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django_celery_beat import admin as beat_admin  # registers its admin first, so that it can be replaced
from django_celery_beat.models import PeriodicTask


class PermissionCheckedActions:
    """Mixin for a ModelAdmin: operator actions need the model's change permission; forged posts get 403."""

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """The model's Django *change* permission (e.g. ``agents.change_agent``), whatever the edit form allows."""
        opts = self.opts  # type: ignore[attr-defined]
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "POST":
            allowed = self.get_actions(request)  # type: ignore[attr-defined]
            for name in request.POST.getlist("action"):
                if name and name not in allowed:
                    raise PermissionDenied(f"You may not run the action '{name}' here.")
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(PermissionCheckedActions, beat_admin.PeriodicTaskAdmin):
    """django-celery-beat's page, its actions needing the change permission on periodic tasks."""

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().enable_tasks(request, queryset)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().disable_tasks(request, queryset)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().toggle_tasks(request, queryset)

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().run_tasks(request, queryset)
