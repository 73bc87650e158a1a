"""Registry API: thin views that validate, call a service or selector, and shape the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from agents import selectors, services
from agents.filters import AgentDiscoveryFilter, AgentEventFilter, InvocationFilter
from agents.models import CAPABILITY_NAME_RE, Agent, AgentEvent, Invocation
from agents.models.invocation import FINISHED
from agents.serializers import (
    AgentEventSerializer,
    AgentRegistrationSerializer,
    AgentSerializer,
    CapabilityDetailSerializer,
    CapabilitySerializer,
    FleetResultSerializer,
    HeartbeatResultSerializer,
    HeartbeatSerializer,
    InvocationDetailSerializer,
    InvocationRequestSerializer,
    InvocationSerializer,
    RegisteredAgentSerializer,
    StatsSerializer,
    StatusSerializer,
)
from agents.services import fleet
from masplatform import notify
from masplatform.permissions import IsStaffOrAgentClient, IsStaffOrSelfAgent, owner_scope, requester
from masplatform.views import NamedNotFoundMixin


@extend_schema_view(
    list=extend_schema(
        summary="Discover agents",
        parameters=[
            OpenApiParameter("capability", str, many=True, description="Repeatable; all must match."),
            OpenApiParameter("min_health", {"type": "number", "minimum": 0, "maximum": 1}),
            OpenApiParameter("max_cpu_load", {"type": "number", "minimum": 0, "maximum": 1}),
        ],
    ),
    retrieve=extend_schema(summary="One agent (unregistered ones too)"),
    destroy=extend_schema(summary="Unregister (staff or the agent itself)"),
)
class AgentViewSet(NamedNotFoundMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Agent.objects.all()
    serializer_class = AgentSerializer
    lookup_field = "agent_id"
    not_found_noun = "agent"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    filterset_class = AgentDiscoveryFilter
    search_fields = ["name", "agent_id"]
    ordering_fields = ["health_score", "cpu_load", "agent_id", "last_heartbeat_at", "registered_at"]
    self_agent_actions = {"heartbeat", "status", "destroy"}

    def get_permissions(self):
        if self.action in self.self_agent_actions:
            return [IsStaffOrSelfAgent()]
        return super().get_permissions()

    def get_queryset(self) -> QuerySet[Agent]:
        return selectors.with_details(super().get_queryset())

    def filter_queryset(self, queryset: QuerySet[Agent]) -> QuerySet[Agent]:
        # Discovery filters apply to the list; a detail shows any agent, unregistered too.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    @extend_schema(
        request=AgentRegistrationSerializer,
        responses={201: RegisteredAgentSerializer, 200: RegisteredAgentSerializer},
        summary="Register (201) or re-register (200) an agent; returns its token once",
    )
    def create(self, request: Request) -> Response:
        serializer = AgentRegistrationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        registration = services.register_agent(**serializer.to_service_kwargs())
        agent = selectors.with_details(Agent.objects.filter(pk=registration.agent.pk)).get()
        agent.token = registration.token
        return Response(
            RegisteredAgentSerializer(agent).data,
            status=status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK,
        )

    def destroy(self, request: Request, agent_id: str) -> Response:
        services.unregister_agent(agent_id=agent_id, reason=f"by {request.user}")
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=HeartbeatSerializer,
        responses=HeartbeatResultSerializer,
        summary="Heartbeat (the agent itself, or staff)",
    )
    @action(detail=True, methods=["post"])
    def heartbeat(self, request: Request, agent_id: str) -> Response:
        serializer = HeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.heartbeat(agent_id=agent_id, **serializer.validated_data)
        return Response(HeartbeatResultSerializer(result).data)

    @extend_schema(request=StatusSerializer, responses=AgentSerializer, summary="Change state (409 if not allowed)")
    @action(detail=True, methods=["post"])
    def status(self, request: Request, agent_id: str) -> Response:
        serializer = StatusSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.change_state(agent_id=agent_id, **serializer.validated_data)
        return Response(AgentSerializer(self.get_object()).data)

    def _fleet(self, operation, agent_id: str) -> Response:
        result = operation(agent_id=agent_id)
        return Response(
            {
                "agent_id": result.agent_id,
                "state": result.state,
                "worker": result.worker,
                "acknowledged": result.acknowledged,
            }
        )

    @extend_schema(
        request=None, responses=FleetResultSerializer, summary="Drain: stop taking new calls, finish the rest (staff)"
    )
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, agent_id: str) -> Response:
        return self._fleet(fleet.drain, agent_id)

    @extend_schema(request=None, responses=FleetResultSerializer, summary="Resume a draining agent (staff)")
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, agent_id: str) -> Response:
        return self._fleet(fleet.resume, agent_id)

    @extend_schema(
        request=None, responses=FleetResultSerializer, summary="Graceful shutdown of the agent's worker (staff)"
    )
    @action(detail=True, methods=["post"])
    def shutdown(self, request: Request, agent_id: str) -> Response:
        return self._fleet(fleet.shutdown, agent_id)

    @extend_schema(responses=StatsSerializer, summary="Registry statistics")
    @action(detail=False, methods=["get"])
    def stats(self, request: Request) -> Response:
        return Response(StatsSerializer(selectors.registry_stats()).data)


@extend_schema_view(
    list=extend_schema(summary="Capabilities with live agent count and lowest cost"),
    update=extend_schema(summary="Change a capability's contract (staff)"),
    partial_update=extend_schema(summary="Change part of a capability's contract (staff)"),
    destroy=extend_schema(summary="Delete a capability no registered agent offers (staff)"),
)
class CapabilityViewSet(NamedNotFoundMixin, viewsets.ModelViewSet):
    serializer_class = CapabilitySerializer
    lookup_field = "name"
    not_found_noun = "capability"
    agents_may_read = True  # an agent calling a capability needs its contract
    lookup_value_regex = CAPABILITY_NAME_RE.strip("^$")
    search_fields = ["name", "description"]
    ordering_fields = ["name", "live_agents", "lowest_cost"]
    filterset_fields: list[str] = []

    def get_queryset(self):
        return selectors.capabilities_with_stats()

    def perform_create(self, serializer: CapabilitySerializer) -> None:
        serializer.instance = services.create_capability(**serializer.validated_data)

    def perform_update(self, serializer: CapabilitySerializer) -> None:
        name = self.kwargs["name"]
        data = dict(serializer.validated_data)
        if data.pop("name", name) != name:
            raise ValidationError({"name": [f"A capability cannot be renamed (it is '{name}')."]})
        if not serializer.partial:  # PUT replaces the whole contract
            data = {"description": "", "input_schema": {}, "output_schema": {}, **data}
        serializer.instance = services.update_capability(name=name, **data)

    def create(self, request: Request, *args, **kwargs) -> Response:
        response = super().create(request, *args, **kwargs)
        response.data = self._fresh(response.data["name"])
        return response

    def update(self, request: Request, *args, **kwargs) -> Response:
        response = super().update(request, *args, **kwargs)
        response.data = self._fresh(kwargs["name"])
        return response

    def perform_destroy(self, instance) -> None:
        services.delete_capability(name=instance.name)

    def _fresh(self, name: str) -> dict:
        return CapabilitySerializer(self.get_queryset().get(name=name)).data

    @extend_schema(
        responses=CapabilityDetailSerializer,
        summary="One capability, with its fleet figures (queue depth, in flight, success rate, p50/p95)",
    )
    def retrieve(self, request: Request, name: str) -> Response:
        capability = self.get_object()
        data = CapabilitySerializer(capability).data
        data["fleet"] = selectors.capability_fleet_stats(capability)
        return Response(data)


class AgentEventViewSet(NamedNotFoundMixin, viewsets.ReadOnlyModelViewSet):
    not_found_noun = "agent event"
    queryset = AgentEvent.objects.select_related("agent")
    serializer_class = AgentEventSerializer
    filterset_class = AgentEventFilter
    ordering_fields = ["at"]


def wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise ValidationError({"wait": [f"must be a number of seconds (0-{MAX_WAIT}), got {raw!r}"]}) from None
    if not 0 <= seconds <= MAX_WAIT:
        raise ValidationError({"wait": [f"must be between 0 and {MAX_WAIT} seconds, got {raw}"]})
    # a long poll may answer sooner than asked (the client asks again): an operator can shorten them all
    return min(seconds, settings.MASP_LONG_POLL_CAP)


MAX_WAIT = 30


def _finished_check(invocation_id: Any) -> Callable[[], bool]:
    """``done`` for ``notify.wait`` on a call: its first check (made once subscribed) asks for the wake-up
    with ``services.watch``, which also says whether the call has finished already; the later ones (every
    5 s without a wake-up, or twice a second if the broker is down) only read."""
    asked = False

    def done() -> bool:
        nonlocal asked
        if not asked:
            asked = True
            return not services.watch(invocation_id)
        return Invocation.objects.filter(pk=invocation_id, status__in=FINISHED).exists()

    return done


WAIT_SCHEMA = {"type": "number", "minimum": 0, "maximum": 30}


@extend_schema_view(
    list=extend_schema(summary="Invocations (an agent token sees those it created)"),
    retrieve=extend_schema(
        summary="One invocation, with its attempts and why it waits",
        parameters=[OpenApiParameter("wait", WAIT_SCHEMA, description="long-poll up to N (<= 30) s for it to finish")],
    ),
)
class InvocationViewSet(NamedNotFoundMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = InvocationSerializer
    permission_classes = [IsStaffOrAgentClient]
    agent_client_actions = {"create", "list", "retrieve", "cancel"}
    filterset_class = InvocationFilter
    ordering_fields = ["created_at", "priority", "finished_at"]
    not_found_noun = "invocation"

    def get_queryset(self):
        qs = Invocation.objects.select_related("capability", "agent", "pinned_agent")
        if self.action in ("retrieve", "create", "cancel", "retry"):
            qs = qs.prefetch_related("attempts__agent")
        owner = owner_scope(self.request)  # staff: all; a person or an agent: the calls they asked for
        if owner is not None:
            qs = qs.filter(requested_by=owner)
        return qs

    def get_serializer_class(self):
        return InvocationSerializer if self.action == "list" else InvocationDetailSerializer

    def _answer(self, invocation: Invocation, status_code: int = 200, wait: float = 0.0) -> Response:
        if wait and not invocation.is_finished:
            # the call is read below in any case, and its channel is notified only once it has finished
            notify.wait(f"invocation:{invocation.pk}", wait, _finished_check(invocation.pk), notified_means_done=True)
        fresh = self.get_queryset().get(pk=invocation.pk)
        return Response(self.get_serializer(fresh).data, status=status_code)

    @extend_schema(
        request=InvocationRequestSerializer,
        responses={201: InvocationDetailSerializer},
        summary="Invoke a capability (201; 200 for a repeated idempotency key)",
        parameters=[OpenApiParameter("wait", WAIT_SCHEMA, description="answer when it finishes or after N (<= 30) seconds")],
    )
    def create(self, request: Request) -> Response:
        wait = wait_seconds(request)
        serializer = InvocationRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not wait:
            invocation, created = services.invoke(requested_by=requester(request), **serializer.validated_data)
            return self._answer(invocation, 201 if created else 200)
        invocation, created = services.invoke_and_wait(
            wait, requested_by=requester(request), **serializer.validated_data
        )
        if created:
            return self._answer(invocation, 201)
        return self._answer(invocation, 200, wait)  # the first call of this idempotency key

    def retrieve(self, request: Request, pk: str) -> Response:
        return self._answer(self.get_object(), wait=wait_seconds(request))

    @extend_schema(
        request=None,
        responses=InvocationDetailSerializer,
        summary="Cancel (queued: at once; running: when its function stops; finished: 409)",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        invocation = self.get_object()
        return self._answer(services.cancel(invocation.pk))

    @extend_schema(
        request=None,
        responses=InvocationDetailSerializer,
        summary="Run a failed, timed out or cancelled invocation again (staff)",
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        invocation = self.get_object()
        return self._answer(services.retry(invocation.pk))
