"""Linked tables: the identities between indicators that a catalogue's rule trees imply.

Released cells of one submission are linked by more than the relations apply_policy protects
(strata add up to their total, ``numerator <= denominator``). A register's numerator is the
union of the populations of its age-split indicators; an indicator whose population is another
indicator's numerator has ``denominator + exclusions`` equal to it; two indicators with the same
population have the same ``denominator + exclusions``. A reader who knows the catalogue knows
these identities, so the agent's disclosure guard (``agent/outbound/guard.py``) audits a submission with
them, and so do the attack tests. Pure: no I/O.

**What is derived.** Every count of an indicator is a set of patients of the base population:

* ``numerator``   = population AND numerator rule
* ``denominator`` = population AND NOT (NOT numerator rule AND exclusion rule)
  (= population when there is no exclusion rule)
* ``exclusions``  = population AND NOT numerator rule AND exclusion rule (empty without a rule)
* ``population``  = ``denominator + exclusions`` (the two are disjoint)

Each set is put in a *conjunctive form*: an age interval, a set of sexes, and a set of opaque
literals. ``All`` is flattened; ``Age`` and ``SexIs`` (and a ``Not`` of a one-sided ``Age`` or of
a ``SexIs``) become the interval and the sexes; every other node (``OnRegister``, ``HasCode``,
``Any_``, any other ``Not``, and any node kind this module does not know, such as a future
computed score) is an opaque literal identified by its canonical JSON. Two literals are the same
only when their JSON is identical. This is sound (it never states a false identity) and
conservative about what it cannot read: identities that need the meaning of an opaque node (e.g.
that ``score >= 2`` and ``score < 2`` split a register) are not derived.

For each region a stratum can describe (every age band x sex, every sex over all ages, every
age band over all sexes, and the whole practice), each set is restricted to the region and:

1. ``equal``: sets with the same literals and the same restricted interval and sexes are equal
   (this includes indicators that share a population: their ``denominator + exclusions`` are
   equal, and so are their denominators when neither has an exclusion rule);
2. ``partition``: a set whose restricted region is the disjoint union of the restricted regions
   of other sets with the same literals equals their sum (a register's numerator against the
   populations of its under-80 and 80-and-over indicators);
3. ``contained``: set B is at most set A when A's literals are among B's and B's restricted
   region lies inside A's, A has at least one literal, A and B belong to different indicators,
   and no third set lies strictly between them (containment in a set defined by age and sex alone bounds a count by a list size, which
   is left out).

A region is kept for an identity only when every indicator in it reports that region exactly
(a union of its cells); an indicator reported by sex only has no row for an age band. Structural
zeros (a set whose region is empty) are released as zeros anyway and are left out.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from .canonical import model_bytes
from .catalogue import Age, All, Catalogue, Indicator, Not, Rule, SexIs
from .errors import DisclosureError

__all__ = [
    "BandInterval",
    "Identity",
    "Term",
    "bands_of_labels",
    "linked_identities",
    "parse_band",
    "region_cells",
]

CountKind = Literal["denominator", "numerator", "exclusions"]
Relation = Literal["equal", "partition", "contained"]
SEXES = frozenset({"F", "M", "U"})
_BAND = re.compile(r"^([0-9]{1,3})(?:-([0-9]{1,3})|\+)$")
_OPEN = 10_000  # stands in for "no upper age bound"

BandInterval = tuple[str, int, int]  # label, min, max (inclusive; _OPEN for an open band)


@dataclass(frozen=True, order=True)
class Term:
    """A sum of counts of one indicator: ``("denominator", "exclusions")`` is its population."""

    indicator: str
    kinds: tuple[CountKind, ...]

    def __str__(self) -> str:
        name = "population" if len(self.kinds) == 2 else self.kinds[0]
        return f"{self.indicator}.{name}"


@dataclass(frozen=True, order=True)
class Identity:
    """In ``region`` (an ``(age_band, sex)`` key, ``"all"`` for a whole dimension):
    ``lhs == sum(rhs)`` (``equal``, ``partition``) or ``lhs <= rhs[0]`` (``contained``)."""

    region: tuple[str, str]
    relation: Relation
    lhs: Term
    rhs: tuple[Term, ...]

    def __str__(self) -> str:
        op = "<=" if self.relation == "contained" else "=="
        return (
            f"{self.region[0]}/{self.region[1]}: {self.lhs} {op} "
            + " + ".join(str(t) for t in self.rhs)
            + f" ({self.relation})"
        )

    def indicators(self) -> set[str]:
        return {self.lhs.indicator, *(t.indicator for t in self.rhs)}


# --- conjunctive forms -------------------------------------------------------------------------


_Key = tuple[frozenset[str], int, int, frozenset[str]]  # literals, age min, age max, sexes


def _order(key: _Key) -> tuple[list[str], int, int, list[str]]:
    """A total order on keys (frozensets compare by inclusion only)."""
    return (sorted(key[0]), key[1], key[2], sorted(key[3]))


@dataclass(frozen=True)
class _Conj:
    lits: frozenset[str]
    lo: int
    hi: int
    sexes: frozenset[str]

    @property
    def empty(self) -> bool:
        return self.lo > self.hi or not self.sexes

    def meet(self, other: _Conj) -> _Conj:
        return _Conj(
            self.lits | other.lits,
            max(self.lo, other.lo),
            min(self.hi, other.hi),
            self.sexes & other.sexes,
        )


_EVERYONE = _Conj(frozenset(), 0, _OPEN, SEXES)


def _literal(node: object) -> _Conj:
    """An opaque node: its canonical JSON is its identity."""
    # not a model at all: still a set of patients, named by its representation
    text = model_bytes(node).decode("utf-8") if isinstance(node, BaseModel) else repr(node)
    return _Conj(frozenset({text}), 0, _OPEN, SEXES)


def _conj(rule: Rule | object) -> _Conj:
    if isinstance(rule, All):
        out = _EVERYONE
        for child in rule.of:
            out = out.meet(_conj(child))
        return out
    if isinstance(rule, Age):
        return _Conj(
            frozenset(),
            rule.min if rule.min is not None else 0,
            rule.max if rule.max is not None else _OPEN,
            SEXES,
        )
    if isinstance(rule, SexIs):
        return _Conj(frozenset(), 0, _OPEN, frozenset(rule.values))
    if isinstance(rule, Not):
        inner = rule.rule
        if isinstance(inner, Age) and (inner.min is None) != (inner.max is None):
            if inner.min is not None:
                return _Conj(frozenset(), 0, inner.min - 1, SEXES)
            assert inner.max is not None
            return _Conj(frozenset(), inner.max + 1, _OPEN, SEXES)
        if isinstance(inner, SexIs):
            return _Conj(frozenset(), 0, _OPEN, SEXES - frozenset(inner.values))
    return _literal(rule)


def _tag(tag: str, *nodes: object) -> _Conj:
    """An opaque literal for a set that is not a conjunction (e.g. a denominator with an
    exclusion rule), named by the nodes it is made of."""
    parts = [model_bytes(n).decode() if isinstance(n, BaseModel) else repr(n) for n in nodes]
    return _Conj(frozenset({tag + "(" + ",".join(parts) + ")"}), 0, _OPEN, SEXES)


def _sets(ind: Indicator) -> list[tuple[Term, _Conj]]:
    """The indicator's counts (and its population, if it has exclusions) as conjunctive sets."""
    pop = _conj(ind.population)
    num = pop.meet(_conj(ind.numerator))
    out = [(Term(ind.id, ("numerator",)), num)]
    if ind.exclusions is None:
        out.append((Term(ind.id, ("denominator",)), pop))
        return out
    den = pop.meet(_tag("den", ind.numerator, ind.exclusions))
    exc = pop.meet(_tag("not", ind.numerator)).meet(_conj(ind.exclusions))
    out += [
        (Term(ind.id, ("denominator",)), den),
        (Term(ind.id, ("exclusions",)), exc),
        (Term(ind.id, ("denominator", "exclusions")), pop),
    ]
    return out


