"""Routes of the bus that are not a router's: the HTTP inbox under an agent, and the metrics."""

from django.urls import re_path

from messaging.api import AGENT_ID_RE, InboxViewSet, MessagingStatsView

urlpatterns = [
    re_path(rf"^agents/(?P<agent_id>{AGENT_ID_RE})/inbox/$", InboxViewSet.as_view({"get": "poll"}), name="agent-inbox"),
    re_path(
        rf"^agents/(?P<agent_id>{AGENT_ID_RE})/inbox/(?P<delivery_id>[0-9]+)/ack/$",
        InboxViewSet.as_view({"post": "ack"}),
        name="agent-inbox-ack",
    ),
    re_path(
        rf"^agents/(?P<agent_id>{AGENT_ID_RE})/inbox/(?P<delivery_id>[0-9]+)/nack/$",
        InboxViewSet.as_view({"post": "nack"}),
        name="agent-inbox-nack",
    ),
    re_path(r"^messaging/stats/$", MessagingStatsView.as_view(), name="messaging-stats"),
]
