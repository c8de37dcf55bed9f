"""Checks of single values, shared by the trainer's options (config.OPTIONS) and the models'
constructors, so that each rule is written once. A check maps a value to None (fine) or the
end of a sentence that starts with the value's name ("must be >= 1, got 0")."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

Check = Callable[[Any], Optional[str]]


def at_least(low: int) -> Check:
    def check(value):
        return None if value >= low else f"must be >= {low}, got {value}"
    return check


def above(low: float) -> Check:
    def check(value):  # NaN fails: it is not above anything
        return None if value > low else f"must be > {low:g}, got {value}"
    return check


def finite_at_least(low: float) -> Check:
    def check(value):
        return None if math.isfinite(value) and value >= low else \
            f"must be a finite number >= {low:g}, got {value}"
    return check


def fraction(value) -> Optional[str]:
    """A probability that leaves something: [0, 1)."""
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def path(value) -> Optional[str]:
    """A folder or file name: not empty (an empty one would mean the current folder)."""
    return None if value.strip() else f"must name a folder, got {value!r}"


def problem(name: str, value: Any, check: Check) -> Optional[str]:
    """'name must be ...' when value fails check, else None."""
    why = check(value)
    return None if why is None else f"{name} {why}"


def refuse(why: Optional[str]) -> None:
    """For constructors: a ValueError when there is a problem."""
    if why is not None:
        raise ValueError(why)


def in_range(low: int, high: int) -> Check:
    """An integer in [low, high]: the upper bound keeps sizes and counts to what can be
    allocated or represented (a 1e12-step run would need a 4 TB loss buffer)."""
    def check(value):
        return None if low <= value <= high else \
            f"must be >= {low} and <= {high:,}, got {value}"
    return check


def finite_above(low: float, high: float) -> Check:
    """A finite number in (low, high]."""
    def check(value):
        return None if math.isfinite(value) and low < value <= high else \
            f"must be > {low:g} and <= {high:g}, got {value}"
    return check
