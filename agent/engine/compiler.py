"""Compile catalogue indicators to one SQLAlchemy Core query.

The query has three layers (all CTEs, so one statement and one pass over the coded rows):

1. ``hits``: the rows of ``events`` / ``medications`` on or before ``E`` whose (system, code) is
   in a code set some rule needs, tagged with the code set's number ``k`` (a join with a small
   ``VALUES`` table of codes, so each table is read once for every indicator together).
2. ``per_set`` then ``feat``: the per-patient features (see ``features.py``), aggregated per
   (patient, code set) and pivoted to one row per patient, each computed once whatever the
   number of indicators and windows that use it.
3. ``flags``: one row per patient in the base population with the age band, sex and, for each
   indicator, 0/1 columns for its population, numerator and exclusion rules; the outer query
   groups by (age band, sex) and sums, so every stratum of every indicator comes from one
   grouped query. Totals are the sums of the disjoint (band, sex) groups.

Rules compile by single dispatch on the node type (``rule_sql``); every window and age bound is
a date computed in Python from the period end (``dates.py``), bound as a literal value. Dialect
differences live in ``dialects.py``.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from agent.errors import AgentUserError
from agent.sources import schema
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
    Window,
)

from .dates import END_PARAM_PREFIX, bound_value
from .dialects import Flavour, flavour_for
from .features import (
    CodeSet,
    Feature,
    FirstDate,
    LastDate,
    LatestValueOf,
    events,
    features_for,
)

Bool = ColumnElement[bool]


def _date(value: dt.date) -> ColumnElement[dt.date]:
    return sa.literal(value, sa.Date)


def end_param(name: str, period_end: dt.date) -> ColumnElement[dt.date]:
    """The date bound ``name`` for ``period_end`` as a bound parameter named after it (one
    parameter however often the statement uses it)."""
    return sa.bindparam(
        END_PARAM_PREFIX + name, bound_value(name, period_end), type_=sa.Date, unique=False
    )


@dataclass
class Context:
    """What rule compilation needs: the period end and the feature columns.

    Every date bound a rule needs comes from :meth:`bound`: a literal for one period end; for
    several (``ends``), a column of the ``periods`` table, one row per period end holding each
    bound computed in Python, so one query evaluates every period end."""

    period_end: dt.date
    patients: sa.TableClause | sa.Table
    columns: dict[tuple[str, Feature], ColumnElement[Any]] = field(default_factory=dict)
    ends: tuple[dt.date, ...] | None = None
    periods: sa.CTE | None = None
    wanted: dict[str, Callable[[dt.date], dt.date]] = field(default_factory=dict)

    def bound(self, name: str) -> ColumnElement[dt.date]:
        """The date bound ``name`` (``dates.bound_value``) for the period end ``E`` being
        evaluated: for one period end a bound parameter named ``end__<name>``, so the compiled
        statement can be run again for another period end with only these values recomputed
        (agent/engine/stored.py); for several, a column of the ``periods`` table."""
        if self.ends is None:
            return end_param(name, self.period_end)
        self.wanted[name] = functools.partial(bound_value, name)
        if self.periods is None:  # the first pass only collects the bounds needed
            return _date(bound_value(name, self.ends[0]))
        return self.periods.c[name]

    def months_back(self, months: int) -> ColumnElement[dt.date]:
        return self.bound(f"m_{months}")

    def born_by(self, years: int) -> ColumnElement[dt.date]:
        """Born on or before this date: aged at least ``years`` at the period end."""
        return self.bound(f"age_{years}")

    def end(self) -> ColumnElement[dt.date]:
        return self.bound("period_end")

    def last(self, codeset: CodeSet) -> ColumnElement[Any]:
        return self.columns[("last", LastDate(codeset))]

    def first(self, codeset: CodeSet) -> ColumnElement[Any]:
        return self.columns[("first", FirstDate(codeset))]

    def value(self, codeset: CodeSet) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        feature = LatestValueOf(codeset)
        return self.columns[("vdate", feature)], self.columns[("value", feature)]

    def after_window_start(self, column: ColumnElement[Any], window: Window | None) -> Bool:
        """``column`` is not null and falls in the window (``E - N months < date``; the
        ``<= E`` bound is already applied to every coded row)."""
        if window is None:
            return column.is_not(None)
        return sa.and_(column.is_not(None), column > self.months_back(window.months))


# --- rules -------------------------------------------------------------------------------------


@functools.singledispatch
def rule_sql(rule: Rule, ctx: Context) -> Bool:
    raise TypeError(f"cannot compile rule node {type(rule).__name__}")


@rule_sql.register
def _(rule: All, ctx: Context) -> Bool:
    return sa.and_(*(rule_sql(child, ctx) for child in rule.of))


@rule_sql.register
def _(rule: Any_, ctx: Context) -> Bool:
    return sa.or_(*(rule_sql(child, ctx) for child in rule.of))


@rule_sql.register
def _(rule: Not, ctx: Context) -> Bool:
    # Every leaf is null-safe (never NULL), so NOT is the plain boolean negation.
    return sa.not_(rule_sql(rule.rule, ctx))


@rule_sql.register
def _(rule: Age, ctx: Context) -> Bool:
    birth = ctx.patients.c.birth_date
    conds: list[Bool] = []
    if rule.min is not None:
        conds.append(birth <= ctx.born_by(rule.min))
    if rule.max is not None:
        conds.append(birth > ctx.born_by(rule.max + 1))
    return sa.and_(*conds)


@rule_sql.register
def _(rule: SexIs, ctx: Context) -> Bool:
    return ctx.patients.c.sex.in_(sorted(rule.values))


@rule_sql.register
def _(rule: RegisteredFor, ctx: Context) -> Bool:
    return ctx.patients.c.registration_start <= ctx.months_back(rule.months)


@rule_sql.register
def _(rule: HasCode, ctx: Context) -> Bool:
    return ctx.after_window_start(ctx.last(CodeSet(rule.table, (rule.codelist,))), rule.window)


@rule_sql.register
def _(rule: OnRegister, ctx: Context) -> Bool:
    registered = ctx.last(events(rule.codelist))
    if not rule.resolved:
        return registered.is_not(None)
    resolved = ctx.last(events(rule.resolved))
    return sa.and_(registered.is_not(None), sa.or_(resolved.is_(None), resolved < registered))


@rule_sql.register
def _(rule: LatestValue, ctx: Context) -> Bool:
    when, value = ctx.value(events(rule.codelist))
    threshold = sa.literal(rule.value, sa.Float)
    return sa.and_(ctx.after_window_start(when, rule.window), _compare(value, rule.op, threshold))


def _compare(left: ColumnElement[Any], op: str, right: ColumnElement[Any]) -> Bool:
    return {
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
        "==": left == right,
    }[op]


@rule_sql.register
def _(rule: Score, ctx: Context) -> Bool:
    # Each term is null-safe (never NULL), so the sum is never NULL either.
    total = sum(
        (sa.case((rule_sql(t.rule, ctx), t.weight), else_=0) for t in rule.terms[1:]),
        start=sa.case((rule_sql(rule.terms[0].rule, ctx), rule.terms[0].weight), else_=0),
    )
    return _compare(total, rule.op, sa.literal(rule.value, sa.Integer))


@rule_sql.register
def _(rule: LatestCode, ctx: Context) -> Bool:
    family = ctx.last(events(rule.family))
    both = ctx.last(events(rule.family, rule.codelist))
    # The latest family row is in the target iff the latest row in both has the same date.
    return sa.and_(ctx.after_window_start(family, rule.window), both.is_not(None), both == family)


@rule_sql.register
def _(rule: FirstCode, ctx: Context) -> Bool:
    return ctx.after_window_start(ctx.first(events(rule.codelist)), rule.window)


# --- the query ---------------------------------------------------------------------------------


def select_indicators(catalogue: Catalogue, ids: Sequence[str] | None) -> list[Indicator]:
    if ids is None:
        return list(catalogue.indicators)
    known = {i.id for i in catalogue.indicators}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise AgentUserError(
            f"unknown indicator {', '.join(unknown)}: catalogue {catalogue.id} "
            f"v{catalogue.version} has {', '.join(sorted(known))}"
        )
    wanted = set(ids)
    return [i for i in catalogue.indicators if i.id in wanted]


@dataclass
class Plan:
    """The compiled query for some indicators, and how to read its rows."""

    catalogue: Catalogue
    indicators: list[Indicator]
    period_end: dt.date
    # One row per base-population patient (per period end, with ``pidx``, when there are
    # several): patient_id, local_ref, age_band, sex, and 0/1 columns pop_i, num_i, exc_i for
    # the i-th indicator's rules.
    flags: sa.CTE
    ends: tuple[dt.date, ...] | None = None

    def counts_query(self) -> sa.Select[Any]:
        """Rows (age_band, sex, denominator_0, numerator_0, exclusions_0, ...); with several
        period ends, (pidx, age_band, sex, ...), ``pidx`` indexing ``ends``."""
        f = self.flags.c
        sums: list[ColumnElement[Any]] = []
        for i in range(len(self.indicators)):
            pop, num, exc = f[f"pop_{i}"] == 1, f[f"num_{i}"] == 1, f[f"exc_{i}"] == 1
            sums += [
                _count(sa.and_(pop, sa.or_(num, sa.not_(exc)))).label(f"denominator_{i}"),
                _count(sa.and_(pop, num)).label(f"numerator_{i}"),
                _count(sa.and_(pop, sa.not_(num), exc)).label(f"exclusions_{i}"),
            ]
        keys = [f.age_band, f.sex] if self.ends is None else [f.pidx, f.age_band, f.sex]
        return sa.select(*keys, *sums).group_by(*keys).order_by(*keys)

    def worklist_query(self) -> sa.Select[Any]:
        f = self.flags.c
        # Denominator but not numerator: in the population, not achieving, not excluded.
        return (
            sa.select(f.patient_id, f.local_ref)
            .where(f.pop_0 == 1, f.num_0 == 0, f.exc_0 == 0)
            .order_by(f.patient_id)
        )


def _count(cond: Bool) -> ColumnElement[int]:
    return sa.func.sum(sa.case((cond, 1), else_=0))


def _flag(cond: Bool) -> ColumnElement[int]:
    return sa.case((cond, 1), else_=0)


CodeMatch = Literal["join", "in"]


def _patient_columns(
    catalogue: Catalogue, indicators: list[Indicator], ctx: Context
) -> tuple[Bool, ColumnElement[Any], list[ColumnElement[Any]]]:
    """(base population condition, age band, the flag columns) for the context's period end."""
    p = ctx.patients
    end = ctx.end()
    base = sa.and_(
        p.c.birth_date <= end,
        p.c.registration_start <= end,
        sa.or_(p.c.registration_end.is_(None), p.c.registration_end > end),
        sa.or_(p.c.death_date.is_(None), p.c.death_date > end),
    )
    bands = catalogue.age_bands
    # Bands are contiguous from 0 (the catalogue checks it): the first band whose upper age
    # bound the patient is under, else the open last band.
    whens = [
        (p.c.birth_date > ctx.born_by(b.max + 1), b.label) for b in bands[:-1] if b.max is not None
    ]
    last_band = sa.literal(bands[-1].label, sa.String)
    age_band = sa.case(*whens, else_=last_band) if whens else last_band
    flag_cols: list[ColumnElement[Any]] = []
    for i, ind in enumerate(indicators):
        flag_cols += [
            _flag(rule_sql(ind.population, ctx)).label(f"pop_{i}"),
            _flag(rule_sql(ind.numerator, ctx)).label(f"num_{i}"),
            _flag(rule_sql(ind.exclusions, ctx) if ind.exclusions else sa.false()).label(
                f"exc_{i}"
            ),
        ]
    return base, age_band, flag_cols


