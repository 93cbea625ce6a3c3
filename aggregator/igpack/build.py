"""Building the IG pack from the published catalogue (see the package docstring)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.catalogue import Catalogue, CountRule
from protocol.disclosure import suppression_threshold
from protocol.envelope import Envelope
from protocol.submission import Submission

from ..db.models import Catalogue as CatalogueRow
from ..db.models import Network
from ..errors import ConfigError, NotFoundError

#: (name, title) of each document, in reading order; each is ``<name>.html`` and ``<name>.md``.
DOCUMENTS: tuple[tuple[str, str], ...] = (
    ("index", "IG pack"),
    ("data-items", "Data items that leave a practice"),
    ("data-flow", "Data flow"),
    ("dpia", "DPIA annex"),
    ("processing", "Record of processing"),
)
TO_BE_COMPLETED = "to be completed"
STYLESHEET = "ig-pack.css"

# What every field a practice sends means, and an example. A field the protocol gains without an
# entry here makes the pack refuse to build (tests/aggregator/test_igpack.py builds it), so the
# pack cannot silently leave a field out.
FIELD_MEANINGS: dict[str, tuple[str, str]] = {
    "aud": (
        "The network this submission is for (audience); a message for another network is refused.",
        "fedqi-nwl",
    ),
    "catalogue": ("Which signed catalogue the counts were computed under.", ""),
    "catalogue.id": ("Catalogue identifier.", "fedqi-default"),
    "catalogue.sha256": (
        "SHA-256 of the catalogue's canonical bytes: pins the exact definitions.",
        "6bb6f840…",
    ),
    "catalogue.version": ("Catalogue version number.", "2"),
    "cells": (
        "One entry per indicator and stratum: the only clinical content of a submission, and it is aggregate counts.",
        "",
    ),
    "cells[].denominator": (
        "Patients in the indicator's population in this stratum (a count, after disclosure control).",
        '{"status": "rounded", "value": 145}',
    ),
    "cells[].denominator.status": (
        "How the count was released: zero (a true 0), exact, rounded, or suppressed (withheld, no value).",
        "rounded",
    ),
    "cells[].denominator.value": ("The released count; absent when suppressed.", "145"),
    "cells[].exclusions": (
        "Patients excluded under the indicator's exclusion rule (a count, after disclosure control).",
        '{"status": "suppressed"}',
    ),
    "cells[].exclusions.status": ("As for the denominator.", "suppressed"),
    "cells[].exclusions.value": ("As for the denominator.", "(absent)"),
    "cells[].indicator": ("The catalogue indicator the counts are for.", "HYP_BP_U80"),
    "cells[].numerator": (
        "Patients in the population who meet the indicator (a count, after disclosure control).",
        '{"status": "rounded", "value": 110}',
    ),
    "cells[].numerator.status": ("As for the denominator.", "rounded"),
    "cells[].numerator.value": ("As for the denominator.", "110"),
    "cells[].stratum": (
        "The stratum: an age band of the catalogue and a sex (F, M, U), or 'all' for the practice total.",
        '{"age_band": "40-59", "sex": "F"}',
    ),
    "cells[].stratum.age_band": ("Age band label from the catalogue, or 'all'.", "40-59"),
    "cells[].stratum.sex": ("F, M, U (unknown/other), or 'all'.", "F"),
    "iat": ("When the agent signed the message (Unix seconds).", "1764806400"),
    "kid": (
        "Which of the practice's agent keys signed it (key identifier).",
        "GFepJD9B7S-Rx6IGLqaNqKx45-_qM7AeWw0NejZjw0w",
    ),
    "nonce": (
        "16 random bytes: makes every message unique (replay protection).",
        "q1S0bM1x2n3R4p5T6v7W8w",
    ),
    "period": ("The reporting period the counts cover.", ""),
    "period.end": ("Last day of the period.", "2026-10-31"),
    "period.start": ("First day of the period.", "2026-10-01"),
    "practice": ("The practice's ODS code (an organisation, not a person).", "Z99999"),
    "provenance": ("How the counts were made: software, policy, source type and definitions.", ""),
    "provenance.agent_version": ("Version of the agent software.", "1.4.0"),
    "provenance.disclosure_policy": (
        "SHA-256 of the disclosure policy applied (the catalogue's, or a stricter local one).",
        "9f2c…",
    ),
    "provenance.extract_time": ("When the records were read (Unix seconds).", "1764806000"),
    "provenance.indicators": (
        "Per indicator: its version and the SHA-256 of each codelist used.",
        "",
    ),
    "provenance.indicators[].codelists": (
        "The codelists the indicator used, each by id and SHA-256.",
        "",
    ),
    "provenance.indicators[].codelists[].id": ("Codelist identifier.", "hyp_dx"),
    "provenance.indicators[].codelists[].sha256": ("SHA-256 of the codelist's codes.", "1b7e…"),
    "provenance.indicators[].id": ("Indicator identifier.", "HYP_BP_U80"),
    "provenance.indicators[].version": ("Indicator version.", "1"),
    "provenance.source": (
        "Kind of practice system the agent read (no connection details).",
        "postgresql",
    ),
    "reason": (
        "Why a correction replaces an earlier submission (enum); absent otherwise.",
        "late_data",
    ),
    "seq": ("Per-key sequence number (replay and ordering protection).", "12"),
    "submission_id": (
        "Random identifier of this submission (UUID).",
        "0b0f6c2e-6f1a-4c53-9a51-3c2d1e0f9a77",
    ),
    "supersedes": ("The submission this one corrects; absent otherwise.", "(absent)"),
    "v": ("Protocol version.", "1"),
    "visibility": (
        "How the practice lets the network show its values: named (to its network lead and the admin), pseudonymised (to everyone), totals_only (only inside network totals). Absent means named.",
        "pseudonymised",
    ),
}
COUNT_FIELDS = ("denominator", "numerator", "exclusions")

# Who sees what, by role (from aggregator/users/service.py and the read paths).
ROLE_ACCESS: tuple[tuple[str, str, str], ...] = (
    ("practice", "Practice user",
     "Its own practice's values identified; peers as benchmarks and under pseudonyms that differ per viewer, their rates to whole percentage points; pooled figures to whole points and without counts; never a peer's raw envelope."),
    ("network_lead", "Network lead",
     "The practices of their own group (PCN) identified, with its exact totals; others pseudonymised, counts rounded to 5 (1-7 withheld) and rates to whole points; the network's and other groups' pooled figures to whole points and without counts; no raw envelopes."),
    ("ig_officer", "IG officer",
     "What the practice user sees (its own values identified, peers as benchmarks under pseudonyms, the practice page and pack); and their practice's raw signed envelopes, log proofs and re-verification; the access audit of their practice's envelopes; this pack."),
    ("admin", "Network administrator",
     "Everything, including every raw envelope (every read of one is recorded in the access audit); manages practices, keys and users."),
)  # fmt: skip


@dataclass(frozen=True)
class DataItem:
    path: str
    type: str
    meaning: str
    example: str
    disclosure: str


@dataclass(frozen=True)
class CatalogueChange:
    kind: str  # "indicator" | "codelist" | "disclosure" | "age bands"
    id: str
    change: str  # "added" | "removed" | "changed"
    detail: str


@dataclass
class IgPack:
    """Everything the templates show; also written as ``manifest.json``."""

    network: dict[str, str]
    catalogue: dict[str, Any]
    previous: dict[str, Any] | None
    changes: list[CatalogueChange]
    items: list[DataItem]
    indicators: list[dict[str, Any]]
    codelists: list[dict[str, Any]]
    disclosure: dict[str, str]
    governance: dict[str, str]
    roles: tuple[tuple[str, str, str], ...]
    cells_per_submission: int
    generated_at: str
    documents: tuple[tuple[str, str], ...] = field(default=DOCUMENTS)

    def manifest(self) -> dict[str, Any]:
        return {
            "catalogue": self.catalogue,
            "previous": self.previous,
            "changes": [dataclasses.asdict(c) for c in self.changes],
            "documents": [f"{name}.{ext}" for name, _ in self.documents for ext in ("html", "md")]
            + ["data-flow.svg", STYLESHEET],
            "generated_at": self.generated_at,
        }


# --- data items -------------------------------------------------------------------------------------


def _fields(model: Any) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return dict(model.model_fields)
    return dict(model.__pydantic_fields__)  # a pydantic dataclass


def _inner(annotation: Any) -> tuple[Any, bool]:
    """The model inside ``annotation`` (through Optional, tuple[...], Annotated), and whether
    it is a list; or (None, False) for a plain value."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _inner(args[0])
    if origin is tuple:
        inner, _ = _inner(args[0])
        return inner, True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is not type(None):
                return _inner(a)
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or hasattr(annotation, "__pydantic_fields__")
    ):
        return annotation, False
    return None, False


