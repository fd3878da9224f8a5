"""Differentially private synthetic releases with pac-synth (the engine of Microsoft's Synthetic Data
Showcase), used as its authors meant: `Dataset.from_data_frame` -> `DpAggregateSeededParametersBuilder`
-> `DpAggregateSeededSynthesizer.fit` (noisy counts of every attribute combination up to the
reporting length: the only step that reads the real data, and the one epsilon pays for) -> `.sample()`
(records drawn from those noisy counts alone).

Why synthesis: IOM's CTDC moved to it because it keeps the relationships between traits without
dropping outliers, which k-anonymity's suppression does. What this module adds around pac-synth:

- **binning**: a quasi-identifier with many values (age in years) is generalized up its hierarchy
  (`privacy.hierarchies`) to the lowest level with at most `max_categories` values (or the level the
  config's `levels` fixes), because rare values spread the noise thin. The level is chosen from the
  number of distinct values, the one fact about the real data this choice reveals;
- **derived columns** are not synthesized: `concat` lists and `all_flags` are recomputed from the
  synthetic flags (so they agree with them), `config` and `unavailable` columns are restored as the
  constants they are. Multi-valued coded columns (`join`) go to pac-synth as `multi_value_columns`;
- **zeros are values**: flags are 0/1, and pac-synth ignores '0' unless told, so every column is a
  `sensitive_zeros` column; an empty cell (unknown) stays "not an attribute", as in SDS;
- **resolution**: after sampling, synthetic records whose quasi-identifier combination occurs fewer
  than `resolution` times are removed (post-processing: it costs no privacy budget), so the release
  passes the gate's threshold like a k-anonymized one.

Randomness: pac-synth 0.0.8 draws its noise from the operating system and has no seed. That is
right for privacy (predictable noise is no noise) but means two runs differ. `seed` (tests only)
fixes the connector's own random choices (metric sampling); tests of the synthesizer assert
properties that hold for any draw.

    result = synthesize(table, config.synthetic, quasi_identifiers=qis, hierarchies=hs, rules=rules)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from privacy.hierarchies import Hierarchy, HierarchyError, flat_hierarchy
from privacy.metrics import as_strings, generalize_like

if TYPE_CHECKING:
    from connector.config import SynthConfig

SEPARATOR = ";"
DERIVED_KINDS = ("concat", "all_flags")
CONSTANT_KINDS = ("config", "unavailable")
MULTI_VALUE_KINDS = ("join",)
_ESCAPES = {"<semicolon>": ";", "<colon>": ":"}

# sample(prepared frame, parameters, sensitive zeros, multi-value columns) -> (synthetic frame, dp record count)
Sampler = Callable[[pd.DataFrame, Any, list[str], dict[str, str]], tuple[pd.DataFrame, int]]


class SynthesisError(ValueError):
    """The table cannot be synthesized as configured; the message names the column or parameter."""


@dataclass(frozen=True)
class Synthesized:
    """The synthetic table, the real table in the same representation (`basis`: for metrics only,
    never published) and the privacy record."""

    table: pd.DataFrame
    basis: pd.DataFrame
    record: dict[str, Any]


def default_delta(n: int) -> float:
    """SDS's default delta, 1 / (ln N * N), with N the record count rounded UP to a power of ten.

    SDS uses the exact count; but delta is published with the release, and an exact count is a
    statistic of the real cases that epsilon does not cover. Rounding up keeps delta at most SDS's
    value (as private or more) and reveals only the order of magnitude.
    """
    if n < 3:
        return 1e-6
    coarse = 10 ** int(np.ceil(np.log10(n)))
    return 1.0 / (np.log(coarse) * coarse)


def build_parameters(config: "SynthConfig", delta: float) -> Any:
    """pac-synth parameters from the config, through the builder (which validates them)."""
    import pacsynth

    accuracy = getattr(pacsynth.AccuracyMode, config.accuracy_mode)()
    fabrication = getattr(pacsynth.FabricationMode, config.fabrication_mode)()
    builder = (
        pacsynth.DpAggregateSeededParametersBuilder()
        .reporting_length(config.reporting_length)
        .epsilon(float(config.epsilon))
        .delta(float(delta))
        .percentile_percentage(config.percentile_percentage)
        .percentile_epsilon_proportion(config.percentile_epsilon_proportion)
        .number_of_records_epsilon_proportion(config.number_of_records_epsilon_proportion)
        .accuracy_mode(accuracy)
        .fabrication_mode(fabrication)
        .empty_value("")
        .use_synthetic_counts(config.use_synthetic_counts)
        .weight_selection_percentile(config.weight_selection_percentile)
    )
    if config.aggregate_counts_scale_factor is not None:
        builder = builder.aggregate_counts_scale_factor(config.aggregate_counts_scale_factor)
    try:
        return builder.build()
    except ValueError as exc:
        raise SynthesisError(f"release.synthetic: {exc}") from None


def pacsynth_sample(prepared: pd.DataFrame, parameters: Any, sensitive_zeros: list[str], multi_value: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """Fit pac-synth's DP aggregate-seeded synthesizer and sample as many records as the noisy
    aggregates hold (about the real count)."""
    import pacsynth

    dataset = pacsynth.Dataset.from_data_frame(prepared, sensitive_zeros=sensitive_zeros, multi_value_columns=multi_value or None)
    synthesizer = pacsynth.DpAggregateSeededSynthesizer(parameters)
    synthesizer.fit(dataset)
    dp_records = int(synthesizer.get_dp_number_of_records())
    # the DP estimate of the record count is what pac-synth exposes for this; it is already paid for
    raw = synthesizer.sample(max(dp_records, 1), bool(multi_value))
    frame = pd.DataFrame(raw[1:], columns=raw[0], dtype=object) if raw else pd.DataFrame()
    return frame, dp_records


def choose_level(strings: pd.Series, hierarchy: Hierarchy, max_categories: int, fixed: int | None, column: str) -> int:
    """The binning level of a column: `fixed` if given, else the lowest with <= max_categories values."""
    values = sorted(set(strings[strings != ""]))
    if fixed is not None:
        if not 0 <= fixed <= hierarchy.height:
            raise SynthesisError(f"release.synthetic.levels.{column}: level {fixed} is outside 0..{hierarchy.height} of hierarchy {hierarchy.name}")
        return fixed
    table = hierarchy.table(values, column)
    for level in range(hierarchy.height + 1):
        if len({path[level] for path in table.values()}) <= max_categories:
            return level
    return hierarchy.height


def _bin(strings: pd.Series, hierarchy: Hierarchy, level: int, column: str) -> pd.Series:
    if level == 0:
        return strings
    table = hierarchy.table(sorted(set(strings[strings != ""])), column)
    if level >= hierarchy.height:
        return pd.Series(["*"] * len(strings), index=strings.index, dtype=object)
    return strings.map(lambda v: table[v][level] if v != "" else "")


def rebase(hierarchy: Hierarchy, level: int) -> Hierarchy:
    """The part of `hierarchy` above `level`: its level-0 values are the labels at `level`.

    Why: synthesis sees binned values ("18--20"); generalizing the synthetic table further must
    start from those labels and climb the same hierarchy, so its levels stay CTDC's."""
    if level == 0 or hierarchy.any_value:
        return hierarchy
    if level >= hierarchy.height:
        return flat_hierarchy(hierarchy.name)
    if hierarchy.paths is not None:
        values = list(hierarchy.paths)
    else:  # interval: the first value of every band at `level` names that band at every level
        values = [str(cut) for cut in hierarchy.cuts[level - 1] if hierarchy.lower <= cut <= hierarchy.upper]
    paths: dict[str, tuple[str, ...]] = {}
    for value in values:
        path = hierarchy.path(value)
        paths[path[level]] = tuple(path[level + 1 : -1])
    return Hierarchy(name=hierarchy.name, level_names=hierarchy.level_names[level:], source=hierarchy.source, paths=paths)