def _periods_cte(
    ends: tuple[dt.date, ...], wanted: dict[str, Callable[[dt.date], dt.date]]
) -> sa.CTE:
    """One row per period end: ``pidx`` and every date bound the rules need at that end."""
    names = sorted(wanted)
    rows = [
        sa.select(
            sa.literal(i, sa.Integer).label("pidx"),
            *(sa.literal(wanted[n](end), sa.Date).label(n) for n in names),
        )
        for i, end in enumerate(ends)
    ]
    query = rows[0] if len(rows) == 1 else sa.union_all(*rows)
    return query.cte("periods")


def build_plan(
    catalogue: Catalogue,
    indicators: list[Indicator],
    period_end: dt.date,
    flavour: Flavour,
    code_match: CodeMatch = "join",
    ends: Sequence[dt.date] | None = None,
) -> Plan:
    """The plan for ``period_end``; or, given ``ends``, for every one of those period ends in
    one query (the coded rows are read once, up to the latest end)."""
    features = features_for(indicators)
    codesets = sorted({f.codeset for f in features})
    number = {cs: k for k, cs in enumerate(codesets, start=1)}
    p = schema.patients
    many = None if ends is None else tuple(sorted(set(ends)))
    periods: sa.CTE | None = None
    if many is not None:
        period_end = many[-1]
        # First pass: which date bounds do the rules need? (feature columns are placeholders)
        probe = Context(period_end=period_end, patients=p, ends=many)
        probe.columns = defaultdict(lambda: sa.literal_column("0", sa.Date))
        _patient_columns(catalogue, indicators, probe)
        periods = _periods_cte(many, probe.wanted)
    ctx = Context(period_end=period_end, patients=p, ends=many, periods=periods)
    joins: list[tuple[sa.CTE, ColumnElement[bool]]] = []

    if codesets:
        hits = _hits_cte(catalogue, codesets, number, period_end, flavour, code_match)
        feat_cte, columns = _feature_columns(hits, features, number, flavour, periods, many or ())
        ctx.columns.update(columns)
        on = feat_cte.c.patient_id == p.c.patient_id
        if periods is not None:
            on = sa.and_(on, feat_cte.c.pidx == periods.c.pidx)
        joins.append((feat_cte, on))

    base, age_band, flag_cols = _patient_columns(catalogue, indicators, ctx)
    source: sa.FromClause = p
    keys: list[ColumnElement[Any]] = []
    if periods is not None:
        source = source.join(periods, sa.true())
        keys.append(periods.c.pidx)
    for cte, on in joins:
        source = source.outerjoin(cte, on)
    flags = (
        sa.select(
            *keys,
            p.c.patient_id,
            p.c.local_ref,
            age_band.label("age_band"),
            p.c.sex,
            *flag_cols,
        )
        .select_from(source)
        .where(base)
        .cte("flags")
    )
    return Plan(catalogue, indicators, period_end, flags, many)