def _type_name(annotation: Any) -> str:
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" (optional)" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def submission_fields(model: Any = Submission, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, type) of every field of a submission, nested fields after their parent."""
    for name, info in sorted(_fields(model).items()):
        path = f"{prefix}{name}"
        inner, is_list = _inner(info.annotation)
        yield path, _type_name(info.annotation)
        if inner is not None:
            yield from submission_fields(inner, f"{path}[]." if is_list else f"{path}.")


def _rule_text(rule: CountRule, what: str) -> str:
    if rule.suppress_at_or_below == 0 and rule.round_to == 1:
        return f"{what}: released exactly (0 stays a true zero)"
    parts = ["0 stays a true zero"]
    if rule.suppress_at_or_below:
        parts.append(f"1 to {rule.suppress_at_or_below} suppressed (sent with no value)")
    if rule.round_to > 1:
        parts.append(f"the rest rounded to the nearest {rule.round_to}")
    else:
        parts.append("the rest released exactly")
    return f"{what}: " + ", ".join(parts)


#: What the agent's disclosure guard (agent/outbound/guard.py) may withhold, whatever the policy.
GUARD_TEXT = (
    "the agent's disclosure guard withholds any further count, a total included, that linked "
    "indicators or an earlier release of the same or an adjacent period would otherwise pin"
)


def _totals_text(cat: Catalogue) -> str:
    """The totals rule as the policy applies it (protocol/disclosure.py, docs/disclosure.md):
    the totals' own rule, then every rule that withholds a total whatever its size."""
    p = cat.disclosure
    withheld = []
    if p.secondary_suppression:
        small = suppression_threshold(p.stratified)
        withheld += [
            f"an indicator whose whole-practice denominator is 1 to {small} has its denominator "
            "and numerator totals withheld, and its numerators withheld zeros included (the "
            "total and every stratum holding any of its patients), so that nothing says that "
            "none of so few patients meets the indicator (the small-population rule)",
            "secondary suppression withholds a total where subtraction from it would recover a "
            "suppressed stratum (e.g. an exclusions total of 1 or 2 made of strata of 1)",
        ]
    withheld.append(GUARD_TEXT)
    return (
        _rule_text(p.totals, "Whole-practice totals")
        + "; but not every total is released: "
        + "; ".join(withheld)
    )