def _enforce_resolution(
    frame: pd.DataFrame,
    basis: pd.DataFrame,
    qis: list[str],
    hierarchies: Mapping[str, Hierarchy],
    binning: dict[str, dict[str, Any]],
    config: "SynthConfig",
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int], int]:
    """Make every quasi-identifier combination of the SYNTHETIC table occur >= resolution times.

    k-anonymity (privacy.kanon, k = resolution) on the synthetic records: it generalizes the
    quasi-identifiers up their hierarchies as little as it can and removes at most
    `suppression_limit` of the synthetic records. It reads only the synthetic table, so it is
    post-processing and spends no privacy budget. The basis is generalized to the same levels."""
    from privacy.kanon import KAnonymityError, anonymize

    rebased = {q: rebase(hierarchies[q], binning[q]["level"]) if q in binning else flat_hierarchy() for q in qis}
    work = frame.copy()
    for q in qis:
        work[q] = work[q].replace("", pd.NA)
    try:
        result = anonymize(work, qis, rebased, k=config.resolution, suppression_limit=config.suppression_limit, metric="loss")
    except (KAnonymityError, HierarchyError) as exc:
        raise SynthesisError(f"the synthetic records cannot reach resolution {config.resolution}: {exc}") from None
    levels = {q: int(result.record["levels"][q]) for q in qis}
    out = result.table.astype(object).where(result.table.notna(), "").astype(str)
    basis = generalize_like(basis.replace("", pd.NA), {"levels": levels}, rebased)
    basis = basis.astype(object).where(basis.notna(), "").astype(str)
    for q, extra in levels.items():
        if q in binning and extra:
            total = binning[q]["level"] + extra
            hierarchy = hierarchies[q]
            binning[q] = {**binning[q], "level": total, "level_name": hierarchy.level_names[min(total, hierarchy.height)]}
    return out, basis, {q: lv for q, lv in levels.items() if lv}, int(result.record["records_suppressed"])


