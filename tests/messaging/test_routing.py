"""Unit: topic and pattern syntax, wildcards, sender globs, content filters (pure, no database)."""

from __future__ import annotations

import re

import pytest

from messaging import routing

MATCHES = [
    ("weather", "weather", True),
    ("weather", "weather.nyc", False),
    ("weather.*", "weather.nyc", True),
    ("weather.*", "weather", False),
    ("weather.*", "weather.nyc.today", False),
    ("weather.#", "weather", True),
    ("weather.#", "weather.nyc.today", True),
    ("weather.#", "weatherly", False),
    ("#", "anything.at.all", True),
    ("#.today", "today", True),
    ("#.today", "weather.nyc.today", True),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.*.b", "a.b", False),
    ("*.nyc", "weather.nyc", True),
    ("*.nyc", "nyc", False),
    ("a-b_c", "a-b_c", True),
]


@pytest.mark.parametrize("pattern,topic,expected", MATCHES)
def test_amqp_wildcards_star_is_one_word_hash_is_zero_or_more(pattern, topic, expected):
    assert routing.topic_matches(pattern, topic) is expected
    # the regular expression the database runs gives the same answer
    assert (re.match(routing.topic_regex(pattern), "." + topic) is not None) is expected


@pytest.mark.parametrize("topic", ["", "a..b", ".a", "a.", "we ather", "a.*", "a.#", "x" * 256, "é"])
def test_bad_topics_are_explained(topic):
    assert routing.topic_problem(topic)


@pytest.mark.parametrize("pattern", ["", "a..b", "a.**", "a#", "we ather", "x" * 256])
def test_bad_patterns_are_explained(pattern):
    assert routing.pattern_problem(pattern)


def test_good_topics_and_patterns_pass():
    assert routing.topic_problem("weather.nyc") is None
    assert routing.pattern_problem("weather.*.#") is None


def test_sender_globs():
    assert routing.sender_matches(["weather_*"], "weather_pub")
    assert not routing.sender_matches(["weather_*"], "stock_pub")
    assert routing.sender_matches(["stock_pub", "user:?ob"], "user:bob")
    assert routing.sender_matches([], "anyone")
    # characters a regex would read specially are literal
    assert not routing.sender_matches(["a.b"], "axb")
    assert routing.sender_glob_problem("bad glob") and routing.sender_glob_problem("")


def test_content_filters_compare_dotted_keys_by_json_value():
    content = {"type": "data_update", "data": {"location": "NY", "n": 1}, "flag": True}
    assert routing.first_filter_mismatch({"type": "data_update", "data.location": "NY"}, content) is None
    assert routing.first_filter_mismatch({"data.n": 1.0}, content) is None  # 1 == 1.0, as in JSON
    assert "filter wants" in routing.first_filter_mismatch({"data.location": "LA"}, content)
    assert "has no 'data.missing'" in routing.first_filter_mismatch({"data.missing": 1}, content)
    assert routing.first_filter_mismatch({"flag": 1}, content)  # true is not 1
    assert routing.content_pairs(content, ["data.location", "nope"]) == ['data.location="NY"']
    assert routing.content_filters_problem({"bad key": 1}) and routing.content_filters_problem([1])


def test_subscription_mismatch_names_the_first_failed_condition():
    env = routing.Envelope("event", "weather.nyc", "weather_pub", {"type": "data_update"})
    check = dict(pattern="weather.#", message_types=[], sender_patterns=[], filters={})
    assert routing.subscription_mismatch(**check, message=env) is None
    assert "does not match pattern" in routing.subscription_mismatch(**{**check, "pattern": "stocks"}, message=env)
    assert "not one of request" in routing.subscription_mismatch(**{**check, "message_types": ["request"]}, message=env)
    assert "matches none of" in routing.subscription_mismatch(**{**check, "sender_patterns": ["stock_*"]}, message=env)
    assert "filter wants" in routing.subscription_mismatch(**{**check, "filters": {"type": "x"}}, message=env)
