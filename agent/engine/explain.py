"""An indicator in plain English: its rules, its codelists (with every code) and the SQL."""

from __future__ import annotations

from typing import Any

from agent.library import describe_indicator, describe_rule
from protocol.catalogue import Catalogue, Indicator


def explain_indicator(catalogue: Catalogue, indicator: Indicator) -> dict[str, Any]:
    """Everything ``explain`` shows, as data."""
    return {
        "id": indicator.id,
        "version": indicator.version,
        "title": indicator.title,
        "qof": indicator.qof,
        "rationale": indicator.rationale,
        "simplifications": indicator.simplifications,
        "summary": describe_indicator(indicator),
        "population": describe_rule(indicator.population),
        "numerator": describe_rule(indicator.numerator),
        "exclusions": describe_rule(indicator.exclusions) if indicator.exclusions else None,
        "counts": (
            "denominator = registered and alive on the period end, in the population and not "
            "excluded; numerator = in the denominator and meeting the target; exclusions = in "
            "the population, not meeting the target and excluded (achievers are never excluded)"
        ),
        "strata": list(indicator.strata),
        "codelists": [
            {
                "id": cl.id,
                "title": cl.title,
                "sha256": cl.sha256(),
                "codes_sha256": cl.codes_sha256,
                "source": cl.source.model_dump(mode="json", exclude_none=True),
                "codes": [{"system": c.system, "code": c.code, "term": c.term} for c in cl.codes],
            }
            for cl in (catalogue.codelist(cid) for cid in sorted(indicator.codelist_ids()))
        ],
    }