def _disclosure(cat: Catalogue) -> dict[str, str]:
    p = cat.disclosure
    return {
        "name": p.name,
        "stratified": _rule_text(p.stratified, "Counts in an age/sex stratum")
        + (
            ""
            if p.exclusions_by_stratum
            else " (exclusions excepted: they are released as a whole-practice total only, every "
            "stratum's exclusions count withheld, zeros included)"
        )
        + (
            " (a numerator of 0 excepted where the whole-practice denominator is 1 to "
            f"{suppression_threshold(p.stratified)}: withheld, as below)"
            if p.secondary_suppression and suppression_threshold(p.stratified) >= 1
            else ""
        ),
        "totals": _totals_text(cat),
        "secondary": (
            "Secondary suppression on: when one count is suppressed, another of the same set (a "
            "stratum or the total) is suppressed too, so the withheld count cannot be recovered "
            "by subtraction."
            if p.secondary_suppression
            else "Secondary suppression off."
        ),
    }


def data_items(cat: Catalogue, aud: str | None = None) -> list[DataItem]:
    """Every submission field with its meaning, an example and the rule it is released under;
    the examples of the network's and the catalogue's own fields are this network's values."""
    own = {
        "catalogue.id": cat.id,
        "catalogue.version": str(cat.version),
        "catalogue.sha256": cat.sha256()[:8] + "…",
    }
    if aud:
        own["aud"] = aud
    rules = _disclosure(cat)
    count_rule = f"{rules['stratified']}; {rules['totals']}. {rules['secondary']}"
    items = []
    missing = []
    for path, typ in submission_fields():
        if path not in FIELD_MEANINGS:
            missing.append(path)
            continue
        meaning, example = FIELD_MEANINGS[path]
        example = own.get(path, example)
        parts = path.split(".")
        if path.startswith("cells[].") and len(parts) == 2 and parts[1] in COUNT_FIELDS:
            rule = count_rule
        elif path.startswith("cells[].") and parts[1] in COUNT_FIELDS:
            rule = f"As for cells[].{parts[1]}."
        elif path == "cells":
            rule = "Aggregate counts only; each count under the rules below."
        else:
            rule = "Not patient data: released as is."
        items.append(DataItem(path, typ, meaning, example, rule))
    if missing:
        raise ConfigError(
            "IG pack: submission fields with no stated meaning (add them to "
            f"aggregator/igpack/build.py FIELD_MEANINGS): {', '.join(missing)}"
        )
    return items


