"""Protect the release view as the job config's `release:` section says, before the gate sees it.

Why a separate step from `kanon`: the config speaks in column roles and names, the algorithm in
quasi-identifiers and hierarchies. This module decides which columns are quasi-identifiers (every
column whose role is `quasi_identifier`, whether or not the config lists it: forgetting one in the
config must not leak it), which hierarchy generalizes each, drops columns that may never leave the
partner, and hands the rest to `privacy.kanon.anonymize`. The result still has to pass
`privacy.gate.admit`, which checks the bytes again.

    protected = protect(view, config.job.release, schema.view_roles())
    release = admit(protected.table, protected.privacy, roles=schema.view_roles())
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from connector.schema import FORBIDDEN_ROLES, ROLES
from privacy.facts import Fact, FactError, plan_facts
from privacy.hierarchies import hierarchy_for, is_label
from privacy.kanon_full import SUPPRESSED, KFullError, LDiversityRule, protect_rows
from privacy.series import PART_COLUMN
from privacy.vp_release import PERPETRATORS, PROFILE, profile_hierarchy, vp_rows

if TYPE_CHECKING:
    from connector.config import ReleaseConfig


class ProtectionError(ValueError):
    """The view and the release config do not fit together; the message names the column or key."""


@dataclass(frozen=True)
class Protected:
    """A protected table and its privacy record (JSON-serialisable; becomes privacy.json)."""

    table: pd.DataFrame
    privacy: dict[str, Any]
    # the real view in the release's representation (binned for synthesis), for metrics only; None
    # for k-anonymity, whose representation `privacy.metrics.generalize_like` rebuilds from the levels
    basis: pd.DataFrame | None = None
    vp_table: pd.DataFrame | None = None  # a synthetic release's victim-perpetrator table (privacy.vp_synth)


@dataclass(frozen=True)
class Prepared:
    """The view's publishable columns and what the config and roles say about them."""

    table: pd.DataFrame
    quasi_identifiers: list[str]
    hierarchies: dict[str, Any]
    dropped: list[str]  # identifiers / free text: never published
    added: list[str]  # QI-role columns the config did not list: protected anyway
    absent: list[str]  # listed as quasi-identifiers, but not in the released columns

    def notes(self) -> dict[str, Any]:
        return {"quasi_identifiers_added": self.added, "quasi_identifiers_absent": self.absent, "columns_dropped": self.dropped}


def prepare(view: pd.DataFrame, release: "ReleaseConfig", roles: Mapping[str, str], *, hierarchy_names: Mapping[str, str | None] | None = None) -> Prepared:
    """Select the release's columns, drop those that never leave, and name the quasi-identifiers
    (every `quasi_identifier` column, listed or not) with their hierarchies. Raises
    ProtectionError naming the key at fault."""
    if release.method not in ("k_anonymity", "synthetic"):
        raise ProtectionError(f"release.method: unknown method {release.method!r}")

    unknown = [c for c in view.columns if roles.get(c) not in ROLES]
    if unknown:
        raise ProtectionError(f"columns without a known disclosure role: {', '.join(map(str, unknown))}; add them to the release view with a role")
    table = view
    if release.columns is not None:
        absent = [c for c in release.columns if c not in view.columns]
        if absent:
            raise ProtectionError(f"release.columns names columns the release view does not have: {', '.join(absent)}")
        table = view[list(release.columns)]
    dropped = [c for c in table.columns if roles[c] in FORBIDDEN_ROLES]
    table = table.drop(columns=dropped)
    if release.method == "synthetic" and PART_COLUMN in table.columns:
        table = table.drop(columns=[PART_COLUMN])  # synthetic releases are not a series of parts

    listed = [q for q in release.quasi_identifiers if q in table.columns]
    absent_qis = [q for q in release.quasi_identifiers if q not in table.columns]
    added = [c for c in table.columns if roles[c] == "quasi_identifier" and c not in listed]
    qis = listed + added
    for name in release.hierarchies:
        if name not in qis:
            raise ProtectionError(f"release.hierarchies.{name}: {name!r} is not a quasi-identifier of the release (they are: {', '.join(qis)})")
    for name in release.levels:
        if name not in qis:
            raise ProtectionError(f"release.levels.{name}: {name!r} is not a quasi-identifier of the release (they are: {', '.join(qis)})")
    names = hierarchy_names or {}
    hierarchies = {q: hierarchy_for(q, release.hierarchies, names.get(q)) for q in qis}
    return Prepared(table, qis, hierarchies, dropped, added, absent_qis)


