"""The harmonized dataset: the latest release of each partner, brought to common levels, re-gated.

Why generalize before merging: partner A may publish age in 5-year bands ("18--20") and partner B
in CTDC bands ("18--20" is not one of them). Stacking the two would mix levels, and a reader could
intersect them. So each quasi-identifier is lifted, in every release, to the coarsest level any
release used for it (the hierarchies nest, so lifting maps each label to exactly one label above).

Why that keeps k: lifting a k-anonymous table merges its equivalence classes and never splits one,
so each partner's rows stay k-anonymous on their own. With `partner` and `release` as two more
quasi-identifiers, every class of the union is one partner's class: the union is k-anonymous for k
= the smallest partner k. The gate checks exactly that on the merged bytes, and the merged manifest
says what was lifted, from which level to which, and why.

    merged = merge_releases([MergeInput("ngo-a", "r-...", 3, csv_bytes, privacy), ...], load_schema())
    merged.release.data_csv      # the bytes that passed the gate
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd

from connector.schema import Schema
from privacy.gate import GateRefused, Release, admit, parse_csv_bytes
from privacy.hierarchies import BUILTIN, TOP, Hierarchy, HierarchyError, load_builtin

PARTNER_COLUMN = "partner"
RELEASE_COLUMN = "release"


class MergeRefused(Exception):
    """The merged table did not pass the gate; `reasons` are the gate's."""

    def __init__(self, reasons: list[str]):
        self.reasons = list(reasons)
        super().__init__("harmonized dataset refused: " + "; ".join(self.reasons))


# -- labels at a level, and lifting -----------------------------------------------------------
# privacy.hierarchies maps a level-0 VALUE to its labels; merging needs the reverse for a LABEL at
# some level. These helpers derive it from the public Hierarchy fields (paths, cuts, lower).


_LABELS: dict[tuple[int, int], tuple[Hierarchy, dict[str, str] | None]] = {}


def _labels(hierarchy: Hierarchy, level: int) -> dict[str, str] | None:
    """label at `level` -> a level-0 value carrying it; None when every value is a label (level 0
    of interval and flat hierarchies: checked value by value with `Hierarchy.path`). Cached per
    hierarchy object (packaged hierarchies are loaded once)."""
    key = (id(hierarchy), level)
    cached = _LABELS.get(key)
    if cached is None or cached[0] is not hierarchy:
        cached = _LABELS[key] = (hierarchy, _build_labels(hierarchy, level))
    return cached[1]


def _build_labels(hierarchy: Hierarchy, level: int) -> dict[str, str] | None:
    if level == 0:
        if hierarchy.paths is not None:
            return {value: value for value in hierarchy.paths}
        return None
    if hierarchy.paths is not None:
        out: dict[str, str] = {}
        for value, path in hierarchy.paths.items():
            out.setdefault(path[level - 1], value)
        return out
    if hierarchy.cuts:  # interval: one representative per band (its lowest value)
        out = {}
        for cut in hierarchy.cuts[level - 1]:
            representative = str(max(cut, hierarchy.lower))
            try:
                out.setdefault(hierarchy.path(representative)[level], representative)
            except HierarchyError:
                continue
        return out
    return {}


def is_label(hierarchy: Hierarchy, label: str, level: int) -> bool:
    """Whether `label` can appear in a column generalized to `level` ("" = NA, `*` = blanked)."""
    if label in ("", TOP):
        return True
    if level >= hierarchy.height:
        return False
    labels = _labels(hierarchy, level)
    if labels is None:
        try:
            hierarchy.path(label)
        except HierarchyError:
            return False
        return True
    return label in labels


def lift(hierarchy: Hierarchy, label: str, from_level: int, to_level: int, column: str = "") -> str:
    """The label at `to_level` of a label at `from_level` (to_level >= from_level). NA stays NA below
    the top, `*` stays `*`, everything is `*` at the top. Raises HierarchyError for an unknown label."""
    if to_level >= hierarchy.height or label == TOP:
        return TOP
    if label == "":
        return ""
    if not is_label(hierarchy, label, from_level):
        raise HierarchyError(f"{column}: {label!r} is not a label of hierarchy {hierarchy.name} at level {from_level}")
    if to_level == from_level:
        return label
    labels = _labels(hierarchy, from_level)
    value = label if labels is None else labels[label]
    return hierarchy.path(value, column)[to_level]


def builtin_hierarchy(name: Any) -> Hierarchy | None:
    """The packaged hierarchy of that name; None for a partner's own (the receiver cannot know it)."""
    return load_builtin(name) if isinstance(name, str) and name in BUILTIN else None


# -- merging ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeInput:
    partner: str
    release_id: str
    version: int
    data_csv: bytes
    privacy: Mapping[str, Any]


@dataclass
class Merged:
    release: Release
    manifest: dict[str, Any]
    columns: list[str] = field(default_factory=list)


def _table(item: MergeInput) -> pd.DataFrame:
    header, rows = parse_csv_bytes(item.data_csv)
    return pd.DataFrame(rows, columns=header, dtype=object)


