"""The API router: each app registers its viewsets here; plus the token endpoint."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.permissions import AllowAny
from rest_framework.routers import DefaultRouter

from agents.api import AgentEventViewSet, AgentViewSet, CapabilityViewSet, InvocationViewSet
from masplatform.throttling import LOGIN_THROTTLES
from messaging.api import DeliveryViewSet, MessageViewSet, RoutingRuleViewSet, SubscriptionViewSet
from workflows.api import ExecutionViewSet, WorkflowViewSet


class ObtainTokenView(ObtainAuthToken):
    """POST {"username", "password"} → {"token"}; send it as ``Authorization: Token <token>``."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = LOGIN_THROTTLES  # per client address and per username: 429 with Retry-After

    @extend_schema(
        request=inline_serializer(
            "TokenRequest", {"username": serializers.CharField(), "password": serializers.CharField()}
        ),
        responses={
            200: inline_serializer("TokenResponse", {"token": serializers.CharField()}),
            400: OpenApiResponse(description="Wrong username or password, or a missing field"),
            429: OpenApiResponse(
                inline_serializer("LoginThrottled", {"detail": serializers.CharField()}),
                description="Too many login attempts from this address or for this username; see Retry-After",
            ),
        },
        tags=["auth"],
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


router = DefaultRouter()
router.register("agents", AgentViewSet, basename="agent")
router.register("capabilities", CapabilityViewSet, basename="capability")
router.register("agent-events", AgentEventViewSet, basename="agent-event")
router.register("invocations", InvocationViewSet, basename="invocation")
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("executions", ExecutionViewSet, basename="execution")
router.register("messages", MessageViewSet, basename="message")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("routing-rules", RoutingRuleViewSet, basename="routing-rule")
# nested under an agent: served by messaging (the agents app knows nothing of the bus)
router.register(
    r"agents/(?P<agent_id>[-a-zA-Z0-9_]+)/subscriptions", SubscriptionViewSet, basename="agent-subscription"
)