def protect(
    view: pd.DataFrame,
    release: "ReleaseConfig",
    roles: Mapping[str, str],
    *,
    hierarchy_names: Mapping[str, str | None] | None = None,
    rules: Mapping[str, Mapping[str, Any]] | None = None,
    vp: pd.DataFrame | None = None,
    schema: Any = None,
) -> Protected:
    """Apply the release method to the whole view, as one release (a k-anonymized one as a single
    part: the pipeline builds series of parts with `k_setup` and `protect_part`). `hierarchy_names`
    maps a column to a packaged hierarchy (the release view's `hierarchy:`); `release.hierarchies`
    overrides it; unnamed columns use `privacy.hierarchies.DEFAULT_COLUMN_HIERARCHIES`, else value
    -> `*`. `rules` (the release view's rules by column) group columns into facts and let synthesis
    recompute derived columns instead of inventing them. `vp` (the victim-perpetrator view, with
    its `_case` column) is needed by a synthetic release that publishes that table too: the
    release's epsilon is then split between the two tables (privacy.vp_synth); `schema` names its
    columns (default: the packaged one).
    """
    prepared = prepare(view, release, roles, hierarchy_names=hierarchy_names)
    table, qis, hierarchies = prepared.table, prepared.quasi_identifiers, prepared.hierarchies
    if release.method == "synthetic":
        from privacy.synth import synthesize

        problem = synthetic_columns_problem(list(table.columns), rules or {})
        if problem:
            raise ProtectionError(problem)
        for name in release.synthetic.levels:
            if name not in qis:
                raise ProtectionError(f"release.synthetic.levels.{name}: {name!r} is not a quasi-identifier of the release (they are: {', '.join(qis)})")
        if "victim_perpetrator" not in release.tables:
            synthetic = synthesize(table, release.synthetic, quasi_identifiers=qis, hierarchies=hierarchies, rules=rules)
            return Protected(table=synthetic.table, privacy={**synthetic.record, **prepared.notes()}, basis=synthetic.basis)
        return _synthesize_both(table, vp, release, qis, hierarchies, rules, prepared, schema)

    if rules is None:  # the packaged release view's rules say which columns carry one fact
        from connector.schema import load_schema

        rules = {c.name: c.rule for c in load_schema().view.values()}
    setup = k_setup(list(table.columns), release, roles, hierarchies=hierarchies, rules=rules)
    published = protect_part(table, setup, "1")
    return Protected(table=published, privacy={**describe_release(published, setup), **prepared.notes()})


def _synthesize_both(table: pd.DataFrame, vp: pd.DataFrame | None, release: "ReleaseConfig", qis: list[str], hierarchies: Mapping[str, Any],
                     rules: Mapping[str, Mapping[str, Any]] | None, prepared: Prepared, schema: Any = None) -> Protected:
    """Victims with epsilon_v, then their perpetrators with epsilon_p (privacy.vp_synth): one record
    whose `epsilon` and `delta` are the sums (what the ledger charges), with the parts recorded."""
    from connector.schema import load_schema
    from privacy.synth import synthesize
    from privacy.vp_synth import split_epsilon, synthesize_vp, synthetic_vp_problem

    schema = schema or load_schema()
    problem = synthetic_vp_problem(list(table.columns), schema)
    if problem:
        raise ProtectionError(problem)
    if vp is None:
        raise ProtectionError("release.tables: a synthetic victim-perpetrator table needs the victim-perpetrator view")
    epsilon_v, epsilon_p = split_epsilon(release.synthetic)
    victims = synthesize(table, release.synthetic.model_copy(update={"epsilon": epsilon_v}), quasi_identifiers=qis, hierarchies=hierarchies, rules=rules)
    perpetrators = synthesize_vp(vp, victims, release.synthetic, schema=schema, victim_columns=list(table.columns), hierarchies=hierarchies, epsilon=epsilon_p)
    record = dict(victims.record)
    record.update({
        "epsilon": round(epsilon_v + epsilon_p, 9),
        "delta": victims.record["delta"] + perpetrators.record["delta"],
        "epsilon_parts": {"victims": epsilon_v, "victim_perpetrator": epsilon_p},
        "delta_parts": {"victims": victims.record["delta"], "victim_perpetrator": perpetrators.record["delta"]},
        "victim_perpetrator": perpetrators.record,
    })
    return Protected(table=victims.table, privacy={**record, **prepared.notes()}, basis=victims.basis, vp_table=perpetrators.table)


# pac-synth counts every combination of up to reporting_length values: with the whole view (about
# fifty columns after derived ones) that took 924 s and 5.85 GiB for 10,000 cases and did not finish.
MAX_SYNTHESIZED_COLUMNS = 16
SUGGESTED_SYNTHETIC_COLUMNS = (
    "yearOfRegistration", "gender", "ageBroad", "citizenship", "CountryOfExploitation", "isForcedLabour", "isSexualExploit",
    "isOtherExploit", "meansOfControlDebtBondage", "meansOfControlThreats", "meansOfControlWithholdsDocuments", "typeOfLabourDomesticWork",
)


