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
    # click's clusters: flags, then one option and its value
    assert split_worker_args(["-Ec8"]) == ({"--concurrency": "8"}, ["-E"])
    assert split_worker_args(["-EBc", "2", "-E"]) == ({"--concurrency": "2"}, ["-E", "-B", "-E"])
    assert split_worker_args(["-EO", "fair"]) == ({}, ["-E", "-O", "fair"])
    # another option's value is not read as an option
    assert split_worker_args(["-f", "-c.log", "--logfile=-c"]) == ({}, ["-f", "-c.log", "--logfile=-c"])


@pytest.mark.parametrize(
    "args, says",
    [
        (["-Q", "other"], "with -Q: the queues"),
        (["--queues=other"], "with --queues"),
        (["-Xcap.echo"], "with -X"),
        (["-EQ", "other"], "with -Q"),
        (["-n", "w@h"], "with -n: the worker name"),
        (["--autoscale", "4,1"], "with --autoscale"),
        (["-D"], "with -D: the worker runs in run_agent's process"),
        (["-ED"], "with -D"),
        (["--purge"], "with --purge: it would empty capability queues"),
        (["--pool-start-method", "spawn"], "with --pool-start-method"),
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
    with pytest.raises(CommandError, match="must be a number or 'auto'"):
        call_command("run_agent", "tests.sample_agents", "--", "--concurrency=many")
    with pytest.raises(CommandError, match="with -Q"):
        call_command("run_agent", "tests.sample_agents", "--", "-Q", "elsewhere")
    with pytest.raises(CommandError, match="the solo pool runs one call at a time"):
        call_command("run_agent", "tests.sample_agents", "--pool", "solo", "--", "-c", "4")
    assert not Agent.objects.exists()


@pytest.mark.django_db
def test_worker_options_after_dashes_follow_run_agent_options_on_the_command_line():
    """`manage.py run_agent <module> --agent-id X -- <celery worker options>`, as docs/agents.md shows it
    (argparse alone refuses a `--` after options)."""
    from agents.models import Agent

    args = ["tests.sample_agents", "--agent-id", "x-1", "--pool", "solo", "--", "-Ec", "2"]
    with pytest.raises(CommandError, match="the solo pool runs one call at a time: --concurrency 2"):
        call_command("run_agent", *args)
    assert not Agent.objects.exists()


def test_auto_concurrency_is_one_process_per_cpu():
    from celery.utils.sysinfo import available_cpu_count

    from agents.management.commands.run_agent import _concurrency

    assert _concurrency("auto") == available_cpu_count() >= 1
    assert _concurrency("3") == 3