def drop_rare_combinations(frame: pd.DataFrame, length: int, floor: int, also: Sequence[Sequence[str]] = ()) -> tuple[pd.DataFrame, int]:
    """Remove synthetic rows that hold a combination of up to `length` values (any columns, derived
    ones included) occurring fewer than `floor` times, until none is left. Post-processing of
    synthetic rows only: it spends no privacy budget. A derived column (a concatenation of 15 flags)
    can be rare although every short combination of its flags is not, hence the check on the final
    columns. `also` adds longer column sets (the full quasi-identifier combination), kept at the
    floor as rows go. Returns the kept rows and how many were removed.

    Twelve columns at length 3 are 298 column sets, counted again after every removal round: the
    columns are encoded to integer codes once and each set is counted with numpy on the codes
    (a pandas groupby per set was a tenth of a 20,000-row synthetic release)."""
    columns = [c for c in frame.columns if frame[c].nunique(dropna=False) > 1]
    start = len(frame)
    codes: dict[str, np.ndarray] = {}
    cardinality: dict[str, int] = {}
    for column in {c for c in columns} | {c for a in also for c in a}:
        values, uniques = pd.factorize(frame[column], use_na_sentinel=False)
        codes[column], cardinality[column] = values.astype(np.int64), max(len(uniques), 1)
    subsets = [list(s) for size in range(1, min(length, len(columns)) + 1) for s in itertools.combinations(columns, size)]
    subsets += [list(a) for a in also if a]
    keep = np.arange(len(frame))
    while len(keep):
        rare = np.zeros(len(keep), dtype=bool)
        for subset in subsets:
            rare |= _combination_sizes([codes[c][keep] for c in subset], [cardinality[c] for c in subset]) < floor
        if not rare.any():
            break
        keep = keep[~rare]
    return frame.iloc[keep].reset_index(drop=True), start - len(keep)


def _combination_sizes(codes: Sequence[np.ndarray], cardinality: Sequence[int]) -> np.ndarray:
    """For every row, how many rows share its values in these columns (codes from pd.factorize)."""
    key, size = codes[0], cardinality[0]
    for column, k in zip(codes[1:], cardinality[1:]):
        if size * k >= 2**62:  # keep the mixed-radix key inside int64
            uniques, key = np.unique(key, return_inverse=True)
            size = len(uniques)
        key, size = key * k + column, size * k
    if size <= 4 * len(key) + 1024:
        return np.bincount(key, minlength=size)[key]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse]


def _sorted_parts(strings: pd.Series) -> pd.Series:
    return strings.map(lambda v: SEPARATOR.join(sorted(p for p in v.split(SEPARATOR) if p)) if v else "")


def _derive(frame: pd.DataFrame, name: str, rule: Mapping[str, Any]) -> pd.Series:
    """Recompute a derived view column from synthesized columns (strings), as privacy.view does."""
    if "concat" in rule:
        joined = pd.Series("", index=frame.index, dtype=object)
        for flag in rule["concat"]:
            joined = joined + np.where(frame[flag] == "1", flag + SEPARATOR, "")
        return joined.str.rstrip(SEPARATOR)
    flags = frame[list(rule["all_flags"])]
    out = pd.Series("", index=frame.index, dtype=object)
    out[(flags == "1").all(axis=1)] = "1"
    out[(flags == "0").any(axis=1)] = "0"
    return out


def plan_columns(columns: Sequence[str], rules: Mapping[str, Mapping[str, Any]] | None) -> tuple[list[str], dict[str, Mapping], dict[str, str], list[str]]:
    """Split the columns into (synthesized, derived, constant kind, multi-valued)."""
    derived: dict[str, Mapping] = {}
    constant: dict[str, str] = {}
    multi: list[str] = []
    rules = rules or {}
    for name in columns:
        rule = rules.get(name) or {}
        kind = next((k for k in (*DERIVED_KINDS, *CONSTANT_KINDS, *MULTI_VALUE_KINDS) if k in rule), None)
        if kind in DERIVED_KINDS:
            inputs = rule[kind]
            if all(i in columns and not (rules.get(i) or {}).keys() & set(DERIVED_KINDS) for i in inputs):
                derived[name] = rule
        elif kind in CONSTANT_KINDS:
            constant[name] = kind
        elif kind in MULTI_VALUE_KINDS:
            multi.append(name)
    synthesized = [c for c in columns if c not in derived and c not in constant]
    return synthesized, derived, constant, multi