def _feature_columns(
    hits: sa.CTE,
    features: list[Feature],
    number: dict[CodeSet, int],
    flavour: Flavour,
    periods: sa.CTE | None = None,
    ends: tuple[dt.date, ...] = (),
) -> tuple[sa.CTE, dict[tuple[str, Feature], ColumnElement[Any]]]:
    """The ``feat`` CTE (one row per patient with a hit, per period end with ``periods``) and
    its column for each feature.

    Two narrow aggregations rather than one wide one: first per (patient, code set) the last
    and first dates and the latest valued date (and, where the dialect can, the lowest value
    on it); then a pivot of those few rows to one row per patient. Pivoting the hits directly
    would evaluate a CASE per feature on every hit.
    """
    has_value = any(isinstance(f, LatestValueOf) for f in features)
    cols = set_aggregates(hits, features, flavour)
    if periods is not None and flavour.carries_forward:
        return _carried_feature_columns(hits, features, number, periods, ends, cols)
    if periods is None:
        per_set = (
            sa.select(hits.c.patient_id, hits.c.k, *cols)
            .group_by(hits.c.patient_id, hits.c.k)
            .cte("per_set")
        )
        source, value = (
            flavour.lowest_value_on_latest_date(hits, per_set) if has_value else (per_set, None)
        )
    else:
        per_set, source, value = _per_period_sets(hits, cols, periods, ends, flavour, has_value)
    names: dict[tuple[str, Feature], str] = {}
    pivot: list[ColumnElement[Any]] = []

    def add(kind: str, feat: Feature, column: ColumnElement[Any]) -> None:
        k = number[feat.codeset]
        names[(kind, feat)] = f"{kind}_{k}"
        pivot.append(sa.func.max(sa.case((per_set.c.k == k, column))).label(f"{kind}_{k}"))

    for feat in features:
        if isinstance(feat, LastDate):
            add("last", feat, per_set.c.last)
        elif isinstance(feat, FirstDate):
            add("first", feat, per_set.c.first)
        else:
            assert value is not None
            add("vdate", feat, per_set.c.vdate)
            add("value", feat, value)
    keys = [per_set.c.patient_id] + ([per_set.c.pidx] if periods is not None else [])
    feat_cte = sa.select(*keys, *pivot).select_from(source).group_by(*keys).cte("feat")
    return feat_cte, {key: feat_cte.c[name] for key, name in names.items()}


