"""The victim-perpetrator table of a synthetic release: synthesized with its link to the victims kept.

Why a second synthesis and not a copy: a synthetic release holds no real case, so its
victim-perpetrator rows cannot be the real perpetrators of real victims. What researchers need from
the table is the link: which perpetrators (roles, relationship, region of citizenship ...) go with
which victims (type of exploitation, age, regions ...). So the table is synthesized from a table
whose columns are the LINK columns (the victim columns the two tables share, at the detail the
synthetic victim table shows them, and the regions of its citizenship and country of exploitation)
next to the perpetrator columns, so pac-synth keeps how perpetrator traits go with victim traits.

Steps (`synthesize_vp`):

1. **Epsilon split** (`split_epsilon`): the release's `release.synthetic.epsilon` is the total it
   spends; `vp_share` of it (default 0.5) goes to this table (epsilon_p), the rest to the victims
   (epsilon_v). Sequential composition: the two tables together cost epsilon_v + epsilon_p, which is
   what the ledger charges (one entry, with the parts recorded) and what the gate checks the budget
   with.
2. **Counted per victim** (`joined_rows`): a victim with three perpetrators is three rows, and
   pac-synth's guarantee is per ROW. So at most m = `vp_max_perpetrators` rows of each victim are
   read (the first m, in the order the case records them), and pac-synth runs with
   epsilon_row = epsilon_p / m and delta_row = delta_p / (m * e^((m-1) * epsilon_row)): by group
   privacy, a change of one victim (at most m rows) then changes what the table reveals by at most
   (epsilon_p, delta_p). We chose a cap over "one perpetrator per victim" because half of the
   victims in CTDC-like data have two or more perpetrators: dropping them all would lose the
   multi-perpetrator patterns the table exists for. A larger m keeps more perpetrators but leaves
   each row less epsilon (more noise); m = 1 gives the table all of epsilon_p.
3. **The link, conditioned on the victims**: pac-synth has no conditional sampling, so the
   conditioning is done the other way round: the link columns are synthesized jointly with the
   perpetrator columns (so pac-synth keeps the joint counts of victim and perpetrator traits up to
   `reporting_length` values), and then a synthetic perpetrator row is KEPT only when its link
   columns equal those of some synthetic victim row (when the resolution step below had to
   coarsen a link column, the victims' values are compared at that coarser level). Post-processing
   of the two synthetic tables only: it spends no budget.
4. **Resolution**, as for victims (`privacy.synth`): every quasi-identifier combination of the table
   (victim and perpetrator ones) and every combination of up to `reporting_length` values occurs at
   least `resolution` times; rows that do not are removed (post-processing).

What the table's shape reveals beyond epsilon is what the victim table's already does
(`privacy.synth`): the binning level of a perpetrator quasi-identifier is chosen from its number of
distinct values, and delta from the row count rounded up to a power of ten; the levels of the link
columns are the victim table's published ones.

The table has no part column (synthetic releases are not a series) and no victim id: the link is
the shared columns, as in CTDC's own table. Its privacy record (`privacy.json`'s
`victim_perpetrator`) holds only parameters and counts of its own published rows.

    vp = synthesize_vp(vp_view, victims, release.synthetic, schema=schema, victim_columns=cols, hierarchies=hs)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from connector.schema import FORBIDDEN_ROLES, Schema
from privacy.hierarchies import TOP, Hierarchy, hierarchy_for, lift
from privacy.metrics import as_strings
from privacy.synth import SynthesisError, Synthesized, _bin, default_delta, drop_rare_combinations, plan_columns, rebase, synthesize
from privacy.view_vp import CASE_COLUMN
from privacy.vp_release import VP_FILE, _region, perpetrator_columns, region_sources

if TYPE_CHECKING:
    from connector.config import SynthConfig

MAX_SYNTHESIZED_COLUMNS = 16  # the same bound as the victim table's (privacy.protect)


@dataclass(frozen=True)
class VpPlan:
    """Which columns the synthetic victim-perpetrator table has, and where each comes from."""

    shared: tuple[str, ...]  # victim columns published in both tables
    regions: dict[str, str]  # region column of this table -> the victim column it is the region of
    perpetrator: tuple[str, ...]

    @property
    def link(self) -> list[str]:
        return [*self.shared, *self.regions]

    @property
    def columns(self) -> list[str]:
        return [*self.link, *self.perpetrator]


def vp_plan(victim_columns: Sequence[str], schema: Schema, victim_hierarchies: Mapping[str, Hierarchy] | None = None) -> VpPlan:
    """The table's columns for a synthetic victim table of `victim_columns`: the view's columns the
    victims publish too, the regions of published country columns (packaged country hierarchy only:
    a region is derived from its labels), and every perpetrator column whose role may leave the
    partner; in the view's order. A perpetrator's name or a note (`direct_identifier`,
    `free_text`) is left out here, as `privacy.protect.prepare` leaves out the victim's: the gate
    would refuse the table, but pac-synth would have read it first."""
    perpetrator = [c for c in perpetrator_columns(schema) if schema.vp_view[c].role not in FORBIDDEN_ROLES]
    sources = region_sources(schema)
    hierarchies = victim_hierarchies or {}
    shared = [c for c in schema.vp_view if c in victim_columns and c not in perpetrator and c not in sources]
    regions = {c: src for c, src in sources.items() if src in victim_columns and getattr(hierarchies.get(src), "name", "country") == "country"}
    ordered = [c for c in schema.vp_view if c in regions]
    return VpPlan(tuple(shared), {c: regions[c] for c in ordered}, tuple(c for c in schema.vp_view if c in perpetrator))


def vp_rules(schema: Schema) -> dict[str, Any]:
    return {c.name: c.rule for c in schema.vp_view.values()}


def synthetic_vp_problem(victim_columns: Sequence[str], schema: Schema) -> str | None:
    """Why a synthetic victim-perpetrator table next to these victim columns would not finish, or
    None. `check` and the release step both ask."""
    plan = vp_plan(victim_columns, schema)
    synthesized = plan_columns(plan.columns, vp_rules(schema))[0]
    if len(synthesized) <= MAX_SYNTHESIZED_COLUMNS:
        return None
    return (
        f"release.tables: the synthetic victim-perpetrator table would synthesize {len(synthesized)} columns (the {len(plan.link)} victim "
        f"columns it shares with the victim table, and {len(plan.perpetrator)} perpetrator columns); at most {MAX_SYNTHESIZED_COLUMNS} can be "
        f"synthesized in reasonable time and memory. Publish fewer victim columns (release.columns), for example leave out some "
        f"yes/no columns, or drop victim_perpetrator from release.tables"
    )


def split_epsilon(config: "SynthConfig") -> tuple[float, float]:
    """(epsilon of the victims, epsilon of the victim-perpetrator table): the release's epsilon split
    by `vp_share`. Their sum is the release's epsilon."""
    vp = round(float(config.epsilon) * float(config.vp_share), 9)
    return round(float(config.epsilon) - vp, 9), vp


