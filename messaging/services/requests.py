"""Request/response: send a request and wait for its answer on the platform's wake-up channel (no
polling loop); a request past its timeout is recorded ``timed_out`` by whoever notices first (the
waiter at its deadline, or the beat sweep)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from masplatform import notify
from messaging.models import Message, MessageType, RequestStatus
from messaging.services import delivery as deliveries
from messaging.services.sending import Sender, send


@dataclass(frozen=True)
class RequestOutcome:
    request: Message
    response: Message | None  # the response, or the error answer; None while pending

    @property
    def status(self) -> str:
        return self.request.request_status

    @property
    def ok(self) -> bool:
        return self.status == RequestStatus.ANSWERED


def answer_of(request: Message) -> Message | None:
    return (
        Message.objects.filter(correlation_id=request.pk, type__in=[MessageType.RESPONSE, MessageType.ERROR])
        .order_by("created_at")
        .first()
    )


def wait_for_answer(request: Message, seconds: float) -> RequestOutcome:
    """Wait up to ``seconds`` for ``request``'s answer. If its own timeout passes first, it is recorded
    timed out here and then (an error answer)."""
    if request.request_status != RequestStatus.PENDING:
        return RequestOutcome(request, answer_of(request))

    def answered() -> bool:
        status = Message.objects.filter(pk=request.pk).values_list("request_status", flat=True).first()
        return status != RequestStatus.PENDING

    remaining_timeout = max(0.0, (request.expires_at - timezone.now()).total_seconds())
    wait = min(seconds, remaining_timeout)
    # the wake-up on message:<id> is published once the answer has committed: it ends the wait by itself
    done = notify.wait(f"message:{request.pk}", wait, answered, notified_means_done=True) if wait > 0 else answered()
    if not done and remaining_timeout <= seconds:
        deliveries.time_out_request(request.pk)
    request.refresh_from_db(fields=["request_status", "answered_at"])
    response = None if request.request_status == RequestStatus.PENDING else answer_of(request)
    return RequestOutcome(request, response)


def request(
    sender: Sender, to: str, content: dict[str, Any], *, timeout: float | None = None, **options: Any
) -> RequestOutcome:
    """Send a request to agent ``to`` and wait for its answer up to its timeout."""
    message = send(sender, content, to=to, type=MessageType.REQUEST, timeout=timeout, **options)
    return wait_for_answer(message, message.timeout or 0)
