"""Query parameters of the message history and of the deliveries list."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db.models import Exists, OuterRef, QuerySet

from masplatform.filters import UtcIsoDateTimeFilter
from messaging.models import Delivery, DeliveryStatus, Message, MessageType, RequestStatus


class GivenUUIDField(forms.UUIDField):
    """A UUID; given empty it is a 400 naming the parameter (the schema says uuid), not "no filter"."""

    def to_python(self, value: Any) -> Any:
        if value == "":
            raise forms.ValidationError("give a UUID", code="required")
        return super().to_python(value)


class UUIDFilter(django_filters.UUIDFilter):
    field_class = GivenUUIDField


class MessageFilter(django_filters.FilterSet):
    sender = django_filters.CharFilter(help_text="an agent id, user:<name> or platform")
    recipient = django_filters.CharFilter(method="_recipient", help_text="agent id: messages it has a delivery of")
    topic = django_filters.CharFilter()
    type = django_filters.ChoiceFilter(choices=MessageType.choices)
    correlation_id = UUIDFilter()
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    status = django_filters.ChoiceFilter(
        choices=DeliveryStatus.choices, method="_status", help_text="messages having a delivery in this status"
    )
    request_status = django_filters.ChoiceFilter(choices=RequestStatus.choices)

    class Meta:
        model = Message
        fields = ["sender", "recipient", "topic", "type", "correlation_id", "since", "status", "request_status"]

    # EXISTS rather than a join: a message with many deliveries is listed once, and the page count is right
    def _recipient(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Exists(Delivery.objects.filter(message=OuterRef("pk"), agent__agent_id=value)))

    def _status(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Exists(Delivery.objects.filter(message=OuterRef("pk"), status=value)))


class DeliveryFilter(django_filters.FilterSet):
    agent = django_filters.CharFilter(field_name="agent__agent_id", help_text="agent id")
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    message = UUIDFilter(field_name="message_id")

    class Meta:
        model = Delivery
        fields = ["agent", "status", "message"]
