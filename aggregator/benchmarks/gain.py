"""Patients who could gain: how many more of a practice's patients would have to meet an
indicator for the practice to reach the achievable benchmark (ABC) rate.

    could_gain = max(0, ceil(benchmark x denominator) - numerator)

A practice at or above the benchmark has 0; a suppressed numerator or denominator, or no
benchmark, gives ``None`` (unknown, never 0). Counts the practice sent rounded give an
approximate figure (the dashboard marks it). Registers (prevalence) have none: see areas.py.
This is plain arithmetic, kept apart from the views so it can be tested on its own.

"Reaching" the benchmark is judged at the precision rates are published to (six decimals,
figures.rounded): the benchmark a view shows is itself a rate rounded to six decimals (or
coarser), so it may sit up to half a unit of its last place above the exact rate it stands for.
A practice whose rate is within that half unit of it has reached it. Without this, a practice
that *is* the benchmark (85 of 118: the ABC 85/118 = 0.720339 to six decimals, and
0.720339 x 118 = 85.000002) was told one more patient could gain. The arithmetic is on exact
fractions, so no floating-point product (0.55 x 100 = 55.00000000000001) adds a patient either.
"""

from __future__ import annotations

from fractions import Fraction

#: Half a unit of the sixth decimal, the precision every published rate and benchmark has: a
#: rate this close below a benchmark is at it (it is the same figure, rounded).
HALF_UNIT = Fraction(1, 2_000_000)


def patients_could_gain(
    numerator: int | None, denominator: int | None, benchmark: float | None
) -> int | None:
    """``max(0, ceil(benchmark * denominator) - numerator)``, or None when any is unknown; the
    benchmark counts as reached within :data:`HALF_UNIT` below it (module docstring)."""
    if numerator is None or denominator is None or benchmark is None:
        return None
    if denominator <= 0:
        return 0
    need = (Fraction(benchmark) - HALF_UNIT) * denominator
    target = -(-need.numerator // need.denominator)  # the ceiling, exactly
    return max(0, target - min(numerator, denominator))


FORMULA = "patients who could gain = max(0, ⌈benchmark × denominator⌉ − numerator)"
