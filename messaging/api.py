"""The message bus API: thin views over ``messaging.services`` and ``messaging.selectors``.

Who may do what: anyone signed in sends (as who they authenticated: an agent as itself, a person as
``user:<name>``) and reads the messages they sent or received; only an agent itself (or staff) reads
and acks its inbox and changes its subscriptions; staff redeliver and write routing rules."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.db.models import QuerySet, prefetch_related_objects
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.api import WAIT_SCHEMA, wait_seconds
from agents.models import Agent
from masplatform.exceptions import InvalidInput
from masplatform.permissions import IsSignedIn, IsStaff, IsStaffOrReadOnlyUser, IsStaffOrSelfAgent, is_agent
from masplatform.views import NamedNotFoundMixin
from messaging import selectors, services
from messaging.filters import DeliveryFilter, MessageFilter
from messaging.models import Addressing, Delivery, Message, MessageType, RoutingRule, Subscription
from messaging.serializers import (
    AckSerializer,
    DeliveryDetailSerializer,
    InboxSerializer,
    MessageDetailSerializer,
    MessageSerializer,
    MessagingStatsSerializer,
    NackSerializer,
    RoutingRuleSerializer,
    RoutingSerializer,
    SendSerializer,
    SentMessageSerializer,
    SubscriptionSerializer,
)

MAX_EXPLANATIONS = 100
AGENT_ID_RE = r"[-a-zA-Z0-9_]+"


def sender_of(request: Request) -> services.Sender:
    """The authenticated principal as a sender: never anything the body says."""
    if is_agent(request):
        return services.Sender.of_agent(request.user.agent)
    return services.Sender.of_user(request.user.get_username())


def own_agent(request: Request) -> Agent | None:
    return request.user.agent if is_agent(request) else None


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput({"non_field_errors": ["send a JSON object"]})
    return request.data


def _number(request: Request, name: str, low: float, high: float, default: float, *, integer: bool = False) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    what = "an integer" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ValidationError({name: [f"must be {what} from {low:g} to {high:g}, got {raw!r}"]}) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError({name: [f"must be {what} from {low:g} to {high:g}, got {raw}"]})
    return value


def _agent_named(agent_id: str) -> Agent:
    agent = Agent.objects.filter(agent_id=agent_id).first()
    if agent is None:
        raise NotFound(f"No agent '{agent_id}'.")
    return agent


def visible_deliveries(request: Request, message: Message) -> QuerySet[Delivery]:
    """Staff and the message's sender see every delivery of it; an agent that received it, its own."""
    rows = Delivery.objects.filter(message=message).select_related("agent").order_by("id")
    user = request.user
    if user.is_staff and not is_agent(request):
        return rows
    agent = own_agent(request)
    if agent is not None:
        return rows if message.sender_agent_id == agent.pk else rows.filter(agent=agent)
    return rows if message.sender == f"user:{user.get_username()}" else rows.none()


