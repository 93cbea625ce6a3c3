"""Patients who could gain: how many more of a practice's patients would have to meet an
indicator for the practice to reach the achievable benchmark (ABC) rate.

    could_gain = max(0, ceil(benchmark x denominator) - numerator)

A practice at or above the benchmark has 0; a suppressed numerator or denominator, or no
benchmark, gives ``None`` (unknown, never 0). Counts the practice sent rounded give an
approximate figure (the dashboard marks it). Registers (prevalence) have none: see areas.py.
This is plain arithmetic, kept apart from the views so it can be tested on its own.
"""

from __future__ import annotations

import math

#: ``benchmark x denominator`` is a float product: 0.55 x 100 is 55.00000000000001, whose ceiling
#: would add a patient who is not there. Products within this of a whole number are that number.
_EPS = 1e-9


def patients_could_gain(
    numerator: int | None, denominator: int | None, benchmark: float | None
) -> int | None:
    """``max(0, ceil(benchmark * denominator) - numerator)``, or None when any is unknown."""
    if numerator is None or denominator is None or benchmark is None:
        return None
    if denominator <= 0:
        return 0
    target = math.ceil(benchmark * denominator - _EPS)
    return max(0, target - min(numerator, denominator))


FORMULA = "patients who could gain = max(0, ⌈benchmark × denominator⌉ − numerator)"