def set_aggregates(
    hits: sa.CTE, features: list[Feature], flavour: Flavour
) -> list[ColumnElement[Any]]:
    """The aggregates of a (patient, code set) group of hits that the features read: the last
    date; the first, if a feature needs it; the latest valued date and (where the dialect can in
    the same pass) the lowest value on it, if a feature reads values."""
    cols: list[ColumnElement[Any]] = [sa.func.max(hits.c.date).label("last")]
    if any(isinstance(f, FirstDate) for f in features):
        cols.append(sa.func.min(hits.c.date).label("first"))
    if any(isinstance(f, LatestValueOf) for f in features):
        cols.append(sa.func.max(sa.case((hits.c.value.is_not(None), hits.c.date))).label("vdate"))
        cols += flavour.stage_value_columns(hits)
    return cols


def per_bucket_cte(
    hits: sa.CTE, ends: tuple[dt.date, ...], cols: list[ColumnElement[Any]]
) -> sa.CTE:
    """The hits aggregated per (patient, code set, bucket): a bucket (``pidx``) is the first
    period end on or after a hit's date (:func:`_buckets`)."""
    bucket = _buckets(hits, ends)
    return (
        sa.select(hits.c.patient_id, hits.c.k, bucket.label("pidx"), *cols)
        # (one period end: one bucket, nothing to group by; DuckDB refuses a parameter there)
        .group_by(hits.c.patient_id, hits.c.k, *([bucket] if len(ends) > 1 else []))
        .cte("per_bucket")
    )


