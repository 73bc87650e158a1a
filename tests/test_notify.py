"""Wake-ups between processes (masplatform.notify) on the run's real broker."""

from __future__ import annotations

import threading
import time

import pytest

from masplatform import notify


def publish_later(name: str, delay: float, message: str = "done") -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), notify.publish(name, message)))
    thread.start()
    return thread


def test_a_wait_ends_when_its_notification_arrives_and_waits_reuse_one_connection(broker_url):
    for name in ("first", "second", "first"):  # the same channel again after an unsubscribe, too
        finished = threading.Event()
        thread = threading.Thread(
            target=lambda name=name, finished=finished: (time.sleep(0.2), finished.set(), notify.publish(name))
        )
        started = time.monotonic()
        thread.start()
        assert notify.wait(name, 10, finished.is_set) is True
        assert time.monotonic() - started < 5  # woken, not timed out
        thread.join()
    if broker_url.startswith(("redis://", "redis+socket://")):
        assert notify._subscribers.pubsub is not None and notify._subscribers.pubsub.connection is not None


def test_a_notification_for_another_channel_does_not_end_a_wait(broker_url):
    checks = []

    def done() -> bool:
        checks.append(time.monotonic())
        return False

    threads = [publish_later("someone-else", 0.1), publish_later("someone-else", 0.2)]
    started = time.monotonic()
    assert notify.wait("mine", 0.6, done) is False
    assert time.monotonic() - started >= 0.6
    # checked when subscribed and at the deadline, not once per foreign message
    assert len(checks) <= 3
    for thread in threads:
        thread.join()


def test_a_wait_that_is_done_at_once_returns_without_sleeping(broker_url):
    started = time.monotonic()
    assert notify.wait("already", 10, lambda: True) is True
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("timeout", [0, -1])
def test_no_wait_only_checks(timeout):
    assert notify.wait("x", timeout, lambda: True) is True


def test_a_notification_can_stand_for_done(broker_url):
    checks = []

    def done() -> bool:
        checks.append(1)
        return False

    thread = publish_later("announced", 0.2)
    started = time.monotonic()
    # the caller reads the state itself afterwards (as GET ?wait= does): the notification ends the wait
    assert notify.wait("announced", 10, done, notified_means_done=True) is True
    assert time.monotonic() - started < 5
    assert len(checks) == 1  # once, after subscribing; not again after the notification
    thread.join()


def test_each_thread_publishes_on_a_connection_of_its_own(broker_url):
    if not notify._is_redis(broker_url):
        pytest.skip("Redis pub/sub")
    mine = notify._publisher(broker_url)
    assert notify._publisher(broker_url) is mine
    theirs: list = []
    other = threading.Thread(target=lambda: theirs.append(notify._publisher(broker_url)))
    other.start()
    other.join(5)
    assert theirs and theirs[0] is not mine and theirs[0].connection is not mine.connection
    got: list[bool] = []
    waiter = threading.Thread(
        target=lambda: got.append(notify.wait("pub-test", 5, lambda: False, notified_means_done=True))
    )
    waiter.start()
    time.sleep(0.3)
    notify.publish("pub-test")  # through this thread's own connection
    waiter.join(5)
    assert got == [True]


def test_a_subscription_made_first_catches_a_notification_sent_before_the_wait_without_asking(broker_url):
    checks = []

    def done() -> bool:
        checks.append(1)
        return False

    with notify.subscribed("early") as waiter:
        publish_later("early", 0).join(5)  # the event happens before the wait begins
        started = time.monotonic()
        assert waiter.wait(10, done) is True
        assert time.monotonic() - started < 5
    if notify._is_redis(broker_url):
        assert checks == []  # subscribed before the event: nothing to ask (no query on ?wait=)


def test_a_subscription_made_first_answers_done_at_its_deadline_and_ignores_other_channels(broker_url):
    with notify.subscribed("quiet") as waiter:
        publish_later("noise", 0).join(5)
        started = time.monotonic()
        assert waiter.wait(0.5, lambda: "asked at the deadline") == "asked at the deadline"
        assert time.monotonic() - started >= 0.45
    with notify.subscribed("quiet") as waiter:  # a late notification of an earlier subscription is not this one's
        assert waiter.wait(0.2, lambda: False) is False


def test_a_publisher_connection_the_server_closed_is_replaced_and_the_wake_up_still_sent(broker_url):
    if not notify._is_redis(broker_url):
        pytest.skip("Redis pub/sub")
    notify.publish("warm-up")  # this thread's publisher connection exists
    publisher = notify._publisher(broker_url)
    client_id = publisher.client_id()
    notify._redis(broker_url).client_kill_filter(_id=client_id)  # as a Redis restart or idle timeout would
    with notify.subscribed("after-kill") as waiter:
        notify.publish("after-kill")  # the first try meets the closed connection; the second is sent
        assert waiter.wait(5, lambda: False) is True
    assert notify._publisher(broker_url).client_id() != client_id