def synthesize(
    table: pd.DataFrame,
    config: "SynthConfig",
    *,
    quasi_identifiers: Sequence[str],
    hierarchies: Mapping[str, Hierarchy],
    rules: Mapping[str, Mapping[str, Any]] | None = None,
    sampler: Sampler | None = None,
) -> Synthesized:
    """Synthesize `table` (the release view's columns to publish) with differential privacy.

    `rules` are the release view's rules by column (to recompute derived columns); `sampler`
    replaces pac-synth in tests of the surrounding steps. Raises SynthesisError for an empty table
    or a configuration pac-synth refuses.
    """
    if len(table) == 0:
        raise SynthesisError("the release view is empty: nothing to synthesize")
    columns = [str(c) for c in table.columns]
    strings = as_strings(table)
    synthesized, derived, constant, multi = plan_columns(columns, rules)
    if not synthesized:
        raise SynthesisError("no column is left to synthesize (all are derived or constant)")

    basis = strings.copy()
    binning: dict[str, dict[str, Any]] = {}
    for column in quasi_identifiers:
        if column not in synthesized or column not in hierarchies:
            continue
        hierarchy = hierarchies[column]
        level = choose_level(strings[column], hierarchy, config.max_categories, config.levels.get(column), column)
        basis[column] = _bin(strings[column], hierarchy, level, column)
        binning[column] = {"hierarchy": hierarchy.name, "level": level, "level_name": hierarchy.level_names[level]}
    for column in multi:
        basis[column] = _sorted_parts(basis[column])
    for column, kind in constant.items():
        basis[column] = basis[column] if kind == "config" else ""

    n = len(table)
    delta = float(config.delta) if config.delta is not None else default_delta(n)
    parameters = build_parameters(config, delta)
    prepared = basis[synthesized].reset_index(drop=True)
    sensitive_zeros = [c for c in synthesized if c not in multi]
    sample = sampler or pacsynth_sample
    frame, dp_records = sample(prepared, parameters, sensitive_zeros, {c: SEPARATOR for c in multi})
    frame = frame.reindex(columns=synthesized).fillna("").astype(str)
    for escaped, plain in _ESCAPES.items():  # pac-synth escapes its own delimiters inside values
        frame = frame.replace(escaped, plain, regex=True)
    for column in multi:
        frame[column] = _sorted_parts(frame[column])
    drawn = len(frame)

    qis = [q for q in quasi_identifiers if q in synthesized]
    removed, post_levels = 0, {}
    if qis and drawn:
        frame, basis, post_levels, removed = _enforce_resolution(frame, basis, qis, hierarchies, binning, config)

    for column, kind in constant.items():
        value = strings[column].iloc[0] if kind == "config" else ""
        frame[column] = value
    for column, rule in derived.items():
        frame[column] = _derive(frame, column, rule)
        basis[column] = _derive(basis, column, rule)
    frame = frame[columns]
    frame, rare_removed = drop_rare_combinations(frame, config.reporting_length, config.resolution, also=[qis] if qis else [])
    removed += rare_removed
    out = frame.replace("", pd.NA).astype("string")

    record: dict[str, Any] = {
        "method": "synthetic",
        "synthesizer": {
            "engine": "pac-synth",
            "version": _version("pac-synth"),
            "class": "DpAggregateSeededSynthesizer",
            "parameters": json.loads(str(parameters)) if sampler is None else {},
        },
        "epsilon": float(config.epsilon),
        "delta": delta,
        "delta_default": config.delta is None,
        "reporting_length": config.reporting_length,
        "resolution": config.resolution,
        "accuracy_mode": config.accuracy_mode,
        "fabrication_mode": config.fabrication_mode,
        "quasi_identifiers": list(qis),
        "binning": binning,
        "derived_columns": sorted(derived),
        "constant_columns": sorted(constant),
        "multi_value_columns": multi,
        "records_in": n,
        "records_dp_estimate": dp_records,
        "records_synthesized": drawn,
        "records_removed_below_resolution": removed,
        "resolution_generalization": post_levels,
        "records_out": int(len(out)),
    }
    if config.seed is not None:
        record["seed"] = config.seed
    return Synthesized(table=out, basis=basis.reset_index(drop=True), record=record)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


__all__ = ["Synthesized", "SynthesisError", "build_parameters", "default_delta", "pacsynth_sample", "plan_columns", "synthesize"]