# --- catalogue ------------------------------------------------------------------------------------


def _row_catalogue(row: CatalogueRow) -> Catalogue:
    return Catalogue.from_bytes(Envelope.from_bytes(bytes(row.envelope)).payload_bytes())


def _ref(row: CatalogueRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "version": row.version,
        "sha256": row.sha256,
        "published_at": row.published_at.isoformat(timespec="seconds"),
    }


def catalogue_changes(old: Catalogue, new: Catalogue) -> list[CatalogueChange]:
    """What changed between two catalogue versions: indicators and codelists added, removed or
    changed (with what), the disclosure policy and the age bands."""
    out: list[CatalogueChange] = []
    oi = {i.id: i for i in old.indicators}
    ni = {i.id: i for i in new.indicators}
    for iid in sorted(oi.keys() | ni.keys()):
        a, b = oi.get(iid), ni.get(iid)
        if a is None and b is not None:
            out.append(CatalogueChange("indicator", iid, "added", b.title))
        elif b is None and a is not None:
            out.append(CatalogueChange("indicator", iid, "removed", a.title))
        elif a is not None and b is not None and a != b:
            what = [
                f for f in type(b).model_fields if getattr(a, f) != getattr(b, f) and f != "version"
            ]
            detail = f"version {a.version} → {b.version}" if a.version != b.version else ""
            detail = "; ".join(
                x for x in (detail, "changed: " + ", ".join(what) if what else "") if x
            )
            out.append(CatalogueChange("indicator", iid, "changed", detail))
    oc = {c.id: c for c in old.codelists}
    nc = {c.id: c for c in new.codelists}
    for cid in sorted(oc.keys() | nc.keys()):
        a2, b2 = oc.get(cid), nc.get(cid)
        if a2 is None and b2 is not None:
            out.append(
                CatalogueChange("codelist", cid, "added", f"{b2.title} ({len(b2.codes)} codes)")
            )
        elif b2 is None and a2 is not None:
            out.append(CatalogueChange("codelist", cid, "removed", a2.title))
        elif a2 is not None and b2 is not None and a2 != b2:
            old_codes = {(c.system, c.code) for c in a2.codes}
            new_codes = {(c.system, c.code) for c in b2.codes}
            added, removed = len(new_codes - old_codes), len(old_codes - new_codes)
            detail = (
                f"{added} codes added, {removed} removed"
                if added or removed
                else "metadata changed"
            )
            out.append(CatalogueChange("codelist", cid, "changed", detail))
    if old.disclosure != new.disclosure:
        out.append(CatalogueChange("disclosure", new.disclosure.name, "changed",
                                   f"{_disclosure(old)} → {_disclosure(new)}"))  # fmt: skip
    if old.age_bands != new.age_bands:
        out.append(CatalogueChange("age bands", "-", "changed",
                                   f"{[b.label for b in old.age_bands]} → {[b.label for b in new.age_bands]}"))  # fmt: skip
    return out


def _governance(settings: Any) -> dict[str, str]:
    def value(name: str) -> str:
        v = getattr(settings, name, None)
        return v.strip() if isinstance(v, str) and v.strip() else TO_BE_COMPLETED

    return {
        "controller": value("ig_controller"),
        "lawful_basis": value("ig_lawful_basis"),
        "dpo_contact": value("ig_dpo_contact"),
        "retention": value("ig_retention"),
    }