def row_level(epsilon: float, delta: float, m: int) -> tuple[float, float]:
    """(epsilon, delta) per row such that any m rows (one victim's) together are (epsilon, delta)-DP:
    group privacy, k rows of an (e, d) mechanism are (k e, k e^((k-1) e) d)."""
    per_row = epsilon / m
    return per_row, delta / (m * math.exp((m - 1) * per_row))


def joined_rows(vp_view: pd.DataFrame, m: int) -> pd.DataFrame:
    """At most m rows per victim (the first m its case records); `_case` dropped after counting."""
    if CASE_COLUMN not in vp_view.columns:
        raise SynthesisError("the victim-perpetrator view has no victim column: it cannot be counted per victim")
    capped = vp_view.groupby(CASE_COLUMN, sort=False, group_keys=False).head(m)
    return capped.drop(columns=[CASE_COLUMN]).reset_index(drop=True)


@dataclass(frozen=True)
class SynthesizedVp:
    table: pd.DataFrame
    record: dict[str, Any]


def synthesize_vp(
    vp_view: pd.DataFrame,
    victims: Synthesized,
    config: "SynthConfig",
    *,
    schema: Schema,
    victim_columns: Sequence[str],
    hierarchies: Mapping[str, Hierarchy],
    epsilon: float,
    sampler: Any = None,
) -> SynthesizedVp:
    """The synthetic victim-perpetrator table linked to the synthetic `victims` (module docstring).
    `epsilon` is this table's part (split_epsilon); `hierarchies` are the victim release's."""
    plan = vp_plan(victim_columns, schema, hierarchies)
    problem = synthetic_vp_problem(victim_columns, schema)
    if problem:
        raise SynthesisError(problem)
    m = int(config.vp_max_perpetrators)
    rows = joined_rows(vp_view, m)
    if not len(rows):
        raise SynthesisError("no victim has a perpetrator recorded: the victim-perpetrator table cannot be synthesized; remove victim_perpetrator from release.tables")
    strings = as_strings(rows[plan.columns])

    binning = victims.record.get("binning") or {}
    link_hierarchies: dict[str, Hierarchy] = {}
    levels: dict[str, int] = {}
    for column in plan.shared:  # the detail the synthetic victim table shows
        if column in binning and column in hierarchies:
            level = int(binning[column]["level"])
            strings[column] = _bin(strings[column], hierarchies[column], level, column)
            if level < hierarchies[column].height:  # else every cell is `*`: nothing left to count
                link_hierarchies[column] = rebase(hierarchies[column], level)
                levels[column] = 0
    for column, source in plan.regions.items():
        source_level = int((binning.get(source) or {}).get("level", 0))
        if source_level >= hierarchies[source].height:  # the victims' country is hidden: so is its region
            strings[column] = strings[column].map(lambda v: TOP if v != "" else "")
            continue
        link_hierarchies[column] = hierarchy_for(column, None, schema.vp_view[column].hierarchy)
        levels[column] = 0
    perpetrator_qis = [c for c in plan.perpetrator if schema.vp_view[c].role == "quasi_identifier"]
    perpetrator_hierarchies = {c: hierarchy_for(c, None, schema.vp_view[c].hierarchy) for c in perpetrator_qis}
    qis = [c for c in plan.link if c in link_hierarchies] + perpetrator_qis

    delta = float(config.delta) if config.delta is not None else default_delta(len(rows))
    epsilon_row, delta_row = row_level(epsilon, delta, m)
    row_config = config.model_copy(update={"epsilon": epsilon_row, "delta": delta_row, "levels": levels})
    synthetic = synthesize(strings, row_config, quasi_identifiers=qis, hierarchies={**link_hierarchies, **perpetrator_hierarchies},
                           rules=vp_rules(schema), sampler=sampler)
    extra = synthetic.record.get("resolution_generalization") or {}

    table = as_strings(synthetic.table)
    kept = _linked(table, victims.table, plan, link_hierarchies, extra)
    drawn = len(table)
    every_qi = qis + [c for c in plan.columns if schema.vp_view[c].role == "quasi_identifier" and c not in qis]
    table, _ = drop_rare_combinations(table[kept].reset_index(drop=True), config.reporting_length, config.resolution, also=[every_qi] if every_qi else [])
    out = table.replace("", pd.NA).astype("string")

    record_binning: dict[str, dict[str, Any]] = {}
    for column in plan.shared:
        if column in binning and column in hierarchies:
            hierarchy, total = hierarchies[column], int(binning[column]["level"]) + int(extra.get(column, 0))
            record_binning[column] = {"hierarchy": hierarchy.name, "level": total, "level_name": hierarchy.level_names[min(total, hierarchy.height)]}
    for column in [*plan.regions, *perpetrator_qis]:
        spec = (synthetic.record.get("binning") or {}).get(column)
        if spec is not None:
            record_binning[column] = spec
    record = {
        "file": VP_FILE,
        "method": "synthetic",
        "synthesizer": synthetic.record["synthesizer"],
        "epsilon": float(epsilon),
        "delta": float(delta),
        "epsilon_per_row": epsilon_row,
        "delta_per_row": delta_row,
        "max_perpetrators_per_victim": m,
        "reporting_length": config.reporting_length,
        "resolution": config.resolution,
        "quasi_identifiers": qis,
        "link_columns": plan.link,
        "perpetrator_columns": list(plan.perpetrator),
        "binning": record_binning,
        "multi_value_columns": synthetic.record.get("multi_value_columns", []),
        "derived_columns": synthetic.record.get("derived_columns", []),
        "constant_columns": synthetic.record.get("constant_columns", []),
        "records_synthesized": drawn,
        "records_out": int(len(out)),
        "guarantee_text": (
            f"artificial rows drawn from noisy counts (differential privacy, epsilon {epsilon:g} counted per victim: at most {m} "
            f"perpetrators of a victim were read, each row with epsilon {epsilon_row:.4g}); each row's victim columns are those of some "
            f"row of the synthetic victim table; every combination of up to {config.reporting_length} values and of the "
            f"quasi-identifiers occurs at least {config.resolution} times"
        ),
    }
    return SynthesizedVp(out, record)


