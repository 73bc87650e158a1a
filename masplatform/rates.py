"""Rates such as ``"10/min"``, read by the settings (so this module imports nothing of Django)."""

from __future__ import annotations


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"10/min"`` → (10, 60). None, ``""`` or ``"off"``: no limit. Raises ValueError for anything else."""
    if rate is None or rate.strip().lower() in ("", "off", "none"):
        return None
    num, sep, period = rate.strip().partition("/")
    seconds = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
    seconds |= {"d": 86400, "day": 86400}
    if not sep or not num.isdigit() or int(num) < 1 or period not in seconds:
        raise ValueError(f"{rate!r}: expected <count>/<period> (period s, min, hour or day), e.g. '10/min', or 'off'")
    return int(num), seconds[period]