def _buckets(hits: sa.CTE, ends: tuple[dt.date, ...]) -> ColumnElement[int]:
    """Each hit's bucket: the index of the first period end on or after its date."""
    whens = [(hits.c.date <= _date(end), i) for i, end in enumerate(ends[:-1])]
    last = sa.literal(len(ends) - 1, sa.Integer)
    return sa.case(*whens, else_=last) if whens else last


def _carried_feature_columns(
    hits: sa.CTE,
    features: list[Feature],
    number: dict[CodeSet, int],
    periods: sa.CTE,
    ends: tuple[dt.date, ...],
    cols: list[ColumnElement[Any]],
) -> tuple[sa.CTE, dict[tuple[str, Feature], ColumnElement[Any]]]:
    """The ``feat`` CTE for several period ends, carried forward from bucket to bucket (engines
    with ``arg_max`` and aggregate ``FILTER``: DuckDB).

    Each hit falls in one bucket (the first period end on or after its date). The hits are
    aggregated per (patient, code set, bucket) as for one period and pivoted to one row per
    (patient, bucket) that has a hit: far fewer rows than one per (patient, period end, code
    set), which is what the portable path pivots. A period end's features are then aggregates
    over the patient's buckets up to it (the latest date: the max; the first: the min; the
    value: the one on the latest valued date, ``arg_max``), and each (patient, bucket) row
    serves the period ends from its bucket up to the patient's next bucket. The buckets are
    disjoint date ranges, so an aggregate over them is the aggregate over every hit up to that
    period end."""
    per_bucket = per_bucket_cte(hits, ends, cols)
    b = per_bucket.c
    # Each column of the pivot by name: (feature kind, feature, per_bucket column); and the
    # column each (kind, feature) reads (features of one code set and kind share a column).
    wanted: dict[str, tuple[str, Feature, str]] = {}
    named: dict[tuple[str, Feature], str] = {}
    for feat in features:
        k = number[feat.codeset]
        if isinstance(feat, LastDate):
            wanted[f"last_{k}"] = ("last", feat, "last")
            named[("last", feat)] = f"last_{k}"
        elif isinstance(feat, FirstDate):
            wanted[f"first_{k}"] = ("first", feat, "first")
            named[("first", feat)] = f"first_{k}"
        else:
            wanted[f"vdate_{k}"] = ("vdate", feat, "vdate")
            wanted[f"value_{k}"] = ("value", feat, "v")
            named[("vdate", feat)] = f"vdate_{k}"
            named[("value", feat)] = f"value_{k}"
    wide = (
        sa.select(
            b.patient_id,
            b.pidx,
            *(
                sa.func.max(sa.case((b.k == number[feat.codeset], b[col]))).label(name)
                for name, (_, feat, col) in wanted.items()
            ),
        )
        .group_by(b.patient_id, b.pidx)
        .cte("per_bucket_wide")
    )
    # Each (patient, bucket) row joined to the patient's other bucket rows: the aggregates
    # over those up to it are the features from its bucket on, and the first later one is
    # where that stops. (A patient has a few buckets with hits; this measured as fast as
    # running window aggregates on large practices and, unlike them, no slower than the
    # portable path on small ones: docs/benchmarks.md.)
    w, o = wide.alias("w"), wide.alias("o")
    upto = o.c.pidx <= w.c.pidx
    carried_cols: list[ColumnElement[Any]] = []
    for name, (kind, feat, _) in wanted.items():
        if kind == "first":
            agg: ColumnElement[Any] = sa.func.min(o.c[name])
        elif kind == "value":
            vdate = o.c[f"vdate_{number[feat.codeset]}"]
            agg = sa.func.arg_max(o.c[name], vdate, type_=sa.Float)  # skips NULL dates
        else:
            agg = sa.func.max(o.c[name])
        carried_cols.append(agg.filter(upto).label(name))
    after = sa.func.min(o.c.pidx).filter(o.c.pidx > w.c.pidx)
    carried = (
        sa.select(
            w.c.patient_id,
            w.c.pidx.label("first_pidx"),
            sa.func.coalesce(after, len(ends)).label("next_pidx"),
            *carried_cols,
        )
        .select_from(w.join(o, o.c.patient_id == w.c.patient_id))
        .group_by(w.c.patient_id, w.c.pidx)
        .cte("carried")
    )
    c = carried.c
    feat_cte = (
        sa.select(c.patient_id, periods.c.pidx, *(c[name] for name in wanted))
        .select_from(
            carried.join(
                periods, sa.and_(periods.c.pidx >= c.first_pidx, periods.c.pidx < c.next_pidx)
            )
        )
        .cte("feat")
    )
    return feat_cte, {key: feat_cte.c[name] for key, name in named.items()}


