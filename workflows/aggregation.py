"""Gathering the outputs of a scatter task (``required_agents: N``) into the task's one output.

- ``average`` / ``min`` / ``max`` / ``sum``: for each top-level field that is a
  number in at least one output, that statistic over the outputs that have it
  as a number. Other fields are left out. ``gathered`` says how many outputs were
  gathered.
- ``list``: ``{"results": [output, ...]}`` in share order.
- ``majority``: the output that most agents returned (compared as JSON),
  ``{"value": output, "votes": k, "of": n}``; a tie goes to the output that
  came first in share order.
"""

from __future__ import annotations

import json
from collections import Counter
from statistics import fmean
from typing import Any

NUMERIC = {"average": fmean, "min": min, "max": max, "sum": sum}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(kind: str, outputs: list[Any]) -> dict[str, Any]:
    if kind == "list":
        return {"results": list(outputs)}
    if kind == "majority":
        keys = [json.dumps(o, sort_keys=True) for o in outputs]
        counts = Counter(keys)
        best = max(counts.values(), default=0)
        winner = next((k for k in keys if counts[k] == best), None)
        return {"value": json.loads(winner) if winner else None, "votes": best, "of": len(outputs)}
    if kind in NUMERIC:
        fields: dict[str, list[float]] = {}
        for output in outputs:
            if isinstance(output, dict):
                for name, value in output.items():
                    if _is_number(value):
                        fields.setdefault(name, []).append(value)
        result: dict[str, Any] = {name: NUMERIC[kind](values) for name, values in fields.items()}
        result["gathered"] = len(outputs)
        return result
    raise ValueError(f"unknown aggregation '{kind}'")
