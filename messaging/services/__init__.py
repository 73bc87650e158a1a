"""The message bus's state changes. Import from here: ``from messaging import services``."""

from messaging.services.delivery import (
    Claimed,
    ack,
    answer,
    claim,
    claim_batch,
    dispatch_waiting,
    drain_at_start,
    fail,
    next_due,
    redeliver,
    time_out_request,
)
from messaging.services.inbox import as_http_agent, poll
from messaging.services.requests import RequestOutcome, request, wait_for_answer
from messaging.services.sending import (
    PLATFORM_SENDER,
    Sender,
    compute_recipients,
    no_responders_reason,
    rule_mismatch,
    send,
    topic_subscribers,
)
from messaging.services.subscriptions import check_subscription, declare, refresh_derived, subscribe, unsubscribe
from messaging.services.sweeps import (
    expire_deliveries,
    purge_messages,
    redispatch_waiting,
    return_invisible,
    sweep,
    time_out_requests,
)

__all__ = [
    "PLATFORM_SENDER",
    "Claimed",
    "RequestOutcome",
    "Sender",
    "ack",
    "as_http_agent",
    "answer",
    "check_subscription",
    "claim",
    "claim_batch",
    "compute_recipients",
    "declare",
    "dispatch_waiting",
    "drain_at_start",
    "expire_deliveries",
    "fail",
    "next_due",
    "no_responders_reason",
    "poll",
    "purge_messages",
    "redeliver",
    "redispatch_waiting",
    "refresh_derived",
    "request",
    "return_invisible",
    "rule_mismatch",
    "send",
    "subscribe",
    "sweep",
    "time_out_request",
    "time_out_requests",
    "topic_subscribers",
    "unsubscribe",
    "wait_for_answer",
]
