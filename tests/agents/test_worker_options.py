"""Pure logic of running calls: retry backoff, and the `celery worker` options run_agent accepts."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test.utils import override_settings

from agents.management.commands.run_agent import split_worker_args
from agents.services.invocations import backoff_seconds


@override_settings(MASP_RETRY_BACKOFF=1.0, MASP_RETRY_BACKOFF_MAX=60.0)
def test_backoff_doubles_with_each_failure_with_jitter_up_to_its_cap():
    for failures, ceiling in ((1, 1), (2, 2), (3, 4), (4, 8), (7, 60), (30, 60)):
        delays = [backoff_seconds(failures) for _ in range(200)]
        # equal jitter: half the ceiling, plus up to that half again
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays), max(delays))
        # the jitter spreads retries of calls that failed together (not one constant delay)
        assert max(delays) - min(delays) > ceiling / 4, (failures, delays[:5])
    assert backoff_seconds(0) <= 1


def test_celery_spellings_of_run_agent_options_count_as_its_own():
    own, rest = split_worker_args(
        ["-c", "8", "-O", "fair", "-Pthreads", "--loglevel=DEBUG", "--max-tasks-per-child", "9"]
    )
    assert own == {"--concurrency": "8", "--pool": "threads", "--loglevel": "DEBUG"}
    assert rest == ["-O", "fair", "--max-tasks-per-child", "9"]
    assert split_worker_args(["--concurrency=3"]) == ({"--concurrency": "3"}, [])
    assert split_worker_args([]) == ({}, [])


@pytest.mark.parametrize(
    "args, says",
    [
        (["-Q", "other"], "-Q itself: the queues"),
        (["--queues=other"], "--queues itself"),
        (["-Xcap.echo"], "-X itself"),
        (["-n", "w@h"], "-n itself: the worker name"),
        (["--autoscale", "4,1"], "--autoscale itself"),
        (["-c"], "-c needs a value"),
    ],
)
def test_options_that_would_take_routing_from_run_agent_are_refused(args, says):
    with pytest.raises(CommandError, match=says.replace("(", r"\(")):
        split_worker_args(args)


@pytest.mark.django_db
def test_run_agent_refuses_bad_worker_options_before_registering():
    from agents.models import Agent

    with pytest.raises(CommandError, match="--concurrency must be at least 1"):
        call_command("run_agent", "tests.sample_agents", "--", "-c", "0")
    with pytest.raises(CommandError, match="must be a number"):
        call_command("run_agent", "tests.sample_agents", "--", "--concurrency=many")
    with pytest.raises(CommandError, match="-Q itself"):
        call_command("run_agent", "tests.sample_agents", "--", "-Q", "elsewhere")
    assert not Agent.objects.exists()