def merge_releases(inputs: list[MergeInput], schema: Schema) -> Merged:
    """Merge the given releases (one per partner, normally each partner's latest) and gate the result.

    Raises MergeRefused with the gate's reasons, or ValueError when there is nothing to merge.
    """
    if not inputs:
        raise ValueError("no releases to merge yet")
    roles = schema.view_roles()
    tables = {item.release_id: _table(item) for item in inputs}
    present = {c for table in tables.values() for c in table.columns}
    order = list(schema.view)
    columns = [c for c in order if c in present] + sorted(present - set(order))
    qis = [c for c in columns if roles.get(c) == "quasi_identifier"]
    qis += sorted({q for item in inputs for q in item.privacy.get("quasi_identifiers", []) if q in present and q not in qis})

    steps: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    targets: dict[str, tuple[Hierarchy | None, int]] = {}
    for column in qis:
        having = [item for item in inputs if column in tables[item.release_id].columns]
        names = {item.privacy.get("hierarchies", {}).get(column) for item in having}
        levels = {item.partner: int(item.privacy.get("levels", {}).get(column, 0)) for item in having}
        hierarchy = builtin_hierarchy(next(iter(names))) if len(names) == 1 else None
        if hierarchy is None:
            why = f"hierarchies differ ({', '.join(sorted(map(str, names)))})" if len(names) > 1 else f"hierarchy {next(iter(names))!r} is not a packaged one"
            targets[column] = (None, 0)
            steps.append({"column": column, "action": "suppressed to *", "reason": why + "; no common level can be proven", "from_levels": levels})
            continue
        target = max(levels.values()) if levels else 0
        targets[column] = (hierarchy, target)
        lifted = {p: lv for p, lv in levels.items() if lv < target}
        steps.append({
            "column": column,
            "hierarchy": hierarchy.name,
            "target_level": target,
            "target_level_name": hierarchy.level_names[min(target, hierarchy.height)],
            "from_levels": levels,
            "action": f"generalized {', '.join(sorted(lifted))} to level {target}" if lifted else "already at a common level",
        })

    frames = []
    used: list[MergeInput] = []
    for item in inputs:
        table = tables[item.release_id].copy()
        try:
            for column in qis:
                if column not in table.columns:
                    continue
                hierarchy, target = targets[column]
                if hierarchy is None:
                    table[column] = TOP
                    continue
                level = int(item.privacy.get("levels", {}).get(column, 0))
                table[column] = [lift(hierarchy, v, level, target, column) for v in table[column]]
        except HierarchyError as exc:
            excluded.append({"partner": item.partner, "release_id": item.release_id, "reason": str(exc)})
            continue
        for column in columns:
            if column not in table.columns:
                table[column] = ""
        table.insert(0, RELEASE_COLUMN, item.release_id)
        table.insert(0, PARTNER_COLUMN, item.partner)
        frames.append(table[[PARTNER_COLUMN, RELEASE_COLUMN, *columns]])
        used.append(item)
    if not frames:
        raise MergeRefused([f"{e['partner']} {e['release_id']}: {e['reason']}" for e in excluded])

    merged = pd.concat(frames, ignore_index=True)
    k = min(int(item.privacy.get("k", 0)) for item in used)
    record: dict[str, Any] = {
        "method": "k_anonymity",
        "k": k,
        "quasi_identifiers": [PARTNER_COLUMN, RELEASE_COLUMN, *qis],
        "levels": {c: t[1] for c, t in targets.items() if t[0] is not None},
        "hierarchies": {c: t[0].name for c, t in targets.items() if t[0] is not None},
        "records_in": sum(int(item.privacy.get("records_out", 0)) for item in used),
        "records_out": len(merged),
        "schema_version": schema.version,
    }
    rules = [item.privacy.get("l_diversity") for item in used]
    if rules and all(rules) and len({(r.get("attribute"), r.get("l"), r.get("kind")) for r in rules}) == 1 and rules[0].get("attribute") in merged.columns:
        record["l_diversity"] = {key: rules[0][key] for key in ("attribute", "l", "kind") if key in rules[0]}
    gate_roles = {**roles, PARTNER_COLUMN: "quasi_identifier", RELEASE_COLUMN: "quasi_identifier"}
    try:
        release = admit(merged, record, roles=gate_roles)
    except GateRefused as exc:
        raise MergeRefused(exc.reasons) from None

    manifest = {
        "kind": "harmonized",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "schema_version": schema.version,
        "rows": release.row_count,
        "columns": list(release.columns),
        "sha256": hashlib.sha256(release.data_csv).hexdigest(),
        "releases": [
            {"partner": item.partner, "release_id": item.release_id, "version": item.version, "rows": int(item.privacy.get("records_out", 0)),
             "k": item.privacy.get("k"), "levels": item.privacy.get("levels", {})}
            for item in used
        ],
        "excluded": excluded,
        "generalization": steps,
        "privacy": record,
        "guarantee": (
            f"every combination of {', '.join(record['quasi_identifiers'])} occurs at least k={k} times "
            "(k = the smallest partner k); checked by the release gate on these exact bytes"
        ),
    }
    return Merged(release=release, manifest=manifest, columns=list(release.columns))


def parquet_bytes(release: Release) -> bytes:
    """The gated CSV as Parquet (every column a string, NA as null), for analysts' tools."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    header, rows = parse_csv_bytes(release.data_csv)
    arrays = [pa.array([row[j] if row[j] != "" else None for row in rows], type=pa.string()) for j in range(len(header))]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=header), buffer)
    return buffer.getvalue()


__all__ = ["MergeInput", "MergeRefused", "Merged", "PARTNER_COLUMN", "RELEASE_COLUMN", "is_label", "lift", "merge_releases", "parquet_bytes"]
