"""Durations as the policy file writes them ("15s", "5m", "1h30m", "2d") and back.

Written here rather than taken from a library: the format is the small Prometheus/Go subset
operators already type in alert rules, and the error text must name the accepted form.
Durations are plain ``float`` seconds everywhere else in the code.
"""

from __future__ import annotations

import math
import re

MAX_SECONDS = 10 * 366 * 86400.0
"""Longest duration accepted (about 10 years): beyond it a time overflows a date."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a duration string, or a bare non-negative number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f'{"true" if value else "false"} is not a duration (e.g. "5m")')
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            shown = "nan" if math.isnan(value) else "inf"
            raise ValueError(f'{shown} is not a duration (e.g. "5m")')
        if value < 0:
            raise ValueError(f'{value!r} is negative; a duration is at least "0s"')
        return _bounded(float(value), repr(value))
    if not isinstance(value, str):
        kind = "a table" if isinstance(value, dict) else "an array"
        if not isinstance(value, dict | list | tuple):
            kind = repr(value)
        raise ValueError(f'{kind} is not a duration (e.g. "5m")')
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            raise ValueError(
                f'"{value}" is not a duration: give a unit (e.g. "{text}s"), '
                "or write seconds without quotes"
            )
        raise ValueError(f'"{value}" is not a duration (e.g. "5m")')
    return _bounded(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)), f'"{value}"')


def _bounded(seconds: float, shown: str) -> float:
    if not seconds <= MAX_SECONDS:
        raise ValueError(f"{shown} is longer than 10 years")
    return seconds


def format_duration(seconds: float) -> str:
    """Compact form for reasons and tables: 300 -> "5m", 5400 -> "1h30m", 0 -> "0s"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    if whole == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