def _per_period_sets(
    hits: sa.CTE,
    cols: list[ColumnElement[Any]],
    periods: sa.CTE,
    ends: tuple[dt.date, ...],
    flavour: Flavour,
    has_value: bool,
) -> tuple[sa.CTE, sa.FromClause, ColumnElement[Any] | None]:
    """``per_set`` with a row per (patient, period end, code set), from one pass over the hits.

    Each hit falls in one bucket: the first period end on or after its date. The hits are
    aggregated per (patient, code set, bucket) as for one period; a period end's features are
    then the aggregates over the buckets up to it (last: the max of the buckets' last dates,
    and so on), a join of those few rows, not of every hit, with the period ends. The buckets
    are disjoint date ranges, so the latest valued date up to a period end lies in exactly
    one bucket, the highest valued one, whose lowest value on that date is the value.
    """
    per_bucket = per_bucket_cte(hits, ends, cols)
    b = per_bucket.c
    agg: list[ColumnElement[Any]] = [sa.func.max(b.last).label("last")]
    if "first" in b:
        agg.append(sa.func.min(b.first).label("first"))
    if has_value:
        agg.append(sa.func.max(b.vdate).label("vdate"))
        agg.append(sa.func.max(sa.case((b.vdate.is_not(None), b.pidx))).label("vbucket"))
    per_set = (
        sa.select(b.patient_id, periods.c.pidx, b.k, *agg)
        .select_from(per_bucket.join(periods, b.pidx <= periods.c.pidx))
        .group_by(b.patient_id, periods.c.pidx, b.k)
        .cte("per_set")
    )
    if not has_value:
        return per_set, per_set, None
    buckets, value = flavour.lowest_value_on_latest_date(hits, per_bucket, True)
    valued = sa.select(b.patient_id, b.k, b.pidx, value.label("v")).select_from(buckets)
    valued_cte = valued.cte("valued")
    v = valued_cte.c
    source = per_set.outerjoin(
        valued_cte,
        sa.and_(
            v.patient_id == per_set.c.patient_id,
            v.k == per_set.c.k,
            v.pidx == per_set.c.vbucket,
        ),
    )
    return per_set, source, v.v


