"""Per-patient features: the shared work between indicators.

Every leaf rule of the catalogue reduces to a few per-patient facts about coded rows on or
before the period end ``E``, and those facts do not depend on the rule's window:

* ``LastDate(codeset)``: the latest date of a row in the code set. ``HasCode`` in a window is
  "last date > window start"; ``OnRegister`` compares the register's and the resolved
  codelist's last dates; ``LatestCode`` compares the family's last date with the last date of
  rows in both the family and the target codelist.
* ``FirstDate(codeset)``: the earliest date (``FirstCode``).
* ``LatestValue(codeset)``: the date and the lowest value of the latest valued rows
  (``LatestValue``: the latest valued row in the window is the latest valued row overall, if
  that falls in the window).

So each distinct feature is computed once per run, however many indicators and windows use it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from protocol.catalogue import (
    Age,
    All,
    Any_,
    Catalogue,
    FirstCode,
    HasCode,
    Indicator,
    LatestCode,
    LatestValue,
    Not,
    OnRegister,
    RegisteredFor,
    Rule,
    Score,
    SexIs,
)


@dataclass(frozen=True, order=True)
class CodeSet:
    """Rows of ``table`` whose (system, code) is in every one of ``codelists`` (one codelist,
    or a family and its target for ``LatestCode``)."""

    table: str
    codelists: tuple[str, ...]

    def pairs(self, catalogue: Catalogue) -> frozenset[tuple[str, str]]:
        sets = [catalogue.codelist(c).pairs() for c in self.codelists]
        return frozenset.intersection(*sets)


@dataclass(frozen=True, order=True)
class LastDate:
    codeset: CodeSet


@dataclass(frozen=True, order=True)
class FirstDate:
    codeset: CodeSet


@dataclass(frozen=True, order=True)
class LatestValueOf:
    codeset: CodeSet


Feature = LastDate | FirstDate | LatestValueOf


def events(*codelists: str) -> CodeSet:
    return CodeSet("events", codelists)


@functools.singledispatch
def features_of(rule: Rule) -> Iterator[Feature]:
    raise TypeError(f"no features for rule node {type(rule).__name__}")


@features_of.register
def _(rule: All | Any_) -> Iterator[Feature]:
    for child in rule.of:
        yield from features_of(child)


@features_of.register
def _(rule: Not) -> Iterator[Feature]:
    yield from features_of(rule.rule)


@features_of.register
def _(rule: Score) -> Iterator[Feature]:
    for term in rule.terms:
        yield from features_of(term.rule)


@features_of.register
def _(rule: Age | SexIs | RegisteredFor) -> Iterator[Feature]:
    return iter(())


@features_of.register
def _(rule: HasCode) -> Iterator[Feature]:
    yield LastDate(CodeSet(rule.table, (rule.codelist,)))


@features_of.register
def _(rule: OnRegister) -> Iterator[Feature]:
    yield LastDate(events(rule.codelist))
    if rule.resolved:
        yield LastDate(events(rule.resolved))


@features_of.register
def _(rule: LatestValue) -> Iterator[Feature]:
    yield LatestValueOf(events(rule.codelist))


@features_of.register
def _(rule: LatestCode) -> Iterator[Feature]:
    yield LastDate(events(rule.family))
    yield LastDate(events(rule.family, rule.codelist))


@features_of.register
def _(rule: FirstCode) -> Iterator[Feature]:
    yield FirstDate(events(rule.codelist))


def indicator_rules(indicator: Indicator) -> list[Rule]:
    rules = [indicator.population, indicator.numerator]
    if indicator.exclusions is not None:
        rules.append(indicator.exclusions)
    return rules


def features_for(indicators: list[Indicator]) -> list[Feature]:
    """Distinct features of the indicators, in a stable order (so generated SQL is stable)."""
    found: set[Feature] = set()
    for ind in indicators:
        for rule in indicator_rules(ind):
            found.update(features_of(rule))
    return sorted(found, key=lambda f: (type(f).__name__, f.codeset))