def victim_keys(victims: pd.DataFrame, plan: VpPlan, link_hierarchies: Mapping[str, Hierarchy], extra: Mapping[str, int]) -> set[tuple[str, ...]]:
    """The link columns of every synthetic victim row, as the victim-perpetrator table shows them:
    regions derived from the victim's country labels, coarsened where the table's resolution step
    coarsened a column (`extra` levels)."""
    cells = as_strings(victims)
    columns: list[pd.Series] = []
    for column in plan.link:
        values = cells[plan.regions[column]].map(_region) if column in plan.regions else cells[column]
        up = int(extra.get(column, 0))
        if up and column in link_hierarchies:
            hierarchy = link_hierarchies[column]
            values = values.map(lambda v, h=hierarchy, c=column: lift(h, v, 0, up, c) if v not in ("", TOP) else v)
        columns.append(values.astype(str))
    return set(zip(*columns)) if columns else {()}


def _linked(table: pd.DataFrame, victims: pd.DataFrame, plan: VpPlan, link_hierarchies: Mapping[str, Hierarchy], extra: Mapping[str, int]) -> pd.Series:
    keys = victim_keys(victims, plan, link_hierarchies, extra)
    rows = table[plan.link].itertuples(index=False, name=None) if plan.link else (() for _ in range(len(table)))
    return pd.Series([tuple(r) in keys for r in rows], index=table.index, dtype=bool)


__all__ = ["SynthesizedVp", "VpPlan", "joined_rows", "row_level", "split_epsilon", "synthesize_vp", "synthetic_vp_problem", "victim_keys", "vp_plan"]
