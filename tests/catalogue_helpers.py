"""Codelists for test catalogues: made-up codes carry a provenance that says so."""

from __future__ import annotations

from collections.abc import Iterable

from protocol.catalogue import CodeEntry, Codelist, CodelistSource, Indicator, Rule


def test_source(rows: int) -> CodelistSource:
    return CodelistSource(
        cluster="TEST",
        publisher_id="fedqi-tests",
        version="1",
        file="made-up codes of a test",
        file_sha1="0" * 40,
        repository="fedqi tests",
        commit="0000000",
        rows=rows,
    )


def make_codelist(
    cl_id: str, pairs: Iterable[tuple[str, str]], title: str | None = None
) -> Codelist:
    """A test codelist of (system, code) pairs, with its codes_sha256 computed."""
    entries = [CodeEntry(system=s, code=c, term=f"term {c}") for s, c in pairs]  # type: ignore[arg-type]
    return Codelist.of(cl_id, title or cl_id, entries, test_source(len(entries)))


def make_indicator(
    iid: str,
    population: Rule,
    numerator: Rule,
    exclusions: Rule | None = None,
    strata: tuple[str, ...] = ("age_band", "sex"),
) -> Indicator:
    """A version-1 test indicator titled by its id."""
    return Indicator(
        id=iid,
        version=1,
        title=iid,
        rationale="test",
        population=population,
        numerator=numerator,
        exclusions=exclusions,
        strata=strata,  # type: ignore[arg-type]
    )


test_source.__test__ = False  # type: ignore[attr-defined]  # not a test function