def build_pack(
    session: Session, settings: Any, *, catalogue_id: str | None = None, now: dt.datetime
) -> IgPack:
    """The pack for the latest published version of ``catalogue_id`` (default: the latest
    published catalogue), compared with the version published before it."""
    q = select(CatalogueRow).order_by(CatalogueRow.published_at.desc(), CatalogueRow.version.desc())
    if catalogue_id is not None:
        q = q.where(CatalogueRow.id == catalogue_id)
    row = session.scalars(q.limit(1)).first()
    if row is None:
        if catalogue_id is None:  # the network's state, not an argument
            raise ConfigError("no catalogue: nothing published (run `init` or `catalogue publish`)")
        raise NotFoundError(f"catalogue {catalogue_id!r}: nothing published (run `init` or "
                            "`catalogue publish`)", code="no-catalogue")  # fmt: skip
    cat = _row_catalogue(row)
    prev_row = session.scalars(
        select(CatalogueRow)
        .where(CatalogueRow.id == row.id, CatalogueRow.version < row.version)
        .order_by(CatalogueRow.version.desc())
        .limit(1)
    ).first()
    previous = _ref(prev_row) if prev_row is not None else None
    changes = catalogue_changes(_row_catalogue(prev_row), cat) if prev_row is not None else []
    network = session.scalars(select(Network)).first()
    used: dict[str, list[str]] = {}
    indicators = []
    cells = 0
    for ind in cat.indicators:
        strata = cat.strata_for(ind)
        cells += len(strata)
        ids = sorted(ind.codelist_ids())
        for cid in ids:
            used.setdefault(cid, []).append(ind.id)
        indicators.append({"id": ind.id, "version": ind.version, "title": ind.title,
                           "rationale": ind.rationale, "codelists": ids, "cells": len(strata),
                           "strata": ", ".join(ind.strata) or "practice total only"})  # fmt: skip
    codelists = [
        {"id": c.id, "title": c.title, "codes": len(c.codes), "used_by": used.get(c.id, [])}
        for c in cat.codelists
    ]
    return IgPack(
        network={
            "name": network.name if network else TO_BE_COMPLETED,
            "aud": network.aud if network else TO_BE_COMPLETED,
        },  # fmt: skip
        catalogue=_ref(row)
        | {
            "title": cat.title,
            "indicators": len(cat.indicators),
            "codelists": len(cat.codelists),
            "age_bands": [b.label for b in cat.age_bands],
        },  # fmt: skip
        previous=previous,
        changes=changes,
        items=data_items(cat, network.aud if network else None),
        indicators=indicators,
        codelists=codelists,
        disclosure=_disclosure(cat),
        governance=_governance(settings),
        roles=ROLE_ACCESS,
        cells_per_submission=cells,
        generated_at=now.isoformat(timespec="seconds"),
    )


# --- rendering ------------------------------------------------------------------------------------

_html = Environment(
    loader=PackageLoader("aggregator.igpack", "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_md = Environment(
    loader=PackageLoader("aggregator.igpack", "templates"),
    autoescape=False,
    keep_trailing_newline=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


_md.filters["cell"] = _md_cell


def render(pack: IgPack, name: str, fmt: str, *, base: str = "") -> str:
    """Document ``name`` as ``html`` or ``md``. ``base`` prefixes links between pages (the
    dashboard serves them under a path; files on disk link relatively)."""
    if name not in dict(DOCUMENTS):
        raise NotFoundError(f"IG pack: no document {name!r}", code="no-document")
    env = _html if fmt == "html" else _md
    title = dict(DOCUMENTS)[name]
    return env.get_template(f"{name}.{fmt}").render(
        pack=pack, title=title, name=name, base=base, svg=flow_svg(), TBC=TO_BE_COMPLETED
    )


def flow_svg() -> str:
    return _html.get_template("data-flow.svg").render()


def stylesheet() -> str:
    return resources.files("aggregator.igpack").joinpath("templates", STYLESHEET).read_text("utf-8")


def write_pack(pack: IgPack, out: Path) -> list[Path]:
    """Write every document (HTML and Markdown), the SVG, the stylesheet and ``manifest.json``
    into ``out``: into a temporary directory first, then moved in, so a failure leaves nothing
    half-written."""
    import errno
    import shutil
    import tempfile

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, or cannot be made there
        raise ConfigError(
            f"--out {out}: cannot make {exc.filename or out.parent}: {exc.strerror}"
        ) from None
    files: dict[str, str] = {}
    for name, _ in DOCUMENTS:
        files[f"{name}.html"] = render(pack, name, "html")
        files[f"{name}.md"] = render(pack, name, "md")
    files["data-flow.svg"] = flow_svg()
    files[STYLESHEET] = stylesheet()
    files["manifest.json"] = json.dumps(pack.manifest(), indent=2, sort_keys=True) + "\n"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".ig-pack-", dir=out.parent))
    except OSError as exc:  # a parent that exists but takes no files (/proc, read-only)
        raise ConfigError(f"--out {out}: cannot write in {out.parent}: {exc.strerror}") from None
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text, "utf-8")
        out.mkdir(exist_ok=True)
        for fname in files:  # before the first move: shutil.move would put a file inside it
            if (out / fname).is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory", str(out / fname))
        written = []
        for fname in files:
            shutil.move(str(tmp / fname), out / fname)  # same filesystem: a rename
            written.append(out / fname)
    except OSError as exc:  # a full disk, a file of the pack's name that is a directory
        raise ConfigError(
            f"--out {out}: cannot write {exc.filename or out}: {exc.strerror}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written