# --- regions -----------------------------------------------------------------------------------


def parse_band(label: str) -> tuple[int, int]:
    """``"60-79"`` -> (60, 79); ``"80+"`` -> (80, open); ``"all"`` -> (0, open)."""
    if label == "all":
        return (0, _OPEN)
    m = _BAND.match(label)
    if not m:
        raise DisclosureError(f"bad age band label {label!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else _OPEN
    if hi < lo:
        raise DisclosureError(f"bad age band label {label!r}: max < min")
    return (lo, hi)


def bands_of_labels(labels: Iterable[str]) -> list[BandInterval]:
    """Age bands (label, min, max) from cell labels, sorted, ``"all"`` left out."""
    return sorted(
        ((lab, *parse_band(lab)) for lab in set(labels) if lab != "all"), key=lambda b: b[1]
    )


def _regions(
    bands: Sequence[BandInterval],
) -> list[tuple[tuple[str, str], int, int, frozenset[str]]]:
    out: list[tuple[tuple[str, str], int, int, frozenset[str]]] = [
        (("all", "all"), 0, _OPEN, SEXES)
    ]
    out += [(("all", s), 0, _OPEN, frozenset({s})) for s in sorted(SEXES)]
    for label, lo, hi in bands:
        out.append(((label, "all"), lo, hi, SEXES))
        out += [((label, s), lo, hi, frozenset({s})) for s in sorted(SEXES)]
    return out


def region_cells(
    region: tuple[str, str], strata: Sequence[tuple[str, str]]
) -> list[tuple[str, str]] | None:
    """The cells of an indicator (its ``strata``, the total included) that make up ``region``
    exactly, or None when the indicator does not report that region."""
    if region in strata:
        return [region]
    band, sex = region
    inner = [s for s in strata if s != ("all", "all")]
    if not inner:
        return None
    has_age = any(b != "all" for b, _ in inner)
    has_sex = any(x != "all" for _, x in inner)
    if (band != "all" and not has_age) or (sex != "all" and not has_sex):
        return None
    return [(b, x) for b, x in inner if band in ("all", b) and sex in ("all", x)]


# --- identities --------------------------------------------------------------------------------


def _exact_covers(
    target: frozenset[tuple[int, str]], pieces: list[tuple[int, frozenset[tuple[int, str]]]]
) -> list[list[int]]:
    """Every set of at least two pieces that are pairwise disjoint and cover ``target`` exactly
    (pieces are subsets of it); at most 8 covers."""
    found: list[list[int]] = []

    def go(left: frozenset[tuple[int, str]], start: int, chosen: list[int]) -> None:
        if len(found) >= 8:
            return
        if not left:
            if len(chosen) >= 2:
                found.append(list(chosen))
            return
        first = min(left)
        for j in range(start, len(pieces)):
            idx, cells = pieces[j]
            if first in cells and cells <= left:
                chosen.append(idx)
                go(left - cells, 0, chosen)
                chosen.pop()

    go(target, 0, [])
    # the same cover found in a different order is one identity
    return [list(c) for c in sorted({tuple(sorted(c)) for c in found})]


def _cells_of(
    key: tuple[frozenset[str], int, int, frozenset[str]], segs: Sequence[tuple[int, int]]
) -> frozenset[tuple[int, str]]:
    """A region as (age segment index, sex) pairs, over segments cut at every bound of a group."""
    return frozenset(
        (i, s) for i, (a, b) in enumerate(segs) if key[1] <= a and b - 1 <= key[2] for s in key[3]
    )


def _equal_identities(
    region: tuple[str, str], live: list[tuple[Term, _Conj]], out: set[Identity]
) -> dict[_Key, Term]:
    """1. equal: one representative per distinct (literals, region); the others equal it.
    Returns the representatives."""
    reps: dict[_Key, Term] = {}
    for t, c in sorted(live, key=lambda tc: tc[0]):
        key = (c.lits, c.lo, c.hi, c.sexes)
        if key in reps:
            out.add(Identity(region, "equal", t, (reps[key],)))
        else:
            reps[key] = t
    return reps


def _partition_identities(
    region: tuple[str, str],
    reps: dict[_Key, Term],
    lit_sets: set[frozenset[str]],
    out: set[Identity],
) -> None:
    """2. partition, among representatives with the same literals."""
    for lits in lit_sets:
        group = sorted(
            ((key, t) for key, t in reps.items() if key[0] == lits), key=lambda kt: _order(kt[0])
        )
        if len(group) < 3:
            continue
        cuts = sorted({k[1] for k, _ in group} | {k[2] + 1 for k, _ in group})
        segs = list(itertools.pairwise(cuts))
        cellmap = [(key, t, _cells_of(key, segs)) for key, t in group]
        for _, tterm, tcells in cellmap:
            pieces = [(j, c) for j, (_, _, c) in enumerate(cellmap) if c < tcells and c]
            for cover in _exact_covers(tcells, pieces):
                rhs = tuple(sorted(cellmap[j][1] for j in cover))
                out.add(Identity(region, "partition", tterm, rhs))


def _contained_identities(
    region: tuple[str, str], reps: dict[_Key, Term], out: set[Identity]
) -> None:
    """3. contained (Hasse edges only), containers with at least one literal."""
    keys = sorted(reps, key=_order)

    def inside(b: _Key, a: _Key) -> bool:
        return a != b and a[0] <= b[0] and a[1] <= b[1] and b[2] <= a[2] and b[3] <= a[3]

    for b in keys:
        ups = [a for a in keys if a[0] and inside(b, a)]
        for a in ups:
            if reps[a].indicator == reps[b].indicator:
                continue  # within one indicator: implied by the counts being non-negative
            if any(inside(b, m) and inside(m, a) for m in ups if m != a):
                continue
            out.add(Identity(region, "contained", reps[b], (reps[a],)))


def linked_identities(
    catalogue: Catalogue,
    *,
    bands: Sequence[BandInterval] | None = None,
    indicators: Iterable[str] | None = None,
    strata: dict[str, list[tuple[str, str]]] | None = None,
) -> tuple[Identity, ...]:
    """Every identity of the module docstring for ``catalogue`` (or only between
    ``indicators``), with its age bands or the given ``bands``, and each indicator's strata as
    the catalogue defines them or as given in ``strata`` (a release made under another catalogue
    version). Sorted; deterministic."""
    given = strata or {}
    if bands is None:
        bands = [
            (b.label, b.min, b.max if b.max is not None else _OPEN) for b in catalogue.age_bands
        ]
    wanted = None if indicators is None else set(indicators)
    inds = [i for i in catalogue.indicators if wanted is None or i.id in wanted]
    reports: dict[str, list[tuple[str, str]]] = {}
    labels = [b[0] for b in bands]
    for ind in inds:
        cells: list[tuple[str, str]] = [("all", "all")]
        if ind.strata:
            bl = labels if "age_band" in ind.strata else ["all"]
            sx = ["F", "M", "U"] if "sex" in ind.strata else ["all"]
            cells += [(b, s) for b in bl for s in sx]
        reports[ind.id] = list(given[ind.id]) if ind.id in given else cells
    sets = [(term, conj) for ind in inds for term, conj in _sets(ind)]
    out: set[Identity] = set()
    for region, rlo, rhi, rsex in _regions(bands):
        reported = [
            (term, c.meet(_Conj(frozenset(), rlo, rhi, rsex)))
            for term, c in sets
            if region_cells(region, reports[term.indicator]) is not None
        ]
        live = [(t, c) for t, c in reported if not c.empty]
        reps = _equal_identities(region, live, out)
        _partition_identities(region, reps, {c.lits for _, c in live}, out)
        _contained_identities(region, reps, out)
    return tuple(sorted(out))
