"""Pure logic of addressing: topic and pattern syntax, their regular expressions (which both databases
run), sender globs, content filters, and matching a message against a subscription or a rule in Python
(the explanation of ``GET /api/messages/{id}/routing/`` and the routing rules use it; the recipients of
a topic come from the same expressions run by the database)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WORD = r"[A-Za-z0-9_-]+"
TOPIC_RE = re.compile(rf"^{WORD}(\.{WORD})*$")
PATTERN_WORD_RE = re.compile(rf"^({WORD}|\*|#)$")
FILTER_KEY_RE = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")
SENDER_GLOB_RE = re.compile(r"^[A-Za-z0-9_.:@*?-]+$")
MAX_TOPIC = 255
MISSING = object()


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a topic (dotted words of letters, digits, ``_`` and ``-``), or None."""
    if not isinstance(topic, str) or not topic:
        return "A topic is one or more words separated by dots, e.g. 'weather.nyc'."
    if len(topic) > MAX_TOPIC:
        return f"A topic is at most {MAX_TOPIC} characters."
    if not TOPIC_RE.match(topic):
        return (
            f"'{topic}' is not a topic: words of letters, digits, '_' or '-', separated by single dots "
            "(wildcards belong in subscription patterns)."
        )
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a topic pattern (words, ``*`` for one word, ``#`` for zero or more), or None."""
    if not isinstance(pattern, str) or not pattern:
        return "A pattern is dotted words where '*' is one word and '#' zero or more, e.g. 'weather.#'."
    if len(pattern) > MAX_TOPIC:
        return f"A pattern is at most {MAX_TOPIC} characters."
    bad = [w for w in pattern.split(".") if not PATTERN_WORD_RE.match(w)]
    if bad:
        return (
            f"'{pattern}' is not a topic pattern: '{bad[0]}' is neither a word (letters, digits, '_', '-'), "
            "'*' (one word) nor '#' (zero or more words)."
        )
    return None


def topic_regex(pattern: str) -> str:
    """The regular expression (POSIX and Python alike) that matches ``'.' + topic`` for the topics of
    ``pattern``: each word is preceded by a dot, so ``#`` can stand for zero words."""
    parts = []
    for word in pattern.split("."):
        if word == "*":
            parts.append(r"\.[^.]+")
        elif word == "#":
            parts.append(r"(\.[^.]+)*")
        else:
            parts.append(r"\." + word)  # words are letters, digits, '_' and '-': nothing to escape
    return "^" + "".join(parts) + "$"


def topic_matches(pattern: str, topic: str) -> bool:
    return bool(topic) and re.match(topic_regex(pattern), "." + topic) is not None


def sender_glob_problem(glob: str) -> str | None:
    if not isinstance(glob, str) or not glob or len(glob) > 160 or not SENDER_GLOB_RE.match(glob):
        return (
            f"{glob!r} is not a sender pattern: an agent id (or 'user:<name>', 'platform') where '*' is any "
            "characters and '?' one."
        )
    return None


def sender_regex(globs: Iterable[str]) -> str:
    """One regular expression (POSIX and Python alike) matching a sender id that matches any of ``globs``;
    '' for no globs (any sender)."""
    alternatives = []
    for glob in globs:
        piece = "".join(".*" if c == "*" else "." if c == "?" else c if c.isalnum() else "\\" + c for c in glob)
        alternatives.append(piece)
    return f"^({'|'.join(alternatives)})$" if alternatives else ""


def sender_matches(globs: Iterable[str], sender_id: str) -> bool:
    regex = sender_regex(globs)
    return not regex or re.match(regex, sender_id) is not None


def canonical(value: Any) -> str:
    """The JSON text that two equal values share (1 and 1.0 alike; True stays true)."""

    def normal(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        if isinstance(v, list):
            return [normal(x) for x in v]
        return v

    return json.dumps(normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def filter_pair(key: str, value: Any) -> str:
    return f"{key}={canonical(value)}"


def content_filters_problem(filters: Any) -> str | None:
    if not isinstance(filters, dict):
        return (
            'Content filters are an object of dotted keys and the values they must equal, e.g. {"type": "data_update"}.'
        )
    for key in filters:
        if not FILTER_KEY_RE.match(key) or len(key) > 200:
            return f"'{key}' is not a content filter key: dotted words of letters, digits, '_', '$' or '-'."
    return None


def lookup(content: Any, key: str) -> Any:
    """The value at dotted ``key`` in ``content``, or ``MISSING``."""
    value = content
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def content_pairs(content: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """The message's (key, value) pairs for the filter keys in use."""
    pairs = []
    for key in keys:
        value = lookup(content, key)
        if value is not MISSING:
            pairs.append(filter_pair(key, value))
    return pairs


def first_filter_mismatch(filters: Mapping[str, Any], content: Any) -> str | None:
    """The first content filter ``content`` fails, in words; None if all hold."""
    for key, expected in filters.items():
        value = lookup(content, key)
        if value is MISSING:
            return f"content has no '{key}' (filter wants {canonical(expected)})"
        if canonical(value) != canonical(expected):
            return f"content '{key}' is {canonical(value)}, filter wants {canonical(expected)}"
    return None


@dataclass(frozen=True)
class Envelope:
    """What routing looks at in a message."""

    type: str
    topic: str
    sender_id: str
    content: Mapping[str, Any]


def subscription_mismatch(
    *, pattern: str, message_types: list[str], sender_patterns: list[str], filters: Mapping[str, Any], message: Envelope
) -> str | None:
    """The first condition of a subscription that ``message`` fails, in words; None if it matches."""
    if not message.topic:
        return "the message has no topic"
    if not topic_matches(pattern, message.topic):
        return f"topic '{message.topic}' does not match pattern '{pattern}'"
    if message_types and message.type not in message_types:
        return f"type '{message.type}' is not one of {', '.join(message_types)}"
    if sender_patterns and not sender_matches(sender_patterns, message.sender_id):
        return f"sender '{message.sender_id}' matches none of {', '.join(sender_patterns)}"
    return first_filter_mismatch(filters, message.content)


def rule_mismatch(
    *, message_types: list[str], topic_pattern: str, sender_pattern: str, filters: Mapping[str, Any], message: Envelope
) -> str | None:
    """The first condition of a routing rule that ``message`` fails, in words; None if it matches."""
    if message_types and message.type not in message_types:
        return f"type '{message.type}' is not one of {', '.join(message_types)}"
    if topic_pattern:
        if not message.topic:
            return f"the message has no topic (rule wants '{topic_pattern}')"
        if not topic_matches(topic_pattern, message.topic):
            return f"topic '{message.topic}' does not match pattern '{topic_pattern}'"
    if sender_pattern and not sender_matches([sender_pattern], message.sender_id):
        return f"sender '{message.sender_id}' does not match '{sender_pattern}'"
    return first_filter_mismatch(filters, message.content)