@extend_schema_view(
    list=extend_schema(
        summary="Message history (staff: all; an agent: those it sent or received; a person: those they sent)"
    ),
    retrieve=extend_schema(
        summary="One message with its deliveries (a recipient sees only its own)", responses=MessageDetailSerializer
    ),
)
class MessageViewSet(NamedNotFoundMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Messages: sent by who authenticated, never by a field of the body."""

    serializer_class = MessageSerializer
    permission_classes = [IsSignedIn]
    filterset_class = MessageFilter
    ordering_fields = ["created_at", "priority"]
    search_fields: list[str] = []
    not_found_noun = "message"

    def get_queryset(self) -> QuerySet[Message]:
        return selectors.messages_visible_to(self.request.user).select_related("to_agent")

    def _detail(self, message: Message, serializer_class: type = MessageDetailSerializer, **extra: Any) -> dict:
        message.visible_deliveries = visible_deliveries(self.request, message)
        for name, value in extra.items():
            setattr(message, name, value)
        return serializer_class(message).data

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(self._detail(self.get_object()))

    @extend_schema(
        request=SendSerializer,
        responses={201: SentMessageSerializer},
        summary="Send a message: to an agent, to a topic's subscribers, to everyone (broadcast), or a request",
        parameters=[
            OpenApiParameter(
                "wait",
                WAIT_SCHEMA,
                description="requests only: answer when the response comes or after N (<= 30) seconds",
            )
        ],
    )
    def create(self, request: Request) -> Response:
        wait = wait_seconds(request)
        serializer = SendSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        kwargs = serializer.to_service_kwargs()
        if wait and kwargs["type"] != MessageType.REQUEST:
            raise ValidationError({"wait": ["Only a request is waited for (its response); send it with type request."]})
        content = kwargs.pop("content")
        message = services.send(sender_of(request), content, **kwargs)
        answer = None
        if message.type == MessageType.REQUEST:
            outcome = services.wait_for_answer(message, wait)
            message, answer = outcome.request, outcome.response
        fresh = Message.objects.select_related("to_agent").get(pk=message.pk)
        return Response(self._detail(fresh, SentMessageSerializer, answer=answer), status=status.HTTP_201_CREATED)

    @extend_schema(
        responses=RoutingSerializer,
        summary="Why an agent did or did not receive this message (which subscription or rule, or what failed)",
        parameters=[
            OpenApiParameter(
                "agent",
                {"type": "string", "pattern": f"^{AGENT_ID_RE}$"},
                description="an agent id (an agent token: only itself). Without it: staff get every recipient "
                "and, for a topic message, every agent with a subscription; an agent, itself",
            )
        ],
    )
    @action(detail=True, methods=["get"])
    def routing(self, request: Request, pk: str) -> Response:
        message = self.get_object()
        staff = request.user.is_staff and not is_agent(request)
        me = own_agent(request)
        if not staff and me is None:
            raise PermissionDenied("Only staff, or an agent about itself, may read routing explanations.")
        name = request.query_params.get("agent")
        if name is not None:
            agent = Agent.objects.filter(agent_id=name).first() if name else None
            if agent is None:
                raise ValidationError({"agent": [f"No agent '{name}' is registered."]})
            if not staff and agent.pk != me.pk:
                raise PermissionDenied(
                    f"This token belongs to agent '{me.agent_id}'; it cannot read why '{name}' received a message."
                )
            agents = [agent]
        elif not staff:
            agents = [me]
        else:
            pks = set(Delivery.objects.filter(message=message).values_list("agent_id", flat=True)[:MAX_EXPLANATIONS])
            if message.addressing == Addressing.TOPIC:
                pks |= set(Subscription.objects.values_list("agent_id", flat=True).distinct()[:MAX_EXPLANATIONS])
            agents = list(Agent.objects.filter(pk__in=pks).order_by("agent_id")[:MAX_EXPLANATIONS])
        return Response(
            {"message": message.pk, "explanations": [selectors.explain(message, a).as_dict() for a in agents]}
        )


@extend_schema_view(
    list=extend_schema(summary="Deliveries (staff: all; an agent: its own; a person: those of messages they sent)"),
    retrieve=extend_schema(summary="One delivery"),
)
class DeliveryViewSet(NamedNotFoundMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One message's delivery to one recipient, and what became of it."""

    serializer_class = DeliveryDetailSerializer
    permission_classes = [IsSignedIn]
    filterset_class = DeliveryFilter
    ordering_fields = ["created_at", "priority", "acked_at"]
    search_fields: list[str] = []
    not_found_noun = "delivery"
    lookup_value_regex = "[0-9]+"

    def get_permissions(self):
        return [IsStaff()] if self.action == "redeliver" else super().get_permissions()

    def get_queryset(self) -> QuerySet[Delivery]:
        rows = Delivery.objects.select_related("agent").order_by("-created_at", "-id")
        user = self.request.user
        if user.is_staff and not is_agent(self.request):
            return rows
        agent = own_agent(self.request)
        if agent is not None:
            return rows.filter(agent=agent)
        return rows.filter(message__sender=f"user:{user.get_username()}")

    @extend_schema(
        request=None,
        responses=DeliveryDetailSerializer,
        summary="Send a dead, failed or expired delivery again (staff; 409 for any other)",
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: str) -> Response:
        delivery = self.get_object()
        services.redeliver(delivery.pk)
        return Response(DeliveryDetailSerializer(self.get_queryset().get(pk=delivery.pk)).data)


@extend_schema_view(
    list=extend_schema(summary="An agent's subscriptions (the agent itself, or staff)"),
    destroy=extend_schema(summary="Unsubscribe (the agent itself, or staff)"),
)
class SubscriptionViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """An agent's subscriptions: topic patterns narrowed by types, senders and content filters."""

    serializer_class = SubscriptionSerializer
    permission_classes = [IsStaffOrSelfAgent]
    agent_url_kwarg = "agent_id"
    lookup_value_regex = "[0-9]+"
    filter_backends: list = []

    def get_agent(self) -> Agent:
        return _agent_named(self.kwargs["agent_id"])

    def get_queryset(self) -> QuerySet[Subscription]:
        if getattr(self, "swagger_fake_view", False):
            return Subscription.objects.none()
        return Subscription.objects.filter(agent=self.get_agent()).select_related("agent").order_by("pk")

    @extend_schema(
        request=SubscriptionSerializer,
        responses={201: SubscriptionSerializer, 200: SubscriptionSerializer},
        summary="Subscribe (201; 200 with the existing one for the same subscription again)",
    )
    def create(self, request: Request, agent_id: str) -> Response:
        agent = self.get_agent()
        serializer = SubscriptionSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        subscription, created = services.subscribe(
            agent,
            data["pattern"],
            types=data["message_types"],
            senders=data["sender_patterns"],
            where=data["content_filters"],
        )
        return Response(
            SubscriptionSerializer(subscription).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def destroy(self, request: Request, agent_id: str, pk: str) -> Response:
        services.unsubscribe(self.get_agent(), pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InboxViewSet(viewsets.GenericViewSet):
    """An HTTP agent's inbox (any language): long-poll it, then ack or nack each delivery."""

    permission_classes = [IsStaffOrSelfAgent]
    agent_url_kwarg = "agent_id"
    serializer_class = InboxSerializer
    filter_backends: list = []
    pagination_class = None

    @extend_schema(
        responses=InboxSerializer,
        summary="Take waiting deliveries (long poll with wait; each is handed out until its visibility deadline)",
        parameters=[
            OpenApiParameter("wait", WAIT_SCHEMA, description="block up to N (<= 30) s while the inbox is empty"),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 100}, description="default 10"),
            OpenApiParameter(
                "visibility",
                {"type": "number", "minimum": 1, "maximum": 3600},
                description="seconds to ack before it is handed out again (default MASP_INBOX_VISIBILITY)",
            ),
        ],
    )
    def poll(self, request: Request, agent_id: str) -> Response:
        wait = wait_seconds(request)
        limit = int(_number(request, "limit", 1, 100, 10, integer=True))
        visibility = _number(request, "visibility", 1, 3600, settings.MASP_INBOX_VISIBILITY)
        agent = _agent_named(agent_id)
        services.as_http_agent(agent)
        taken = services.poll(agent, wait=wait, limit=limit, visibility=visibility)
        prefetch_related_objects(taken, "message__to_agent")  # one query for the page, not one per delivery
        return Response(InboxSerializer({"deliveries": taken}).data)

    def _delivery(self, delivery: Delivery) -> Response:
        fresh = Delivery.objects.select_related("agent").get(pk=delivery.pk)
        return Response(DeliveryDetailSerializer(fresh).data)

    @extend_schema(
        request=AckSerializer,
        responses={200: DeliveryDetailSerializer, 409: OpenApiResponse(description="no longer delivered to it")},
        summary="Ack: handled (a request's response in the body); 409 once acked, expired or handed out again",
    )
    def ack(self, request: Request, agent_id: str, delivery_id: str) -> Response:
        agent = _agent_named(agent_id)
        serializer = AckSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        delivery = services.ack(delivery_id, agent=agent, attempt=data.get("attempt"), response=data.get("response"))
        return self._delivery(delivery)

    @extend_schema(
        request=NackSerializer,
        responses={200: DeliveryDetailSerializer, 409: OpenApiResponse(description="no longer delivered to it")},
        summary="Nack: not handled (retried after a backoff, dead after MASP_MESSAGE_MAX_ATTEMPTS hand-outs)",
    )
    def nack(self, request: Request, agent_id: str, delivery_id: str) -> Response:
        agent = _agent_named(agent_id)
        serializer = NackSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        delivery = services.fail(delivery_id, agent=agent, error=data["error"], attempt=data.get("attempt"))
        return self._delivery(delivery)


@extend_schema_view(
    list=extend_schema(summary="Routing rules, in the order they apply"),
    retrieve=extend_schema(summary="One routing rule"),
    create=extend_schema(summary="Add a routing rule (staff)"),
    partial_update=extend_schema(summary="Change a routing rule (staff)"),
    destroy=extend_schema(summary="Delete a routing rule (staff)"),
)
class RoutingRuleViewSet(NamedNotFoundMixin, viewsets.ModelViewSet):
    """Operators' routing rules, applied in position order to every message sent."""

    queryset = RoutingRule.objects.select_related("target_agent").order_by("position", "id")
    serializer_class = RoutingRuleSerializer
    permission_classes = [IsStaffOrReadOnlyUser]
    agents_may_read = True  # an agent may see why its messages go where they go
    not_found_noun = "routing rule"
    lookup_value_regex = "[0-9]+"
    ordering_fields = ["position", "name", "created_at"]
    search_fields = ["name", "description"]
    filterset_fields: list[str] = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]


class MessagingStatsView(APIView):
    """The bus's metrics, read from the database."""

    permission_classes = [IsSignedIn]

    @extend_schema(
        responses=MessagingStatsSerializer,
        summary="Bus metrics: messages by type, deliveries by status, fan-out latency, inbox depths",
    )
    def get(self, request: Request) -> Response:
        return Response(MessagingStatsSerializer(selectors.stats()).data)