def synthetic_columns_problem(columns: list[str], rules: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why a synthetic release of these columns would not finish, with a column list that does;
    None when it is fine. `check` and the release step both ask."""
    from privacy.synth import plan_columns

    synthesized = plan_columns(columns, rules)[0]
    if len(synthesized) <= MAX_SYNTHESIZED_COLUMNS:
        return None
    return (
        f"release.columns: a synthetic release synthesizes {len(synthesized)} columns; at most {MAX_SYNTHESIZED_COLUMNS} can be "
        f"synthesized in reasonable time and memory (every combination of up to reporting_length values is counted). "
        f"List the columns to publish, for example: columns: [{', '.join(SUGGESTED_SYNTHETIC_COLUMNS)}]"
    )


@dataclass(frozen=True)
class KSetup:
    """How a k-anonymized series protects its parts: the same for every part of the series."""

    columns: tuple[str, ...]  # published columns, in view order, then the part column
    facts: tuple[Fact, ...]  # most important first
    passthrough: tuple[str, ...]  # process columns, the same for every row of the partner
    k: int
    l_rule: LDiversityRule | None
    settings: dict[str, Any]  # what defines the series (a change starts a new one)
    with_vp: bool = False  # the series also publishes the victim-perpetrator table

    @property
    def series_id(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]


def k_setup(
    columns: list[str],
    release: "ReleaseConfig",
    roles: Mapping[str, str],
    *,
    hierarchies: Mapping[str, Any],
    rules: Mapping[str, Mapping[str, Any]],
) -> KSetup:
    """The facts, their order and the series settings of a k-anonymized release of `columns`
    (identifier and free-text columns already dropped). With the victim-perpetrator table, each
    victim's perpetrators are one more fact, specialized last (privacy.vp_release). Raises
    ProtectionError naming the key."""
    columns = [c for c in columns if c not in (PART_COLUMN, PROFILE)]
    try:
        facts = plan_facts(columns, rules=rules, roles=roles, hierarchies=hierarchies, importance=release.importance, finest=release.levels)
    except FactError as exc:
        raise ProtectionError(str(exc)) from None
    by_column = {c: f for f in facts for c in f.columns}
    rule = None
    if release.l_diversity is not None:
        names = []
        for name in release.l_diversity.facts:
            fact = by_column.get(name)
            if fact is None or roles.get(name) != "sensitive":
                raise ProtectionError(f"release.l_diversity.facts: {name!r} is not a sensitive column of the release")
            names.append(fact.name)
        rule = LDiversityRule(tuple(dict.fromkeys(names)), release.l_diversity.l)
    passthrough = tuple(c for c in columns if c not in by_column)
    with_vp = "victim_perpetrator" in release.tables
    if with_vp:
        from connector.schema import load_schema

        # where the perpetrators come in the order detail is kept: after the fact named before
        # "perpetrators" in release.importance, else after the type of exploitation
        names = [f.name for f in facts]
        after = next((release.importance[i - 1] for i, n in enumerate(release.importance) if n == PERPETRATORS and i), None)
        anchor = next((by_column[c].name for c in (after, "typeOfExploitConcatenated", "ageBroad") if c in by_column), None)
        position = names.index(anchor) + 1 if anchor in names else len(facts)
        if release.importance[:1] == [PERPETRATORS]:
            position = 0
        facts = [*facts[:position], Fact(PROFILE, (PROFILE,), profile_hierarchy(load_schema()), 0), *facts[position:]]
    settings = {
        "k": release.k,
        "columns": columns,
        "facts": [[f.name, list(f.columns), f.hierarchy.name if f.hierarchy else None, f.finest] for f in facts],
        "l_diversity": [list(rule.facts), rule.l] if rule else None,
        "hierarchies": release.hierarchies,
        "engine": 1,
    }
    return KSetup(tuple([*columns, PART_COLUMN]), tuple(facts), passthrough, release.k, rule, settings, with_vp)


def protect_part(rows: pd.DataFrame, setup: KSetup, label: str) -> pd.DataFrame:
    """One part of the series, protected on its own, with its label in the part column.
    Raises ProtectionError when the rows cannot form a part (fewer than k)."""
    return protect_part_tables(rows, setup, label)[0]


def protect_part_tables(rows: pd.DataFrame, setup: KSetup, label: str, schema: Any = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The part's victim rows and, when the series publishes it, its victim-perpetrator rows
    (`rows` then carries each victim's `_perpetrators`, privacy.vp_release; `schema` names the view)."""
    # protect_rows reads only the facts' and passthrough columns: the part's rows are passed as
    # they are, not copied into a frame of those columns (a copy of the view at 300,000 cases)
    try:
        published, _ = protect_rows(rows, setup.facts, setup.k, passthrough=setup.passthrough, l_diversity=setup.l_rule)
    except KFullError as exc:
        raise ProtectionError(f"the release part cannot be protected: {exc}") from None
    published[PART_COLUMN] = label
    vp = vp_rows(published, published[PROFILE], schema, label) if setup.with_vp else None
    return published[list(setup.columns)], vp


def describe_release(published: pd.DataFrame, setup: KSetup) -> dict[str, Any]:
    """The privacy record of a k-anonymized release, computed from the PUBLISHED rows and the series
    settings only: nothing in it may move when a record that is not published changes."""
    record: dict[str, Any] = {
        "method": "k_anonymity",
        "k": setup.k,
        "guarantee": "full_row",
        "guarantee_text": (
            f"every row's combination of all published values (a suppressed * is a value) occurs at least k={setup.k} times, "
            "and the rows added and the rows removed between two releases of the series each meet the same floor"
        ),
        "facts": {f.name: list(f.columns) for f in setup.facts if f.name != PROFILE},
        "importance": [f.name for f in setup.facts if f.name != PROFILE],
        "quasi_identifiers": [f.columns[0] for f in setup.facts if f.hierarchy is not None and f.name != PROFILE],
        "hierarchies": {f.columns[0]: f.hierarchy.name for f in setup.facts if f.hierarchy is not None and f.name != PROFILE},
        "finest_levels": {f.columns[0]: f.finest for f in setup.facts if f.hierarchy is not None and f.name != PROFILE},
        "finest_level_names": {f.columns[0]: f.hierarchy.level_names[f.finest] for f in setup.facts if f.hierarchy is not None and f.name != PROFILE},
        "records_out": int(len(published)),
        "parts": {str(label): int(n) for label, n in published[PART_COLUMN].value_counts(sort=False).sort_index().items()} if len(published) else {},
        "detail": detail_shares(published, setup),
        "year_and_country_full": year_and_country_full(published, setup),
    }
    if setup.l_rule is not None:
        by_name = {f.name: f for f in setup.facts}
        record["l_diversity"] = {"facts": {name: list(by_name[name].columns) for name in setup.l_rule.facts}, "l": setup.l_rule.l}
    record["smallest_group"] = smallest_group(published)
    return record


def smallest_group(published: pd.DataFrame) -> int:
    """Rows in the smallest group of rows alike in every column (a blank is ""), 0 for no rows.

    Counted on integer codes, one column at a time, not by grouping a blank-filled copy of the
    whole release (the largest allocation of a release step at 300,000 cases)."""
    if not len(published):
        return 0
    group = np.zeros(len(published), dtype=np.int64)
    for c in published.columns:
        codes, uniques = pd.factorize(published[c].fillna(""), use_na_sentinel=False)
        group = np.unique(group * (len(uniques) + 1) + codes, return_inverse=True)[1].astype(np.int64)
    return int(np.bincount(group).min())


def year_and_country_full(published: pd.DataFrame, setup: KSetup) -> float | None:
    """Share of published rows showing both year of registration and country of exploitation at
    their finest level (blank counts: unknown is as detailed as the record): what the central team
    counts cases by. None when the release has not both columns."""
    facts = {f.columns[0]: f for f in setup.facts if f.hierarchy is not None and f.name != PROFILE}
    pair = [facts.get("yearOfRegistration"), facts.get("CountryOfExploitation")]
    if None in pair or not len(published):
        return None
    full = pd.Series(True, index=published.index)
    for fact in pair:
        cells = published[fact.columns[0]].fillna("")
        labels = {v for v in cells.unique() if v == "" or (v != SUPPRESSED and is_label(fact.hierarchy, v, fact.finest))}
        full &= cells.isin(labels)
    return round(float(full.mean()), 4)


def detail_shares(published: pd.DataFrame, setup: KSetup) -> dict[str, dict[str, float]]:
    """Per fact, the share of published rows showing it in full detail, coarser, or suppressed."""
    out: dict[str, dict[str, float]] = {}
    n = len(published)
    for fact in setup.facts:
        if fact.name == PROFILE:  # never a published column of the victim table
            continue
        cells = published[fact.columns[0]].fillna("")
        suppressed = int((cells == SUPPRESSED).sum())
        if fact.hierarchy is None:
            full = n - suppressed
        else:
            finest_labels = {v for v in cells.unique() if v != SUPPRESSED and is_label(fact.hierarchy, v, fact.finest)}
            full = int(cells.isin(finest_labels).sum())
        out[fact.name] = {
            "full": round(full / n, 4) if n else 0.0,
            "coarser": round((n - full - suppressed) / n, 4) if n else 0.0,
            "suppressed": round(suppressed / n, 4) if n else 0.0,
        }
    return out


__all__ = ["KSetup", "Prepared", "Protected", "prepare", "ProtectionError", "describe_release", "detail_shares", "k_setup", "protect", "protect_part"]
