"""The bus's beat sweeps, each set-based: expiry, visibility deadlines, request timeouts, lost Celery
messages, and the purge of old history."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import AgentState
from messaging.models import WAITING, Delivery, DeliveryStatus, Message, RequestStatus, Transport
from messaging.services import delivery as deliveries
from messaging.services import sending

logger = logging.getLogger("messaging")


def expire_deliveries() -> int:
    """Waiting deliveries past their message's expiry: ``expired``, never handled. One UPDATE."""
    now = timezone.now()
    count = Delivery.objects.filter(status__in=WAITING, expires_at__lte=now).update(
        status=DeliveryStatus.EXPIRED, visible_at=None
    )
    if count:
        logger.info("event=deliveries_expired count=%d", count)
    return count


def return_invisible(*, batch_size: int | None = None) -> int:
    """Deliveries handed out and not acked by their visibility deadline: waiting again (and sent again),
    or ``expired`` when their message has expired meanwhile, or ``dead`` when out of attempts."""
    now = timezone.now()
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    overdue = Delivery.objects.filter(status=DeliveryStatus.DELIVERED, visible_at__lte=now)
    expired = overdue.filter(expires_at__lte=now).update(status=DeliveryStatus.EXPIRED, visible_at=None)
    dead = overdue.filter(attempts__gte=settings.MASP_MESSAGE_MAX_ATTEMPTS).update(
        status=DeliveryStatus.DEAD, visible_at=None, last_error="not acked by its visibility deadline"
    )
    with transaction.atomic():
        ids = list(overdue.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return expired + dead
        Delivery.objects.filter(pk__in=ids, status=DeliveryStatus.DELIVERED).update(
            status=DeliveryStatus.PENDING,
            available_at=now,
            visible_at=None,
            last_error="not acked by its visibility deadline",
        )
        sending.hand_out(list(Delivery.objects.filter(pk__in=ids, status=DeliveryStatus.PENDING)))
    logger.info("event=deliveries_returned count=%d expired=%d dead=%d", len(ids), expired, dead)
    return len(ids) + expired + dead


def time_out_requests(*, batch_size: int | None = None) -> int:
    """Pending requests past their timeout: ``timed_out``, each with an error response (in batches)."""
    now = timezone.now()
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    requests = list(
        Message.objects.filter(request_status=RequestStatus.PENDING, expires_at__lte=now).order_by("expires_at")[
            :batch_size
        ]
    )
    count = 0
    with transaction.atomic():
        for request in requests:
            count += deliveries.fail_request(request, f"no response within {request.timeout:g}s", now, kind="timed_out")
    if count:
        logger.info("event=requests_timed_out count=%d", count)
    return count


def redispatch_waiting(*, older_than: float | None = None, batch_size: int | None = None) -> int:
    """Waiting deliveries of live SDK workers whose Celery message is older than ``older_than`` (lost in a
    broker restart, say): sent again. A duplicate of one that was not lost claims nothing."""
    now = timezone.now()
    older_than = settings.MASP_MESSAGE_REDISPATCH_AFTER if older_than is None else older_than
    cutoff = now - timedelta(seconds=older_than)
    batch_size = batch_size or settings.MASP_SWEEP_BATCH_SIZE
    stuck = list(
        Delivery.objects.filter(
            status__in=WAITING,
            available_at__lte=cutoff,
            expires_at__gt=now,
            agent__endpoint__transport=Transport.WORKER,
            agent__unregistered_at__isnull=True,
        )
        .exclude(agent__state=AgentState.OFFLINE)
        .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=cutoff))
        .order_by("-priority", "created_at")[:batch_size]
    )
    with transaction.atomic():
        sending.hand_out(stuck)
    return len(stuck)


def sweep() -> dict[str, int]:
    return {
        "expired": expire_deliveries(),
        "returned": return_invisible(),
        "timed_out": time_out_requests(),
        "redispatched": redispatch_waiting(),
    }


def purge_messages(*, older_than_days: float | None = None, batch_size: int | None = None) -> int:
    """Delete messages (with their deliveries) older than the retention period whose deliveries are all
    final and which are not a pending request, in batches, each its own transaction."""
    days = settings.MASP_MESSAGE_RETENTION_DAYS if older_than_days is None else older_than_days
    batch_size = batch_size or settings.MASP_RETENTION_BATCH_SIZE
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    while True:
        ids = list(
            Message.objects.filter(created_at__lt=cutoff)
            .exclude(request_status=RequestStatus.PENDING)
            .exclude(deliveries__status__in=[*WAITING, DeliveryStatus.DELIVERED])
            .order_by("created_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        picked = len(ids)
        with transaction.atomic():
            # checked again under the lock of their deliveries: one redelivered meanwhile is kept (and a
            # redelivery that waits for this lock then finds no delivery, and says so)
            list(Delivery.objects.select_for_update().filter(message_id__in=ids).values_list("pk", flat=True))
            reopened = set(
                Delivery.objects.filter(
                    message_id__in=ids, status__in=[*WAITING, DeliveryStatus.DELIVERED]
                ).values_list("message_id", flat=True)
            )
            ids = [pk for pk in ids if pk not in reopened]
            Delivery.objects.filter(message_id__in=ids).delete()
            Message.objects.filter(pk__in=ids).delete()
        total += len(ids)
        if picked < batch_size:
            break
    if total:
        logger.info("event=messages_purged count=%d", total)
    return total