def _hits_cte(
    catalogue: Catalogue,
    codesets: list[CodeSet],
    number: dict[CodeSet, int],
    period_end: dt.date,
    flavour: Flavour,
    code_match: CodeMatch = "join",
) -> sa.CTE:
    """The coded rows some rule needs, tagged with their code set's number ``k``.

    ``code_match="join"`` (the default, measured faster: docs/benchmarks.md) joins each table
    once with a table of every (system, code, k) (``Flavour.code_table``); ``"in"`` selects each code set with its
    own ``code IN (...)`` list and unions them (the table is then read once per code set).
    """
    parts: list[sa.Select[Any]] = []
    for table_name in ("events", "medications"):
        rows = sorted(
            (system, code, number[cs])
            for cs in codesets
            if cs.table == table_name
            for system, code in cs.pairs(catalogue)
        )
        if not rows:
            continue
        if code_match == "in":
            parts += _in_list_selects(table_name, rows, period_end)
            continue
        codes = flavour.code_table(f"{table_name}_codes", rows)
        t = schema.TABLES[table_name]
        value = t.c.value if table_name == "events" else sa.cast(sa.null(), sa.Float)
        parts.append(
            sa.select(t.c.patient_id, t.c.date, value.label("value"), codes.c.k)
            # Hash on the code alone and check the system after: one string key is cheaper
            # to probe (measured on DuckDB), and the result is the same.
            .select_from(t.join(codes, t.c.code == codes.c.code))
            .where(t.c.system == codes.c.system, t.c.date <= end_param("period_end", period_end))
        )
    if not parts:
        # Every code set is empty (e.g. a LatestCode whose family and target share no code):
        # no row can match, so an empty hits table keeps the query shape.
        t = schema.events
        parts.append(
            sa.select(
                t.c.patient_id, t.c.date, t.c.value, sa.literal(0, sa.Integer).label("k")
            ).where(sa.false())
        )
    query = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    return query.cte("hits")


def _in_list_selects(
    table_name: str, rows: list[tuple[str, str, int]], period_end: dt.date
) -> list[sa.Select[Any]]:
    t = schema.TABLES[table_name]
    value = t.c.value if table_name == "events" else sa.cast(sa.null(), sa.Float)
    by_set: dict[tuple[int, str], list[str]] = {}
    for system, code, k in rows:
        by_set.setdefault((k, system), []).append(code)
    return [
        sa.select(
            t.c.patient_id, t.c.date, value.label("value"), sa.literal(k, sa.Integer).label("k")
        ).where(
            t.c.system == system,
            t.c.code.in_(codes),
            t.c.date <= end_param("period_end", period_end),
        )
        for (k, system), codes in sorted(by_set.items())
    ]


def plan_for(
    dialect: sa.Dialect,
    catalogue: Catalogue,
    indicator_ids: Sequence[str] | None,
    period_end: dt.date,
    code_match: CodeMatch = "join",
    ends: Sequence[dt.date] | None = None,
) -> Plan:
    indicators = select_indicators(catalogue, indicator_ids)
    return build_plan(catalogue, indicators, period_end, flavour_for(dialect), code_match, ends)
